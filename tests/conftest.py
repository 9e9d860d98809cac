"""Real servers on loopback for the whole suite: OpenBao dev, a TLS SMTP catcher, an Airflow home."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from airflow_secure_mail.testing.airflow_home import airflow_env

ROOT = Path(__file__).resolve().parent.parent
_HOME = tempfile.mkdtemp(prefix="asm-airflow-home-")
# The DAG bundle dag.test() syncs from: the example DAGs (linked) plus files tests write there.
DAGS = Path(_HOME, "dags")
DAGS.mkdir()
for _example in (ROOT / "dags").glob("*.py"):
    (DAGS / _example.name).symlink_to(_example)
os.environ.update(airflow_env(_HOME, str(DAGS)))

from airflow_secure_mail.testing.openbao import OpenBaoDevServer  # noqa: E402
from airflow_secure_mail.testing.smtp import SmtpCatcher, TestCA  # noqa: E402


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
def ca() -> TestCA:
    return TestCA()


@pytest.fixture(scope="session")
def smtp_server(ca: TestCA) -> Iterator[SmtpCatcher]:
    server = SmtpCatcher(ca, users={"airflow": secrets.token_urlsafe(18)}).start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def airflow_db() -> Iterator[str]:
    from airflow_secure_mail.testing.airflow_home import prepare_airflow_home

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
