"""The whole flow of a message in one place: prepare (compose → screen → scan → protect) → dispatch (stage →
deliver → commit) → outcome.

Everything that sends calls this module: the operator, the notifier and the email backend through
:func:`asend_mail`; ``SecureSmtpHook.send`` and restore's resend through :func:`asend_outgoing`.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from airflow_secure_mail._sync import run_sync
from airflow_secure_mail.mail.compose import MailRequest
from airflow_secure_mail.pipeline.result import MailResult
from airflow_secure_mail.transport.session import SendReceipt

if TYPE_CHECKING:
    from airflow_secure_mail.archive.restore import Restored
    from airflow_secure_mail.archive.store import MailArchive
    from airflow_secure_mail.mail.outgoing import Outgoing
    from airflow_secure_mail.mail.protect import Protection
    from airflow_secure_mail.mail.screen import MailPolicy
    from airflow_secure_mail.pipeline.channel import MailChannel
    from airflow_secure_mail.pipeline.prepare import Prepared

log = logging.getLogger(__name__)


def identity_seed(context: Mapping[str, Any] | None) -> str | None:
    """dag/task/run/map-index of the running task: a retry gets the same Message-ID."""
    origin = origin_of(context)
    if not origin:
        return None
    return "|".join(str(origin.get(k, "")) for k in ("dag_id", "task_id", "run_id", "map_index"))


def origin_of(context: Mapping[str, Any] | None) -> dict[str, Any]:
    """The task instance behind a send, for the archive record."""
    ti = (context or {}).get("ti") or (context or {}).get("task_instance")
    if ti is None:
        return {}
    return {k: getattr(ti, k, None) for k in ("dag_id", "task_id", "run_id", "map_index", "try_number")}


async def asend_mail(
    request: MailRequest,
    *,
    channel: MailChannel | None = None,
    policy: MailPolicy | None = None,
    protection: Protection | None = None,
    archive: MailArchive | str | None = None,
    one_message_per_recipient: bool = False,
    allow_partial: bool = False,
    concurrency: int = 1,
    dry_run: bool = False,
    origin: Mapping[str, Any] | None = None,
    hook: Any = None,
    priority: str = "bulk",
) -> MailResult:
    """Run the flow for one request. Every copy is screened before the first connection opens.

    ``priority``: ``"alert"`` mail (failure notices, digests) takes the relay budget's reserved share and never
    waits behind ``"bulk"`` mail (reports, fan-outs), which waits for its slot until the deadline.
    ``hook=`` is the deprecated way to name the connection: pass ``channel=MailChannel.for_conn(conn_id)``.
    """
    from airflow_secure_mail.pipeline.prepare import prepare_request
    from airflow_secure_mail.transport.budget import check_priority
    from airflow_secure_mail.vault import deadline

    check_priority(priority)
    channel = _channel(channel, hook)
    mail_policy = channel.policy(policy)
    everyone = (*request.to, *request.cc, *request.bcc)
    refusal = _Refusal(channel, mail_policy, archive, origin, everyone, request.sender, None, record=not dry_run)
    with deadline(channel.deadline):  # bounds every Vault call of the send: freeze switch, keys, Transit, credentials
        async with refusal:
            await channel.check_not_frozen()
            prepared = await prepare_request(
                request, mail_policy, protection, channel.vault, one_message_per_recipient=one_message_per_recipient
            )
        if dry_run:
            log.info("dry run: %d message(s) composed and screened; nothing sent", len(prepared.items))
            return _result(prepared)
        return await _send(prepared, channel, archive, origin, allow_partial, concurrency, priority)


async def asend_outgoing(
    items: Sequence[Outgoing],
    *,
    channel: MailChannel,
    policy: MailPolicy | None = None,
    archive: MailArchive | str | None = None,
    origin: Mapping[str, Any] | None = None,
    allow_partial: bool = False,
    concurrency: int = 1,
    priority: str = "bulk",
) -> MailResult:
    """Messages built elsewhere: screened as the exact bytes, then archived and delivered like any other
    (``priority`` as for :func:`asend_mail`)."""
    from airflow_secure_mail.pipeline.prepare import prepare_outgoing
    from airflow_secure_mail.transport.budget import check_priority
    from airflow_secure_mail.vault import deadline

    check_priority(priority)
    mail_policy = channel.policy(policy)
    everyone = tuple(dict.fromkeys(r for item in items for r in item.recipients))
    ids = {item.message_id for item in items}
    message_id = next(iter(ids)) if len(ids) == 1 else None
    sender = items[0].sender if items else None
    with deadline(channel.deadline):
        async with _Refusal(channel, mail_policy, archive, origin, everyone, sender, message_id):
            await channel.check_not_frozen()
            prepared = await prepare_outgoing(items, mail_policy)
        return await _send(prepared, channel, archive, origin, allow_partial, concurrency, priority)


async def aresend(
    found: Sequence[Restored],
    *,
    channel: MailChannel,
    archive: MailArchive | str | None,
    resent_from: str | None = None,
    resend_to: str | Sequence[str] | None = None,
    seed: str | None = None,
    origin: Mapping[str, Any] | None = None,
    policy: MailPolicy | None = None,
) -> list[str | None]:
    """Resend archived messages verbatim (``Resent-*`` lines prepended) as sends like any other: screened,
    archived as resends, recorded. ``seed`` (the task instance) keeps a retried restore from resending twice."""
    from airflow_secure_mail.archive.restore import resend_copies

    policy = channel.policy(policy)
    copies = resend_copies(
        list(found),
        resent_from=channel.sender(resent_from),
        resend_to=resend_to,
        seed=seed,
        allow_special_use_domains=policy.allow_special_use_domains,
    )
    await asend_outgoing(copies, channel=channel, policy=policy, archive=archive, origin=origin)
    return [c.message_id for c in copies]


async def _send(
    prepared: Prepared,
    channel: MailChannel,
    archive: MailArchive | str | None,
    origin: Mapping[str, Any] | None,
    allow_partial: bool,
    concurrency: int,
    priority: str = "bulk",
) -> MailResult:
    from airflow_secure_mail.archive.store import as_archive
    from airflow_secure_mail.pipeline import budget_store
    from airflow_secure_mail.pipeline.dispatch import RecordInfo, dispatch
    from airflow_secure_mail.pipeline.result import archived_at, log_already_sent, log_outcomes, raise_for_outcomes
    from airflow_secure_mail.transport.budget import send_priority

    budget_store.register()  # a budget_url on an object store keeps its claims through the archive's ObjectStore
    info = RecordInfo(dict(origin or {}), prepared.protection)
    store = as_archive(archive)
    with send_priority(priority):  # every batch of this send (and a failover's) takes the budget at this priority
        deliveries = await dispatch(
            prepared.items, channel.client, store, info, concurrency=concurrency, priority=priority
        )
    for d in deliveries:
        if d.already_sent:
            log_already_sent(d.item, d.record.status if d.record is not None else "sent")
    now = [d for d in deliveries if not d.already_sent and d.outcome is not None]
    log_outcomes(
        channel.server, [(d.item, d.outcome) for d in now], sum(d.already_sent for d in deliveries),  # type: ignore[misc]
        protection=prepared.protection, archived=[archived_at(store, d.record) for d in now],
        relays=[d.relay for d in now], primary=channel.conn_id,
    )  # fmt: skip
    unrecorded = next((d.commit_error for d in deliveries if d.commit_error is not None), None)
    if unrecorded is not None:  # logged above what went out; failing keeps the task from reporting success
        raise unrecorded
    raise_for_outcomes([d.item for d in deliveries], [d.outcome for d in deliveries], allow_partial)  # type: ignore[misc]
    result = _result(prepared)
    result.receipts = [d.outcome for d in deliveries if isinstance(d.outcome, SendReceipt)]
    result.archive_keys = [d.record.prefix for d in deliveries if d.record is not None]
    result.already_sent = sum(d.already_sent for d in deliveries)
    return result


def recording_refusals(
    channel: MailChannel,
    policy: MailPolicy,
    archive: MailArchive | str | None,
    *,
    recipients: Sequence[str] = (),
    sender: str | None = None,
    message_id: str | None = None,
    origin: Mapping[str, Any] | None = None,
) -> _Refusal:
    """``async with recording_refusals(...):`` around a step that may refuse a send before the pipeline runs
    (a facade parsing a message built elsewhere): the refusal is counted and recorded as the pipeline's are."""
    return _Refusal(channel, policy, archive, origin, recipients, sender, message_id)


class _Refusal:
    """Around the steps before anything is sent: a refusal (a screen, a missing key, a freeze) is counted, recorded
    in the archive when one is given (metadata only) and re-raised unchanged.

    A dry run (``record=False``) is neither counted nor recorded: it would not have sent anything anyway, and
    the refusal metric and records count what the mail path really stopped.
    """

    def __init__(
        self,
        channel: MailChannel,
        policy: MailPolicy,
        archive: MailArchive | str | None,
        origin: Mapping[str, Any] | None,
        recipients: Sequence[str],
        sender: str | None,
        message_id: str | None,
        *,
        record: bool = True,
    ) -> None:
        self.channel, self.policy, self.archive, self.origin = channel, policy, archive, origin
        self.recipients, self.sender, self.message_id, self.record = recipients, sender, message_id, record

    async def __aenter__(self) -> None:
        return None

    async def __aexit__(self, kind: type[BaseException] | None, error: BaseException | None, tb: Any) -> bool:
        from airflow_secure_mail.errors import EncryptionKeyMissing, PolicyViolation

        if self.record and isinstance(error, PolicyViolation | EncryptionKeyMissing):
            await self._refused(error)
        return False  # the original error goes on, unchanged

    async def _refused(self, error: BaseException) -> None:
        import asyncio

        from airflow_secure_mail import _metrics

        rule = str(getattr(error, "rule", None) or "missing_key")
        _metrics.incr("refused", rule=rule)
        if self.archive is None:
            log.info("refused by rule %r: not recorded (no archive given)", rule)
            return
        try:
            where = await asyncio.to_thread(self._write, error)
        except Exception as exc:  # the refusal itself is what the task must report
            log.warning("refused by rule %r: the refusal record was not written (%s: %s)", rule,
                        type(exc).__name__, " ".join(str(exc).split())[:200])  # fmt: skip
            return
        log.info("refused by rule %r: recorded at %s", rule, where)

    def _write(self, error: BaseException) -> str:
        from airflow_secure_mail.archive.refusals import refusal_from, write_refusal
        from airflow_secure_mail.archive.store import as_archive

        store = as_archive(self.archive)
        assert store is not None
        record = refusal_from(
            error,
            recipients=self.recipients,
            sender=self.sender,
            message_id=self.message_id,
            origin=self.origin,
            conn_id=self.channel.conn_id,
            keep_recipients=self.policy.record_refused_recipients,
        )
        return f"{store.location}/{write_refusal(store, record)}"


def _result(prepared: Prepared) -> MailResult:
    dropped = list(dict.fromkeys(d.address for item in prepared.items for d in item.dropped))
    verdict = prepared.scan.verdict.value if prepared.scan is not None else None
    spam = prepared.spam.to_xcom() if prepared.spam is not None else None
    return MailResult(protection=prepared.protection, dropped=dropped, malware_scan=verdict, spam_scan=spam)


def _channel(channel: MailChannel | None, hook: Any) -> MailChannel:
    from airflow_secure_mail.pipeline.channel import MailChannel

    if channel is not None:
        return channel
    if hook is None:
        return MailChannel.for_conn()
    warnings.warn(
        "send_mail(hook=...) is deprecated: pass channel=MailChannel.for_conn(conn_id).", DeprecationWarning, 3
    )
    return MailChannel.of(hook.client)  # a SecureSmtpHook, duck-typed: the pipeline never imports the hook


def send_mail(request: MailRequest, **kwargs: Any) -> MailResult:
    """Sync facade over :func:`asend_mail`."""
    return run_sync(asend_mail(request, **kwargs))


__all__ = [
    "MailResult",
    "aresend",
    "asend_mail",
    "asend_outgoing",
    "identity_seed",
    "origin_of",
    "recording_refusals",
    "send_mail",
]
