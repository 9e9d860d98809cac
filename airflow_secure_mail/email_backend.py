"""``[email] email_backend = airflow_secure_mail.email_backend.send_email``: legacy ``email_on_failure`` mail
through the secure path. Set ``[email] email_conn_id = secure_smtp_default`` (``smtp_default`` maps to it)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

_DEFAULT = "secure_smtp_default"


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
    from airflow_secure_mail.pipeline.attachments import load_attachments
    from airflow_secure_mail.pipeline.channel import MailChannel, request_for
    from airflow_secure_mail.pipeline.send import send_mail

    channel = MailChannel.for_conn(_DEFAULT if conn_id in (None, "smtp_default") else conn_id)
    request = request_for(
        channel,
        sender=from_email,
        to=to,
        cc=cc,
        bcc=bcc,
        subject=subject,
        html=html_content,
        attachments=load_attachments(files),
        headers=custom_headers,
        automated=True,  # email_on_failure / email_on_retry: mail no human wrote (RFC 3834)
    )
    send_mail(request, channel=channel, dry_run=dryrun, priority="alert")  # Airflow's own mail: failure notices
