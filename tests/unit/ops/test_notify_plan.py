"""The notice template (sandboxed, strict) and the plan of notices, without any server."""

from __future__ import annotations

import email
from datetime import UTC, datetime
from email import policy

import pytest

from airflow_secure_mail.archive.record import ArchiveRecord, ArchiveStatus, RecordMetadata, record_key
from airflow_secure_mail.errors import ConfigurationError
from airflow_secure_mail.ops.notify import NoticeTemplate, plan_notices
from airflow_secure_mail.ops.trace import TraceEvent, _message_event

AT = datetime(2026, 11, 2, 8, 0, tzinfo=UTC)
TEXT = "Subject: Correction for {{ dag_id }}\n\nDear {{ recipient }}, {{ message_id }} of {{ sent_at }} was wrong.\n"


def _event(recipients, *, refused=(), airflow=None, message_id="<orig-1@example.com>") -> TraceEvent:
    key = record_key(message_id, "airflow@example.com", recipients)
    status = ArchiveStatus.PARTIALLY_REFUSED if refused else ArchiveStatus.SENT
    receipt = {"accepted": [r for r in recipients if r not in refused], "refused": {r: [550, "no"] for r in refused}}
    meta = RecordMetadata(
        key=key, sender="airflow@example.com", recipients=tuple(recipients), size=1, stored_size=1, sha256="0" * 64,
        staged_at=AT.isoformat(), message_id=message_id,
        airflow=airflow if airflow is not None else {"dag_id": "finance", "task_id": "mail", "run_id": "r1"},
    ).committed(status, AT.isoformat(), receipt, None)  # fmt: skip
    record = ArchiveRecord(key, f"messages/2026/11/02/{key}", meta, committed=True)
    return _message_event(record, AT, f"{record.prefix}.json")


def test_template_renders_subject_and_body():
    template = NoticeTemplate.from_text(TEXT, name="t.j2")
    variables = {"dag_id": "finance", "recipient": "a@example.com", "message_id": "<m@x>", "sent_at": "2026-11-02"}
    assert template.render(variables) == (
        "Correction for finance",
        "Dear a@example.com, <m@x> of 2026-11-02 was wrong.\n",
    )


@pytest.mark.parametrize(
    "text",
    ["Dear {{ recipient }}\n", "Subject: x\nbody right away\n", "Subject: only a subject", "Subjekt: x\n\nbody\n"],
)
def test_template_needs_a_subject_line_and_a_blank_line(text):
    with pytest.raises(ConfigurationError) as err:
        NoticeTemplate.from_text(text, name="t.j2")
    assert str(err.value) == "template t.j2: write 'Subject: ...' on the first line, a blank line, then the body."


def test_a_syntax_error_names_its_line_in_the_file():
    with pytest.raises(ConfigurationError) as err:
        NoticeTemplate.from_text("Subject: x\n\nline 3\nline 4 {{ recipient \n", name="t.j2")
    assert str(err.value).startswith("template t.j2, line 4: ")


def test_an_undefined_variable_is_one_line_naming_the_variables():
    template = NoticeTemplate.from_text("Subject: x\n\n{{ ticket }}\n", name="t.j2")
    with pytest.raises(ConfigurationError) as err:
        template.render({"recipient": "a@example.com"})
    assert str(err.value) == (
        "template t.j2: 'ticket' is undefined; the variables are message_id, sent_at, dag_id, task_id, run_id, "
        "recipient."
    )


def test_the_sandbox_refuses_internals():
    template = NoticeTemplate.from_text("Subject: x\n\n{{ recipient.__class__.__mro__ }}\n", name="t.j2")
    with pytest.raises(ConfigurationError, match="unsafe"):
        template.render({"recipient": "a@example.com"})


def test_a_subject_that_renders_to_two_lines_is_refused():
    template = NoticeTemplate.from_text("Subject: {{ dag_id }}\n\nbody\n", name="t.j2")
    with pytest.raises(ConfigurationError, match="more than one line"):
        template.render({"dag_id": "a\nBcc: x@evil.example"})


def test_one_notice_per_accepted_recipient_each_alone_replying_to_the_original():
    event = _event(["a@example.com", "b@example.org", "gone@example.com"], refused=["gone@example.com"])
    notices = plan_notices([event], NoticeTemplate.from_text(TEXT), "airflow@example.com")
    assert [n.recipient for n in notices] == ["a@example.com", "b@example.org"]
    for notice in notices:
        msg = email.message_from_bytes(notice.item.data, policy=policy.default)
        assert notice.item.recipients == (notice.recipient,) and msg["To"] == notice.recipient
        assert msg["In-Reply-To"] == "<orig-1@example.com>" and msg["References"] == "<orig-1@example.com>"
        assert notice.item.resend_of == "<orig-1@example.com>"
        assert notice.origin["notice_of"] == event.record.key and notice.origin["incident_notice"] is True
        others = {"a@example.com", "b@example.org", "gone@example.com"} - {notice.recipient}
        assert not [o for o in others if o.encode() in notice.item.data]
        assert msg["Subject"] == "Correction for finance"
        assert notice.key == record_key(notice.message_id, "airflow@example.com", (notice.recipient,))


def test_message_ids_follow_original_recipient_and_template():
    event = _event(["a@example.com", "b@example.org"])
    template = NoticeTemplate.from_text(TEXT)
    first = [n.message_id for n in plan_notices([event], template, "airflow@example.com")]
    again = [n.message_id for n in plan_notices([event], NoticeTemplate.from_text(TEXT), "airflow@example.com")]
    other = [
        n.message_id for n in plan_notices([event], NoticeTemplate.from_text(TEXT + "PS\n"), "airflow@example.com")
    ]
    assert first == again and len(set(first)) == 2
    assert not set(first) & set(other)


def test_notices_and_filters():
    notice = _event(["a@example.com"], airflow={"incident_notice": True}, message_id="<n@example.com>")
    event = _event(["a@example.com", "b@Bücher.example"])
    template = NoticeTemplate.from_text(TEXT)
    assert plan_notices([notice], template, "airflow@example.com") == []
    [only] = plan_notices([event, notice], template, "airflow@example.com", recipient_domain="XN--BCHER-KVA.example")
    assert only.recipient == "b@Bücher.example"
