"""``[email] email_backend = airflow_secure_mail.email_backend.send_email``: legacy ``email_on_failure`` mail
through the secure path. Set ``[email] email_conn_id = secure_smtp_default`` (``smtp_default`` maps to it)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

_DEFAULT = "secure_smtp_default"


def _listify(value: str | Iterable[str] | None) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        return tuple(p.strip() for p in value.replace(";", ",").split(",") if p.strip())
    return tuple(value)


def send_email(
    to: str | Iterable[str],
    subject: str,
    html_content: str,
    files: list[str] | None = None,
    dryrun: bool = False,
    cc: str | Iterable[str] | None = None,
    bcc: str | Iterable[str] | None = None,
    mime_subtype: str = "mixed",
    mime_charset: str = "utf-8",
    conn_id: str | None = None,
    from_email: str | None = None,
    custom_headers: dict[str, Any] | None = None,
    **kwargs: Any,
) -> None:
    """Same signature as Airflow's ``send_email_smtp``; compose, screen and deliver via the pipeline."""
    from airflow_secure_mail.hooks.smtp import SecureSmtpHook
    from airflow_secure_mail.mail.compose import MailRequest
    from airflow_secure_mail.pipeline import send_mail
    from airflow_secure_mail.sources import load_attachments

    hook = SecureSmtpHook(conn_id=_DEFAULT if conn_id in (None, "smtp_default") else conn_id)
    request = MailRequest(
        sender=hook.sender(from_email),
        to=_listify(to),
        cc=_listify(cc),
        bcc=_listify(bcc),
        subject=subject,
        html=html_content,
        attachments=load_attachments(files),
        headers=tuple((custom_headers or {}).items()),
    )
    send_mail(request, hook=hook, dry_run=dryrun)
