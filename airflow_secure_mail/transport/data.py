"""MAIL, RCPT and a streamed DATA for large messages: aiosmtplib's ``sendmail`` holds the message three times
over (line endings normalized, dots stuffed, terminator appended) plus the TLS write buffer; this writes it in
slices of whole lines, each stuffed on its own, waiting while the transport's buffer is full.

Small messages take ``sendmail`` unchanged. Only public aiosmtplib calls are used (``mail``, ``rcpt``,
``execute_command``, ``protocol.write``, ``protocol.read_response``, ``rset``).
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import aiosmtplib

STREAM_MIN = 1 << 20
"""Messages at least this large are streamed."""
_SLICE = 1 << 20
_BUFFER_HIGH = 4 << 20
_DOT_LINE = re.compile(rb"(?m)^\.")


async def send_message(
    smtp: aiosmtplib.SMTP, sender: str, recipients: Sequence[str], data: bytes
) -> tuple[dict[str, aiosmtplib.SMTPResponse], str]:
    """Like ``smtp.sendmail``: (refused recipients, the final reply); SMTPRecipientsRefused if all are refused."""
    if len(data) < STREAM_MIN or not _crlf_only(data):
        return await smtp.sendmail(sender, list(recipients), data)
    import aiosmtplib

    options = [f"size={len(data)}"] if smtp.supports_extension("size") else []
    try:
        await smtp.mail(sender, options=options)
        refused: dict[str, aiosmtplib.SMTPResponse] = {}
        for rcpt in recipients:
            try:
                await smtp.rcpt(rcpt)
            except aiosmtplib.SMTPRecipientRefused as exc:
                refused[rcpt] = aiosmtplib.SMTPResponse(exc.code, exc.message)
        if len(refused) == len(recipients):
            raise aiosmtplib.SMTPRecipientsRefused(
                [aiosmtplib.SMTPRecipientRefused(r.code, r.message, rcpt) for rcpt, r in refused.items()]
            )
        reply = await _stream_data(smtp, data)
    except (aiosmtplib.SMTPResponseException, aiosmtplib.SMTPRecipientsRefused):
        with contextlib.suppress(ConnectionError, aiosmtplib.SMTPResponseException):
            await smtp.rset()
        raise
    return refused, reply.message


async def _stream_data(smtp: aiosmtplib.SMTP, data: bytes) -> aiosmtplib.SMTPResponse:
    import aiosmtplib

    start = await smtp.execute_command(b"DATA")
    if start.code != 354:
        raise aiosmtplib.SMTPDataError(start.code, start.message)
    protocol = smtp.protocol
    transport = smtp.transport
    assert protocol is not None and transport is not None
    for piece in _stuffed_slices(data):
        protocol.write(piece)
        while transport.get_write_buffer_size() > _BUFFER_HIGH:  # type: ignore[attr-defined]
            await asyncio.sleep(0.002)
    protocol.write(b".\r\n")
    response = await protocol.read_response(timeout=smtp.timeout)
    if response.code != 250:
        raise aiosmtplib.SMTPDataError(response.code, response.message)
    return response


def _stuffed_slices(data: bytes) -> Iterator[bytes]:
    """Slices of whole lines, each with a leading dot doubled (RFC 5321 §4.5.2); ends with CRLF."""
    pos = 0
    while pos < len(data):
        end = data.find(b"\n", min(pos + _SLICE, len(data)) - 1)
        end = len(data) if end < 0 else end + 1
        yield _DOT_LINE.sub(b"..", data[pos:end])
        pos = end
    if not data.endswith(b"\r\n"):
        yield b"\r\n"


def _crlf_only(data: bytes) -> bool:
    """Every line ending is CRLF (what ``policy.SMTP`` writes), so the SIZE we announce is exact."""
    crlf = data.count(b"\r\n")
    return data.count(b"\n") == crlf and data.count(b"\r") == crlf
