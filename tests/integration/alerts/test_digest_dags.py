"""Alert digests from real DAG runs (dag.test()) on file:// and SeaweedFS, through the SMTP catcher."""

from __future__ import annotations

import dataclasses
import email
import email.policy
import runpy
from datetime import UTC, datetime, timedelta

from tests.conftest import DAGS
from tests.helpers import alert_context

STORM_DAG = """
from datetime import datetime, timedelta
from airflow.sdk import DAG, task
from airflow_secure_mail import AlertDigest, SecureEmailNotifier

digest = AlertDigest(state={state!r}, state_conn_id={conn!r}, group_wait="10m", max_items={max_items})
alert = SecureEmailNotifier(to="oncall@example.com", digest=digest)

with DAG("{dag_id}", start_date=datetime(2026, 1, 1), schedule=None, on_failure_callback=alert) as dag:
    @task(retries=0, on_failure_callback=alert)
    def load(shard: int) -> None:
        raise RuntimeError(f"shared dependency down: cannot reach warehouse (shard {{shard}})")

    load.expand(shard=list(range(50)))
"""


def _parsed(data: bytes):
    return email.message_from_bytes(data, policy=email.policy.default)


def _write_dag(name: str, source: str):
    path = DAGS / f"{name}.py"
    path.write_text(source)
    return runpy.run_path(str(path))


def _later(digest, **delta):
    when = datetime.now(UTC) + timedelta(**delta)
    return dataclasses.replace(digest, clock=lambda: when)


def _storm(tmp_path, dag_id: str, *, state: str | None = None, conn: str | None = None, max_items: int = 50):
    ns = _write_dag(
        dag_id,
        STORM_DAG.format(state=state or f"file://{tmp_path}/state", conn=conn, dag_id=dag_id, max_items=max_items),
    )
    return ns["dag"], ns["digest"], ns["alert"]


def test_fifty_mapped_failures_in_one_run_make_one_mail(mail_env, airflow_db, tmp_path):
    from airflow_secure_mail import AlertDigestFlushOperator

    dag, digest, alert = _storm(tmp_path, "storm_fifty")
    run = dag.test()
    assert run.state == "failed"
    assert mail_env.smtp.messages == []  # group_wait holds the first mail until the run's failures are in
    result = AlertDigestFlushOperator(task_id="flush", digest=_later(digest, minutes=11), notifier=alert).execute({})
    [received] = mail_env.smtp.messages
    assert result["message_ids"] == [_parsed(received.data)["Message-ID"]]
    msg = _parsed(received.data)
    assert " ".join(msg["Subject"].split()).startswith("[Airflow] 50 failures in 1 DAG since ")
    text = msg.get_body(("plain",)).get_content()
    assert f"DAG run failed: storm_fifty / {run.run_id}" in text
    assert "50 failed task instances:" in text
    for shard in range(50):
        assert f"  - load[{shard}], try 1 of 1: RuntimeError: shared dependency down" in text
        assert f"(shard {shard})" in text
    assert "more not listed" not in text
    assert "Traceback" not in text
    again = AlertDigestFlushOperator(task_id="again", digest=_later(digest, minutes=12), notifier=alert)
    assert again.execute({}) == {"message_ids": [], "pruned": 0}
    assert len(mail_env.smtp.messages) == 1


def test_max_items_caps_the_digest_and_says_where_the_rest_is(mail_env, airflow_db, tmp_path):
    dag, digest, alert = _storm(tmp_path, "storm_capped", max_items=20)
    dag.test()
    _later(digest, minutes=11).flush(alert)
    [received] = mail_env.smtp.messages
    text = _parsed(received.data).get_body(("plain",)).get_content()
    assert text.count("  - load[") == 20
    assert f"+30 more not listed here; the full list is in file://{tmp_path}/state/events/storm_capped-" in text
    html = _parsed(received.data).get_body(("html",)).get_content()
    assert "+30 more" in html


def test_fifty_mapped_failures_on_seaweedfs(mail_env, airflow_db, tmp_path, s3_conn, seaweed):
    dag, digest, alert = _storm(tmp_path, "storm_s3", state="s3://mail-test/alert-state", conn=s3_conn)
    dag.test()
    assert mail_env.smtp.messages == []
    _later(digest, minutes=11).flush(alert)
    _later(digest, minutes=12).flush(alert)
    [received] = mail_env.smtp.messages
    assert _parsed(received.data).get_body(("plain",)).get_content().count("  - load[") == 50
    keys = [o["Key"] for o in seaweed.client().list_objects_v2(Bucket="mail-test", Prefix="alert-state/")["Contents"]]
    assert sum(k.startswith("alert-state/events/storm_s3-") for k in keys) == 51  # 50 tasks + the run
    assert sum(k.startswith("alert-state/claims/storm_s3-") and k.endswith(".sent.json") for k in keys) == 1


RETRY_DAG = """
from datetime import datetime, timedelta
from airflow.sdk import DAG, task
from airflow_secure_mail import AlertDigest, SecureEmailNotifier

digest = AlertDigest(state={state!r})
alert = SecureEmailNotifier(to="oncall@example.com", digest=digest)

with DAG("flaky_retries", start_date=datetime(2026, 1, 1), schedule=None) as dag:
    @task(retries=2, retry_delay=timedelta(seconds=0), on_retry_callback=alert, on_failure_callback=alert)
    def flaky() -> None:
        raise ConnectionError("warehouse timed out")

    flaky()
"""


def test_retries_send_nothing_until_the_final_failure(mail_env, airflow_db, tmp_path):
    ns = _write_dag("flaky_retries", RETRY_DAG.format(state=f"file://{tmp_path}/state"))
    run = ns["dag"].test()
    assert run.state == "failed"
    [received] = mail_env.smtp.messages
    text = _parsed(received.data).get_body(("plain",)).get_content()
    lines = text.splitlines()
    assert lines[0] == "[Airflow] 1 failure, 2 retries in 1 DAG since " + lines[0].split(" since ")[1]
    assert "This digest: 1 failure (task instances that failed), 2 retries (retried tries)." in lines
    # xN counts the alert's events: its 2 retries and the final failure
    assert any(line.startswith("- flaky_retries.flaky  x3 since ") and line.endswith(", 2 retries") for line in lines)
    assert "ConnectionError: warehouse timed out" in text
    names = sorted(p.name.split("-")[1] for p in (tmp_path / "state" / "index").rglob("*-*-*-*"))
    assert names == ["failure", "retry", "retry"]


def test_the_same_callback_twice_is_one_event_and_one_mail(mail_env, tmp_path):

    from airflow_secure_mail import AlertDigest, SecureEmailNotifier

    digest = AlertDigest(state=f"file://{tmp_path}/state")
    alert = SecureEmailNotifier(to="oncall@example.com", digest=digest)
    context = alert_context(RuntimeError("boom"), log_url="http://airflow.example/log")
    alert.notify(context)
    alert.notify(dict(context))
    assert len(mail_env.smtp.messages) == 1
    assert len(list((tmp_path / "state" / "events").rglob("*.json"))) == 1


def test_example_storm_dag_records_every_failure_and_mails_nothing_before_group_wait(
    mail_env, airflow_db, monkeypatch, tmp_path
):
    from tests.conftest import load_dag

    monkeypatch.setenv("AIRFLOW_SECURE_MAIL_DIGEST_STATE", f"file://{tmp_path}/state")
    monkeypatch.setenv("SECURE_MAIL_DIGEST_GROUP_WAIT", "1h")
    run = load_dag("secure_mail_alert_digest.py", "secure_mail_alert_storm").test()
    assert run.state == "failed"
    assert mail_env.smtp.messages == []
    kinds = sorted(p.name.split("-")[1] for p in (tmp_path / "state" / "index").rglob("*-*-*-*"))
    assert kinds == ["failure"] * 20 + ["retry"] * 20 + ["run_failure"]


def test_example_flush_dag_sends_a_digest_whose_group_wait_has_passed(mail_env, airflow_db, monkeypatch, tmp_path):
    from airflow_secure_mail.alerts.events import Event, Kind
    from tests.conftest import load_dag

    monkeypatch.setenv("AIRFLOW_SECURE_MAIL_DIGEST_STATE", f"file://{tmp_path}/state")
    dag = load_dag("secure_mail_alert_digest.py", "secure_mail_alert_digest_flush")
    ns = runpy.run_path(str(DAGS / "secure_mail_alert_digest.py"))
    an_hour_ago = datetime.now(UTC) - timedelta(hours=1)
    ns["digest"].record(
        Event("billing", "scheduled__x", "invoice", -1, 1, Kind.FAILURE, an_hour_ago, "KeyError: 'customer'", None, 1)
    )
    run = dag.test()
    assert run.state == "success"
    [received] = mail_env.smtp.messages
    assert " ".join(_parsed(received.data)["Subject"].split()).startswith("[Airflow] 1 failure in 1 DAG since ")
    assert run.get_task_instance("flush_alert_digests").xcom_pull(task_ids="flush_alert_digests") == {
        "message_ids": [_parsed(received.data)["Message-ID"]],
        "pruned": 0,
    }
