"""``airflow-secure-mail doctor --coverage``: a DAGs folder with one file per alert path, parsed by Airflow's DagBag."""

from __future__ import annotations

import json
import re
import textwrap
from pathlib import Path

import pytest

from airflow_secure_mail.cli import main

# Airflow warns about `email` on a task while parsing the DAG file that sets it: expected here.
pytestmark = pytest.mark.filterwarnings("ignore:Setting email:UserWarning")

HEAD = """\
from datetime import timedelta

from airflow.providers.standard.operators.empty import EmptyOperator
from airflow.sdk import DAG
from airflow.sdk.definitions.callback import AsyncCallback, SyncCallback
from airflow.sdk.definitions.deadline import DeadlineAlert, DeadlineReference

from airflow_secure_mail import SecureEmailNotifier

NOTIFY = SecureEmailNotifier(to="ops@example.com")


def page_someone(context):
    pass


async def page_async(**kwargs):
    pass


def deadline(callback, name=None):
    return DeadlineAlert(
        reference=DeadlineReference.DAGRUN_QUEUED_AT, interval=timedelta(minutes=5), callback=callback, name=name
    )
"""

DAG_FILES = {
    "ours_on_dag.py": """
        with DAG("ours_on_dag", schedule=None, on_failure_callback=[page_someone, NOTIFY]):
            EmptyOperator(task_id="extract", retries=1)
    """,
    "ours_on_tasks.py": """
        from team_alerts import TEAM  # a helper module next to the DAG files, as the dag-processor finds it

        args = {"on_failure_callback": TEAM, "on_retry_callback": TEAM, "retries": 2}
        with DAG("ours_on_tasks", schedule=None, default_args=args):
            EmptyOperator(task_id="extract")
            EmptyOperator(task_id="load")
    """,
    "other_callback.py": """
        with DAG("other_callback", schedule=None):
            EmptyOperator(task_id="extract", on_failure_callback=page_someone)
    """,
    "email_on_failure.py": """
        with DAG("email_on_failure", schedule=None):
            EmptyOperator(task_id="extract", email="ops@example.com", email_on_failure=True)
    """,
    "deadline_ours.py": """
        with DAG("deadline_ours", schedule=None, on_failure_callback=NOTIFY,
                 deadline=deadline(AsyncCallback(SecureEmailNotifier, kwargs={"to": "ops@example.com"}))):
            EmptyOperator(task_id="extract")
    """,
    "mixed.py": """
        alerts = [deadline(SyncCallback(SecureEmailNotifier), "late"), deadline(AsyncCallback(page_async), "pager")]
        with DAG("mixed", schedule=None, deadline=alerts):
            for name in ("a", "b", "c"):
                EmptyOperator(task_id=name, on_failure_callback=NOTIFY)
            EmptyOperator(task_id="bare")
    """,
    "nothing.py": """
        with DAG("nothing", schedule=None):
            EmptyOperator(task_id="extract", retries=3)
    """,
}
BROKEN = 'from airflow.sdk import DAG\n\nraise ValueError("no such table: vendors\\nsecond line")\n'

LISTENER_OFF = "  listener       off: [secure_mail] listener_to is empty"
TABLE = """\
  DAG               KIND       REACHES   HOW
  deadline_ours     failures   ours      SecureEmailNotifier on the DAG
                    retries    n/a       no task retries
                    deadlines  ours      SecureEmailNotifier as AsyncCallback
  email_on_failure  failures   <email>
                    retries    n/a       no task retries
                    deadlines  n/a       no deadline alert
  mixed             failures   ours      3/4 tasks: SecureEmailNotifier on the task
                               <bare>
                    retries    n/a       no task retries
                    deadlines  ours      1/2 deadline alerts: SecureEmailNotifier as SyncCallback (late)
                               other     1/2 deadline alerts: AsyncCallback: unusual_prefix_H_mixed.page_async (pager)
  nothing           failures   <nothing>
                    retries    none      nothing
                    deadlines  n/a       no deadline alert
  other_callback    failures   other     other callback on the task: page_someone
                    retries    n/a       no task retries
                    deadlines  n/a       no deadline alert
  ours_on_dag       failures   ours      SecureEmailNotifier on the DAG
                    retries    none      nothing
                    deadlines  n/a       no deadline alert
  ours_on_tasks     failures   ours      SecureEmailNotifier on the task
                    retries    ours      SecureEmailNotifier on the task
                    deadlines  n/a       no deadline alert

  FILE              KIND       REACHES   ERROR (no DAG runs: only the listener mails it)
  broken.py         import     <broken>  ValueError: no such table: vendors
"""


@pytest.fixture(scope="module")
def dags_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("dags")
    for name, body in DAG_FILES.items():
        (folder / name).write_text(HEAD + textwrap.dedent(body))
    (folder / "broken.py").write_text(BROKEN)
    (folder / "team_alerts.py").write_text(
        'from airflow_secure_mail import SecureEmailNotifier\n\nTEAM = SecureEmailNotifier(to="team@example.com")\n'
    )
    return folder


@pytest.fixture(autouse=True)
def _no_alert_config(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("LISTENER_TO", "LISTENER_CATCH_ALL", "LISTENER_IMPORT_ERRORS"):
        monkeypatch.delenv(f"AIRFLOW__SECURE_MAIL__{name}", raising=False)
    monkeypatch.delenv("AIRFLOW__EMAIL__EMAIL_BACKEND", raising=False)


def _coverage(folder: Path, capsys: pytest.CaptureFixture[str], *extra: str) -> tuple[int, str]:
    code = main(["doctor", "--coverage", "--dags-folder", str(folder), *extra])
    return code, capsys.readouterr().out


def _table(out: str) -> list[str]:
    """The report without its changing bit: the module name Airflow gives a DAG file holds a hash of its path."""
    return [re.sub(r"unusual_prefix_\w+?_mixed", "unusual_prefix_H_mixed", line) for line in out.splitlines()]


def _expected(**cells: str) -> list[str]:
    table = TABLE
    for name, cell in cells.items():
        table = table.replace(f"<{name}>", cell)
    return table.splitlines()


def test_every_alert_path_without_the_listener(dags_folder: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out = _coverage(dags_folder, capsys)
    lines = _table(out)
    assert lines[:4] == [
        f"airflow-secure-mail doctor --coverage: {dags_folder}",
        "  email_backend  airflow.utils.email.send_email_smtp (not ours)",
        LISTENER_OFF,
        "",
    ]
    assert lines[4:-2] == _expected(
        email="other     email_on_failure through Airflow's SmtpNotifier",
        bare="none      1/4 tasks: nothing (bare)",
        nothing="none      nothing",
        broken="none    ",
    )
    assert lines[-1] == (
        "summary: 7 DAGs, 1 file failing to import; failures: 3 ours, 2 other, 2 none; retries: 1 ours, 2 none, "
        "4 n/a; deadlines: 1 ours, 1 other, 5 n/a; FAIL: 2 DAG(s) and 1 file(s) reach no mail on failure"
    )
    assert code == 1


def test_email_on_failure_through_our_backend_is_ours(
    dags_folder: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AIRFLOW__EMAIL__EMAIL_BACKEND", "airflow_secure_mail.email_backend.send_email")
    code, out = _coverage(dags_folder, capsys)
    lines = _table(out)
    assert lines[1] == "  email_backend  airflow_secure_mail.email_backend.send_email (ours)"
    assert "  email_on_failure  failures   ours      email_on_failure through our email_backend" in lines
    assert code == 1  # `nothing` still mails nobody


def test_the_listener_turns_none_into_listener(
    dags_folder: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AIRFLOW__SECURE_MAIL__LISTENER_TO", "oncall@example.com, data@example.com")
    monkeypatch.setenv("AIRFLOW__SECURE_MAIL__LISTENER_CATCH_ALL", "True")
    code, out = _coverage(dags_folder, capsys)
    lines = _table(out)
    assert lines[2] == "  listener       mails failures (listener_catch_all) and import errors to 2 address(es)"
    assert lines[4:-2] == _expected(
        email="other     email_on_failure through Airflow's SmtpNotifier",  # its own mail: the listener stays silent
        bare="listener  1/4 tasks: the provider's listener (listener_catch_all) (bare)",
        nothing="listener  the provider's listener (listener_catch_all)",
        broken="listener",
    )
    assert lines[-1].endswith(
        "failures: 3 ours, 2 listener, 2 other; retries: 1 ours, 2 none, 4 n/a; deadlines: 1 ours, 1 other, 5 n/a; "
        "every failure reaches a mail"
    )
    assert code == 0


def test_listener_without_catch_all_covers_import_errors_only(
    dags_folder: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AIRFLOW__SECURE_MAIL__LISTENER_TO", "oncall@example.com")
    code, out = _coverage(dags_folder, capsys)
    lines = _table(out)
    assert lines[2] == "  listener       mails import errors to 1 address(es)"
    assert "  broken.py         import     listener  ValueError: no such table: vendors" in lines
    assert lines[-1].endswith("FAIL: 2 DAG(s) and 0 file(s) reach no mail on failure")
    assert code == 1


def test_json_says_the_same(dags_folder: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out = _coverage(dags_folder, capsys, "--json")
    report = json.loads(out)  # stdout is JSON alone: the parse logs went to stderr
    assert code == report["exit_code"] == 1
    mixed = next(d for d in report["dags"] if d["dag_id"] == "mixed")
    assert mixed["file"] == "mixed.py"
    assert mixed["failures"] == {
        "reach": "none",
        "unit": "tasks",
        "paths": [
            {
                "reach": "ours",
                "how": "SecureEmailNotifier on the task",
                "count": 3,
                "of": 4,
                "members": ["a", "b", "c"],
            },
            {"reach": "none", "how": "nothing", "count": 1, "of": 4, "members": ["bare"]},
        ],
    }
    assert mixed["retries"] == {"reach": "n/a", "unit": "tasks", "paths": [], "absent": "no task retries"}
    assert report["import_errors"] == [
        {"file": "broken.py", "error": "ValueError: no such table: vendors", "reach": "none"}
    ]
    assert report["summary"] == {
        "dags": 7,
        "import_errors": 1,
        "failures": {"ours": 3, "other": 2, "none": 2},
        "retries": {"ours": 1, "none": 2, "n/a": 4},
        "deadlines": {"ours": 1, "other": 1, "n/a": 5},
        "dags_without_failure_mail": ["mixed", "nothing"],
        "files_without_mail": ["broken.py"],
    }
    assert report["listener"] == {
        "failures": False,
        "import_errors": False,
        "note": "off: [secure_mail] listener_to is empty",
    }


def test_a_missing_dags_folder_says_how_to_name_one(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out = _coverage(tmp_path / "nowhere", capsys)
    assert code == 2
    assert out == (
        f"FAIL  DAGs folder {tmp_path / 'nowhere'} is not a directory: pass --dags-folder PATH or set "
        "[core] dags_folder\n"
    )


def test_coverage_options_do_not_mix_with_the_connection_checklist(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["doctor", "--json"])
    assert "--dags-folder and --json go with --coverage" in capsys.readouterr().err


def test_an_unusable_listener_flag_turns_the_listener_off_as_the_listener_does() -> None:
    from airflow_secure_mail.cli.coverage import config_from

    config = config_from({"listener_to": "oncall@example.com", "listener_catch_all": "sometimes"})
    assert (config.listener_failures, config.listener_import_errors) == (False, False)
    # the listener's own words: the report and the listener judge the setting with the same reader
    assert config.listener_note == "off: [secure_mail] listener_catch_all = 'sometimes': give true or false."


def test_listener_import_errors_false_leaves_broken_files_uncovered() -> None:
    from airflow_secure_mail.cli.coverage import config_from

    values = {"listener_to": "oncall@example.com", "listener_catch_all": "true", "listener_import_errors": "False"}
    config = config_from(values)
    assert (config.listener_failures, config.listener_import_errors) == (True, False)
    assert config.listener_note == "mails failures (listener_catch_all) to 1 address(es)"


def test_the_error_of_a_syntax_error_is_its_last_line() -> None:
    from airflow_secure_mail.cli.coverage import first_error_line

    trace = (
        "Traceback (most recent call last):\n"
        '  File "<frozen importlib._bootstrap>", line 241, in _call_with_frames_removed\n'
        '  File "/dags/syntax.py", line 2\n'
        "    def (\n"
        "        ^\n"
        "SyntaxError: invalid syntax\n"
    )
    assert first_error_line(trace) == "SyntaxError: invalid syntax"


def test_json_stdout_holds_the_report_alone_when_run_as_a_command(dags_folder: Path) -> None:
    """Airflow's log handler writes to the process's stdout: parsing moves it (and DAG files' prints) to stderr."""
    import subprocess
    import sys

    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "airflow_secure_mail.cli",
            "doctor",
            "--coverage",
            "--dags-folder",
            str(dags_folder),
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 1
    assert json.loads(run.stdout)["import_errors"][0]["file"] == "broken.py"
    assert "Failed to import" in run.stderr  # Airflow's own log line, on stderr
