"""clamd's wire protocol (``man clamd``): one NUL-terminated command per connection; INSTREAM sends the
payload as chunks each after its 4-byte big-endian length, ended by a zero length; the reply is one line.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import struct
from typing import Any
from urllib.parse import urlsplit

from airflow_secure_mail.errors import ConfigurationError

log = logging.getLogger(__name__)

_CHUNK = 64 * 1024


class ScanUnavailable(Exception):
    """A part could not be judged; the message says why (addresses and sizes only, never content)."""


async def exchange(
    target: tuple[str, str | int], address: str, timeout: float, command: bytes, payload: bytes | None = None
) -> str:
    """One command on a fresh connection (clamd serves one INSTREAM per connection), bounded by ``timeout``.

    The reply is read while the payload is still being sent: clamd answers a stream over its
    ``StreamMaxLength`` at once and hangs up, and that reply must not be lost to the broken pipe.
    """
    loop = asyncio.get_running_loop()
    try:
        async with asyncio.timeout(timeout):
            with await _connect(loop, target) as sock:
                reply = asyncio.ensure_future(_read_reply(loop, sock))
                try:
                    await loop.sock_sendall(sock, b"z" + command + b"\0")
                    if payload is not None:
                        await _stream(loop, sock, payload)
                except (BrokenPipeError, ConnectionResetError):
                    log.debug("clamd closed the stream early; reading its reply")
                except BaseException:
                    reply.cancel()
                    raise
                raw = await reply
    except TimeoutError:
        raise ScanUnavailable(f"clamd at {address} did not answer within {timeout:g}s") from None
    except OSError as exc:
        raise ScanUnavailable(f"clamd at {address} is unreachable ({type(exc).__name__})") from None
    text = raw.rstrip(b"\0").decode("utf-8", "replace").strip()
    if not text:
        raise ScanUnavailable(f"clamd at {address} closed the connection without a reply")
    return text


async def _connect(loop: asyncio.AbstractEventLoop, target: tuple[str, str | int]) -> socket.socket:
    kind, where = target
    address: Any = where
    if kind == "unix":
        family = socket.AF_UNIX
    else:
        host, _, port = str(where).rpartition(":")
        info = await loop.getaddrinfo(host.strip("[]"), int(port), type=socket.SOCK_STREAM)
        family, address = info[0][0], info[0][4]
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setblocking(False)
    try:
        await loop.sock_connect(sock, address)
    except BaseException:
        sock.close()
        raise
    return sock


async def _stream(loop: asyncio.AbstractEventLoop, sock: socket.socket, payload: bytes) -> None:
    """INSTREAM framing: each chunk after its 4-byte big-endian length, then a zero length."""
    for start in range(0, len(payload), _CHUNK):
        chunk = payload[start : start + _CHUNK]
        await loop.sock_sendall(sock, struct.pack("!L", len(chunk)) + chunk)
    await loop.sock_sendall(sock, struct.pack("!L", 0))


async def _read_reply(loop: asyncio.AbstractEventLoop, sock: socket.socket) -> bytes:
    """Bytes up to clamd's NUL terminator (or whatever came before it hung up)."""
    received = b""
    while b"\0" not in received and len(received) < 4096:
        try:
            data = await loop.sock_recv(sock, 4096)
        except ConnectionResetError:
            break
        if not data:
            break
        received += data
    return received


def parse_address(address: str) -> tuple[str, str | int]:
    parts = urlsplit(address)
    if parts.scheme == "unix" and parts.path:
        return ("unix", parts.path)
    if parts.scheme == "tcp" and parts.hostname and parts.port:
        host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
        return ("tcp", f"{host}:{parts.port}")
    raise ConfigurationError(f"ClamdScanner address {address!r}: use tcp://host:port or unix:///path/to/clamd.ctl.")
