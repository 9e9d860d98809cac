"""The plugin: cheap to import (every Airflow component loads it), silent when off, one line when misconfigured."""

from __future__ import annotations

import logging
from types import SimpleNamespace

import pytest

from airflow_secure_mail.listeners.catch_all import wires_its_own_alert
from airflow_secure_mail.listeners.import_errors import mask_stacktrace
from airflow_secure_mail.listeners.plugin import SecureMailListener
from tests.helpers import modules_loaded_by


def test_importing_the_plugin_loads_only_its_own_module():
    loaded = modules_loaded_by("import airflow_secure_mail.listeners.plugin")
    assert {m for m in loaded if not m.startswith("airflow_secure_mail.listeners")} <= {"airflow_secure_mail"}, loaded


def test_off_when_not_configured_does_nothing(monkeypatch, caplog):
    monkeypatch.delenv("AIRFLOW__SECURE_MAIL__LISTENER_TO", raising=False)
    listener = SecureMailListener()
    with caplog.at_level(logging.INFO):
        listener.on_new_dag_import_error(filename="/dags/broken.py", stacktrace="SyntaxError: x")
        listener.on_task_instance_failed(previous_state=None, task_instance=object(), error=RuntimeError("x"))
    assert listener.settings() is None
    assert [r for r in caplog.records if r.name.startswith("airflow_secure_mail")] == []


def test_a_misconfiguration_logs_one_line_once_and_raises_nothing(monkeypatch, caplog):
    monkeypatch.setenv("AIRFLOW__SECURE_MAIL__LISTENER_TO", "oncall@example.com")
    monkeypatch.setenv("AIRFLOW__SECURE_MAIL__LISTENER_CATCH_ALL", "maybe")
    listener = SecureMailListener()
    with caplog.at_level(logging.INFO):
        listener.on_task_instance_failed(previous_state=None, task_instance=object(), error=RuntimeError("x"))
        listener.on_new_dag_import_error(filename="/dags/broken.py", stacktrace="SyntaxError: x")
    ours = [r for r in caplog.records if r.name.startswith("airflow_secure_mail")]
    assert [(r.levelname, r.getMessage()) for r in ours] == [
        (
            "ERROR",
            "secure-mail listener is off: [secure_mail] listener_catch_all = 'maybe': give true or false.",
        )
    ]


def _task(**kw):
    dag = SimpleNamespace(on_failure_callback=kw.pop("dag_callback", None))
    return SimpleNamespace(
        dag=dag,
        on_failure_callback=kw.get("callback", []),
        email_on_failure=kw.get("email_on_failure", True),
        email=kw.get("email"),
    )


@pytest.mark.parametrize(
    ("task", "own"),
    [
        (_task(), False),  # Airflow's defaults: email_on_failure True but no address, so no mail
        (_task(callback=[print]), True),
        (_task(dag_callback=print), True),
        (_task(email="team@example.com"), True),
        (_task(email="team@example.com", email_on_failure=False), False),
    ],
)
def test_which_tasks_wire_their_own_alert(task, own):
    assert wires_its_own_alert(task) is own


def test_stacktrace_is_masked_and_cut():
    from airflow.sdk.log import mask_secret

    mask_secret("registered-s3cr3t-value")
    trace = "\n".join(
        [
            "Traceback (most recent call last):",
            '  File "/dags/etl.py", line 3, in <module>',
            "    conn = connect('postgresql://etl:hunter2pass@db.internal/warehouse')",
            "    api = Client(api_key='AKIA-abc-123', token=registered-s3cr3t-value)",
            '    PASSWORD = "pa55word!"',
        ]
        + [f"  line {n}" for n in range(40)]
    )
    shown = mask_stacktrace(trace)
    for secret in ("hunter2pass", "AKIA-abc-123", "registered-s3cr3t-value", "pa55word!"):
        assert secret not in shown
    assert "postgresql://***:***@db.internal/warehouse" in shown
    assert "api_key='***'" in shown
    assert len(shown.splitlines()) == 21
    assert shown.endswith("… (cut; the full trace is in the UI)")


@pytest.mark.parametrize(("job_type", "looks"), [("DagProcessorJob", True), ("SchedulerJob", False)])
def test_only_the_dag_processor_looks_for_resolved_files(monkeypatch, job_type, looks):
    """Airflow's Job calls on_starting before its runner names the job type: the thread decides after one wait."""
    import threading

    from airflow_secure_mail.listeners import plugin

    monkeypatch.setattr(plugin, "RESOLVE_EVERY", 0.01)
    looked = threading.Event()
    listener = SecureMailListener()
    monkeypatch.setattr(listener.thread, "look", lambda: looked.set())
    listener.thread.start(SimpleNamespace(job_type=job_type))  # read after a wait, never at on_starting
    worker = listener.thread.thread
    if looks:
        assert looked.wait(timeout=30)
        listener.thread.stop()
    worker.join(timeout=30)
    assert not worker.is_alive()
    assert looked.is_set() is looks


def test_a_task_marked_failed_in_the_api_server_is_not_mailed(tmp_path):
    """The API server calls on_task_instance_failed with a database TaskInstance when a user marks it failed."""
    from airflow.models.taskinstance import TaskInstance

    from airflow_secure_mail.listeners.catch_all import CatchAll
    from airflow_secure_mail.listeners.config import settings_from

    settings = settings_from({"listener_to": "oncall@example.com", "listener_digest_state": f"file://{tmp_path}"})
    row = TaskInstance.__new__(TaskInstance)  # what the API server passes: an ORM row (its task is serialized)
    row.__dict__["task"] = _task()
    assert CatchAll(settings, mailer=None).task_failed(row, error=None) is None
    assert list(tmp_path.iterdir()) == []
