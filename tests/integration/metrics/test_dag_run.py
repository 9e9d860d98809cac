"""A real DAG run with ``[metrics] statsd_on``: what a StatsD listener on loopback receives from our provider.

The DAG runs in a subprocess: Airflow configures its Stats once per process, from the settings it finds then.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

from tests.conftest import DAGS
from tests.integration.metrics.udp import StatsdListener

P = "airflow.secure_mail."

DAG_FILE = textwrap.dedent(
    """
    from datetime import datetime

    from airflow.sdk import DAG, task

    from airflow_secure_mail import MailPolicy, SecureEmailNotifier, SecureEmailOperator

    with DAG("metrics_probe", start_date=datetime(2026, 1, 1), schedule=None, catchup=False) as dag:
        report = SecureEmailOperator(
            task_id="report", to=["ops@example.com", "dev@example.com"], subject="daily", html_content="<p>ok</p>"
        )
        refused = SecureEmailOperator(
            task_id="refused",
            to="someone@elsewhere.example.org",
            subject="not for them",
            html_content="<p>x</p>",
            policy=MailPolicy(allowed_recipient_domains=("example.com",)),
            on_failure_callback=SecureEmailNotifier(to="oncall@example.com"),
        )

        @task(retries=0, on_failure_callback=SecureEmailNotifier(to="oncall@example.com"))
        def load() -> None:
            raise RuntimeError("warehouse load failed")

        report >> [refused, load()]
    """
)

RUNNER = textwrap.dedent(
    """
    import json, runpy, sys
    dag = runpy.run_path(sys.argv[1])["dag"]
    run = dag.test()
    tis = {ti.task_id: str(ti.state) for ti in run.get_task_instances()}
    print("RESULT " + json.dumps({"state": str(run.state), "tis": tis}))
    """
)


def _run_dag(path, statsd: StatsdListener, **extra_env: str) -> tuple[dict, str]:  # type: ignore[type-arg,no-untyped-def]
    child_env = dict(
        os.environ,
        AIRFLOW__METRICS__STATSD_ON="True",
        AIRFLOW__METRICS__STATSD_HOST="127.0.0.1",
        AIRFLOW__METRICS__STATSD_PORT=str(statsd.port),
        **extra_env,
    )
    done = subprocess.run(
        [sys.executable, "-c", RUNNER, str(path)], env=child_env, capture_output=True, text=True, timeout=600
    )
    result = next((line for line in done.stdout.splitlines() if line.startswith("RESULT ")), None)
    assert result is not None, done.stdout[-3000:] + done.stderr[-3000:]
    return json.loads(result.removeprefix("RESULT ")), done.stdout + done.stderr


@pytest.fixture(scope="module")
def dag_file(bao, smtp_server, airflow_db):  # type: ignore[no-untyped-def]
    """The probe DAG in the bundle, with the catcher and OpenBao wired up as ``secure_smtp_default``."""
    import secrets

    from tests.conftest import MailEnv

    mp = pytest.MonkeyPatch()
    smtp_server.reset()
    env = MailEnv(bao, smtp_server, smtp_server.users["airflow"], f"smtp/metrics-{secrets.token_hex(4)}", mp)
    env.rotate(secrets.token_urlsafe(18))
    mp.setenv("AIRFLOW_CONN_VAULT_DEFAULT", json.dumps(bao.connection_uri()))
    env.set_smtp_conn()
    path = DAGS / "metrics_probe.py"
    path.write_text(DAG_FILE)
    try:
        yield path
    finally:
        path.unlink()
        mp.undo()


@pytest.fixture(scope="module")
def dag_run(dag_file, smtp_server):  # type: ignore[no-untyped-def]
    """The DAG run once for the module: (the listener with everything it received, the run's states, mails)."""
    smtp_server.reset()
    statsd = StatsdListener()
    try:
        result, _ = _run_dag(dag_file, statsd)
        yield statsd, result, list(smtp_server.messages)
    finally:
        statsd.close()


def test_the_run_went_as_planned(dag_run):  # type: ignore[no-untyped-def]
    _, result, messages = dag_run
    assert result["tis"] == {"report": "success", "refused": "failed", "load": "failed"}
    assert sorted(tuple(m.rcpt_tos) for m in messages) == [
        ("oncall@example.com",),
        ("oncall@example.com",),
        ("ops@example.com", "dev@example.com"),
    ]


def test_sent_recipients_latency_and_certificate_reach_statsd(dag_run):  # type: ignore[no-untyped-def]
    statsd, _, _ = dag_run
    assert statsd.total(P + "sent") == 3  # the report and two alerts
    assert statsd.total(P + "recipients.accepted") == 4
    assert statsd.total(P + "recipients.refused") == 0
    assert len(statsd.values(P + "delivery_latency", "ms")) == 3
    days = statsd.values(P + "relay_cert_days_left.localhost", "g")
    assert days and all(d > 0 for d in days)
    assert statsd.total(P + "vault_errors") == 0


def test_the_policy_refusal_is_counted_by_rule(dag_run):  # type: ignore[no-untyped-def]
    statsd, _, _ = dag_run
    assert statsd.total(P + "refused") == 1
    assert any(name.startswith(P + "refused.") for name in statsd.names())


def test_statsd_on_without_the_package_is_said_once_in_the_task_log(dag_file, smtp_server, tmp_path):
    """Airflow would drop every metric with one ERROR line from its stats module; ours says what to install."""
    (tmp_path / "sitecustomize.py").write_text("import sys\nsys.modules['statsd'] = None  # as if not installed\n")
    pythonpath = os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    statsd = StatsdListener()
    try:
        result, output = _run_dag(dag_file, statsd, PYTHONPATH=pythonpath)
        assert statsd.lines == []
    finally:
        statsd.close()
    assert result["tis"]["report"] == "success"
    assert output.count("the 'statsd' package is not installed") == 1
    assert 'install "airflow-secure-mail[statsd]"' in output
