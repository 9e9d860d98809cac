"""The whole flow of a message in one place: compose → screen → protect → stage → deliver → commit.

The operator, the notifier and the email backend all call :func:`asend_mail`; none re-implements a step.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from email import policy as email_policy
from typing import TYPE_CHECKING, Any

from airflow_secure_mail._sync import run_sync
from airflow_secure_mail.mail.compose import MailRequest, compose
from airflow_secure_mail.mail.screen import MailPolicy, check_size, screen
from airflow_secure_mail.transport.smtp import SendReceipt

if TYPE_CHECKING:
    from airflow_secure_mail.hooks.smtp import SecureSmtpHook
    from airflow_secure_mail.mail.protect import Protection


@dataclass
class MailResult:
    """What happened to every message of one request; ``to_xcom`` is small and never holds a body."""

    receipts: list[SendReceipt] = field(default_factory=list)
    archive_keys: list[str] = field(default_factory=list)
    protection: str | None = None
    dropped: list[str] = field(default_factory=list)

    def to_xcom(self) -> dict[str, Any]:
        return {
            "message_ids": [r.message_id for r in self.receipts],
            "accepted": sorted({a for r in self.receipts for a in r.accepted}),
            "refused": {k: v[0] for r in self.receipts for k, v in r.refused.items()},
            "tls_version": self.receipts[0].tls_version if self.receipts else None,
            "archive_keys": list(self.archive_keys),
            "protection": self.protection,
            "dropped_for_missing_key": list(self.dropped),
        }


def identity_seed(context: Mapping[str, Any] | None) -> str | None:
    """dag/task/run/map-index of the running task: a retry gets the same Message-ID."""
    if not context:
        return None
    ti = context.get("ti") or context.get("task_instance")
    if ti is None:
        return None
    return "|".join(str(getattr(ti, attr, "")) for attr in ("dag_id", "task_id", "run_id", "map_index"))


def effective_policy(hook: SecureSmtpHook, policy: MailPolicy | None) -> MailPolicy:
    if policy is not None:
        return policy
    defaults = hook.settings.policy_defaults
    return MailPolicy.from_dict(defaults) if defaults else MailPolicy()


def _split(request: MailRequest, one_per_recipient: bool) -> list[MailRequest]:
    if not one_per_recipient:
        return [request]
    everyone = list(dict.fromkeys([*request.to, *request.cc, *request.bcc]))
    return [
        replace(
            request,
            to=(rcpt,),
            cc=(),
            bcc=(),
            id_seed=f"{request.id_seed}|{rcpt}" if request.id_seed else None,
        )
        for rcpt in everyone
    ]


async def asend_mail(
    request: MailRequest,
    *,
    hook: SecureSmtpHook,
    policy: MailPolicy | None = None,
    protection: Protection | None = None,
    archive: Any = None,
    one_message_per_recipient: bool = False,
    allow_partial: bool = False,
    concurrency: int = 1,
    dry_run: bool = False,
) -> MailResult:
    """Run the flow for one request. Every message is screened before the first connection opens.

    ``concurrency=1`` sends every message of the request over one reused session.
    """
    mail_policy = effective_policy(hook, policy)
    outgoing: list[tuple[str, list[str], bytes]] = []
    dropped: list[str] = []
    for item in _split(request, one_message_per_recipient):
        message, envelope = compose(item)
        data = message.as_bytes(policy=email_policy.SMTP)
        screen(message, envelope, mail_policy, item.attachments, encoded_size=len(data))
        for copy in await _protect(message, envelope, protection, hook):
            check_size(len(copy.data), mail_policy)
            outgoing.append((copy.envelope.sender, list(copy.envelope.recipients), copy.data))
            dropped.extend(r for r in copy.dropped if r not in dropped)
    if dry_run:
        return MailResult(dropped=dropped)
    receipts = await hook.asend_many(outgoing, concurrency=concurrency, allow_partial=allow_partial)
    ids = [_message_id(data) for _, _, data in outgoing]
    return MailResult(
        receipts=[replace(r, message_id=mid) for r, mid in zip(receipts, ids, strict=True)],
        protection=protection.describe() if protection is not None else None,
        dropped=dropped,
    )


async def _protect(message: Any, envelope: Any, protection: Protection | None, hook: SecureSmtpHook) -> list[Any]:
    """Keys from Vault (I/O) then the pure protect step; both off the event loop."""
    from airflow_secure_mail.mail.protect import Protected, protect

    if protection is None or not protection.active:
        return [Protected(message.as_bytes(policy=email_policy.SMTP), envelope)]
    from airflow_secure_mail.keys import resolve_keys

    keys = await asyncio.to_thread(resolve_keys, protection, envelope.recipients, hook.vault)
    return await asyncio.to_thread(protect, message, envelope, protection, keys)


def send_mail(request: MailRequest, **kwargs: Any) -> MailResult:
    """Sync facade over :func:`asend_mail`."""
    return run_sync(asend_mail(request, **kwargs))


def _message_id(data: bytes) -> str | None:
    head = data.split(b"\r\n\r\n", 1)[0]
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"message-id:"):
            return line.split(b":", 1)[1].strip().decode("ascii", "replace")
    return None
