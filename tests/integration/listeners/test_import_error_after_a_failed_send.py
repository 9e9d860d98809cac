"""An import-error mail that could not be sent is tried again at the next parse (found by the e2e, issue 22).

The e2e deployment broke a DAG file before its ``secure_smtp_default`` connection existed: the first report
failed (AirflowNotFoundException), its claim stayed without ``.sent``, and every later parse within the
5-minute lease logged "already mailed; next mail after the repeat interval" and sent nothing, although
nothing had been mailed. Expected: a claim whose send failed in this process is given up (marked failed), so
the next report sends; only a claim in flight in another process waits for its lease.
"""

from __future__ import annotations

from tests.integration.listeners.test_import_errors import BROKEN, TRACE


def test_the_next_parse_after_a_failed_send_mails_the_error(mail_env, listener, clock):
    mail_env.smtp.script.rcpt_replies["oncall@example.com"] = "550 5.1.1 mailbox unavailable"
    listener.on_new_dag_import_error(filename=BROKEN, stacktrace=TRACE)
    listener.drain()
    assert mail_env.smtp.messages == []
    mail_env.smtp.script.rcpt_replies.clear()  # the relay (or the connection) is fixed
    clock.advance(seconds=30)  # the dag-processor's next parse of the still broken file
    listener.on_existing_dag_import_error(filename=BROKEN, stacktrace=TRACE)
    listener.drain()
    assert len(mail_env.smtp.messages) == 1
