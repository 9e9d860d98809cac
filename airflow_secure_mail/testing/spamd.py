"""A real spamd on loopback (Debian's ``spamassassin``/``spamd``) with its shipped rules, for tests and the demo.

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
