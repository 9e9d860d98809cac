"""SpamAssassin's SPAMC/SPAMD protocol (spamd/PROTOCOL): one request per connection, HTTP-like.

Request: ``<VERB> SPAMC/1.5``, headers (``Content-length``), a blank line, the message. Reply: ``SPAMD/1.1 <code>
<text>``, headers (``Spam: True ; 7.1 / 5.0``, ``Content-length``), a blank line, a body (``REPORT``: the text
report, ``SYMBOLS``: rule names). A small client rather than ``aiospamc`` (it pins typer<0.17, which would
downgrade Airflow's fastapi-cli, and pulls loguru). Every read is bounded; every server string that leaves here
passes through ``printable``.
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from airflow_secure_mail.errors import ConfigurationError
from airflow_secure_mail.scanning.clamd_wire import printable

MAX_REPLY_BYTES = 256 * 1024
"""A REPORT is a few KiB (a preview of the message and one line per rule hit); more is not spamd."""
_MAX_HEAD_LINE = 1024
_STATUS = re.compile(r"^SPAMD/(\d+\.\d+) (\d+) (.*)$")
_SPAM = re.compile(r"^(True|False|Yes|No) ; (-?\d+(?:\.\d+)?) / (-?\d+(?:\.\d+)?)$", re.IGNORECASE)
_REPORT_RULE = re.compile(r"^\s*(-?\d+(?:\.\d+)?)\s+([A-Za-z0-9_]+)(?:\s|$)")


class SpamdUnavailable(Exception):
    """spamd gave no usable answer (down, timeout, protocol error); the message says why, never content."""


@dataclass(frozen=True)
class SpamdReply:
    """One reply: status code and text, headers (lower-case names) and the body."""

    code: int
    text: str
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""

    def spam_header(self, address: str) -> tuple[float, float]:
        """``(score, required)`` from the ``Spam:`` header; its absence is a protocol error."""
        raw = self.headers.get("spam")
        found = _SPAM.match(raw.strip()) if raw is not None else None
        if found is None:
            shown = printable(raw, 80) if raw is not None else "none"
            raise SpamdUnavailable(f"spamd at {address} sent no score (Spam header: {shown!r})")
        return float(found.group(2)), float(found.group(3))


def report_rules(body: bytes) -> list[tuple[str, float]]:
    """``(rule, points)`` from a REPORT body: the rows under the ``---- ----`` rule of its points table.

    Only the table is read (the preview above it quotes the message); a custom report template without the
    table gives no rules, never a guess.
    """
    text = body.decode("utf-8", "replace")
    _, separator, table = text.partition("\n---- ")
    if not separator:
        return []
    rules = []
    for line in table.splitlines()[1:]:
        found = _REPORT_RULE.match(line)
        if found:
            rules.append((printable(found.group(2), 60), float(found.group(1))))
    return rules


async def request(
    target: tuple[str, str | int],
    address: str,
    timeout: float,
    verb: str,
    payload: bytes | None = None,
    *,
    max_reply: int = MAX_REPLY_BYTES,
) -> SpamdReply:
    """Send one ``verb`` (with ``payload`` as the message) and read the reply, all within ``timeout``."""
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await _connect(target)
            try:
                head = f"{verb} SPAMC/1.5\r\n".encode("ascii")
                if payload is not None:
                    head += f"Content-length: {len(payload)}\r\n".encode("ascii")
                writer.write(head + b"\r\n" + (payload or b""))
                await writer.drain()
                if writer.can_write_eof():
                    writer.write_eof()
                return await _read_reply(reader, address, max_reply)
            finally:
                writer.close()
    except TimeoutError:
        raise SpamdUnavailable(f"spamd at {address} did not answer within {timeout:g}s") from None
    except (OSError, ValueError, asyncio.IncompleteReadError) as exc:  # ValueError: a line over the limit
        raise SpamdUnavailable(f"spamd at {address} is unreachable or hung up ({type(exc).__name__})") from None


async def _connect(target: tuple[str, str | int]) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    kind, where = target
    if kind == "unix":
        return await asyncio.open_unix_connection(str(where), limit=_MAX_HEAD_LINE * 4)
    host, _, port = str(where).rpartition(":")
    return await asyncio.open_connection(host.strip("[]"), int(port), limit=_MAX_HEAD_LINE * 4)


async def _read_reply(reader: asyncio.StreamReader, address: str, max_reply: int) -> SpamdReply:
    status = (await reader.readline()).decode("latin-1").rstrip("\r\n")
    found = _STATUS.match(status)
    if found is None:
        shown = printable(status, 80)
        raise SpamdUnavailable(f"spamd at {address} answered {shown!r}, not a SPAMD/1.x reply" if status
                               else f"spamd at {address} closed the connection without a reply")  # fmt: skip
    code, text = int(found.group(2)), printable(found.group(3), 120)
    headers: dict[str, str] = {}
    while True:
        line = (await reader.readline()).decode("latin-1").rstrip("\r\n")
        if not line:
            break
        if len(headers) >= 32:
            raise SpamdUnavailable(f"spamd at {address} sent too many header lines")
        name, colon, value = line.partition(":")
        if not colon:
            raise SpamdUnavailable(f"spamd at {address} sent a malformed header line {printable(line, 60)!r}")
        headers[name.strip().lower()] = value.strip()
    if code != 0:
        raise SpamdUnavailable(f"spamd at {address} refused the request: {code} {text}")
    length = headers.get("content-length")
    if length is None:
        body = await reader.read(max_reply + 1)
    elif not length.isdigit() or int(length) > max_reply:
        raise SpamdUnavailable(f"spamd at {address} announced a reply of {printable(length, 20)} bytes, "
                               f"over the {max_reply}-byte limit")  # fmt: skip
    else:
        body = await reader.readexactly(int(length))
    if len(body) > max_reply:
        raise SpamdUnavailable(f"spamd at {address} sent a reply over the {max_reply}-byte limit")
    return SpamdReply(code, text, headers, body)


def parse_address(address: str) -> tuple[str, str | int]:
    """``tcp://host:port`` or ``unix:///path`` as ``("tcp", "host:port")`` / ``("unix", path)``."""
    parts = urlsplit(address) if isinstance(address, str) else None
    if parts is not None and parts.scheme == "unix" and parts.path:
        return ("unix", parts.path)
    try:
        port = parts.port if parts is not None else None
    except ValueError:
        port = None
    if parts is not None and parts.scheme == "tcp" and parts.hostname and port:
        host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
        return ("tcp", f"{host}:{port}")
    raise ConfigurationError(
        f"SpamAssassinScanner address {address!r}: use tcp://host:783 or unix:///path/to/spamd.sock."
    )
