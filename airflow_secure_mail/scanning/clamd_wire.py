"""clamd's wire protocol (``man clamd``): one NUL-terminated command per connection; INSTREAM sends the
payload as chunks each after its 4-byte big-endian length, ended by a zero length; the reply is one line.

Only a reply after that zero length is a verdict of "clean"; a ``FOUND`` reply is a finding whenever it
comes (a detection is never downgraded to "unscanned"). Every reply leaves here through ``printable``:
the text is the server's, and it goes on into errors, logs and archive metadata.

Remaining limit: an early reply is seen only if its bytes reach us before the terminator is written. For
a part smaller than one 64 KiB chunk the whole stream goes out in one or two writes, so an early ``OK``
that lands after the terminator cannot be told from a verdict and counts as one.
"""

from __future__ import annotations

import asyncio
import logging
import re
import socket
import struct
from typing import Any
from urllib.parse import urlsplit

from airflow_secure_mail.errors import ConfigurationError

log = logging.getLogger(__name__)

_CHUNK = 64 * 1024
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_NON_ASCII = re.compile(r"[^\x20-\x7e]")
_NOT_ON_ONE_LINE = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})  # Unicode categories one_line drops


class ScanUnavailable(Exception):
    """A part could not be judged; the message says why (addresses and sizes only, never content)."""


async def exchange(
    target: tuple[str, str | int], address: str, timeout: float, command: bytes, payload: bytes | None = None
) -> str:
    """One command on a fresh connection (clamd serves one INSTREAM per connection), bounded by ``timeout``.

    Only a reply after the terminating zero-length chunk is a verdict. The reply is read while the payload
    is still being sent, so an early one is seen (and sending stops): clamd answers a stream over its
    ``StreamMaxLength`` at once and hangs up, and a broken or hostile server may say ``OK`` before it has
    read anything. Either makes the part unscannable (ScanUnavailable), never clean; an early ``FOUND``
    is returned as the finding it is.
    """
    loop = asyncio.get_running_loop()
    try:
        async with asyncio.timeout(timeout):
            with await _connect(loop, target) as sock:
                reply = _Reply(loop, sock)
                try:
                    await loop.sock_sendall(sock, b"z" + command + b"\0")
                    complete = payload is None or await _stream(loop, sock, payload, reply)
                except (BrokenPipeError, ConnectionResetError):
                    log.debug("clamd closed the stream early; reading its reply")
                    complete = False
                except BaseException:
                    reply.task.cancel()
                    raise
                raw = await reply.task
    except TimeoutError:
        raise ScanUnavailable(f"clamd at {address} did not answer within {timeout:g}s") from None
    except OSError as exc:
        raise ScanUnavailable(f"clamd at {address} is unreachable ({type(exc).__name__})") from None
    text = printable(raw.split(b"\0", 1)[0].decode("utf-8", "replace"))
    if not complete and not _is_finding(text):
        raise ScanUnavailable(_early(address, text))
    if not text:
        raise ScanUnavailable(f"clamd at {address} closed the connection without a reply")
    return text


def printable(text: str, limit: int = 200) -> str:
    """Scanner text made safe for errors, logs and archive metadata: printable ASCII on one line, capped.

    Every string that comes from clamd (signature names, error text, its version) passes through here:
    control characters (CR, LF, NUL, ESC, ...) are dropped and other non-ASCII becomes ``?``.
    """
    return _NON_ASCII.sub("?", _CONTROL.sub("", text)).strip()[:limit]


def one_line(text: str, limit: int = 1000) -> str:
    """Attacker-named text (zip member names, reasons built from them) for errors, logs and metadata.

    Control, format (bidi overrides, zero-width) and line-separator characters are dropped; other Unicode
    stays, since a file may be named in any script. Scanner replies use the stricter ``printable``.
    """
    import unicodedata

    kept = (c for c in text if unicodedata.category(c) not in _NOT_ON_ONE_LINE)
    return "".join(kept).strip()[:limit]


def _is_finding(text: str) -> bool:
    """A ``<name>: <signature> FOUND`` reply: refused whenever it arrives, so never turned into "unscanned"."""
    return text.startswith("stream: ") and text.endswith(" FOUND")


def _early(address: str, text: str) -> str:
    """Why a reply that came before the end of the stream is no verdict."""
    if "size limit exceeded" in text:
        return "clamd's StreamMaxLength is smaller than the part"
    if not text:
        return f"clamd at {address} closed the connection before the whole stream was sent"
    return f"clamd at {address} answered {text!r} before the whole stream was sent"


class _Reply:
    """The reply, read concurrently with sending so it is neither lost to a reset nor missed if early."""

    def __init__(self, loop: asyncio.AbstractEventLoop, sock: socket.socket) -> None:
        self.received = bytearray()
        self.task = asyncio.ensure_future(self._read(loop, sock))

    def arrived(self, sock: socket.socket) -> bool:
        """Anything from the server yet: bytes read, a hang-up, or bytes waiting on the socket."""
        if self.received or self.task.done():
            return True
        try:
            sock.recv(1, socket.MSG_PEEK)  # a byte, or b"" for a hang-up: either way the server has spoken
        except (BlockingIOError, InterruptedError):
            return False
        except OSError:
            return True  # reset: the server is gone before the end of the stream
        return True

    async def _read(self, loop: asyncio.AbstractEventLoop, sock: socket.socket) -> bytes:
        """Bytes up to clamd's NUL terminator (or whatever came before it hung up)."""
        while b"\0" not in self.received and len(self.received) < 4096:
            try:
                data = await loop.sock_recv(sock, 4096)
            except ConnectionResetError:
                break
            if not data:
                break
            self.received += data
        return bytes(self.received)


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


async def _stream(loop: asyncio.AbstractEventLoop, sock: socket.socket, payload: bytes, reply: _Reply) -> bool:
    """INSTREAM framing: each chunk after its 4-byte big-endian length, then a zero length.

    Before each frame, and so before the terminator, it looks for a reply: one that came already is early
    (the server has not seen the end), so sending stops and False says the stream was not complete. A
    reply whose bytes reach us only after the terminator was written cannot be told from a verdict.
    """
    view = memoryview(payload)
    for start in (*range(0, len(payload), _CHUNK), len(payload)):  # the last slice is empty: the terminator
        chunk = view[start : start + _CHUNK]
        await asyncio.sleep(0)  # a send that never blocks never yields: let the reply reader run
        if reply.arrived(sock):
            return False
        await loop.sock_sendall(sock, struct.pack("!L", len(chunk)) + chunk)
    return True


def parse_address(address: str) -> tuple[str, str | int]:
    parts = urlsplit(address)
    if parts.scheme == "unix" and parts.path:
        return ("unix", parts.path)
    if parts.scheme == "tcp" and parts.hostname and parts.port:
        host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
        return ("tcp", f"{host}:{parts.port}")
    raise ConfigurationError(f"ClamdScanner address {address!r}: use tcp://host:port or unix:///path/to/clamd.ctl.")
