"""Real servers on loopback for the whole suite: OpenBao dev, a TLS SMTP catcher, an Airflow home.

Every test is marked ``unit`` or ``integration`` here, from the fixtures it uses (``SERVICE_FIXTURES``) and the
fine markers it carries: ``make unit`` runs ``-m unit`` in well under a minute. A unit test that starts a server,
Chromium, gpg/openssl or the Airflow CLI anyway fails at once (``_UnitGuard``), so a wrong mark cannot hide.
Under pytest-xdist each worker has its own servers, Airflow home and SQLite database (migrated once per run).
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from airflow_secure_mail.testing.airflow_home import airflow_env

ROOT = Path(__file__).resolve().parent.parent
_HOME = tempfile.mkdtemp(prefix="asm-airflow-home-")
atexit.register(shutil.rmtree, _HOME, True)
# The DAG bundle dag.test() syncs from: the example DAGs (linked) plus files tests write there.
DAGS = Path(_HOME, "dags")
DAGS.mkdir()
for _example in (ROOT / "dags").glob("*.py"):
    (DAGS / _example.name).symlink_to(_example)
os.environ.update(airflow_env(_HOME, str(DAGS)))

from airflow_secure_mail.testing.openbao import OpenBaoDevServer  # noqa: E402
from airflow_secure_mail.testing.smtp import SmtpCatcher, TestCA  # noqa: E402

# What a test needs beyond the venv, by fixture (``item.fixturenames`` is transitive: ``mail_env`` brings ``bao``
# and ``smtp_server``). A new fixture that starts a server belongs here; the guard below fails a test using it
# until it is. Module-local fixture names are listed with their module's name.
SERVICE_FIXTURES: dict[str, tuple[str, ...]] = {
    "bao": ("vault",),
    "smtp_server": ("smtp",),
    "seaweed": ("s3",),
    "redis": ("redis",),  # a private redis-server (the relay budget's shared state)
    "s3_conn": ("s3",),
    "airflow_db": ("airflow_db",),
    "clamd": ("clamd",),  # test_scan: a real clamd
    "spamd": ("spamd",),  # test_spamd: Debian's spamd
    "browser": ("browser",),  # test_html_screen_browser: Chromium through Playwright
    "throttler": ("smtp",),  # test_transport_batch: ThrottlingSmtpServer
    "catcher": ("smtp",),  # test_transport_batch: a private SmtpCatcher
    "server_factory": ("smtp",),  # test_transport: private SmtpCatchers
    "refusing": ("smtp",),  # test_transport_throttling: RefusingGreetingServer
    "pgp_ids": ("tools",),  # gpg --quick-gen-key
}
SERVICE_MARKERS = ("smtp", "vault", "s3", "redis", "clamd", "spamd", "browser", "airflow_db", "tools")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """``integration`` if a test uses a service fixture or carries a service marker, else ``unit``.

    The deployment suite (tests/e2e, ``make e2e``) is integration whole: it runs its own services.
    """
    e2e = Path(__file__).parent / "e2e"
    for item in items:
        needs = {marker for name in item.fixturenames for marker in SERVICE_FIXTURES.get(name, ())}
        needs.update(m.name for m in item.iter_markers() if m.name in SERVICE_MARKERS)
        for marker in sorted(needs):
            item.add_marker(marker)
        item.add_marker("integration" if needs or item.path.is_relative_to(e2e) else "unit")


# Executables (by base name) a unit test must not start, and what each stands for.
_FORBIDDEN = {
    "bao": "OpenBao",
    "weed": "SeaweedFS",
    "redis-server": "Redis",
    "clamd": "clamd",
    "spamd": "spamd",
    "chromium": "Chromium",
    "gpg": "gpg (a Debian tool: mark it `tools`)",
    "gpgconf": "gpg (a Debian tool: mark it `tools`)",
    "gpg-agent": "gpg (a Debian tool: mark it `tools`)",
    "openssl": "openssl (a Debian tool: mark it `tools`)",
}


class _UnitGuard:
    """While a ``unit`` test sets up and runs: no service process, no SMTP server, no Airflow CLI or DB."""

    def __init__(self, nodeid: str) -> None:
        self.nodeid = nodeid

    def _refuse(self, what: str) -> None:
        raise RuntimeError(
            f"{self.nodeid} is marked unit but started {what}: list its fixture in tests/conftest.py "
            "SERVICE_FIXTURES or mark the test (smtp, vault, s3, clamd, spamd, browser, airflow_db, tools)."
        )

    @contextlib.contextmanager
    def active(self) -> Iterator[None]:
        from unittest import mock

        from aiosmtpd.controller import Controller

        from airflow_secure_mail.testing import airflow_home, throttling

        real_init = subprocess.Popen.__init__
        guard = self

        def popen_init(popen: Any, args: Any, *rest: Any, **kwargs: Any) -> None:
            argv = [str(a) for a in ([args] if isinstance(args, (str, bytes, os.PathLike)) else list(args))]
            name = os.path.basename(argv[0].split()[0]) if argv else ""
            if name in _FORBIDDEN:
                guard._refuse(_FORBIDDEN[name])
            if argv[1:3] == ["-m", "airflow"]:
                guard._refuse("the Airflow CLI")
            real_init(popen, args, *rest, **kwargs)

        def no_smtp(*_: Any, **__: Any) -> None:
            guard._refuse("an SMTP server")

        def no_db(*_: Any, **__: Any) -> None:
            guard._refuse("the Airflow metadata database")

        with (
            mock.patch.object(subprocess.Popen, "__init__", popen_init),
            mock.patch.object(Controller, "start", no_smtp),
            mock.patch.object(throttling.RefusingGreetingServer, "start", no_smtp),
            mock.patch.object(airflow_home, "prepare_airflow_home", no_db),
        ):
            yield


@pytest.hookimpl(wrapper=True)
def pytest_runtest_setup(item: pytest.Item) -> Iterator[None]:
    if item.get_closest_marker("unit") is None:
        return (yield)
    with _UnitGuard(item.nodeid).active():
        return (yield)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Iterator[None]:
    if item.get_closest_marker("unit") is None:
        return (yield)
    with _UnitGuard(item.nodeid).active():
        return (yield)


@pytest.fixture(autouse=True)
def _fresh_relay_budgets() -> Iterator[None]:
    """Each test starts with empty per-process relay budgets: a relay that one test found exhausted for today
    (or whose slots it took) must not stop another test's bulk mail through the same session-wide server."""
    from airflow_secure_mail.transport.budget import forget_budgets

    forget_budgets()
    yield
    forget_budgets()


@pytest.fixture(scope="session", autouse=True)
def _installed_listener_plugin_stays_out() -> Iterator[None]:
    """The installed package's ``airflow.plugins`` entry point makes Airflow register our listener plugin in any
    process that builds a listener manager (``dag.test()`` does), and its settings are read once per process:
    a test that turned the listener on would leave it on for every later test of the worker. Tests that want a
    listener register their own (tests/integration/listeners), so the plugin's module-level one is taken out of
    both managers once, before any test runs."""
    from airflow.listeners.listener import get_listener_manager as core_manager
    from airflow.sdk.listener import get_listener_manager as task_manager

    from airflow_secure_mail.listeners.plugin import listener

    for manager in (core_manager(), task_manager()):
        if manager.pm.is_registered(listener):
            manager.pm.unregister(listener)
    yield


@pytest.fixture(scope="session")
def bao() -> Iterator[OpenBaoDevServer]:
    server = OpenBaoDevServer().start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def seaweed() -> Iterator[object]:
    from airflow_secure_mail.testing.seaweedfs import SeaweedFsS3

    server = SeaweedFsS3().start()
    yield server
    server.stop()


@pytest.fixture
def s3_conn(seaweed, monkeypatch: pytest.MonkeyPatch) -> str:
    """An Airflow aws connection ``aws_seaweed`` to the SeaweedFS gateway, bucket ``mail-test`` created."""
    seaweed.create_bucket("mail-test")
    monkeypatch.setenv("AIRFLOW_CONN_AWS_SEAWEED", json.dumps(seaweed.aws_connection()))
    return "aws_seaweed"


@pytest.fixture
def transit_key(bao: OpenBaoDevServer) -> Iterator[str]:
    """A new Transit key in the dev OpenBao (no data key of an earlier test cached before or after)."""
    from airflow_secure_mail.archive.crypto import TransitSealer
    from tests.helpers import create_transit_key

    yield create_transit_key(bao, "mail-archive-" + secrets.token_hex(3))
    TransitSealer.forget_keys()


@pytest.fixture(scope="session")
def redis() -> Iterator[Any]:
    """Debian's redis-server on a private loopback port, with a generated password (``redis.url``)."""
    from airflow_secure_mail.testing.redis import RedisServer

    with RedisServer() as server:
        yield server


@pytest.fixture(scope="session")
def ca() -> TestCA:
    return TestCA()


@pytest.fixture(scope="session")
def smtp_server(ca: TestCA) -> Iterator[SmtpCatcher]:
    server = SmtpCatcher(ca, users={"airflow": secrets.token_urlsafe(18)}).start()
    yield server
    server.stop()


def _migrated_template(shared: Path) -> Path:
    """A migrated SQLite metadata database made once per run, whichever xdist worker gets here first."""
    template = shared / "airflow-db-template"
    with open(shared / "airflow-db-template.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # the others wait here for the first one's migration
        if not (template / ".migrated").exists():
            template.mkdir(exist_ok=True)
            env = dict(os.environ, **airflow_env(template))
            subprocess.run(
                [sys.executable, "-m", "airflow", "db", "migrate"],
                check=True,
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
            )
            (template / ".migrated").touch()
    return template / "airflow.db"


@pytest.fixture(scope="session")
def airflow_db(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """This worker's Airflow home with a migrated SQLite database (a copy of the run's template)."""
    from airflow_secure_mail.testing.airflow_home import prepare_airflow_home

    base = tmp_path_factory.getbasetemp()
    shared = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base  # xdist: the workers' common parent
    shutil.copyfile(_migrated_template(shared), Path(_HOME, "airflow.db"))
    Path(_HOME, ".migrated").touch()
    prepare_airflow_home(_HOME, str(DAGS))
    yield _HOME
    shutil.rmtree(_HOME, ignore_errors=True)


@dataclass
class MailEnv:
    """One test's view of the wired-up servers; ``password`` exists only in Vault and the server."""

    bao: OpenBaoDevServer
    smtp: SmtpCatcher
    password: str
    secret_path: str
    monkeypatch: pytest.MonkeyPatch

    def set_smtp_conn(
        self,
        conn_id: str = "secure_smtp_default",
        *,
        starttls: bool = False,
        port: int | None = None,
        host: str = "localhost",
        **extra: object,
    ) -> None:
        base = self.smtp.connection_extra(
            starttls=starttls,
            vault_path=self.secret_path,
            from_email="airflow@example.com",
            retry_backoff=0.05,
        )
        base.update(extra)
        conn = {
            "conn_type": "securesmtp",
            "host": host,
            "port": port or self.smtp.port(starttls=starttls),
            "extra": base,
        }
        self.monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps(conn))

    def rotate(self, new_password: str) -> None:
        self.bao.client().secrets.kv.v2.create_or_update_secret(
            path=self.secret_path, secret={"username": "airflow", "password": new_password}
        )
        self.smtp.users["airflow"] = new_password
        self.password = new_password


@pytest.fixture
def mail_env(bao: OpenBaoDevServer, smtp_server: SmtpCatcher, monkeypatch: pytest.MonkeyPatch) -> Iterator[MailEnv]:
    from airflow_secure_mail.vault import clear_cache

    clear_cache()
    smtp_server.reset()
    path = f"smtp/airflow-{secrets.token_hex(4)}"
    env = MailEnv(bao, smtp_server, smtp_server.users["airflow"], path, monkeypatch)
    env.rotate(secrets.token_urlsafe(18))
    monkeypatch.setenv("AIRFLOW_CONN_VAULT_DEFAULT", json.dumps(bao.connection_uri()))
    env.set_smtp_conn()
    yield env
    clear_cache()


def load_dag(filename: str, dag_id: str):  # type: ignore[no-untyped-def]
    """Import an example DAG file fresh (so module-level env reads apply) and return the DAG."""
    import runpy

    namespace = runpy.run_path(str(ROOT / "dags" / filename))
    for value in namespace.values():
        if getattr(value, "dag_id", None) == dag_id and hasattr(value, "test"):
            return value
    raise LookupError(f"{dag_id} not found in {filename}")
