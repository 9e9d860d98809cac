"""The deployment suite (``make e2e``): the built wheel in a fresh venv, PostgreSQL, Redis, real Airflow components.

Collected only when ``AIRFLOW_SECURE_MAIL_E2E=1`` (``make e2e`` sets it): ``make test`` never starts this.
Servers the provider talks to are the project's own loopback servers (OpenBao dev with an audit log, the TLS
SMTP catcher, SeaweedFS S3). Each deployment (LocalExecutor, then CeleryExecutor with two workers) gets its own
database, bucket and Airflow home; connections are created through the REST API with the UI form's payload.
Vault starts as a team's would (KV v2 at ``secret/`` holding the SMTP secret, no Transit); what the examples need
besides comes from the setup command docs/examples.md gives, run from each deployment's venv with an
administrator's token, and their settings are the ones that page lists for S3 and workers on two machines.
"""

from __future__ import annotations

import functools
import os
import re
import secrets
import shutil
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

E2E = os.environ.get("AIRFLOW_SECURE_MAIL_E2E") == "1"
if not E2E:
    collect_ignore_glob = ["test_*.py"]

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
ARTIFACTS = Path(os.environ.get("E2E_ARTIFACTS", HERE / "artifacts"))


def _dag_ids(folder: Path) -> list[str]:
    """Every ``dag_id="..."`` in the folder's DAG files (one file may define several DAGs)."""
    return sorted({m for p in folder.glob("*.py") for m in re.findall(r'dag_id="([^"]+)"', p.read_text())})


EXAMPLE_DAGS = _dag_ids(ROOT / "dags")
EXAMPLES_DOC = ROOT / "docs" / "examples.md"
E2E_DAGS = _dag_ids(HERE / "dags")
BUSY = "busy@example.com"  # refused with a 4xx on the first try of e2e_partial_refusal
SYSTEM_CA = "/etc/ssl/certs/ca-certificates.crt"
# Examples that wait for a human: (DAG, task) -> the answer the suites give through the REST API.
APPROVALS = {("secure_mail_approval", "approve_release"): ["Approve"]}

VAULT_POLICY = """
path "secret/data/*" { capabilities = ["read"] }
path "secret/metadata/*" { capabilities = ["read"] }
path "transit/datakey/plaintext/mail-archive" { capabilities = ["update"] }
path "transit/decrypt/mail-archive" { capabilities = ["update"] }
path "auth/token/renew-self" { capabilities = ["update"] }
path "auth/token/lookup-self" { capabilities = ["read"] }
"""


@dataclass
class VaultSetup:
    server: Any
    smtp_path: str
    token: str  # a generated, non-root token (the LocalExecutor deployment's vault connection)
    role_id: str
    secret_id: str  # the AppRole secret id (the CeleryExecutor deployment's vault connection)


@dataclass
class Deployed:
    """One running deployment and what the suite did to it."""

    name: str
    airflow: Any  # AirflowDeployment
    rest: Any  # AirflowRest
    bucket: str
    hook_meta: dict[str, Any]
    connection_bodies: dict[str, dict[str, Any]]
    runs: dict[str, str] = field(default_factory=dict)  # dag_id -> manual run id
    notes: dict[str, Any] = field(default_factory=dict)


@pytest.fixture(scope="session")
def work() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="asm-e2e-"))
    path.chmod(0o755)
    print(f"\ne2e work directory: {path}; artefacts: {ARTIFACTS}")
    yield path
    if os.environ.get("E2E_KEEP") != "1":
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def user_venv(work: Path) -> Path:
    from tests.e2e._deployment import build_user_venv

    return build_user_venv(work)


@pytest.fixture(scope="session")
def postgres() -> Iterator[Any]:
    from airflow_secure_mail.testing.postgres import PostgresServer

    server = PostgresServer().start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def smtp() -> Iterator[Any]:
    from airflow_secure_mail.testing.smtp import SmtpCatcher, TestCA

    server = SmtpCatcher(TestCA(), users={"airflow": "smtp-" + secrets.token_urlsafe(18)}).start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def vault(smtp: Any) -> Iterator[VaultSetup]:
    """A team's Vault before the setup command: the SMTP secret (the team stores it), no Transit, no keys."""
    from airflow_secure_mail.testing.openbao import OpenBaoDevServer

    server = OpenBaoDevServer().start()
    client = server.client()
    client.sys.disable_secrets_engine("transit")  # `bao server -dev` has none; our helper enables it: undo that
    path = "smtp/airflow"
    client.secrets.kv.v2.create_or_update_secret(
        path=path, secret={"username": "airflow", "password": smtp.users["airflow"]}
    )
    role_id, secret_id = server.approle("airflow-workers", VAULT_POLICY)
    token = client.auth.token.create(policies=["airflow-workers"], ttl="2h", renewable=True)["auth"]["client_token"]
    yield VaultSetup(server, path, token, role_id, secret_id)
    server.stop()


@pytest.fixture(scope="session")
def s3() -> Iterator[Any]:
    from airflow_secure_mail.testing.seaweedfs import SeaweedFsS3

    server = SeaweedFsS3().start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def ca_bundle(work: Path, smtp: Any) -> Path:
    """The system trust store plus the SMTP catcher's CA: a relay whose CA the operator has installed."""
    bundle = work / "ca-bundle.pem"
    system = Path(SYSTEM_CA).read_text() if Path(SYSTEM_CA).exists() else ""
    bundle.write_text(system + "\n" + smtp.ca.pem)
    return bundle


def _connections(d_name: str, meta: dict[str, Any], smtp: Any, vault: VaultSetup, s3: Any) -> dict[str, Any]:
    """What a user fills in the form for each connection, as UI request bodies."""
    from tests.e2e._forms import provider_connection_type, ui_add_body, vault_path_field

    ours = provider_connection_type()["connection-type"]
    vault_standard: dict[str, Any] = {"host": "127.0.0.1", "port": vault.server.port}
    if d_name == "local":
        vault_standard["password"] = vault.token
        vault_extra: dict[str, Any] = {"auth_type": "token"}
    else:
        vault_standard.update(login=vault.role_id, password=vault.secret_id)
        vault_extra = {"auth_type": "approle"}
    vault_extra["use_tls"] = False  # the form's "Use TLS" box is ticked by default; the dev server speaks http
    return {
        "secure_smtp_default": ui_add_body(
            meta[ours],
            "secure_smtp_default",
            standard={"host": "localhost", "port": smtp.starttls_port},
            extra={vault_path_field(): vault.smtp_path, "ca_cert": smtp.ca.pem, "from_email": "airflow@example.com"},
        ),
        "vault_default": ui_add_body(meta["vault"], "vault_default", standard=vault_standard, extra=vault_extra),
        "aws_seaweed": ui_add_body(
            meta["aws"],
            "aws_seaweed",
            standard={"login": s3.access_key, "password": s3.secret_key},
            raw_extra={"endpoint_url": s3.endpoint, "region_name": "us-east-1"},
        ),
    }


def documented_block(marker: str) -> str:
    """The fenced bash block after ``<!-- marker -->`` in docs/examples.md, without its indentation."""
    found = re.search(rf"^( *)<!-- {marker} -->\n\1```bash\n(.*?)\n\1```", EXAMPLES_DOC.read_text(), re.S | re.M)
    assert found is not None, f"docs/examples.md has no <!-- {marker} --> bash block"
    return "\n".join(line.removeprefix(found.group(1)) for line in found.group(2).splitlines())


def documented_settings(bucket: str, aws_conn_id: str) -> dict[str, str]:
    """The settings docs/examples.md gives for S3 and two machines, for this deployment's bucket and connection."""
    settings = {}
    for line in documented_block("multi-machine-settings").splitlines():
        name, _, value = line.removeprefix("export ").partition("=")
        settings[name] = value.replace("s3://mail-bucket/", f"s3://{bucket}/").replace("aws_default", aws_conn_id)
    return settings


SETUP_OUTPUTS: list[str] = []  # the documented setup command's output, one per deployment, in order


def run_documented_setup(airflow: Any, vault: VaultSetup) -> str:
    """Run the setup command of docs/examples.md verbatim from the deployment's venv, as an administrator."""
    command = documented_block("setup-command")
    done = airflow.run("env", f"VAULT_TOKEN={vault.server.root_token}", "bash", "-e", "-c", command, check=False)
    output = done.stdout + done.stderr
    if done.returncode != 0:
        raise AssertionError(f"{command!r} exited {done.returncode}:\n{output[-3000:]}")
    SETUP_OUTPUTS.append(output)
    return output


@pytest.fixture(
    scope="module",
    params=[("local", "LocalExecutor"), ("celery", "CeleryExecutor")],
    ids=["LocalExecutor", "CeleryExecutor"],
)
def deployment(
    request: pytest.FixtureRequest,
    work: Path,
    user_venv: Path,
    postgres: Any,
    smtp: Any,
    vault: VaultSetup,
    s3: Any,
    ca_bundle: Path,
) -> Iterator[Deployed]:
    from airflow_secure_mail.testing.redis import RedisServer
    from tests.e2e._deployment import AirflowDeployment
    from tests.e2e._rest import AirflowRest

    name, executor = request.param
    smtp.reset()
    bucket = s3.create_bucket(f"mail-{name}")
    dags = work / name / "dags"
    dags.mkdir(parents=True)
    for source in [*(ROOT / "dags").glob("*.py"), *(HERE / "dags").glob("*.py")]:
        shutil.copy(source, dags / source.name)
    redis = RedisServer().start() if executor == "CeleryExecutor" else None
    airflow = AirflowDeployment(
        venv=user_venv,
        home=work / name / "home",
        dags_folder=dags,
        db_url=postgres.create_database(f"airflow_{name}"),
        executor=executor,
        broker_url=redis.url if redis else "",
        extra_env={
            "SSL_CERT_FILE": str(ca_bundle),
            **documented_settings(bucket, "aws_seaweed"),  # S3 and two machines, as docs/examples.md says
            "SECURE_MAIL_DIGEST_GROUP_WAIT": "20s",  # the table's one tuning knob: a quicker storm test
            "E2E_ATTACHMENTS": str(work / name / "attachments"),  # for tests/e2e/dags only
        },
    )
    try:
        airflow.start()
        rest = AirflowRest(airflow.api_url, "admin", airflow.admin_password)
        meta = rest.hook_meta()
        bodies = _connections(name, meta, smtp, vault, s3)
        for body in bodies.values():
            rest.create_connection(body)
        setup_output = run_documented_setup(airflow, vault)
        yield Deployed(name, airflow, rest, bucket, meta, bodies, notes={"setup": setup_output})
    finally:
        airflow.stop()
        if redis is not None:
            redis.stop()
        _keep_logs(airflow, name)


def _keep_logs(airflow: Any, name: str) -> None:
    """Copy the deployment's logs to the artefacts folder (CI keeps them for a failed run)."""
    target = ARTIFACTS / f"logs-{name}"
    shutil.rmtree(target, ignore_errors=True)
    if airflow.logs.exists():
        shutil.copytree(airflow.logs, target, ignore_dangling_symlinks=True)


@pytest.fixture(scope="module")
def finished_runs(deployment: Deployed, smtp: Any) -> Deployed:
    """Unpause and trigger every DAG with no logical date; release the scripted refusal after the first try;
    approve the approval example through the REST API once it asks; wait until every run (manual and
    scheduled) has finished."""
    rest = deployment.rest
    everything = set(EXAMPLE_DAGS) | set(E2E_DAGS)
    rest.wait_for_dags(everything)
    smtp.script.rcpt_replies[BUSY] = "450 4.2.1 mailbox busy, try again later"
    for dag_id in sorted(everything):
        rest.unpause(dag_id)
    for dag_id in sorted(everything):
        deployment.runs[dag_id] = rest.trigger(dag_id)
    _release_refusal_after_first_try(deployment, smtp)
    deadline = time.monotonic() + 900
    unanswered = {key: answer for key, answer in APPROVALS.items() if key[0] in everything}
    while True:
        for (dag_id, task_id), answer in list(unanswered.items()):
            run_id = deployment.runs[dag_id]
            parked = functools.partial(deployment.airflow.parked, dag_id, run_id, task_id)
            if rest.answer_if_asked(dag_id, run_id, task_id, answer, parked):
                del unanswered[(dag_id, task_id)]
        pending = [
            (dag_id, run["dag_run_id"], run["state"])
            for dag_id in sorted(everything)
            for run in rest.runs(dag_id)
            if run["state"] not in ("success", "failed")
        ]
        scheduled_backup = [r for r in rest.runs("secure_mail_backup_restore") if r["run_type"] == "scheduled"]
        if not pending and scheduled_backup:
            break
        if time.monotonic() > deadline:
            raise AssertionError(f"runs still going after 15 minutes: {pending}; scheduled backup: {scheduled_backup}")
        time.sleep(3)
    return deployment


def _release_refusal_after_first_try(deployment: Deployed, smtp: Any) -> None:
    """Stop refusing BUSY once the first try has failed (a relay that was busy for a while)."""
    run_id = deployment.runs["e2e_partial_refusal"]

    def watch() -> None:
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            try:
                (ti,) = deployment.rest.task_instances("e2e_partial_refusal", run_id)
            except Exception:
                time.sleep(1)
                continue
            if ti["state"] in ("up_for_retry", "failed", "success") or ti.get("try_number", 0) > 1:
                deployment.notes["first_try_state"] = ti["state"]
                smtp.script.rcpt_replies.pop(BUSY, None)
                return
            time.sleep(0.5)
        smtp.script.rcpt_replies.pop(BUSY, None)

    threading.Thread(target=watch, daemon=True).start()
