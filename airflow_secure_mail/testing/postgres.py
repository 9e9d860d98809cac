"""PostgresServer: Debian's PostgreSQL (``initdb``/``pg_ctl``) in a private data directory on a loopback port.

As root the server runs as the ``postgres`` user (PostgreSQL refuses to run as root); otherwise as the
current user. Databases get a generated password for the role ``airflow``; nothing is ever persisted.
"""

from __future__ import annotations

import glob
import os
import pwd
import secrets
import shutil
import subprocess
import tempfile
from pathlib import Path

from airflow_secure_mail.testing._ports import free_port, wait_until


def _bin_dir() -> Path:
    """The newest ``/usr/lib/postgresql/<major>/bin`` (Debian keeps server binaries off PATH)."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[4]))
    if not found:
        raise RuntimeError("PostgreSQL server binaries are missing: install Debian's postgresql package.")
    return Path(found[-1]).parent


class PostgresServer:
    """Start with :meth:`start`; :meth:`create_database` gives a SQLAlchemy URL; :meth:`dump` runs pg_dump."""

    def __init__(self, *, user: str = "postgres") -> None:
        self.port = 0
        self.role = "airflow"
        self.password = "pg-" + secrets.token_urlsafe(18)
        self._os_user = user if os.geteuid() == 0 else ""
        self._bin = _bin_dir()
        self._dir = ""

    @property
    def data_dir(self) -> str:
        return os.path.join(self._dir, "data")

    @property
    def socket_dir(self) -> str:
        return self._dir

    def _run(self, tool: str, *args: str, check: bool = True, input: str | None = None) -> str:
        cmd = [str(self._bin / tool), *args]
        if self._os_user:
            cmd = ["runuser", "-u", self._os_user, "--", *cmd]
        done = subprocess.run(cmd, check=False, capture_output=True, text=True, input=input, cwd=self._dir)
        if check and done.returncode != 0:
            raise RuntimeError(f"{tool} failed ({done.returncode}): {done.stderr.strip()[-2000:]}")
        return done.stdout

    def start(self) -> PostgresServer:
        self._dir = tempfile.mkdtemp(prefix="asm-postgres-")
        if self._os_user:
            entry = pwd.getpwnam(self._os_user)
            os.chown(self._dir, entry.pw_uid, entry.pw_gid)
        os.chmod(self._dir, 0o700)
        self.port = free_port()
        self._run(
            "initdb",
            "-D",
            self.data_dir,
            "-U",
            "postgres",
            "--auth-local=trust",
            "--auth-host=scram-sha-256",
            "--encoding=UTF8",
            "--no-sync",
        )
        options = f"-c listen_addresses=127.0.0.1 -c port={self.port} -c unix_socket_directories={self._dir} " + (
            "-c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=200"
        )
        self._run("pg_ctl", "-D", self.data_dir, "-l", os.path.join(self._dir, "server.log"), "-o", options, "start")
        wait_until(self._ready, timeout=60, what="PostgreSQL")
        self.psql(f"CREATE ROLE {self.role} LOGIN PASSWORD '{self.password}'")
        return self

    def _ready(self) -> bool:
        done = subprocess.run(
            [str(self._bin / "pg_isready"), "-h", "127.0.0.1", "-p", str(self.port)], capture_output=True, check=False
        )
        return done.returncode == 0

    def psql(self, sql: str, database: str = "postgres") -> str:
        """Run SQL as the superuser over the private unix socket."""
        return self._run(
            "psql", "-h", self._dir, "-p", str(self.port), "-U", "postgres", "-d", database, "-v", "ON_ERROR_STOP=1",
            "-qAt", "-c", sql,
        )  # fmt: skip

    def create_database(self, name: str) -> str:
        """A fresh database owned by ``airflow``; returns its SQLAlchemy URL (psycopg2 driver)."""
        self.psql(f"CREATE DATABASE {name} OWNER {self.role}")
        return f"postgresql+psycopg2://{self.role}:{self.password}@127.0.0.1:{self.port}/{name}"

    def dump(self, database: str) -> str:
        """``pg_dump`` of ``database`` as plain SQL text."""
        return self._run("pg_dump", "-h", self._dir, "-p", str(self.port), "-U", "postgres", database)

    def stop(self) -> None:
        if self._dir and os.path.isdir(self.data_dir):
            self._run("pg_ctl", "-D", self.data_dir, "-m", "fast", "-w", "stop", check=False)
        if self._dir:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = ""

    def __enter__(self) -> PostgresServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
