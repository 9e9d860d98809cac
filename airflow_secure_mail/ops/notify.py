"""A correction notice to the recipients of a time window's sent messages, through the normal pipeline.

One notice per (original message, recipient), each alone in ``To`` (a Bcc recipient is never shown to anyone),
``In-Reply-To``/``References`` the original Message-ID. Its Message-ID follows from the original record's key,
the recipient and the template's SHA-256: a second run finds every notice already archived as sent and sends
nothing again. Each notice is screened and archived like any send, its record's ``resend_of`` the original
Message-ID (as a restore's resend says it) and its origin ``{"incident_notice": true, "notice_of": <original
key>, "template_sha256": ...}``; notices are never themselves noticed.

The template is a Jinja2 file rendered in a sandbox with ``StrictUndefined``: first line ``Subject: ...``, a
blank line, then the text body. Variables: ``message_id``, ``sent_at``, ``dag_id``, ``task_id``, ``run_id``,
``recipient``. Every notice is rendered before the first is sent: a template error sends nothing.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from airflow_secure_mail.errors import ConfigurationError, SecureMailError
from airflow_secure_mail.mail.compose import MailRequest, compose_wire
from airflow_secure_mail.mail.outgoing import Outgoing
from airflow_secure_mail.ops.trace import NOTICE_MARK, TraceEvent, normal_domain

if TYPE_CHECKING:
    from airflow_secure_mail.archive.store import MailArchive
    from airflow_secure_mail.pipeline.channel import MailChannel

VARIABLES = ("message_id", "sent_at", "dag_id", "task_id", "run_id", "recipient")
"""What a notice template may use."""


@dataclass(frozen=True)
class NoticeTemplate:
    """A notice template (``Subject: ...``, a blank line, the body), compiled in a sandbox."""

    name: str
    sha256: str
    subject: Any
    body: Any

    @classmethod
    def from_file(cls, path: str | Path) -> NoticeTemplate:
        try:
            source = Path(path).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigurationError(f"--template {path}: cannot read it ({type(exc).__name__}).") from None
        return cls.from_text(source, name=str(path))

    @classmethod
    def from_text(cls, source: str, *, name: str = "template") -> NoticeTemplate:
        from jinja2 import StrictUndefined, TemplateSyntaxError
        from jinja2.sandbox import SandboxedEnvironment

        first, newline, rest = source.replace("\r\n", "\n").partition("\n")
        blank, _, body = rest.partition("\n")
        label, colon, subject = first.partition(":")
        if label.strip().lower() != "subject" or not colon or not newline or blank.strip():
            raise ConfigurationError(
                f"template {name}: write 'Subject: ...' on the first line, a blank line, then the body."
            )
        env = SandboxedEnvironment(undefined=StrictUndefined, autoescape=False, keep_trailing_newline=True)
        try:
            compiled_subject, compiled_body = env.from_string(subject.strip()), env.from_string(body)
        except TemplateSyntaxError as exc:
            line = exc.lineno + (0 if exc.source == subject.strip() else 2)
            raise ConfigurationError(f"template {name}, line {line}: {exc.message}.") from None
        digest = hashlib.sha256(source.encode()).hexdigest()
        return cls(name, digest, compiled_subject, compiled_body)

    def render(self, variables: dict[str, Any]) -> tuple[str, str]:
        """(subject, body) for one notice; an undefined variable or a sandbox refusal is a ConfigurationError."""
        from jinja2 import TemplateError

        try:
            subject, body = self.subject.render(variables), self.body.render(variables)
        except TemplateError as exc:
            raise ConfigurationError(
                f"template {self.name}: {exc.message or type(exc).__name__}; the variables are {', '.join(VARIABLES)}."
            ) from None
        if "\n" in subject or "\r" in subject:
            raise ConfigurationError(f"template {self.name}: the subject renders to more than one line.")
        return subject.strip(), body


@dataclass(frozen=True)
class Notice:
    """One notice: to one recipient of one original message."""

    original: TraceEvent
    recipient: str
    subject: str
    item: Outgoing
    key: str
    """The archive key the notice is recorded under."""
    origin: dict[str, Any]

    @property
    def message_id(self) -> str | None:
        return self.item.message_id


@dataclass(frozen=True)
class NoticeOutcome:
    notice: Notice
    status: str
    """``sent``, ``already_sent``, ``would_send`` (dry run) or ``failed``."""
    detail: str = ""


def plan_notices(
    events: Sequence[TraceEvent],
    template: NoticeTemplate,
    sender: str,
    *,
    recipient_domain: str | None = None,
    allow_special_use_domains: bool = False,
) -> list[Notice]:
    """Every notice the window's sent copies call for, rendered and composed (nothing is sent).

    Only copies the server accepted count (a partly refused copy's refused recipients never got it); with
    ``recipient_domain`` only recipients in that domain get a notice. Notices sent earlier are left out.
    """
    domain = normal_domain(recipient_domain.lstrip("@")) if recipient_domain else None
    notices: list[Notice] = []
    seen: set[tuple[str, str]] = set()
    for event in events:
        record = event.record
        if record is None or not event.delivered_to or record.meta.airflow.get(NOTICE_MARK):
            continue
        for recipient in event.delivered_to:
            if domain is not None and normal_domain(recipient.rpartition("@")[2]) != domain:
                continue
            if (record.key, recipient.lower()) in seen:
                continue
            seen.add((record.key, recipient.lower()))
            notices.append(_notice(event, recipient, template, sender, allow_special_use_domains))
    return notices


def _notice(event: TraceEvent, recipient: str, template: NoticeTemplate, sender: str, special: bool) -> Notice:
    from airflow_secure_mail.archive.record import record_key

    assert event.record is not None
    meta = event.record.meta
    variables = {
        "message_id": meta.message_id or "",
        "sent_at": meta.committed_at or meta.staged_at,
        "dag_id": meta.airflow.get("dag_id") or "",
        "task_id": meta.airflow.get("task_id") or "",
        "run_id": meta.airflow.get("run_id") or "",
        "recipient": recipient,
    }
    subject, body = template.render(variables)
    headers = (("In-Reply-To", meta.message_id), ("References", meta.message_id)) if meta.message_id else ()
    seed = f"incident-notice|{event.record.key}|{recipient.lower()}|{template.sha256}"
    request = MailRequest(sender=sender, to=(recipient,), subject=subject, text=body, headers=headers, id_seed=seed)
    composed = compose_wire(request, allow_special_use_domains=special)
    envelope = composed.envelope
    message_id = str(composed.message["Message-ID"])
    item = Outgoing(envelope.sender, envelope.recipients, composed.wire, message_id, resend_of=meta.message_id)
    origin = {NOTICE_MARK: True, "notice_of": event.record.key, "template_sha256": template.sha256}
    key = record_key(message_id, envelope.sender, envelope.recipients)
    return Notice(event, recipient, subject, item, key, origin)


async def asend_notices(
    notices: Sequence[Notice],
    *,
    channel: MailChannel,
    archive: MailArchive,
    dry_run: bool = False,
    on_outcome: Callable[[NoticeOutcome], None] | None = None,
) -> list[NoticeOutcome]:
    """Send each notice not yet archived as sent (each its own send: one failing never stops the others)."""
    from airflow_secure_mail.pipeline.send import asend_outgoing

    sealed = any(n.original.record is not None and n.original.record.meta.encryption for n in notices)
    if sealed and not archive.transit_key:
        raise ConfigurationError(
            f"{archive.location} is encrypted at rest: give --transit-key so the notices are archived sealed too."
        )
    outcomes = []
    for notice in notices:
        try:
            earlier = archive.lookup(notice.key)
            if earlier is not None and earlier.delivered:
                outcome = NoticeOutcome(notice, "already_sent", earlier.prefix)
            elif dry_run:
                outcome = NoticeOutcome(notice, "would_send")
            else:
                result = await asend_outgoing([notice.item], channel=channel, archive=archive, origin=notice.origin)
                status = "already_sent" if result.already_sent else "sent"
                outcome = NoticeOutcome(notice, status, ", ".join(result.archive_keys))
        except SecureMailError as exc:
            outcome = NoticeOutcome(notice, "failed", " ".join(str(exc).split()))
        outcomes.append(outcome)
        if on_outcome is not None:
            on_outcome(outcome)
    return outcomes


__all__ = ["VARIABLES", "Notice", "NoticeOutcome", "NoticeTemplate", "asend_notices", "plan_notices"]
