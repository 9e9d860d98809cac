"""Issue 22 item 5: every automated mail says so (RFC 3834 ``Auto-Submitted``, Exchange's suppression header),
asserted on the bytes the SMTP server received: a task alert, a DAG-run mail and a digest. (The deadline and HITL
mails are checked in their own tests, tests/integration/notifications/test_deadline.py and test_hitl.py.)"""

from __future__ import annotations

from datetime import timedelta

from airflow_secure_mail.alerts.digest import AlertDigest
from tests.helpers import alert_context
from tests.integration.alerts.test_digest import START, _event

AUTOMATED = (b"\r\nAuto-Submitted: auto-generated\r\n", b"\r\nX-Auto-Response-Suppress: All\r\n")


def assert_automated(data: bytes) -> None:
    """Both fields, once each, in the header block of the bytes the server received."""
    head = data.split(b"\r\n\r\n", 1)[0] + b"\r\n"
    for field in AUTOMATED:
        assert head.count(field) == 1, (field, head)


def test_task_alert_and_dag_run_mail_are_marked_automated(mail_env):
    from airflow_secure_mail import SecureEmailNotifier

    notifier = SecureEmailNotifier(to="oncall@example.com")
    notifier.notify(alert_context(RuntimeError("boom")))
    notifier.notify({**alert_context(RuntimeError("boom")), "reason": "task_failure"})
    assert len(mail_env.smtp.messages) == 2
    for received in mail_env.smtp.messages:
        assert_automated(received.data)


def test_a_digest_is_marked_automated(mail_env, notifier_for, clock, tmp_path):
    digest = AlertDigest(state=f"file://{tmp_path}/state", group_interval="1h", clock=clock)
    clock.now = START
    digest.record(_event(START))
    clock.now = START + timedelta(minutes=1)
    digest.flush(notifier_for(digest))
    [received] = mail_env.smtp.messages
    assert b"Digest" in received.data
    assert_automated(received.data)


def test_a_header_of_the_same_name_given_by_the_caller_wins(mail_env):
    from airflow_secure_mail.pipeline.channel import MailChannel, request_for

    channel = MailChannel.for_conn("secure_smtp_default")
    request = request_for(
        channel, to="a@example.com", subject="s", text="t", automated=True, headers={"auto-submitted": "auto-replied"}
    )
    assert sorted(request.headers) == [("X-Auto-Response-Suppress", "All"), ("auto-submitted", "auto-replied")]
    assert request_for(channel, to="a@example.com", subject="s", text="t").headers == ()
