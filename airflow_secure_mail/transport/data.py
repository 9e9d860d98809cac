"""DATA streamed for large messages: aiosmtplib's ``data`` holds the message three times over (line endings
normalized, dots stuffed, terminator appended) plus the TLS write buffer; this writes it in slices of whole
lines, each stuffed on its own, waiting while the transport's buffer is full.

Small messages take ``smtp.data`` unchanged. Only public aiosmtplib calls are used (``execute_command``,
``protocol.write``, ``protocol.read_response``).
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import aiosmtplib

STREAM_MIN = 1 << 20
"""Messages at least this large are streamed."""
_SLICE = 1 << 20
_BUFFER_HIGH = 4 << 20
_DOT_LINE = re.compile(rb"(?m)^\.")


async def send_data(smtp: aiosmtplib.SMTP, data: bytes) -> aiosmtplib.SMTPResponse:
    """DATA with the exact bytes: ``smtp.data`` for small messages, streamed slices for large ones."""
    if len(data) < STREAM_MIN or not _crlf_only(data):
        return await smtp.data(data)
    return await _stream_data(smtp, data)


async def _stream_data(smtp: aiosmtplib.SMTP, data: bytes) -> aiosmtplib.SMTPResponse:
    import aiosmtplib

    start = await smtp.execute_command(b"DATA")
    if start.code != 354:
        raise aiosmtplib.SMTPDataError(start.code, start.message)
    protocol = smtp.protocol
    transport = smtp.transport
    assert protocol is not None and transport is not None
    try:
        for piece in _stuffed_slices(data):
            protocol.write(piece)
            while transport.get_write_buffer_size() > _BUFFER_HIGH:  # type: ignore[attr-defined]
                await asyncio.sleep(0.002)
        protocol.write(b".\r\n")
        response = await protocol.read_response(timeout=smtp.timeout)
    except (aiosmtplib.SMTPServerDisconnected, aiosmtplib.SMTPTimeoutError):
        smtp.close()  # as aiosmtplib's data() does: a session cut inside DATA can carry no further command
        raise
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
