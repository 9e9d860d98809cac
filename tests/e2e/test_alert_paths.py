"""Every alert path of Airflow 3 in one real deployment, counted at the SMTP server (issue 22, "Done when").

One LocalExecutor deployment (scheduler, dag-processor, triggerer, api-server; PostgreSQL) with the listener
plugin configured through the environment (``AIRFLOW__SECURE_MAIL__LISTENER_*``, catch-all on), the project's
SMTP catcher, OpenBao and a file archive. Its DAGs folder holds the deadline and approval examples of ``dags/``
and ``tests/e2e/alert_dags/``, and a file the tests break, fix and break again. Everything is triggered when the
deployment is up, so the runs overlap; the tests then wait (polling, no fixed sleeps) for what each path mails:

- the deadline example overruns its Deadline Alert: the triggerer's first send is held at DATA by the catcher,
  the triggerer is SIGKILLed mid-send and started again, and one mail arrives, with one archive record;
- the approval example mails one request whose link opens the required-action page in Chromium; it is
  approved through the REST API and the run continues;
- a broken DAG file: one import-error mail; fixed: one resolved line; broken again within the repeat
  interval: nothing;
- a failing DAG with no callback: one listener mail; a failing DAG with its own callback: only its own;
- every mail is marked automated (RFC 3834); no secret in the triggerer's log or the callback rows.

Runs before the two deployments of test_deployment.py (file order) and never runs the examples' setup
command there (that suite proves its first run on a fresh Vault): the archive here is unsealed. It is a
folder of the deployment's home, not a bucket of the shared S3 server: SeaweedFS there is started with
``-volume.max=20`` and a third bucket written to left the CeleryExecutor deployment's writes failing.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.policy
import json
import os
import re
import shutil
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from email import message_from_bytes
from email.parser import BytesHeaderParser
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import ARTIFACTS, HERE, ROOT, VaultSetup, _connections, _keep_logs

LISTENER_TO = "listener@example.com"
DEADLINE_TO = "deadline@example.com"
APPROVERS = "approvers@example.com"
OWNER = "owner@example.com"  # e2e_alert_own_callback's notifier
BROKEN = "e2e_alert_broken.py"
BROKEN_SOURCE = (
    '"""A DAG file broken on purpose (the import-error path)."""\n'
    "from airflow.sdk import DAG\n\n"
    'raise RuntimeError("e2e: this DAG file does not import")\n'
)
FIXED_SOURCE = (
    '"""The same DAG file, fixed."""\n'
    "from datetime import datetime\n\n"
    "from airflow.sdk import DAG\n\n"
    'with DAG(dag_id="e2e_alert_broken", start_date=datetime(2026, 1, 1), schedule=None) as dag:\n'
    "    pass\n"
)
DEADLINE_SUBJECT = "[Airflow] DEADLINE MISSED secure_mail_deadline - "
TRIGGERED = ("secure_mail_deadline", "secure_mail_approval", "e2e_alert_no_callback", "e2e_alert_own_callback")
ALREADY_MAILED = "already mailed; next mail after the repeat interval"


class HeldData:
    """Hold the catcher's reply to DATA of the first message whose subject has ``marker`` until its client goes away.

    The catcher (airflow_secure_mail.testing.smtp) has no option to answer DATA slowly, so this replaces its
    handler's ``handle_DATA`` in this process while installed. The held message is not stored when the client
    disconnects before the reply (aiosmtpd cancels the handler): a server takes responsibility for a message
    only with its reply, so a sender killed before the reply must send it again, and only that copy counts.
    """

    def __init__(self, marker: str, limit: float = 240.0) -> None:
        self.marker = marker
        self.limit = limit
        self.arrived = threading.Event()
        self.dropped = threading.Event()
        self._used = False
        self._original: Callable[..., Any] | None = None

    def install(self) -> HeldData:
        from airflow_secure_mail.testing import smtp as catcher

        original = self._original = catcher._Handler.handle_DATA
        held = self

        async def handle_DATA(handler: Any, server: Any, session: Any, envelope: Any) -> str:
            data = bytes(envelope.original_content or envelope.content or b"")
            if held._used or held.marker not in _subject(data):
                return str(await original(handler, server, session, envelope))
            held._used = True
            held.arrived.set()
            try:
                give_up = time.monotonic() + held.limit
                while server.transport is not None and time.monotonic() < give_up:
                    await asyncio.sleep(0.2)
            except asyncio.CancelledError:
                held.dropped.set()  # the client disconnected: nothing stored, no reply
                raise
            if server.transport is None:
                held.dropped.set()
                return "421 4.4.2 client gone before the reply"
            return str(await original(handler, server, session, envelope))

        catcher._Handler.handle_DATA = handle_DATA  # type: ignore[method-assign]
        return self

    def uninstall(self) -> None:
        from airflow_secure_mail.testing import smtp as catcher

        if self._original is not None:
            catcher._Handler.handle_DATA = self._original  # type: ignore[method-assign]
            self._original = None


@dataclass
class Alerts:
    airflow: Any  # AirflowDeployment
    rest: Any  # AirflowRest
    archive: Path
    database: str
    held: HeldData
    runs: dict[str, str]
    watcher: Watcher


@pytest.fixture(scope="module")
def alerts(
    work: Path, user_venv: Path, postgres: Any, smtp: Any, vault: VaultSetup, s3: Any, ca_bundle: Path
) -> Iterator[Alerts]:
    from tests.e2e._deployment import AirflowDeployment
    from tests.e2e._rest import AirflowRest

    smtp.reset()
    dags = work / "alerts" / "dags"
    dags.mkdir(parents=True)
    for source in [ROOT / "dags" / "secure_mail_deadline.py", ROOT / "dags" / "secure_mail_approval.py"]:
        shutil.copy(source, dags / source.name)
    for source in (HERE / "alert_dags").glob("*.py"):
        shutil.copy(source, dags / source.name)
    home = work / "alerts" / "home"
    held = HeldData(DEADLINE_SUBJECT).install()
    airflow = AirflowDeployment(
        venv=user_venv,
        home=home,
        dags_folder=dags,
        db_url=postgres.create_database("airflow_alerts"),
        executor="LocalExecutor",
        extra_env={
            "SSL_CERT_FILE": str(ca_bundle),
            "AIRFLOW__SECURE_MAIL__LISTENER_TO": LISTENER_TO,
            "AIRFLOW__SECURE_MAIL__LISTENER_CATCH_ALL": "True",
            "AIRFLOW__SECURE_MAIL__LISTENER_DIGEST_STATE": f"file://{home}/listener-state",
            "AIRFLOW__SECURE_MAIL__LISTENER_REPEAT_INTERVAL": "1h",
            # A fixed file is seen quickly: list the folder and re-parse files every few seconds.
            "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "3",
            "AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL": "5",
            "AIRFLOW__DAG_PROCESSOR__DAG_FILE_PROCESSOR_TIMEOUT": "180",  # a loaded machine
            # The examples' settings (docs/examples.md): a short deadline, an unsealed archive in the home.
            "SECURE_MAIL_ALERT_TO": DEADLINE_TO,
            "SECURE_MAIL_DEADLINE_SECONDS": "10",
            "SECURE_MAIL_ARCHIVE": f"file://{home}/archive",
            "SECURE_MAIL_ARCHIVE_CONN": "",
            "SECURE_MAIL_ARCHIVE_KEY": "",
            "SECURE_MAIL_APPROVERS": APPROVERS,
        },
    )
    try:
        airflow.start()
        rest = AirflowRest(airflow.api_url, "admin", airflow.admin_password)
        for body in _connections("local", rest.hook_meta(), smtp, vault, s3).values():
            rest.create_connection(body)
        # Broken only now: a report made while secure_smtp_default did not exist was not mailed for 5 minutes
        # (the failed claim counts as "in flight" until its lease ends; see the report of issue 22).
        (dags / BROKEN).write_text(BROKEN_SOURCE)
        rest.wait_for_dags(set(TRIGGERED))
        runs = {}
        for dag_id in TRIGGERED:
            rest.unpause(dag_id)
            runs[dag_id] = rest.trigger(dag_id)
        watcher = _kill_the_triggerer_mid_send(airflow, held, smtp)
        yield Alerts(airflow, rest, home / "archive", "airflow_alerts", held, runs, watcher)
    finally:
        held.uninstall()
        airflow.stop()
        _keep_logs(airflow, "alerts")


# -- helpers ----------------------------------------------------------------------------------------------


def _subject(data: bytes) -> str:
    return str(BytesHeaderParser(policy=email.policy.default).parsebytes(data)["Subject"] or "").strip()


def _mails(smtp: Any, rcpt: str, subject_part: str) -> list[Any]:
    return [m for m in list(smtp.messages) if rcpt in m.rcpt_tos and subject_part in _subject(m.data)]


def _wait_for(what: str, found: Callable[[], Any], timeout: float = 240, every: float = 1.0) -> Any:
    """Poll ``found`` until it returns something truthy; fail naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = found()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout:.0f}s")
        time.sleep(every)


def _text(data: bytes) -> str:
    message = message_from_bytes(data, policy=email.policy.default)
    part = message.get_body(preferencelist=("plain",))
    return str(part.get_content()) if part is not None else ""


def _descendants(pid: int) -> list[int]:
    """Every live process below ``pid`` (from /proc), children first."""
    parents: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            parents.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = [], [pid]
    while todo:
        for child in parents.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def _kill_triggerer(airflow: Any) -> None:
    """SIGKILL the triggerer's process group and anything it forked into another group: no goodbye."""
    proc = airflow._procs.pop("triggerer")
    below = _descendants(proc.pid)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    for pid in below:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    proc.wait(timeout=30)


@dataclass
class Watcher:
    thread: threading.Thread
    notes: dict[str, Any]


def _kill_the_triggerer_mid_send(airflow: Any, held: HeldData, smtp: Any) -> Watcher:
    """As soon as the catcher holds the deadline mail at DATA, SIGKILL the triggerer, then start it again.

    From a thread: the SMTP client gives up on a silent server after its timeout, so the kill must come first.
    """
    notes: dict[str, Any] = {}

    def watch() -> None:
        if not held.arrived.wait(600):
            return
        _kill_triggerer(airflow)
        notes["dropped"] = held.dropped.wait(60)
        notes["stored_while_held"] = len(_deadline_mails(smtp))
        airflow._spawn("triggerer", "triggerer")
        notes["restarted"] = True

    thread = threading.Thread(target=watch, name="kill-triggerer", daemon=True)
    thread.start()
    return Watcher(thread, notes)


def _archive_records(archive: Path, dag_id: str) -> list[dict[str, Any]]:
    """Committed archive records (``messages/.../<key>.json``) whose origin is ``dag_id``."""
    out = []
    for path in sorted((archive / "messages").rglob("*.json")):
        if path.name.endswith(".pending.json") or ".failed-" in path.name:
            continue
        meta = json.loads(path.read_text())
        if (meta.get("airflow") or {}).get("dag_id") == dag_id:
            out.append(meta)
    return out


def _deadline_mails(smtp: Any) -> list[Any]:
    return [m for m in list(smtp.messages) if _subject(m.data).startswith(DEADLINE_SUBJECT)]


def _message_id(data: bytes) -> str:
    return str(BytesHeaderParser().parsebytes(data)["Message-ID"] or "").strip()


# -- a broken DAG file (the listener in the dag-processor) ------------------------------------------------


def test_broken_dag_file_mails_one_import_error(alerts: Alerts, smtp: Any) -> None:
    subject = f"[Airflow] DAG import error: {BROKEN}"
    mails = _wait_for("the import-error mail", lambda: _mails(smtp, LISTENER_TO, subject))
    assert len(mails) == 1, [_subject(m.data) for m in mails]
    text = _text(mails[0].data)
    assert "e2e: this DAG file does not import" in text, text
    (alerts.airflow.dags_folder / BROKEN).write_text(FIXED_SOURCE)  # its resolved line is checked further down


# -- a Deadline Alert (the triggerer), killed mid-send ----------------------------------------------------


def test_deadline_miss_mails_once_although_the_triggerer_is_killed_mid_send(
    alerts: Alerts, smtp: Any, postgres: Any
) -> None:
    airflow, held, notes = alerts.airflow, alerts.held, alerts.watcher.notes
    assert held.arrived.wait(300), "the triggerer never sent the deadline mail's data"
    alerts.watcher.thread.join(120)
    assert notes.get("dropped"), f"the catcher still held the deadline mail after the triggerer died: {notes}"
    assert notes["stored_while_held"] == 0, "the held copy was stored"
    assert notes.get("restarted"), notes
    airflow.wait_healthy()

    def callback_done() -> bool:
        states = postgres.psql("SELECT state FROM callback", database=alerts.database).split()
        return bool(states) and all(s in ("success", "failed") for s in states)

    _wait_for("the deadline callback's end (callback.state)", callback_done, timeout=300, every=2)
    states = postgres.psql("SELECT state FROM callback", database=alerts.database).split()
    assert states == ["success"], states
    mails = _deadline_mails(smtp)
    assert len(mails) == 1, f"{len(mails)} deadline mails"
    assert mails[0].rcpt_tos == [DEADLINE_TO]
    assert alerts.runs["secure_mail_deadline"] in _subject(mails[0].data)
    records = _archive_records(alerts.archive, "secure_mail_deadline")
    assert len(records) == 1, records
    assert records[0]["status"] == "sent" and records[0]["message_id"] == _message_id(mails[0].data)
    run = alerts.rest.wait_for_run("secure_mail_deadline", alerts.runs["secure_mail_deadline"])
    assert run["state"] == "success"


# -- a human-in-the-loop request ------------------------------------------------------------------------


def test_approval_request_link_opens_the_required_action_page_and_rest_approval_continues_the_run(
    alerts: Alerts, smtp: Any
) -> None:
    from tests.e2e._ui import browser_page, log_in

    run_id = alerts.runs["secure_mail_approval"]
    subject = "[Airflow] INPUT REQUIRED secure_mail_approval.approve_release: Publish the weekly figures?"
    mails = _wait_for("the approval request mail", lambda: _mails(smtp, APPROVERS, subject))
    assert len(mails) == 1
    text = _text(mails[0].data)
    assert "Approve, Reject" in text, text
    link = re.search(r"Respond here: (\S+)", text)
    assert link is not None, text
    url = link.group(1)
    assert url.startswith(f"{alerts.airflow.api_url}/dags/secure_mail_approval/runs/"), url
    assert url.split("?")[0].endswith("/tasks/approve_release/required_actions"), url
    with browser_page() as page:
        log_in(page, alerts.airflow.api_url, "admin", alerts.airflow.admin_password)
        page.goto(url, wait_until="networkidle")
        page.get_by_text("Publish the weekly figures?").first.wait_for()
        page.get_by_role("button", name="Approve").first.wait_for()
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "alert-paths-required-action.png"))
    _wait_for(
        "the approval task waiting for input",
        lambda: alerts.rest.answer_if_asked(
            "secure_mail_approval",
            run_id,
            "approve_release",
            ["Approve"],
            lambda: alerts.airflow.parked("secure_mail_approval", run_id, "approve_release"),
        ),
        timeout=120,
    )
    run = alerts.rest.wait_for_run("secure_mail_approval", run_id)
    assert run["state"] == "success"
    states = {ti["task_id"]: ti["state"] for ti in alerts.rest.task_instances("secure_mail_approval", run_id)}
    assert states == {"approve_release": "success", "publish": "success"}
    detail = alerts.rest.hitl_detail("secure_mail_approval", run_id, "approve_release")
    assert detail is not None and detail["chosen_options"] == ["Approve"]
    assert len(_mails(smtp, APPROVERS, subject)) == 1, "the request was mailed again"


# -- failures: the catch-all and a DAG's own callback -------------------------------------------------------


def test_failure_of_a_dag_without_callback_mails_one_listener_digest(alerts: Alerts, smtp: Any) -> None:
    run = alerts.rest.wait_for_run("e2e_alert_no_callback", alerts.runs["e2e_alert_no_callback"])
    assert run["state"] == "failed"

    def listener_mails() -> list[Any]:
        return [m for m in list(smtp.messages) if LISTENER_TO in m.rcpt_tos and b"e2e_alert_no_callback" in m.data]

    mails = _wait_for("the listener's mail for e2e_alert_no_callback", listener_mails, timeout=120)
    assert len(mails) == 1, [_subject(m.data) for m in mails]
    assert b"refresh_dimensions" in mails[0].data


def test_failure_of_a_dag_with_its_own_callback_mails_only_its_own(alerts: Alerts, smtp: Any) -> None:
    run = alerts.rest.wait_for_run("e2e_alert_own_callback", alerts.runs["e2e_alert_own_callback"])
    assert run["state"] == "failed"
    own = _wait_for("the DAG's own alert", lambda: [m for m in list(smtp.messages) if OWNER in m.rcpt_tos], timeout=120)
    assert len(own) == 1 and b"rebuild_index" in own[0].data
    # The listener's hook runs right after the task's own callback, in the same task process, which has
    # exited by now; the last test of this file looks again.
    assert not [m for m in smtp.messages if LISTENER_TO in m.rcpt_tos and b"e2e_alert_own_callback" in m.data]


# -- the broken file, fixed and broken again ------------------------------------------------------------


def test_fixed_file_mails_one_resolved_line_and_breaking_it_again_within_the_repeat_interval_mails_nothing(
    alerts: Alerts, smtp: Any
) -> None:
    resolved_subject = f"[Airflow] DAG import error resolved: {BROKEN}"
    resolved = _wait_for(
        "the resolved line (the listener looks every 60 s)",
        lambda: _mails(smtp, LISTENER_TO, resolved_subject),
        timeout=240,
    )
    assert len(resolved) == 1
    assert f"Resolved: {BROKEN} imports again" in _text(resolved[0].data)
    processor = alerts.airflow.component_log("dag-processor")
    before = processor.read_text(errors="replace").count(ALREADY_MAILED)
    (alerts.airflow.dags_folder / BROKEN).write_text(BROKEN_SOURCE)
    _wait_for(
        "the listener's report of the second break",
        lambda: processor.read_text(errors="replace").count(ALREADY_MAILED) > before,
        timeout=180,
        every=2,
    )
    assert len(_mails(smtp, LISTENER_TO, f"[Airflow] DAG import error: {BROKEN}")) == 1
    assert len(_mails(smtp, LISTENER_TO, resolved_subject)) == 1


# -- every mail, every log ------------------------------------------------------------------------------


def test_every_alert_mail_is_marked_automated(alerts: Alerts, smtp: Any) -> None:
    received = list(smtp.messages)
    assert len(received) >= 6, [_subject(m.data) for m in received]
    parser = BytesHeaderParser(policy=email.policy.default)
    for message in received:
        headers = parser.parsebytes(message.data)
        assert headers["Auto-Submitted"] == "auto-generated", _subject(message.data)
        assert headers["X-Auto-Response-Suppress"] == "All", _subject(message.data)


def test_no_secret_in_the_triggerer_log_or_the_callback_rows(
    alerts: Alerts, smtp: Any, vault: VaultSetup, s3: Any, postgres: Any
) -> None:
    secrets = {
        "SMTP password": smtp.users["airflow"],
        "Vault token": vault.token,
        "Vault root token": vault.server.root_token,
        "S3 secret key": s3.secret_key,
    }
    files = [p for p in alerts.airflow.logs.rglob("*") if p.is_file()]
    assert alerts.airflow.component_log("triggerer") in files
    for path in files:
        text = path.read_text(errors="replace")
        leaked = [what for what, value in secrets.items() if value in text]
        assert not leaked, f"{leaked} in {path}"
    dump = postgres.dump(alerts.database)
    assert "SecureEmailNotifier" in dump and DEADLINE_TO in dump, "no callback row in the dump"
    leaked = [what for what, value in secrets.items() if value in dump]
    assert not leaked, f"{leaked} in pg_dump of the metadata database"
    # and, a few minutes after it failed, still no listener mail for the DAG with its own callback
    assert not [m for m in smtp.messages if LISTENER_TO in m.rcpt_tos and b"e2e_alert_own_callback" in m.data]
