"""SecureEmailNotifier: default alerts from callbacks, masking, rendering, DAG-level callbacks."""

from __future__ import annotations

import asyncio
import email
import email.policy
import shutil

import pytest

from airflow_secure_mail.testing.browser import render
from tests.conftest import load_dag
from tests.helpers import alert_context
from tests.integration.notifications.test_dag_run_alert import assert_subject


def _parsed(data: bytes):
    return email.message_from_bytes(data, policy=email.policy.default)


def _context(exc: Exception | None = None):
    context = alert_context(
        exc,
        run_id="scheduled__2026-11-27",
        try_number=2,
        max_tries=3,
        hostname="worker-7",
        state="up_for_retry",
        log_url="http://airflow.example/log?x=1",
    )
    return {**context, "logical_date": "2026-11-27T00:00:00+00:00"}


DAG_LEVEL_ALERT = """
from datetime import datetime
from airflow.sdk import DAG, task
from airflow_secure_mail import SecureEmailNotifier

with DAG("dag_level_alert", start_date=datetime(2026, 1, 1), schedule=None,
         on_failure_callback=SecureEmailNotifier(to="oncall@example.com")) as dag:
    @task(retries=0)
    def broken():
        raise ValueError("upstream file missing")
    broken()
"""


def test_failure_alert_dag_sends_default_alert(mail_env, airflow_db, monkeypatch):
    monkeypatch.setenv("SECURE_MAIL_ALERT_TO", "oncall@example.com")
    dag = load_dag("secure_mail_failure_alert.py", "secure_mail_failure_alert")
    run = dag.test()
    assert run.state == "failed"
    [received] = mail_env.smtp.messages
    assert received.rcpt_tos == ["oncall@example.com"]
    msg = _parsed(received.data)
    assert_subject(received.data, f"[Airflow] FAILED secure_mail_failure_alert.load_warehouse - {run.run_id}")
    text = msg.get_body(("plain",)).get_content()
    for expected in (
        "DAG",
        "secure_mail_failure_alert",
        "load_warehouse",
        run.run_id,
        "Try",
        "1 of 1",
        "RuntimeError: warehouse load failed: 3 rows violate NOT NULL",
    ):
        assert expected in text
    assert "warehouse load failed" in msg.get_body(("html",)).get_content()


def test_async_notify_sends_retry_alert(mail_env):
    from airflow_secure_mail import SecureEmailNotifier

    notifier = SecureEmailNotifier(to="oncall@example.com")
    asyncio.run(notifier.async_notify(_context(ValueError("bad row\nsecond line"))))
    msg = _parsed(mail_env.smtp.messages[0].data)
    assert_subject(mail_env.smtp.messages[0].data, "[Airflow] RETRY sales.load - scheduled__2026-11-27")
    text = msg.get_body(("plain",)).get_content()
    assert "2 of 4" in text and "worker-7" in text and "ValueError: bad row" in text and "second line" not in text


def test_alert_masks_registered_secrets_in_the_error(mail_env):
    from airflow_secure_mail import SecureEmailNotifier
    from airflow_secure_mail._masking import mask

    mask("s3cr3t-token-value", "token")
    SecureEmailNotifier(to="oncall@example.com").notify(_context(RuntimeError("login failed for s3cr3t-token-value")))
    assert b"s3cr3t-token-value" not in mail_env.smtp.messages[0].data
    assert "***" in _parsed(mail_env.smtp.messages[0].data).get_body(("plain",)).get_content()


@pytest.mark.browser
@pytest.mark.skipif(shutil.which("chromium") is None, reason="chromium not installed (make sysdeps installs it)")
def test_alert_html_renders_in_headless_chromium(tmp_path):
    from airflow_secure_mail.notifications.email import render_alert

    _, text, html = render_alert(_context(RuntimeError("disk <full> & more")))
    assert "RuntimeError: disk <full> & more" in text  # plain text is not HTML-escaped
    page = tmp_path / "alert.html"
    page.write_text(html)
    dom = render(page, tmp_path / "alert.png", width=700, height=600, profile=tmp_path / "profile")
    for expected in (
        "RETRY",
        "sales.load",
        "scheduled__2026-11-27",
        "2 of 4",
        "worker-7",
        "disk &lt;full&gt; &amp; more",
        "Open the task log",
    ):
        assert expected in dom
    assert (tmp_path / "alert.png").stat().st_size > 1000


def test_dag_level_failure_callback_sends_alert(mail_env, airflow_db):
    import runpy

    from tests.conftest import DAGS

    path = DAGS / "dag_level_alert.py"
    path.write_text(DAG_LEVEL_ALERT)
    run = runpy.run_path(str(path))["dag"].test()
    assert run.state == "failed"
    [received] = mail_env.smtp.messages
    msg = _parsed(received.data)
    assert_subject(received.data, f"[Airflow] DAG run FAILED dag_level_alert - {run.run_id}")
    text = msg.get_body(("plain",)).get_content()
    assert f"Run           {run.run_id}" in text.splitlines() and "Try" not in text
