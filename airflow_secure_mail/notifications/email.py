"""SecureEmailNotifier: task and DAG callbacks (failure, retry, success) through the secure pipeline."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseNotifier

from airflow_secure_mail.alerts.fields import (  # alert_fields: its home since issue 20; re-exported for one release
    DAG_RUN,
    DEADLINE,
    HITL,
    alert_fields,
    callback_scope,
    deadline_fields,
    hitl_fields,
    run_fields,
)
from airflow_secure_mail.errors import ConfigurationError

log = logging.getLogger(__name__)

if TYPE_CHECKING:
    from airflow_secure_mail.alerts.digest import AlertDigest
    from airflow_secure_mail.mail.screen import MailPolicy
    from airflow_secure_mail.pipeline.result import MailResult

_TEMPLATES = Path(__file__).with_name("templates")


def _env() -> Any:
    import jinja2

    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(_TEMPLATES)),
        autoescape=jinja2.select_autoescape(["html.j2", "html"], default_for_string=False),
        keep_trailing_newline=True,
    )


def render_alert(context: Mapping[str, Any]) -> tuple[str, str, str]:
    """Default (subject, text, html) for a callback context; autoescaped HTML.

    A task's callback gets the task alert; a DAG run's (``on_failure_callback=`` on the DAG) its own mail: the
    run, its state, the reason in words, the task the context names and a link to the run. Subjects are ASCII
    (`` - `` between the parts), so no encoded word can put a space into them where the header is folded.
    """
    env = _env()
    scope = callback_scope(context)
    if scope == DEADLINE:
        fields = deadline_fields(context)
        subject = f"[Airflow] DEADLINE MISSED {fields['dag_id']} - {fields['run_id']}"
        name = "deadline"
    elif scope == HITL:
        fields = hitl_fields(context)
        subject = f"[Airflow] INPUT REQUIRED {fields['dag_id']}.{fields['task_id']}: {fields['subject']}"
        name = "hitl"
    elif scope == DAG_RUN:
        fields = run_fields(context)
        subject = f"[Airflow] {fields['status']} {fields['dag_id']} - {fields['run_id']}"
        name = "run_alert"
    else:
        fields = alert_fields(context)
        subject = f"[Airflow] {fields['status']} {fields['dag_id']}.{fields['task_id']} - {fields['run_id']}"
        name = "alert"
    return (
        subject,
        env.get_template(f"{name}.txt.j2").render(**fields),
        env.get_template(f"{name}.html.j2").render(**fields),
    )


@dataclass(frozen=True)
class AlertMail:
    """One callback's mail: what it says, the seed of its retry-stable Message-ID, its archive origin, its name."""

    subject: str
    text: str | None
    html: str | None
    seed: str | None
    origin: dict[str, Any]
    what: str


def alert_mail(context: Mapping[str, Any], *, subject: str | None, text: str | None, html: str | None) -> AlertMail:
    """The notifier's whole reading of a callback context: the default alert fills what was not given.

    A DAG run's mail has its own seed and origin (the run, no task), so it never shares the Message-ID of the
    task alert the same failure sent, and the archive files it under the run.
    """
    from airflow_secure_mail.pipeline.send import identity_seed, origin_of

    if subject is None or (html is None and text is None):
        default_subject, default_text, default_html = render_alert(context)
        subject = subject or default_subject
        if html is None and text is None:
            text, html = default_text, default_html
    scope = callback_scope(context)
    if scope == DEADLINE:  # the deadline id alone: every (re-)run renders the same mail from the stored context
        fields = deadline_fields(context)
        origin: dict[str, Any] = {"dag_id": fields["dag_id"], "run_id": fields["run_id"]}
        seed = f"deadline|{fields['deadline_id']}"
        return AlertMail(subject, text, html, seed, origin, f"missed deadline {fields['deadline_id']}")
    if scope == DAG_RUN:
        fields = run_fields(context)
        seed = f"{fields['dag_id']}|(run)|{fields['run_id']}|-1|notify-run|{fields['reason']}"
        origin = {"dag_id": fields["dag_id"], "run_id": fields["run_id"]}
        return AlertMail(subject, text, html, seed, origin, f"DAG run {fields['dag_id']} {fields['run_id']}")
    task_seed = identity_seed(context)
    ti = context.get("ti") or context.get("task_instance")
    if task_seed is not None and ti is not None:
        kind = "hitl" if scope == HITL else "notify"
        task_seed = f"{task_seed}|{kind}|{getattr(ti, 'try_number', '')}"
    fields = alert_fields(context)
    return AlertMail(subject, text, html, task_seed, origin_of(context), f"{fields['dag_id']}.{fields['task_id']}")


_ARCHIVE_KWARGS = ("archive_conn_id", "archive_transit_key", "archive_vault_conn_id")


def _archive(archive: Any, conn_id: str | None, transit_key: str | None, vault_conn_id: str | None) -> Any:
    """``archive=`` as given, or a MailArchive built from JSON-safe references (a Deadline Alert's kwargs)."""
    if conn_id is None and transit_key is None and vault_conn_id is None:
        return archive
    if not isinstance(archive, str):
        raise ConfigurationError(
            "archive_conn_id/archive_transit_key/archive_vault_conn_id need archive= as a location "
            "(s3://bucket/prefix or file:///path), not a MailArchive object: give its settings there."
        )
    from airflow_secure_mail.archive.store import MailArchive

    return MailArchive(archive, conn_id, transit_key, vault_conn_id or "vault_default")


def check_callback_kwargs(kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """Refuse, when the DAG is parsed, what a Deadline Alert could not store or must not store.

    The kwargs go into the metadata database (the callback row) and the triggerer prints them when the
    callback fails: only JSON values (connection ids, a location, a key *name*), never an object or a secret.
    """
    import json

    if "context" in kwargs:
        raise ConfigurationError("deadline callback kwargs: 'context' is Airflow's own (it passes the deadline's).")
    for name, value in kwargs.items():
        try:
            json.dumps(value)
        except (TypeError, ValueError):
            raise ConfigurationError(
                f"deadline callback kwarg {name}={type(value).__name__}: a Deadline Alert stores its kwargs as "
                "JSON in the metadata database; give a reference instead (archive='s3://...' with "
                "archive_conn_id=/archive_transit_key=, policy as a connection's policy extra)."
            ) from None
    unknown = set(kwargs) - set(_DEADLINE_KWARGS)
    if unknown:
        raise ConfigurationError(
            f"deadline callback kwargs {sorted(unknown)} are not SecureEmailNotifier's; allowed: "
            f"{', '.join(_DEADLINE_KWARGS)}."
        )
    return dict(kwargs)


_DEADLINE_KWARGS = (
    "to", "cc", "bcc", "subject", "html_content", "text_content", "sender", "conn_id", "archive", *_ARCHIVE_KWARGS,
)  # fmt: skip


def _responders(value: Any) -> dict[str, str]:
    """``responder_addresses=`` or ``[secure_mail] hitl_responders`` (JSON): Airflow user id -> mail address."""
    if value is None:
        try:
            from airflow.sdk.configuration import conf

            raw = conf.get("secure_mail", "hitl_responders", fallback=None)
        except Exception:  # pragma: no cover - outside a configured Airflow
            raw = None
        if not raw:
            return {}
        import json

        try:
            value = json.loads(raw)
        except ValueError:
            raise ConfigurationError(
                '[secure_mail] hitl_responders must be a JSON object of user id -> address: {"alice": "a@x.org"}.'
            ) from None
    if not isinstance(value, Mapping) or not all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
        raise ConfigurationError('responder addresses must map Airflow user ids to addresses: {"alice": "a@x.org"}.')
    return dict(value)


class SecureEmailNotifier(BaseNotifier):
    """Mail for ``on_failure_callback`` / ``on_retry_callback`` / ``on_success_callback`` (task or DAG), Deadline
    Alerts and human-in-the-loop requests.

    Without ``subject``/``html_content`` it sends the default alert: a scannable subject and a text + HTML
    body with DAG, task, run, logical date, try, the redacted first line of the error, host and log link.
    On the DAG (``DAG(on_failure_callback=...)``) it sends a DAG-run mail instead: "[Airflow] DAG run FAILED
    <dag> - <run>" with the run, its state, the reason in words, the task Airflow named and a link to the run;
    so the same notifier on the DAG and on its tasks sends one task alert and one distinct run mail.

    As a Deadline Alert callback (:meth:`deadline_callback`, or ``AsyncCallback(SecureEmailNotifier,
    kwargs={...})`` in the triggerer, ``SyncCallback`` in the executor) it sends "[Airflow] DEADLINE MISSED
    <dag> - <run>" whose Message-ID is seeded by the deadline id: a triggerer restart that runs the callback
    again sends nothing twice (with ``archive=``, the archive answers "already sent").
    In ``notifiers=[...]`` of a HITL operator it sends "[Airflow] INPUT REQUIRED <dag>.<task>: <subject>" with
    the body, the options and the link to the required-action page, to ``to`` and, when mapped by
    ``responder_addresses`` (or ``[secure_mail] hitl_responders``), to the assigned users.
    Every mail it sends (and every digest) carries ``Auto-Submitted: auto-generated`` and
    ``X-Auto-Response-Suppress: All`` (RFC 3834), so no out-of-office reply loops back.
    Its log says where each alert went ("alert mail sent to N recipient(s)", or which digest it was folded
    into and when that digest goes out).
    """

    template_fields = ("to", "cc", "bcc", "subject", "html_content", "text_content")

    def __init__(
        self,
        *,
        to: str | Sequence[str],
        cc: str | Sequence[str] | None = None,
        bcc: str | Sequence[str] | None = None,
        subject: str | None = None,
        html_content: str | None = None,
        text_content: str | None = None,
        sender: str | None = None,
        conn_id: str = "secure_smtp_default",
        policy: MailPolicy | None = None,
        protection: Any = None,
        archive: Any = None,
        digest: AlertDigest | None = None,
        archive_conn_id: str | None = None,
        archive_transit_key: str | None = None,
        archive_vault_conn_id: str | None = None,
        responder_addresses: Mapping[str, str] | None = None,
        context: Any = None,
        priority: str = "alert",
    ) -> None:
        # ``context``: Airflow's Deadline Alert runners pass it to a callable that accepts it (the triggerer's
        # ``await SecureEmailNotifier(**kwargs, context=...)`` would otherwise run on an empty context).
        super().__init__(context=context)
        self.to = to
        self.cc = cc
        self.bcc = bcc
        self.subject = subject
        self.html_content = html_content
        self.text_content = text_content
        self.sender = sender
        self.conn_id = conn_id
        self.policy = policy
        self.protection = protection
        self.archive = _archive(archive, archive_conn_id, archive_transit_key, archive_vault_conn_id)
        self.digest = digest
        self.responder_addresses = responder_addresses
        self.priority = priority  # alerts and digests go first in the relay budget; "bulk" to queue behind

    @classmethod
    def deadline_callback(cls, *, executor: bool | str = False, **kwargs: Any) -> Any:
        """The Deadline Alert callback of a notifier with these kwargs, checked when the DAG is parsed.

        ``AsyncCallback`` (the triggerer, recommended) by default; ``executor=True`` (or an executor's name) for
        a ``SyncCallback``. Kwargs are JSON references only (see :func:`check_callback_kwargs`)::

            DeadlineAlert(reference=DeadlineReference.DAGRUN_QUEUED_AT, interval=timedelta(minutes=30),
                          callback=SecureEmailNotifier.deadline_callback(to="oncall@example.com",
                              archive="s3://mail-archive/airflow", archive_conn_id="aws_archive"))
        """
        from airflow.sdk import AsyncCallback, SyncCallback  # type: ignore[attr-defined]

        checked = check_callback_kwargs(kwargs)
        cls(**checked)  # the constructor's own checks (the archive's settings) fail here too, not at the deadline
        if executor:
            return SyncCallback(cls, kwargs=checked, executor=executor if isinstance(executor, str) else None)
        return AsyncCallback(cls, kwargs=checked)

    def get_template_env(self, dag: Any = None) -> Any:
        """Sandboxed Jinja; also when ``dag`` is a SerializedDAG (DAG callbacks under ``dags test``,
        apache/airflow#64649), which has no template environment of its own."""
        if dag is not None and not hasattr(dag, "get_template_env"):
            dag = None
        return super().get_template_env(dag=dag)

    def _content(self, context: Mapping[str, Any]) -> tuple[str, str | None, str | None, str | None]:
        """Subject, text, HTML (the default alert fills what was not given) and the retry-stable id seed."""
        mail = alert_mail(context, subject=self.subject, text=self.text_content, html=self.html_content)
        return mail.subject, mail.text, mail.html, mail.seed

    def responders(self, context: Mapping[str, Any]) -> list[str]:
        """The addresses of a HITL request's assigned users that ``responder_addresses`` maps; others are logged."""
        task = context.get("task")
        assigned = [u for u in (getattr(task, "assigned_users", None) or []) if isinstance(u, Mapping)]
        if not assigned:
            return []
        mapping = _responders(self.responder_addresses)
        found: list[str] = []
        missing: list[str] = []
        for user in assigned:
            address = mapping.get(str(user.get("id"))) or mapping.get(str(user.get("name")))
            (found if address else missing).append(address or str(user.get("id")))
        if missing and mapping:
            log.warning("HITL request: no address for assigned user(s) %s in responder_addresses", ", ".join(missing))
        return found

    async def asend(
        self,
        subject: str,
        text: str | None,
        html: str | None,
        *,
        seed: str | None,
        origin: Mapping[str, Any],
        extra_to: Sequence[str] = (),
    ) -> MailResult:
        """Send through the pipeline to this notifier's recipients with its policy, protection and archive.

        Every such mail is automated (alerts, digests, deadline and HITL requests): RFC 3834's headers go on it.
        """
        from airflow_secure_mail.mail.compose import address_list
        from airflow_secure_mail.pipeline.channel import MailChannel, request_for
        from airflow_secure_mail.pipeline.send import asend_mail

        channel = MailChannel.for_conn(self.conn_id)
        to = [*address_list(self.to), *(a for a in extra_to if a not in address_list(self.to))]
        request = request_for(
            channel, sender=self.sender, to=to, cc=self.cc, bcc=self.bcc, subject=subject, text=text, html=html,
            id_seed=seed, automated=True,
        )  # fmt: skip
        count = len(request.to) + len(request.cc) + len(request.bcc)
        log.info("SecureEmailNotifier: sending %r to %d recipient(s)", request.subject, count)
        return await asend_mail(
            request,
            channel=channel,
            policy=self.policy,
            protection=self.protection,
            archive=self.archive,
            origin=origin,
            priority=self.priority,
        )

    async def async_notify(self, context: Any) -> None:
        scope = callback_scope(context)
        if self.digest is not None and scope in (DEADLINE, HITL):
            log.info("a %s mail is never folded into a digest: sending it now", scope)
        elif self.digest is not None:  # fold into digests (airflow_secure_mail.alerts)
            from airflow_secure_mail.alerts.callback import anotify

            await anotify(self.digest, self, context)
            return
        mail = alert_mail(context, subject=self.subject, text=self.text_content, html=self.html_content)
        extra = self.responders(context) if scope == HITL else []
        result = await self.asend(
            mail.subject, mail.text, mail.html, seed=mail.seed, origin=mail.origin, extra_to=extra
        )
        accepted = len({a for r in result.receipts for a in r.accepted})
        if result.already_sent and result.already_sent >= len(result.receipts):  # the receipts are the stored ones
            log.info("alert mail for %s was already sent (the archive has it): not sent again", mail.what)
        elif result.receipts:
            ids = ", ".join(str(r.message_id) for r in result.receipts)
            log.info("alert mail sent to %d recipient(s) for %s (%s)", accepted, mail.what, ids)

    def notify(self, context: Any) -> None:
        from airflow_secure_mail._sync import run_sync

        run_sync(self.async_notify(context))
