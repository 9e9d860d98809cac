"""Import-error mails, through the hooks as the dag-processor calls them, counted at the SMTP catcher."""

from __future__ import annotations

import email
import email.policy

from tests.conftest import DAGS

BROKEN = f"{DAGS}/team/broken.py"
TRACE = (
    "Traceback (most recent call last):\n"
    '  File "<frozen importlib._bootstrap>", line 241, in _call_with_frames_removed\n'
    f'  File "{BROKEN}", line 7, in <module>\n'
    "    from team.helpers import load\n"
    "ModuleNotFoundError: No module named 'team.helpers'\n"
)
OTHER = f"  File \"{BROKEN}\", line 3\n    with DAG(\n         ^\nSyntaxError: '(' was never closed\n"


def _parsed(data: bytes):
    return email.message_from_bytes(data, policy=email.policy.default)


def _text(msg) -> str:
    return msg.get_body(("plain",)).get_content().replace("\r\n", "\n")


def _texts(mail_env):
    return [_text(_parsed(m.data)) for m in mail_env.smtp.messages]


def test_a_new_import_error_is_one_mail_with_the_file_the_error_first_seen_and_the_link(mail_env, listener):
    listener.on_new_dag_import_error(filename=BROKEN, stacktrace=TRACE)
    listener.drain()
    [received] = mail_env.smtp.messages
    assert received.rcpt_tos == ["oncall@example.com"]
    msg = _parsed(received.data)
    assert msg["Subject"] == "[Airflow] DAG import error: team/broken.py"
    assert msg["Auto-Submitted"] == "auto-generated"
    assert msg["X-Auto-Response-Suppress"] == "All"
    text = _text(msg)
    assert text.startswith("The DAG file team/broken.py does not import: its DAGs are not updated until it does.\n")
    assert "First seen: 2026-11-28 00:00 UTC\n" in text
    assert "    ModuleNotFoundError: No module named 'team.helpers'\n" in text
    assert "Import errors in the UI: http://airflow.example.com:8080/ (Dashboard, 'Dag Import Errors')\n" in text
    assert "In the REST API: http://airflow.example.com:8080/api/v2/importErrors\n" in text


def test_the_same_error_again_within_the_repeat_interval_sends_nothing(mail_env, listener, clock):
    listener.on_new_dag_import_error(filename=BROKEN, stacktrace=TRACE)
    listener.drain()
    for _ in range(7):  # the dag-processor re-parses the still broken file every 30 s; here every 30 min
        clock.advance(minutes=30)
        listener.on_existing_dag_import_error(filename=BROKEN, stacktrace=TRACE)
        listener.drain()
    assert len(mail_env.smtp.messages) == 1
    clock.advance(minutes=30)  # 4 h after the first mail
    listener.on_existing_dag_import_error(filename=BROKEN, stacktrace=TRACE)
    listener.drain()
    assert len(mail_env.smtp.messages) == 2
    assert "First seen: 2026-11-28 00:00 UTC\n" in _texts(mail_env)[1]


def test_another_error_of_the_same_file_is_its_own_mail(mail_env, listener, clock):
    listener.on_new_dag_import_error(filename=BROKEN, stacktrace=TRACE)
    listener.drain()
    clock.advance(minutes=1)
    listener.on_existing_dag_import_error(filename=BROKEN, stacktrace=OTHER)
    listener.drain()
    listener.on_existing_dag_import_error(filename=BROKEN, stacktrace=OTHER)
    listener.drain()
    assert len(mail_env.smtp.messages) == 2
    assert "    SyntaxError: '(' was never closed\n" in _texts(mail_env)[1]


def test_fixed_is_one_resolved_line_and_broken_again_within_the_interval_is_nothing(mail_env, listener, clock):
    listener.on_new_dag_import_error(filename=BROKEN, stacktrace=TRACE)
    listener.drain()
    alerts = listener.import_errors()
    clock.advance(minutes=10)
    assert alerts.resolve(broken=[]) == ["team/broken.py"]  # the table no longer lists the file
    assert alerts.resolve(broken=[]) == []
    assert len(mail_env.smtp.messages) == 2
    resolved = _parsed(mail_env.smtp.messages[1].data)
    assert resolved["Subject"] == "[Airflow] DAG import error resolved: team/broken.py"
    assert resolved["Auto-Submitted"] == "auto-generated"
    assert _text(resolved).splitlines()[0] == (
        "Resolved: team/broken.py imports again (broken since 2026-11-28 00:00 UTC; "
        "no import error reported at 2026-11-28 00:10 UTC)"
    )
    clock.advance(minutes=10)
    listener.on_new_dag_import_error(filename=BROKEN, stacktrace=TRACE)  # broken again, same error
    listener.drain()
    clock.advance(minutes=10)
    assert alerts.resolve(broken=[]) == []  # nobody was told it broke again: no resolved line either
    assert len(mail_env.smtp.messages) == 2


def test_a_file_still_broken_is_not_resolved(mail_env, listener):
    listener.on_new_dag_import_error(filename=BROKEN, stacktrace=TRACE)
    listener.drain()
    assert listener.import_errors().resolve(broken=[BROKEN]) == []
    assert len(mail_env.smtp.messages) == 1


def test_a_secret_in_the_stack_trace_never_reaches_the_mail(mail_env, listener):
    from airflow.sdk.log import mask_secret

    mask_secret("Vault-issued-s3cret-42")
    trace = TRACE.replace(
        "    from team.helpers import load\n",
        "    engine = create_engine('postgresql://etl:hunter2pass@db/warehouse', token='Vault-issued-s3cret-42')\n",
    )
    listener.on_new_dag_import_error(filename=BROKEN, stacktrace=trace)
    listener.drain()
    [received] = mail_env.smtp.messages
    assert b"hunter2pass" not in received.data and b"Vault-issued-s3cret-42" not in received.data
    assert "postgresql://***:***@db/warehouse" in _texts(mail_env)[0]


def test_two_dag_processors_sharing_the_state_mail_once(mail_env, listener, clock):
    from airflow_secure_mail.listeners.plugin import SecureMailListener

    other = SecureMailListener(clock=clock)
    listener.on_new_dag_import_error(filename=BROKEN, stacktrace=TRACE)
    listener.drain()
    other.on_new_dag_import_error(filename=BROKEN, stacktrace=TRACE)
    other.drain()
    assert len(mail_env.smtp.messages) == 1
    clock.advance(minutes=1)
    listener.import_errors().resolve(broken=[])
    other.import_errors().resolve(broken=[])
    assert len(mail_env.smtp.messages) == 2


def test_off_when_not_configured_sends_nothing_and_raises_nothing(mail_env, monkeypatch, tmp_path):
    from airflow_secure_mail.listeners.plugin import SecureMailListener

    monkeypatch.delenv("AIRFLOW__SECURE_MAIL__LISTENER_TO", raising=False)
    off = SecureMailListener()
    off.on_new_dag_import_error(filename=BROKEN, stacktrace=TRACE)
    off.on_existing_dag_import_error(filename=BROKEN, stacktrace=TRACE)
    assert off.resolve_once() == []
    assert mail_env.smtp.messages == []


def test_the_resolver_reads_the_import_error_table(mail_env, airflow_db, listener, clock):
    """What the dag-processor's resolver thread does once a minute, against Airflow's own table."""
    from airflow.models.errors import ParseImportError
    from airflow.utils.session import create_session

    with create_session() as session:
        session.add(ParseImportError(filename="team/broken.py", bundle_name="dags-folder", stacktrace=TRACE))
    listener.on_new_dag_import_error(filename=BROKEN, stacktrace=TRACE)
    listener.drain()
    assert listener.resolve_once() == []  # still in the table
    with create_session() as session:
        session.query(ParseImportError).delete()
    clock.advance(minutes=5)
    assert listener.resolve_once() == ["team/broken.py"]
    assert len(mail_env.smtp.messages) == 2


def test_the_mail_leaves_from_the_listeners_thread_not_airflows_transaction(mail_env, listener, caplog):
    """The dag-processor calls the hook inside the transaction that writes the import-error table: the hook only
    queues, the listener's own thread sends (Vault, TLS, the relay never hold that transaction open)."""
    import logging
    import threading

    with caplog.at_level(logging.INFO, logger="airflow_secure_mail"):
        listener.on_new_dag_import_error(filename=BROKEN, stacktrace=TRACE)
        listener.drain()
    [sending] = [r for r in caplog.records if r.getMessage().startswith("secure-mail listener: sending")]
    assert sending.threadName == "secure-mail-listener" != threading.current_thread().name
    assert len(mail_env.smtp.messages) == 1


def test_a_failed_send_is_sent_again_at_the_next_report(mail_env, listener, clock, caplog):
    import logging
    import socket

    with socket.socket() as closed:  # a port nobody listens on: the relay is down
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    mail_env.set_smtp_conn(port=port, retries=0)
    with caplog.at_level(logging.ERROR, logger="airflow_secure_mail"):
        listener.on_new_dag_import_error(filename=BROKEN, stacktrace=TRACE)
        listener.drain()
    assert mail_env.smtp.messages == []
    assert any(
        r.getMessage().startswith(f"secure-mail listener: import error of {BROKEN} not mailed: ")
        for r in caplog.records
    )
    mail_env.set_smtp_conn()  # the relay is back
    clock.advance(minutes=1)
    listener.on_existing_dag_import_error(filename=BROKEN, stacktrace=TRACE)
    listener.drain()
    # the failed claim was given up (marked failed), not left in flight for its lease: the next parse mails
    assert len(mail_env.smtp.messages) == 1


def test_airflows_own_parse_result_writer_drives_the_mails(mail_env, airflow_db, listener, clock):
    """The dag-processor's code path: update_dag_parsing_results_in_db calls the hooks (new, then existing) with
    the bundle's full path, inside its transaction; a clean parse deletes the row and the resolver notices."""
    from airflow.dag_processing.collection import update_dag_parsing_results_in_db
    from airflow.listeners.listener import get_listener_manager
    from airflow.utils.session import create_session

    key = ("dags-folder", "team/broken.py")

    def parsed(errors):
        with create_session() as session:
            update_dag_parsing_results_in_db(
                "dags-folder", None, [], dict(errors), None, set(), session, files_parsed={key}
            )

    manager = get_listener_manager()
    manager.add_listener(listener)
    try:
        parsed({key: TRACE})  # on_new_dag_import_error
        clock.advance(minutes=1)
        parsed({key: TRACE})  # on_existing_dag_import_error
        listener.drain()
        assert len(mail_env.smtp.messages) == 1
        assert _parsed(mail_env.smtp.messages[0].data)["Subject"] == "[Airflow] DAG import error: team/broken.py"
        clock.advance(minutes=1)
        parsed({})  # the file parses again: Airflow deletes its row
        assert listener.resolve_once() == ["team/broken.py"]
    finally:
        manager.pm.unregister(listener)
    assert len(mail_env.smtp.messages) == 2
