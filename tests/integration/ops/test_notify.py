"""airflow-secure-mail incident notify: one correction notice per (original message, recipient) of a window,
through the normal pipeline (screened, archived as a resend), never twice."""

from __future__ import annotations

import email
import json
from datetime import UTC, datetime, timedelta
from email import policy
from pathlib import Path

from airflow_secure_mail.archive.store import MailArchive
from airflow_secure_mail.mail.compose import MailRequest
from airflow_secure_mail.pipeline.channel import MailChannel
from airflow_secure_mail.pipeline.send import send_mail
from tests.integration.ops.seed_window import seed_messages

TEMPLATE = """Subject: Correction: {{ dag_id }} report of {{ sent_at[:10] }}

Dear {{ recipient }},

the report {{ message_id }} (DAG {{ dag_id }}, task {{ task_id }}, run {{ run_id }}) had wrong figures.
Please disregard it.
"""
ORIGIN = {"dag_id": "finance", "task_id": "mail", "run_id": "scheduled__1", "map_index": -1, "try_number": 1}


def _cli(capsys, *args: str) -> tuple[int, list[str]]:
    from airflow_secure_mail.cli import main

    capsys.readouterr()
    code = main(["incident", "notify", *args])
    return code, capsys.readouterr().out.splitlines()


def _send(archive: MailArchive, **fields) -> str:
    request = MailRequest(sender="airflow@example.com", subject="figures", text="wrong figures\n", **fields)
    result = send_mail(request, channel=MailChannel.for_conn(), archive=archive, origin=ORIGIN, allow_partial=True)
    return str(result.to_xcom()["message_ids"][0])


def _window_with_two_sends(mail_env, tmp_path):
    """An archive with old records (outside the window) and two real sends: one with To, Cc and Bcc, one that
    the server partly refused. Returns (url, template path, first Message-ID, second Message-ID)."""
    url = f"file://{tmp_path}/archive"
    archive = MailArchive(url)
    seed_messages(archive, datetime(2026, 1, 10, tzinfo=UTC), 5)
    first = _send(archive, to=("ann@example.com",), cc=("bob@example.org",), bcc=("cy@example.net",))
    mail_env.smtp.script.rcpt_replies["gone@example.com"] = "550 5.1.1 mailbox unavailable"
    second = _send(archive, to=("dee@example.com", "gone@example.com"))
    mail_env.smtp.messages.clear()
    template = tmp_path / "notice.j2"
    template.write_text(TEMPLATE)
    return url, str(template), first, second


def _parsed(data: bytes):
    return email.message_from_bytes(data, policy=policy.default)


def test_notices_go_to_exactly_the_windows_recipients_each_alone(mail_env, tmp_path, capsys):
    url, template, first, second = _window_with_two_sends(mail_env, tmp_path)

    code, out = _cli(capsys, "--archive", url, "--since", "1h", "--template", template)

    assert code == 0, out
    received = {tuple(m.rcpt_tos): m for m in mail_env.smtp.messages}
    assert sorted(received) == [("ann@example.com",), ("bob@example.org",), ("cy@example.net",), ("dee@example.com",)]
    everyone = ("ann@", "bob@", "cy@", "dee@", "gone@")
    for (rcpt,), m in received.items():
        msg = _parsed(m.data)
        original = second if rcpt == "dee@example.com" else first
        assert msg["To"] == rcpt and msg["Cc"] is None and msg["Bcc"] is None
        assert [a for a in everyone if a.encode() in m.data and not rcpt.startswith(a)] == []  # nobody else named
        assert msg["In-Reply-To"] == original and msg["References"] == original
        assert msg["Subject"] == f"Correction: finance report of {datetime.now(UTC):%Y-%m-%d}"
        body = msg.get_content().replace("\r\n", "\n")
        assert body.startswith(f"Dear {rcpt},\n\nthe report {original} (DAG finance, task mail, run scheduled__1)")
    assert out[-1] == "4 notice(s) for 2 sent message(s) in the window: 4 sent, 0 failed"
    assert sorted(line.split()[1] for line in out[:-1]) == sorted(r for (r,) in received)
    assert all(line.startswith("sent ") for line in out[:-1])


def test_notices_are_archived_as_resends_and_a_second_run_sends_nothing(mail_env, tmp_path, capsys):
    url, template, first, second = _window_with_two_sends(mail_env, tmp_path)
    assert _cli(capsys, "--archive", url, "--since", "1h", "--template", template)[0] == 0
    sent = {m.rcpt_tos[0]: _parsed(m.data)["Message-ID"] for m in mail_env.smtp.messages}
    mail_env.smtp.messages.clear()

    code, out = _cli(capsys, "--archive", url, "--since", "1h", "--template", template)

    assert code == 0 and mail_env.smtp.messages == []
    assert out[-1] == "4 notice(s) for 2 sent message(s) in the window: 0 sent, 4 already sent, 0 failed"
    assert all(line.startswith("already_sent ") for line in out[:-1])
    committed = [p for p in Path(tmp_path, "archive", "messages").rglob("*.json") if p.name.count(".") == 1]
    records = [json.loads(p.read_text()) for p in committed]
    notices = {r["envelope"]["recipients"][0]: r for r in records if r.get("resend_of")}
    originals = {r["message_id"]: r["key"] for r in records if not r.get("resend_of")}
    assert sorted(notices) == sorted(sent)
    for rcpt, record in notices.items():
        assert record["message_id"] == sent[rcpt] and record["status"] == "sent"
        assert record["resend_of"] == (second if rcpt == "dee@example.com" else first)
        assert record["airflow"]["notice_of"] == originals[record["resend_of"]]
        assert record["airflow"]["incident_notice"] is True


def test_a_changed_template_is_a_new_notice(mail_env, tmp_path, capsys):
    url, template, _, _ = _window_with_two_sends(mail_env, tmp_path)
    until = (datetime.now(UTC) + timedelta(seconds=1)).isoformat()
    assert _cli(capsys, "--archive", url, "--since", "1h", "--until", until, "--template", template)[0] == 0
    Path(template).write_text(TEMPLATE.replace("Please disregard it.", "Corrected figures follow."))
    mail_env.smtp.messages.clear()

    code, _ = _cli(capsys, "--archive", url, "--since", "1h", "--until", until, "--template", template)

    assert code == 0 and len(mail_env.smtp.messages) == 4
    assert all(b"Corrected figures follow." in m.data for m in mail_env.smtp.messages)


def test_dry_run_lists_the_notices_and_sends_nothing(mail_env, tmp_path, capsys):
    url, template, first, _ = _window_with_two_sends(mail_env, tmp_path)

    code, out = _cli(capsys, "--archive", url, "--since", "1h", "--template", template, "--dry-run",
                     "--recipient-domain", "EXAMPLE.com")  # fmt: skip

    assert code == 0 and mail_env.smtp.messages == []
    assert [line.split()[:2] for line in out[:-1]] == [
        ["would_send", "ann@example.com"],
        ["would_send", "dee@example.com"],
    ]
    assert f"re {first}" in out[0]
    assert out[-1] == "dry run: 2 notice(s) for 2 sent message(s) in the window: 0 sent, 2 would send, 0 failed"
    assert len(list(Path(tmp_path, "archive", "messages").rglob("*.pending.json"))) == 2  # the two originals


def test_an_undefined_variable_fails_in_one_line_before_anything_is_sent(mail_env, tmp_path, capsys):
    url, template, _, _ = _window_with_two_sends(mail_env, tmp_path)
    Path(template).write_text(TEMPLATE.replace("Please disregard it.", "Ticket {{ ticket }}."))
    before = sorted(Path(tmp_path, "archive").rglob("*"))

    code, out = _cli(capsys, "--archive", url, "--since", "1h", "--template", template)

    assert code == 2 and mail_env.smtp.messages == []
    assert out == [
        f"error: template {template}: 'ticket' is undefined; the variables are message_id, sent_at, dag_id, "
        "task_id, run_id, recipient."
    ]
    assert sorted(Path(tmp_path, "archive").rglob("*")) == before


def test_a_failed_notice_does_not_stop_the_others_and_exits_1(mail_env, tmp_path, capsys):
    url, template, _, _ = _window_with_two_sends(mail_env, tmp_path)
    mail_env.smtp.script.rcpt_replies["bob@example.org"] = "550 5.1.1 mailbox unavailable"

    code, out = _cli(capsys, "--archive", url, "--since", "1h", "--template", template)

    assert code == 1
    assert sorted(m.rcpt_tos[0] for m in mail_env.smtp.messages) == [
        "ann@example.com",
        "cy@example.net",
        "dee@example.com",
    ]
    [failed] = [line for line in out if line.startswith("failed")]
    assert "bob@example.org" in failed and "550" in failed
    assert out[-1] == "4 notice(s) for 2 sent message(s) in the window: 3 sent, 1 failed"


def test_notices_into_an_encrypted_archive_need_its_transit_key(mail_env, tmp_path, capsys):
    """A notice archived in plain text beside sealed originals would undo encryption at rest: refused first."""
    from airflow_secure_mail.archive.record import ArchiveStatus, RecordMetadata

    url = f"file://{tmp_path}/archive"
    now = datetime.now(UTC)
    meta = RecordMetadata(
        key="k" * 40, sender="airflow@example.com", recipients=("ann@example.com",), size=1, stored_size=1,
        sha256="0" * 64, staged_at=now.isoformat(), message_id="<sealed-1@example.com>",
        encryption={"alg": "AES-256-GCM", "key_version": 1},
    ).committed(ArchiveStatus.SENT, now.isoformat(), {"accepted": ["ann@example.com"], "refused": {}}, None)  # fmt: skip
    MailArchive(url).write_once(f"messages/{now:%Y/%m/%d}/{'k' * 40}.json", meta.to_json())
    template = tmp_path / "notice.j2"
    template.write_text(TEMPLATE)

    code, out = _cli(capsys, "--archive", url, "--since", "1h", "--template", str(template))

    assert code == 2 and mail_env.smtp.messages == []
    assert out == [f"error: {url} is encrypted at rest: give --transit-key so the notices are archived sealed too."]
    assert _cli(capsys, "--archive", url, "--since", "1h", "--template", str(template), "--dry-run") == (2, out)


def test_notices_into_an_encrypted_archive_are_sealed(mail_env, tmp_path, transit_key, capsys):
    url = f"file://{tmp_path}/archive"
    original = _send(MailArchive(url, transit_key=transit_key), to=("ann@example.com",))
    mail_env.smtp.messages.clear()
    template = tmp_path / "notice.j2"
    template.write_text(TEMPLATE)

    code, out = _cli(
        capsys, "--archive", url, "--since", "1h", "--template", str(template), "--transit-key", transit_key
    )

    assert code == 0, out
    [received] = mail_env.smtp.messages
    assert _parsed(received.data)["In-Reply-To"] == original
    emls = [p.read_bytes() for p in Path(tmp_path, "archive", "messages").rglob("*.eml")]
    assert len(emls) == 2 and not [e for e in emls if b"disregard" in e or b"figures" in e]
