"""A real clamd on loopback with signatures written at start, a scripted INSTREAM server, and test files.

``ClamdServer`` runs Debian's ``clamav-daemon`` (``/usr/sbin/clamd``) with a private configuration: a TCP
socket on a free 127.0.0.1 port, a unix socket and a database directory in a temp dir. The database is
one ``.hdb`` file of MD5 hash signatures (``md5:size:name``) for EICAR and any bytes the caller names, so
nothing is downloaded (no freshclam). No ``User`` line: clamd keeps the identity that started it, so it
can read its root-owned 0700 temp dir when CI runs as root, and works unchanged as any other user.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import shutil
import socket
import struct
import subprocess
import tempfile
import zipfile
import zlib
from collections.abc import Mapping
from pathlib import Path

from airflow_secure_mail.scanning.clamd import eicar
from airflow_secure_mail.testing._ports import free_port, port_open, stop_process, wait_until
from airflow_secure_mail.testing._scripted import ScriptedDaemon

EICAR_SIGNATURE = "Eicar-Test-Signature-HDB"
"""clamd reports it with ``.UNOFFICIAL`` appended (the database is not signed by Cisco Talos)."""


def find_clamd() -> str:
    for candidate in (shutil.which("clamd"), "/usr/sbin/clamd"):
        if candidate and os.path.exists(candidate):
            return candidate
    raise RuntimeError("clamd is missing: install Debian's clamav-daemon (make sysdeps does).")


class ClamdServer:
    """clamd with a throwaway configuration and signature database; ``tcp``/``unix`` are its addresses."""

    def __init__(
        self, signatures: Mapping[str, bytes] | None = None, *, stream_max_length: str = "2M", max_recursion: int = 8
    ) -> None:
        self.signatures = {EICAR_SIGNATURE: eicar(), **(signatures or {})}
        self.stream_max_length = stream_max_length
        self.max_recursion = max_recursion
        self.port = 0
        self._dir = ""
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def tcp(self) -> str:
        return f"tcp://127.0.0.1:{self.port}"

    @property
    def unix(self) -> str:
        return f"unix://{self._dir}/clamd.sock"

    def start(self) -> ClamdServer:
        self._dir = tempfile.mkdtemp(prefix="clamd-")
        database = Path(self._dir, "db")
        database.mkdir()
        (database / "local.hdb").write_text(
            "".join(f"{hashlib.md5(data).hexdigest()}:{len(data)}:{name}\n" for name, data in self.signatures.items())  # noqa: S324 - the .hdb format is MD5
        )
        self.port = free_port()
        config = Path(self._dir, "clamd.conf")
        config.write_text(
            "\n".join(
                [
                    "Foreground yes",
                    f"DatabaseDirectory {database}",
                    f"LocalSocket {self._dir}/clamd.sock",
                    f"TCPSocket {self.port}",
                    "TCPAddr 127.0.0.1",
                    f"TemporaryDirectory {self._dir}",
                    f"LogFile {self._dir}/clamd.log",
                    f"StreamMaxLength {self.stream_max_length}",
                    f"MaxRecursion {self.max_recursion}",
                    "AlertEncryptedArchive yes",
                    "AlertExceedsMax yes",
                    "SelfCheck 0",
                    "",
                ]
            )
        )
        log = open(os.path.join(self._dir, "stdout.log"), "wb")  # noqa: SIM115 - lives as long as the server
        self._proc = subprocess.Popen(
            [find_clamd(), "--config-file", str(config)], stdout=log, stderr=subprocess.STDOUT, cwd=self._dir
        )
        wait_until(self._ready, timeout=60, what="clamd")
        return self

    def _ready(self) -> bool:
        assert self._proc is not None
        if self._proc.poll() is not None:
            raise RuntimeError(f"clamd exited early:\n{self.log_text()}")
        return port_open(self.port) and os.path.exists(f"{self._dir}/clamd.sock")

    def log_text(self) -> str:
        return "".join(
            Path(self._dir, n).read_text(errors="replace")
            for n in ("stdout.log", "clamd.log")
            if Path(self._dir, n).exists()
        )

    def stop(self) -> None:
        stop_process(self._proc)
        self._proc = None
        if self._dir:
            shutil.rmtree(self._dir, ignore_errors=True)

    def __enter__(self) -> ClamdServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class ScriptedClamd(ScriptedDaemon):
    """A fake clamd on loopback: each INSTREAM gets the next of ``replies`` (the last one repeats).

    A reply is bytes to send (NUL-terminated for you), ``"hang"`` (read, never answer) or ``"close"``
    (read, hang up without a word). VERSION always gets ``version``. Commands received: ``commands``.
    ``answer_early`` makes it hostile: it answers INSTREAM right after the command, then reads the stream.
    """

    def __init__(
        self, replies: list[bytes | str], *, version: bytes | str = b"ClamAV 1.4.6", answer_early: bool = False
    ) -> None:
        super().__init__(replies)
        self.version = version
        self.answer_early = answer_early
        self.commands: list[bytes] = []

    def _serve(self, sock: socket.socket) -> None:
        reader = sock.makefile("rb")
        command = b""
        while not command.endswith(b"\0"):
            byte = reader.read(1)
            if not byte:
                return
            command += byte
        self.commands.append(command.rstrip(b"\0"))
        if command.startswith(b"zINSTREAM") and self.answer_early:
            self._answer(sock, self._next_reply())
            self._stop.wait(0.3)  # not reading yet: the client's stream backs up while the answer waits
            self._drain(reader)
            return
        if command.startswith(b"zINSTREAM"):
            self._drain(reader)
        self._answer(sock, self.version if not command.startswith(b"zINSTREAM") else self._next_reply())

    @staticmethod
    def _drain(reader: io.BufferedReader) -> None:
        """Read INSTREAM frames up to the zero-length end (or the client hanging up)."""
        with contextlib.suppress(OSError):
            ScriptedClamd._frames(reader)

    @staticmethod
    def _frames(reader: io.BufferedReader) -> None:
        while True:
            header = reader.read(4)
            if len(header) < 4:
                return
            (size,) = struct.unpack("!L", header)
            if size == 0:
                return
            reader.read(size)

    def _answer(self, sock: socket.socket, reply: bytes | str, *, suffix: bytes = b"\0") -> None:
        super()._answer(sock, reply, suffix=suffix)  # clamd replies end in NUL


def zip_of(name: str, data: bytes) -> bytes:
    """A zip holding one member (deflated)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(name, data)
    return buffer.getvalue()


_LOCAL_FIELDS = {"method": (8, "<H"), "crc": (14, "<L"), "compress_size": (18, "<L"), "file_size": (22, "<L")}
_CENTRAL_FIELDS = {"method": (10, "<H"), "crc": (16, "<L"), "compress_size": (20, "<L"), "file_size": (24, "<L")}


def patched_zip(
    data: bytes, *, local: Mapping[str, int] | None = None, central: Mapping[str, int] | None = None
) -> bytes:
    """``data`` (a one-member zip such as ``zip_of`` makes) with header fields overwritten: lying or corrupt zips.

    Fields: ``method``, ``crc``, ``compress_size``, ``file_size``, in the local header and/or the central directory.
    """
    out = bytearray(data)
    for values, start, layout in (
        (local, data.index(b"PK\x03\x04"), _LOCAL_FIELDS),
        (central, data.index(b"PK\x01\x02"), _CENTRAL_FIELDS),
    ):
        for name, value in (values or {}).items():
            offset, fmt = layout[name]
            struct.pack_into(fmt, out, start + offset, value)
    return bytes(out)


def encrypted_zip(name: str, data: bytes, password: bytes) -> bytes:
    """A zip with one member under traditional PKWARE (ZipCrypto) encryption, as ``zip -P`` writes it.

    Python's zipfile reads these but cannot write them, hence this small writer.
    """
    crc = zlib.crc32(data)
    keys = [0x12345678, 0x23456789, 0x34567890]

    def update(byte: int) -> None:
        keys[0] = _crc_byte(keys[0], byte)
        keys[1] = ((keys[1] + (keys[0] & 0xFF)) * 134775813 + 1) & 0xFFFFFFFF
        keys[2] = _crc_byte(keys[2], keys[1] >> 24)

    def encrypt(plain: bytes) -> bytes:
        out = bytearray()
        for byte in plain:
            temp = (keys[2] | 2) & 0xFFFF
            out.append(byte ^ (((temp * (temp ^ 1)) >> 8) & 0xFF))
            update(byte)
        return bytes(out)

    for byte in password:
        update(byte)
    header = os.urandom(11) + bytes([crc >> 24])
    body = encrypt(header) + encrypt(data)
    encoded = name.encode()
    dos_time, dos_date = 0, (2024 - 1980) << 9 | 1 << 5 | 1
    common = struct.pack("<HHHHHLLLHH", 20, 0x1, 0, dos_time, dos_date, crc, len(body), len(data), len(encoded), 0)
    local = b"PK\x03\x04" + common + encoded + body
    central = b"PK\x01\x02" + struct.pack("<H", 20) + common + struct.pack("<HHHLL", 0, 0, 0, 0, 0) + encoded
    end = b"PK\x05\x06" + struct.pack("<HHHHLLH", 0, 0, 1, 1, len(central), len(local), 0)
    return local + central + end


def _crc_byte(crc: int, byte: int) -> int:
    """One step of the raw CRC-32 register (no pre/post inversion), as ZipCrypto's key schedule uses it."""
    return ~zlib.crc32(bytes([byte]), ~crc & 0xFFFFFFFF) & 0xFFFFFFFF
