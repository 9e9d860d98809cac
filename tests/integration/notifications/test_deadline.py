"""Issue 22 item 1: SecureEmailNotifier as a Deadline Alert callback, in the triggerer and in the executor.

The triggerer runs Airflow's own ``CallbackTrigger`` (``await SecureEmailNotifier(**kwargs, context=...)``), the
executor Airflow's own ``execute_callback`` (the class built with the kwargs, then called with the context); the
context is what ``Deadline.handle_miss`` stores: the run as ``DAGRunResponse`` JSON and the deadline's id and
time, round-tripped through Airflow's serializer as the callback row is.
"""

from __future__ import annotations

import asyncio
import email
import email.policy
import logging
import runpy
import uuid
from datetime import datetime, timedelta
from typing import Any

import pytest

from airflow_secure_mail.errors import ConfigurationError
from tests.conftest import DAGS
from tests.integration.alerts.test_auto_submitted import assert_automated
from tests.integration.notifications.test_dag_run_alert import assert_subject

PATH = "airflow_secure_mail.notifications.email.SecureEmailNotifier"

SLOW = """
from datetime import datetime
from airflow.sdk import DAG, task

with DAG("{dag_id}", start_date=datetime(2026, 1, 1), schedule=None) as dag:
    @task
    def slow():
        return 1
    slow()
"""


def _parsed(data: bytes) -> Any:
    return email.message_from_bytes(data, policy=email.policy.default)


def _run_json(dag_id: str) -> dict[str, Any]:
    """A real run of a DAG, dumped as the scheduler dumps it into a deadline's context."""
    from airflow.api_fastapi.core_api.datamodels.dag_run import DAGRunResponse
    from airflow.models import DagRun
    from airflow.utils.session import create_session

    path = DAGS / f"{dag_id}.py"
    path.write_text(SLOW.format(dag_id=dag_id))
    run = runpy.run_path(str(path))["dag"].test()
    with create_session() as session:
        dagrun = session.get(DagRun, run.id)
        return DAGRunResponse.model_validate(dagrun).model_dump(mode="json")


def _context(run: dict[str, Any], deadline_id: str, deadline_time: datetime) -> dict[str, Any]:
    """``Deadline.handle_miss``'s context after the callback row's serializer (ExtendedJSON) round trip."""
    from airflow.serialization.serialized_objects import BaseSerialization

    context = {"dag_run": run, "deadline": {"id": deadline_id, "deadline_time": deadline_time}}
    return BaseSerialization.deserialize(BaseSerialization.serialize(context))


async def _trigger(kwargs: dict[str, Any], context: dict[str, Any]) -> list[dict[str, Any]]:
    from airflow.triggers.callback import CallbackTrigger

    trigger = CallbackTrigger(PATH, {**kwargs, "context": context})
    return [event.payload async for event in trigger.run()]


@pytest.fixture(scope="module")
def run_json(airflow_db: str) -> dict[str, Any]:
    return _run_json("deadline_overrun")


def _deadline_time(run: dict[str, Any]) -> datetime:
    return datetime.fromisoformat(run["start_date"]) - timedelta(seconds=1)  # missed, whatever the machine's speed


def test_the_triggerer_passes_the_deadline_context_to_the_notifier(mail_env, run_json):
    """Before issue 22 the constructor took no ``context``: Airflow's ``accepts_context`` said no, the
    triggerer awaited the notifier on an empty context and the mail was a "DAG run FAILED ? - ?"."""
    from airflow.sdk import AsyncCallback

    from airflow_secure_mail import SecureEmailNotifier

    callback = AsyncCallback(SecureEmailNotifier, kwargs={"to": "oncall@example.com"})
    assert callback.path == PATH
    deadline_id = str(uuid.uuid4())
    due = _deadline_time(run_json)
    events = asyncio.run(_trigger(callback.kwargs, _context(run_json, deadline_id, due)))
    assert [e["state"] for e in events] == ["running", "success"]
    [received] = mail_env.smtp.messages
    assert received.rcpt_tos == ["oncall@example.com"]
    assert_automated(received.data)
    run_id = run_json["dag_run_id"]
    assert_subject(received.data, f"[Airflow] DEADLINE MISSED deadline_overrun - {run_id}")
    text = _parsed(received.data).get_body(("plain",)).get_content()
    from urllib.parse import quote

    for line in (
        "DEADLINE MISSED: deadline_overrun - " + run_id,
        "DAG           deadline_overrun",
        f"Run           {run_id}",
        f"Deadline      {due:%Y-%m-%d %H:%M:%S} UTC",
        "Run state     success",
        f"Deadline id   {deadline_id}",
        f"Run: http://localhost:8080/dags/deadline_overrun/runs/{quote(run_id, safe='')}",
    ):
        assert line in text.splitlines(), (line, text)
    late = next(line for line in text.splitlines() if line.startswith("Late by"))
    assert late.endswith("(when the scheduler found the deadline missed)")


def test_a_triggerer_restart_sends_nothing_twice_with_the_archive(mail_env, run_json, tmp_path, transit_key, caplog):
    """The same deadline id twice (the triggerer restarted while it sent): one mail, the second "already sent"."""
    caplog.set_level(logging.INFO, logger="airflow_secure_mail")
    from airflow_secure_mail import SecureEmailNotifier

    callback = SecureEmailNotifier.deadline_callback(
        to="oncall@example.com", archive=f"file://{tmp_path}/archive", archive_transit_key=transit_key
    )
    deadline_id = str(uuid.uuid4())
    due = _deadline_time(run_json)
    first = asyncio.run(_trigger(dict(callback.kwargs), _context(run_json, deadline_id, due)))
    second = asyncio.run(_trigger(dict(callback.kwargs), _context(run_json, deadline_id, due)))
    assert [e["state"] for e in first + second] == ["running", "success"] * 2
    assert len(mail_env.smtp.messages) == 1
    assert f"alert mail for missed deadline {deadline_id} was already sent (the archive has it)" in caplog.text
    # another deadline of the same run is another mail, with its own Message-ID
    asyncio.run(_trigger(dict(callback.kwargs), _context(run_json, str(uuid.uuid4()), due)))
    first_id, other_id = (_parsed(m.data)["Message-ID"] for m in mail_env.smtp.messages)
    assert len(mail_env.smtp.messages) == 2 and first_id != other_id


def test_sync_callback_as_the_executor_runs_it(mail_env, run_json, tmp_path):
    """``execute_callback`` (the executor's callback subprocess) builds the notifier and calls it."""
    from airflow.sdk.execution_time.callback_supervisor import execute_callback

    from airflow_secure_mail import SecureEmailNotifier

    callback = SecureEmailNotifier.deadline_callback(to="oncall@example.com", executor=True)
    assert type(callback).__name__ == "SyncCallback"
    deadline_id = str(uuid.uuid4())
    kwargs = {**callback.kwargs, "context": _context(run_json, deadline_id, _deadline_time(run_json))}
    import structlog

    ok, error = execute_callback(callback.path, kwargs, "", None, structlog.get_logger("executor"))
    assert (ok, error) == (True, None)
    [received] = mail_env.smtp.messages
    assert_subject(received.data, f"[Airflow] DEADLINE MISSED deadline_overrun - {run_json['dag_run_id']}")
    assert_automated(received.data)


def test_kwargs_that_cannot_be_stored_fail_when_the_dag_is_parsed():
    from airflow_secure_mail import SecureEmailNotifier
    from airflow_secure_mail.archive.store import MailArchive

    with pytest.raises(ConfigurationError) as err:
        SecureEmailNotifier.deadline_callback(to="oncall@example.com", archive=MailArchive("file:///tmp/a"))
    assert str(err.value) == (
        "deadline callback kwarg archive=MailArchive: a Deadline Alert stores its kwargs as JSON in the metadata "
        "database; give a reference instead (archive='s3://...' with archive_conn_id=/archive_transit_key=, "
        "policy as a connection's policy extra)."
    )
    with pytest.raises(ConfigurationError, match=r"kwargs \['digest'\] are not SecureEmailNotifier's"):
        SecureEmailNotifier.deadline_callback(to="oncall@example.com", digest="file:///tmp/d")
    with pytest.raises(ConfigurationError, match="need archive= as a location"):
        SecureEmailNotifier.deadline_callback(to="oncall@example.com", archive_conn_id="aws")
