"""The pipeline: per-recipient copies, retries that send nothing twice, and what the task log says (never an address)."""

from __future__ import annotations

import logging
import re

import pytest

from airflow_secure_mail.archive.store import MailArchive
from airflow_secure_mail.errors import DeliveryError
from airflow_secure_mail.mail.compose import MailRequest
from airflow_secure_mail.pipeline.channel import MailChannel
from airflow_secure_mail.pipeline.send import send_mail
from tests.helpers import alert_context, numbered_request

ORIGIN = {"dag_id": "dag", "task_id": "task", "run_id": "run", "map_index": -1, "try_number": 1}
ADDRESS = re.compile(r"[\w.+-]+@[\w-]+\.[\w.]+(?![^<]*>)")  # an address outside a <Message-ID>


def _lines(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name.startswith("airflow_secure_mail")]


def _send(archive: MailArchive, *, split: bool = False, **request):  # type: ignore[no-untyped-def]
    base = {"sender": "airflow@example.com", "subject": "numbers", "text": "42", "id_seed": "dag|task|run|-1"}
    request = MailRequest(**(base | request))
    return send_mail(
        request, channel=MailChannel.for_conn(), archive=archive, origin=ORIGIN, one_message_per_recipient=split
    )


def test_send_and_retry_log_sent_then_already_sent(mail_env, tmp_path, caplog):
    archive = MailArchive(f"file://{tmp_path}/archive")
    request = {"to": ("ana@example.com", "bo@example.com"), "bcc": ("hidden.auditor@example.com",)}
    with caplog.at_level(logging.INFO, logger="airflow_secure_mail"):
        first = _send(archive, **request)
    [message_id] = [r.message_id for r in first.receipts]
    server = f"localhost:{mail_env.smtp.port()}"
    tls = mail_env.smtp.messages[0].tls_version
    [key] = first.archive_keys
    where = f"archived at file://{tmp_path}/archive/{key}.eml"
    assert f"sent {message_id} to 3 recipient(s) via {server} over {tls}; not signed or encrypted; {where}" in _lines(
        caplog
    )
    assert (tmp_path / "archive" / f"{key}.eml").is_file()
    assert f"1 message(s) sent, 0 already sent earlier, via {server}" in _lines(caplog)
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="airflow_secure_mail"):
        _send(archive, **request)
    lines = _lines(caplog)
    assert f"already sent by an earlier try, not sent again: {message_id}" in lines
    assert "nothing sent: all 1 message(s) were already sent by an earlier try" in lines
    assert not any(line.startswith(("sent ", "1 message(s) sent")) for line in lines)
    assert len(mail_env.smtp.messages) == 1
    assert "hidden.auditor" not in caplog.text and mail_env.password not in caplog.text


def test_partial_failure_logs_which_copies_went_out_and_retry_sends_the_rest(mail_env, tmp_path, caplog):
    archive = MailArchive(f"file://{tmp_path}/archive")
    team = ("ana@example.com", "bo@example.com", "chen@example.com")
    mail_env.smtp.script.rcpt_replies["bo@example.com"] = "550 5.1.1 mailbox unavailable"
    refused = r"every recipient was refused: 1 recipient\(s\), SMTP code\(s\) 550"
    with caplog.at_level(logging.INFO, logger="airflow_secure_mail"), pytest.raises(DeliveryError, match=refused):
        _send(archive, split=True, to=team)
    ids = {m.rcpt_tos[0]: m.data.split(b"Message-ID: ")[1].split(b"\r\n")[0].decode() for m in mail_env.smtp.messages}
    assert sorted(ids) == ["ana@example.com", "chen@example.com"]
    [failed] = [line for line in _lines(caplog) if line.startswith("not sent: ")]
    assert re.search(r"to 1 recipient\(s\) \(DeliveryError, permanent\); archived at file://\S+\.eml$", failed)
    bo_id = failed.removeprefix("not sent: ").split(" to ")[0]
    assert (
        f"1 of 3 message(s) failed ({bo_id}); went out in this try: {ids['ana@example.com']}, "
        f"{ids['chen@example.com']}; already sent earlier: 0" in _lines(caplog)
    )
    caplog.clear()
    mail_env.smtp.script.rcpt_replies.clear()
    with caplog.at_level(logging.INFO, logger="airflow_secure_mail"):
        _send(archive, split=True, to=team)
    lines = _lines(caplog)
    assert any(line.startswith(f"sent {bo_id} to 1 recipient(s) via ") for line in lines)
    assert any(line.startswith("1 message(s) sent, 2 already sent earlier") for line in lines)
    assert [m.rcpt_tos for m in mail_env.smtp.messages][-1] == ["bo@example.com"] and len(mail_env.smtp.messages) == 3
    assert not [line for line in lines if ADDRESS.search(line)]


def test_notifier_logs_when_it_sends(mail_env, caplog):
    from airflow_secure_mail.notifications.email import SecureEmailNotifier

    context = alert_context(RuntimeError("boom"), run_id="r1", hostname="w1")
    with caplog.at_level(logging.INFO, logger="airflow_secure_mail"):
        SecureEmailNotifier(to="oncall@example.com", bcc="hidden.auditor@example.com").notify(context)
    lines = _lines(caplog)
    assert "SecureEmailNotifier: sending '[Airflow] FAILED sales.load — r1' to 2 recipient(s)" in lines
    assert any(line.startswith("sent <") and "to 2 recipient(s)" in line for line in lines)
    assert "hidden.auditor" not in caplog.text


def test_refused_bcc_recipient_is_not_named_in_the_error(mail_env, tmp_path, caplog):
    mail_env.smtp.script.rcpt_replies["hidden.auditor@example.com"] = "550 5.1.1 mailbox unavailable"
    archive = MailArchive(f"file://{tmp_path}/archive")
    with caplog.at_level(logging.INFO, logger="airflow_secure_mail"), pytest.raises(DeliveryError) as info:
        _send(archive, to=("ana@example.com",), bcc=("hidden.auditor@example.com",))
    assert str(info.value) == "1 of 2 recipients refused: a Bcc recipient (550); the others received it."
    assert "hidden.auditor@example.com" in info.value.refused  # the caller can still see who, in code
    assert [m.rcpt_tos for m in mail_env.smtp.messages] == [["ana@example.com"]]
    assert "hidden.auditor" not in caplog.text


def test_one_message_per_recipient_differs_only_in_to_and_message_id(mail_env, tmp_path):
    from email import message_from_bytes

    archive = MailArchive(f"file://{tmp_path}/archive")
    people = {"to": ("Ana <ana@example.com>", "bo@example.com"), "cc": ("cy@example.com",), "bcc": ("dee@example.com",)}
    first = _send(archive, split=True, **people)
    received = {m.rcpt_tos[0]: m.data for m in mail_env.smtp.messages}
    assert sorted(received) == ["ana@example.com", "bo@example.com", "cy@example.com", "dee@example.com"]
    assert all(len(m.rcpt_tos) == 1 for m in mail_env.smtp.messages)
    bodies, ids, rest = set(), set(), set()
    for rcpt, data in received.items():
        head, _, body = data.partition(b"\r\n\r\n")
        parsed = message_from_bytes(data)
        assert parsed["To"].endswith(rcpt) or parsed["To"].endswith(f"<{rcpt}>")
        assert parsed["Cc"] is None and b"Bcc" not in head
        bodies.add(body)
        ids.add(parsed["Message-ID"])
        others = {h.split(b":")[0] for h in head.split(b"\r\n") if b":" in h} - {b"To", b"Message-ID"}
        assert others == {b"From", b"Subject", b"Date", b"MIME-Version", b"Content-Type", b"Content-Transfer-Encoding"}
        rest.add(b"\r\n".join(h for h in head.split(b"\r\n") if not h.startswith((b"To:", b"Message-ID:"))))
    assert len(bodies) == 1 and len(ids) == 4
    assert len(rest) == 1  # every other header field, values included, is the same in each copy
    assert b"To: Ana <ana@example.com>\r\n" in received["ana@example.com"]
    again = _send(archive, split=True, **people)  # a retry of the task: same Message-IDs, nothing sent twice
    assert again.already_sent == 4 and len(mail_env.smtp.messages) == 4
    assert sorted(r.message_id for r in again.receipts) == sorted(r.message_id for r in first.receipts)


def test_send_mail_with_the_deprecated_hook_argument_still_sends_and_warns(mail_env):
    from airflow_secure_mail.hooks.smtp import SecureSmtpHook

    message = r"send_mail\(hook=\.\.\.\) is deprecated: pass channel=MailChannel\.for_conn\(conn_id\)\."
    with pytest.warns(DeprecationWarning, match=message):
        result = send_mail(numbered_request(7), hook=SecureSmtpHook())
    [received] = mail_env.smtp.messages
    assert received.rcpt_tos == ["r7@example.com"]
    [message_id] = result.to_xcom()["message_ids"]
    assert f"Message-ID: {message_id}".encode() in received.data


@pytest.mark.tools
def test_send_log_says_how_it_was_protected_and_where_it_was_archived(mail_env, tmp_path, caplog):
    from airflow_secure_mail.mail.protect import Protection
    from airflow_secure_mail.testing.keys import seed_vault_keys

    seed_vault_keys(mail_env.bao.client(), "ana@example.com", "airflow@example.com", keys_path="log-keys",
                    signing_path="log-signing")  # fmt: skip
    protection = Protection(encrypt="pgp", sign=True, keys_vault_path="log-keys", signing_vault_path="log-signing")
    archive = MailArchive(f"file://{tmp_path}/archive")
    request = MailRequest(sender="airflow@example.com", to=("ana@example.com",), subject="numbers", text="42")
    with caplog.at_level(logging.INFO, logger="airflow_secure_mail"):
        result = send_mail(request, channel=MailChannel.for_conn(), archive=archive, protection=protection)
    [message_id], [key] = [r.message_id for r in result.receipts], result.archive_keys
    server, tls = f"localhost:{mail_env.smtp.port()}", mail_env.smtp.messages[0].tls_version
    assert (
        f"sent {message_id} to 1 recipient(s) via {server} over {tls}; signed (pgp), encrypted (pgp); "
        f"archived at file://{tmp_path}/archive/{key}.eml" in _lines(caplog)
    )


def test_send_without_archive_says_not_archived(mail_env, caplog):
    request = MailRequest(sender="airflow@example.com", to=("ana@example.com",), subject="numbers", text="42")
    with caplog.at_level(logging.INFO, logger="airflow_secure_mail"):
        result = send_mail(request, channel=MailChannel.for_conn())
    [message_id] = [r.message_id for r in result.receipts]
    [line] = [line for line in _lines(caplog) if line.startswith(f"sent {message_id}")]
    assert line.endswith("; not signed or encrypted; not archived")
