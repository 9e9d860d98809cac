"""Messages built elsewhere (``SecureSmtpHook.send_many``): each archive record keeps its own copy's scan verdict.

clamd is the loopback ``ScriptedClamd`` (one reply per stream, in order) so two copies get different verdicts.
"""

from __future__ import annotations

import json
from email.message import EmailMessage
from pathlib import Path

from airflow_secure_mail.archive.store import MailArchive
from airflow_secure_mail.hooks.smtp import SecureSmtpHook
from airflow_secure_mail.mail.screen import MailPolicy
from airflow_secure_mail.scanning.clamd import ClamdScanner
from airflow_secure_mail.testing.clamd import ScriptedClamd


def _message(to: str, attachment: tuple[str, bytes] | None) -> EmailMessage:
    message = EmailMessage()
    message["From"], message["To"], message["Subject"] = "airflow@example.com", to, "report"
    message.set_content("the report")
    if attachment is not None:
        message.add_attachment(attachment[1], maintype="text", subtype="csv", filename=attachment[0])
    return message


def test_each_outside_message_archives_its_own_scan_verdict(mail_env, tmp_path):
    messages = [
        _message("clean@example.com", ("a.csv", b"a,b\n1,2\n")),
        _message("unscanned@example.com", ("b.csv", b"c,d\n3,4\n")),
        _message("plain@example.com", None),
    ]
    archive = MailArchive(f"file://{tmp_path}/archive")
    with ScriptedClamd([b"stream: OK", b"stream: lstat() failed. ERROR"], version=b"ClamAV 1.4.6") as fake:
        policy = MailPolicy(malware_scan=ClamdScanner(fake.address, on_error="allow"))
        SecureSmtpHook().send_many(messages, concurrency=1, policy=policy, archive=archive)
    records = [json.loads(p.read_text()) for p in Path(tmp_path, "archive", "messages").rglob("*[0-9a-f].json")]
    verdicts = {tuple(r["envelope"]["recipients"]): r["malware_scan"] for r in records}
    assert verdicts == {
        ("clean@example.com",): {
            "verdict": "clean", "signature": None, "scanner": "ClamAV 1.4.6", "item": None, "reason": None,
        },
        ("unscanned@example.com",): {
            "verdict": "unscanned",
            "signature": None,
            "scanner": "ClamAV 1.4.6",
            "item": "b.csv",
            "reason": "clamd replied 'stream: lstat() failed. ERROR'",
        },
        ("plain@example.com",): None,
    }  # fmt: skip
    assert len(mail_env.smtp.messages) == 3
