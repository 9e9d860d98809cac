"""One mail transaction on an open session: MAIL, RCPT each, DATA with the exact bytes."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from airflow_secure_mail.errors import DeliveryError, detached
from airflow_secure_mail.transport.data import send_data
from airflow_secure_mail.transport.replies import lost_error, recipients_error, reply_error

if TYPE_CHECKING:
    import aiosmtplib

Refused = dict[str, tuple[int, str]]


async def transact(
    smtp: aiosmtplib.SMTP, where: str, sender: str, recipients: Sequence[str], data: bytes
) -> tuple[Refused, str]:
    """The refused recipients and the server's final reply; a whole-message failure is raised.

    Run command by command (not ``sendmail``) so a failure knows its stage: throttling is named
    with it, and only a connection lost after DATA started may have delivered the message.
    """
    import aiosmtplib

    stage = "MAIL"
    error: DeliveryError
    try:
        await smtp.mail(sender, options=[f"SIZE={len(data)}"] if smtp.supports_extension("size") else [])
        stage = "RCPT"
        refused = await _recipients(smtp, where, recipients)
        stage = "DATA"
        return refused, (await send_data(smtp, data)).message
    except DeliveryError as exc:
        error = exc
    except aiosmtplib.SMTPResponseException as exc:
        error = reply_error(where, stage, exc.code, exc.message)
    except (aiosmtplib.SMTPServerDisconnected, aiosmtplib.SMTPTimeoutError, ConnectionError) as exc:
        error = lost_error(where, stage, exc)
    await _reset(smtp)
    raise detached(error)


async def _recipients(smtp: aiosmtplib.SMTP, where: str, recipients: Sequence[str]) -> Refused:
    """RCPT each; the refused ones with their replies. Raises when none is left to send to."""
    import aiosmtplib

    refused: Refused = {}
    for rcpt in recipients:
        try:
            await smtp.rcpt(rcpt)
        except aiosmtplib.SMTPRecipientRefused as exc:
            if not smtp.is_connected:  # 421: the server closed the session, the rest cannot be sent
                raise reply_error(where, "RCPT", exc.code, exc.message) from None
            refused[rcpt] = (exc.code, exc.message)
    if len(refused) == len(recipients):
        raise recipients_error(refused)
    return refused


async def _reset(smtp: aiosmtplib.SMTP) -> None:
    """RSET after a refusal so the session can carry the next message; a session that fails it is closed."""
    if smtp.is_connected:
        try:
            await smtp.rset()
        except Exception:
            smtp.close()
