"""mail/clamd_wire.py: clamd's INSTREAM framing and reply handling, against listeners this file opens on loopback.

Each test runs a few-line asyncio server in-process (no clamd): it records the exact bytes the client sent.
The real clamd is tests/test_scan.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import struct
from collections.abc import Awaitable, Callable

import pytest

from airflow_secure_mail.errors import ConfigurationError
from airflow_secure_mail.scanning.clamd_wire import ScanUnavailable, exchange, parse_address
from airflow_secure_mail.testing._ports import free_port

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def _read_frames(reader: asyncio.StreamReader) -> list[bytes]:
    """INSTREAM chunks up to the zero-length terminator."""
    frames = []
    while True:
        (size,) = struct.unpack("!L", await reader.readexactly(4))
        if size == 0:
            return frames
        frames.append(await reader.readexactly(size))


async def _exchange_with(handler: Handler, command: bytes, payload: bytes | None = None, timeout: float = 5) -> str:
    server = await asyncio.start_server(handler, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        address = f"tcp://127.0.0.1:{port}"
        return await exchange(parse_address(address), address, timeout, command, payload)
    finally:
        server.close()


def test_instream_sends_the_command_then_64k_frames_and_a_zero_length_end():
    seen: dict[str, object] = {}
    payload = bytes(range(256)) * 600  # 153600 bytes: two full chunks and a remainder

    async def clamd(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen["command"] = await reader.readuntil(b"\0")
        seen["frames"] = await _read_frames(reader)
        writer.write(b"stream: OK\0")
        await writer.drain()
        writer.close()

    assert asyncio.run(_exchange_with(clamd, b"INSTREAM", payload)) == "stream: OK"
    frames = seen["frames"]
    assert seen["command"] == b"zINSTREAM\0"
    assert isinstance(frames, list) and [len(f) for f in frames] == [65536, 65536, 22528]
    assert b"".join(frames) == payload


def test_a_command_without_payload_sends_only_the_command():
    seen: list[bytes] = []

    async def clamd(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen.append(await reader.readuntil(b"\0"))
        writer.write(b"ClamAV 1.4.6/27065/Wed Oct 18 09:49:14 2023\0")
        writer.close()
        seen.append(await reader.read())

    assert asyncio.run(_exchange_with(clamd, b"VERSION")) == "ClamAV 1.4.6/27065/Wed Oct 18 09:49:14 2023"
    assert seen == [b"zVERSION\0", b""]


def test_a_size_limit_reply_before_the_end_is_unscannable_saying_why():
    """clamd answers an over-long stream at once: the client keeps that answer (not a broken pipe) as the reason."""

    async def clamd(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\0")
        (size,) = struct.unpack("!L", await reader.readexactly(4))
        await reader.readexactly(size)
        writer.write(b"INSTREAM size limit exceeded. ERROR\0")
        await writer.drain()
        writer.close()  # with megabytes unread: the client's next send fails (reset or broken pipe)

    with pytest.raises(ScanUnavailable, match=r"^clamd's StreamMaxLength is smaller than the part$"):
        asyncio.run(_exchange_with(clamd, b"INSTREAM", b"x" * (4 * 1024 * 1024)))


def test_a_reply_before_the_terminating_chunk_is_not_a_verdict():
    """A clamd that says OK right after the command has judged nothing: the part is unscannable, never clean."""
    received: list[int] = []

    async def clamd(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\0")
        writer.write(b"stream: OK\0")
        await writer.drain()
        await asyncio.sleep(0.3)  # the client's stream backs up meanwhile
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
            received.extend(len(frame) for frame in await _read_frames(reader))
        writer.close()

    with pytest.raises(
        ScanUnavailable,
        match=r"^clamd at tcp://127\.0\.0\.1:\d+ answered 'stream: OK' before the whole stream was sent$",
    ):
        asyncio.run(_exchange_with(clamd, b"INSTREAM", b"x" * (1024 * 1024)))
    assert sum(received) < 1024 * 1024  # the client stopped streaming once the early answer was seen


def test_a_found_reply_before_the_terminating_chunk_is_returned_as_the_finding():
    """An early FOUND is a detection whenever it comes: the caller judges it (refuses), never 'unscannable'."""
    received: list[int] = []

    async def clamd(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\0")
        writer.write(b"stream: Eicar-Test-Signature FOUND\0")
        await writer.drain()
        await asyncio.sleep(0.3)
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
            received.extend(len(frame) for frame in await _read_frames(reader))
        writer.close()

    reply = asyncio.run(_exchange_with(clamd, b"INSTREAM", b"x" * (1024 * 1024)))
    assert reply == "stream: Eicar-Test-Signature FOUND"
    assert sum(received) < 1024 * 1024  # sending still stopped at the early answer


def test_a_server_that_hangs_up_before_the_end_of_the_stream_is_unavailable():
    async def clamd(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\0")
        writer.close()

    with pytest.raises(ScanUnavailable, match=r"closed the connection before the whole stream was sent"):
        asyncio.run(_exchange_with(clamd, b"INSTREAM", b"x" * (1024 * 1024)))


@pytest.mark.parametrize(
    ("reply", "text"),
    [
        (b"stream: Evil\r\nX-Injected: 1 FOUND", "stream: EvilX-Injected: 1 FOUND"),
        (b"stream: Bad\x1b[31m\x07\x7f\x85Name\xc3\xa9 FOUND", "stream: Bad[31m?Name? FOUND"),
        (b"stream: " + b"A" * 500 + b" FOUND", "stream: " + "A" * 192),
    ],
    ids=["crlf", "controls_and_non_ascii", "long"],
)
def test_reply_text_is_printable_ascii_on_one_line_and_capped(reply, text):
    async def clamd(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\0")
        await _read_frames(reader)
        writer.write(reply + b"\0")
        writer.close()

    assert asyncio.run(_exchange_with(clamd, b"INSTREAM", b"data")) == text


def test_a_server_that_hangs_up_without_a_word_is_unavailable():
    async def clamd(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\0")
        await _read_frames(reader)
        writer.close()

    with pytest.raises(ScanUnavailable, match=r"clamd at tcp://127\.0\.0\.1:\d+ closed the connection without a reply"):
        asyncio.run(_exchange_with(clamd, b"INSTREAM", b"data"))


def test_a_server_that_never_answers_times_out():
    async def clamd(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\0")
        await asyncio.sleep(30)

    with pytest.raises(ScanUnavailable, match=r"did not answer within 0\.2s"):
        asyncio.run(_exchange_with(clamd, b"VERSION", timeout=0.2))


def test_nothing_listening_is_unavailable_naming_the_error():
    address = f"tcp://127.0.0.1:{free_port()}"
    with pytest.raises(ScanUnavailable, match=r"is unreachable \(ConnectionRefusedError\)"):
        asyncio.run(exchange(parse_address(address), address, 5, b"VERSION"))


def test_the_unix_socket_speaks_the_same_protocol(tmp_path):
    path = tmp_path / "clamd.sock"

    async def clamd(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\0")
        await _read_frames(reader)
        writer.write(b"stream: Eicar-Test-Signature FOUND\0")
        writer.close()

    async def run() -> str:
        server = await asyncio.start_unix_server(clamd, str(path))
        try:
            return await exchange(parse_address(f"unix://{path}"), f"unix://{path}", 5, b"INSTREAM", b"x")
        finally:
            server.close()

    assert asyncio.run(run()) == "stream: Eicar-Test-Signature FOUND"


@pytest.mark.parametrize(
    ("address", "target"),
    [
        ("tcp://127.0.0.1:3310", ("tcp", "127.0.0.1:3310")),
        ("tcp://[::1]:3310", ("tcp", "[::1]:3310")),
        ("unix:///run/clamav/clamd.ctl", ("unix", "/run/clamav/clamd.ctl")),
    ],
)
def test_addresses_parse_to_a_family_and_target(address, target):
    assert parse_address(address) == target


@pytest.mark.parametrize("address", ["http://127.0.0.1:3310", "tcp://127.0.0.1", "unix://", "127.0.0.1:3310"])
def test_other_addresses_are_refused_saying_what_to_write(address):
    with pytest.raises(ConfigurationError, match=r"use tcp://host:port or unix:///path/to/clamd\.ctl"):
        parse_address(address)
