"""Hand a rendered digest to the one send path (the pipeline), with the notifier's recipients and settings."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


async def adeliver_digest(
    notifier: Any, subject: str, text: str, html: str, *, seed: str, origin: Mapping[str, Any]
) -> str:
    """Compose → screen → protect → archive → deliver, as the notifier would; returns the Message-ID."""
    from airflow_secure_mail.hooks.smtp import SecureSmtpHook
    from airflow_secure_mail.mail.compose import MailRequest
    from airflow_secure_mail.operators.email import _as_tuple
    from airflow_secure_mail.pipeline import asend_mail

    hook = SecureSmtpHook(conn_id=notifier.conn_id)
    request = MailRequest(
        sender=hook.sender(notifier.sender),
        to=_as_tuple(notifier.to),
        cc=_as_tuple(notifier.cc),
        bcc=_as_tuple(notifier.bcc),
        subject=subject,
        text=text,
        html=html,
        id_seed=seed,
    )
    result = await asend_mail(
        request,
        hook=hook,
        policy=notifier.policy,
        protection=notifier.protection,
        archive=notifier.archive,
        origin=origin,
    )
    return str(result.receipts[0].message_id if result.receipts else "")
