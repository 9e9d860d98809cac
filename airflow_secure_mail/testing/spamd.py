"""A real spamd on loopback (Debian's ``spamassassin``/``spamd``) with its shipped rules, for tests and the demo;
a scripted SPAMD server for replies a real one will not give.

``SpamdServer`` runs ``/usr/sbin/spamd`` in the foreground with ``-L`` (local tests only: no DNS or network
lookups, so scores are stable offline), listening on a free 127.0.0.1 port and a unix socket in a temp dir,
with a pid file and a log there. As root it drops to ``nobody`` (spamd refuses to score as root); the
socket and the log are made before it does. Startup takes ~10 s: a session fixture starts one per worker.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

from airflow_secure_mail.testing._ports import free_port, stop_process, wait_until
from airflow_secure_mail.testing._scripted import ScriptedDaemon


def find_spamd() -> str:
    for candidate in (shutil.which("spamd"), "/usr/sbin/spamd"):
        if candidate and os.path.exists(candidate):
            return candidate
    raise RuntimeError("spamd is missing: install Debian's spamd and spamc (make sysdeps does).")


class SpamdServer:
    """spamd with a throwaway directory; ``tcp`` and ``unix`` are its addresses for ``SpamAssassinScanner``."""

    def __init__(self, *, max_children: int = 2) -> None:
        self.max_children = max_children
        self.port = 0
        self._dir = ""
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def tcp(self) -> str:
        return f"tcp://127.0.0.1:{self.port}"

    @property
    def unix(self) -> str:
        return f"unix://{self._dir}/spamd.sock"

    def start(self) -> SpamdServer:
        self._dir = tempfile.mkdtemp(prefix="spamd-")

        self.port = free_port()
        argv = [
            find_spamd(),
            "-L",
            "-x",  # no per-user preferences: nobody has no home
            f"--listen=127.0.0.1:{self.port}",
            f"--listen={self._dir}/spamd.sock",
            "--allowed-ips=127.0.0.1",
            f"--max-children={self.max_children}",
            f"--pidfile={self._dir}/spamd.pid",
            f"--syslog={self._dir}/spamd.log",
        ]
        if os.geteuid() == 0:
            argv.append("--username=nobody")
        log = open(os.path.join(self._dir, "stdout.log"), "wb")  # noqa: SIM115 - lives as long as the server
        self._proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, cwd=self._dir)
        wait_until(self._ready, timeout=120, what="spamd")
        return self

    def _ready(self) -> bool:
        assert self._proc is not None
        if self._proc.poll() is not None:
            raise RuntimeError(f"spamd exited early:\n{self.log_text()}")
        return self.ping() and os.path.exists(f"{self._dir}/spamd.sock")

    def ping(self) -> bool:
        """spamd answers PING with PONG on its TCP port."""
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=2) as sock:
                sock.sendall(b"PING SPAMC/1.5\r\n\r\n")
                return b"PONG" in sock.recv(256)
        except OSError:
            return False

    def log_text(self) -> str:
        return "".join(
            Path(self._dir, n).read_text(errors="replace")
            for n in ("stdout.log", "spamd.log")
            if Path(self._dir, n).exists()
        )

    def stop(self) -> None:
        stop_process(self._proc, timeout=20)
        self._proc = None
        if self._dir:
            shutil.rmtree(self._dir, ignore_errors=True)

    def __enter__(self) -> SpamdServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def spamd_reply(score: float, required: float = 5.0, rules: str = "", *, status: str = "0 EX_OK") -> bytes:
    """A REPORT reply as spamd 4.0 writes it: the ``Spam`` header and a report whose table lists ``rules``.

    ``rules`` are rows like ``" 2.7 MISSING_DATE           Missing Date: header"``, one a line.
    """
    body = (
        "Spam detection software has identified this incoming email as possible spam.\n\n"
        "Content preview:  12.5 LOOKS_LIKE_A_RULE but is the message's own text\n\n"
        f"Content analysis details:   ({score} points, {required} required)\n\n"
        " pts rule name              description\n"
        "---- ---------------------- --------------------------------------------------\n"
        f"{rules}\n\n"
    ).encode()
    flag = "True" if score >= required else "False"
    return (
        f"SPAMD/1.1 {status}\r\nContent-length: {len(body)}\r\nSpam: {flag} ; {score} / {required}\r\n\r\n"
    ).encode() + body


class ScriptedSpamd(ScriptedDaemon):
    """A fake spamd on loopback: each request gets the next of ``replies`` (the last one repeats).

    A reply is the bytes to send, ``"hang"`` (read, never answer) or ``"close"`` (hang up without a word).
    ``requests`` holds every request as received (head and message, read up to ``Content-length``).
    """

    def __init__(self, replies: list[bytes | str]) -> None:
        super().__init__(replies)
        self.requests: list[bytes] = []

    def _serve(self, sock: socket.socket) -> None:
        reader = sock.makefile("rb")
        head = b""
        while not head.endswith(b"\r\n\r\n"):
            line = reader.readline(4096)
            if not line:
                return
            head += line
        length = next((int(v) for k, _, v in (h.partition(b":") for h in head.split(b"\r\n"))
                       if k.strip().lower() == b"content-length"), 0)  # fmt: skip
        self.requests.append(head + reader.read(length))
        self._answer(sock, self._next_reply())
