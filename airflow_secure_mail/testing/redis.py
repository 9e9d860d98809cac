"""RedisServer: Debian's ``redis-server`` on a private loopback port, no persistence (a Celery broker for tests)."""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import tempfile

from airflow_secure_mail.testing._ports import find_binary, free_port, port_open, stop_process, wait_until


class RedisServer:
    """In-memory Redis with a generated password; everything is lost on :meth:`stop`."""

    def __init__(self) -> None:
        self.port = 0
        self.password = "rd-" + secrets.token_urlsafe(18)
        self._proc: subprocess.Popen[bytes] | None = None
        self._dir = ""

    @property
    def url(self) -> str:
        return f"redis://:{self.password}@127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        self._dir = tempfile.mkdtemp(prefix="asm-redis-")
        self.port = free_port()
        config = os.path.join(self._dir, "redis.conf")
        with open(config, "w") as fh:
            fh.write(
                f'bind 127.0.0.1\nport {self.port}\nrequirepass "{self.password}"\nsave ""\nappendonly no\n'
                f"dir {self._dir}\nprotected-mode yes\n"
            )
        os.chmod(config, 0o600)
        log = open(os.path.join(self._dir, "redis.log"), "wb")  # noqa: SIM115 - lives as long as the server
        self._proc = subprocess.Popen(
            [find_binary("redis-server", "Debian's redis-server"), config], stdout=log, stderr=subprocess.STDOUT
        )
        wait_until(self._ready, timeout=30, what="Redis")
        return self

    def _ready(self) -> bool:
        assert self._proc is not None
        if self._proc.poll() is not None:
            raise RuntimeError(f"redis-server exited early; see {self._dir}/redis.log")
        return port_open(self.port)

    def stop(self) -> None:
        stop_process(self._proc)
        self._proc = None
        if self._dir:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = ""

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
