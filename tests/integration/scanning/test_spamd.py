"""The spam score with a real spamd (Debian's, shipped rules, no network tests), through the pipeline to the
SMTP catcher and the archive. Replies a real spamd will not give: tests/unit/scanning/test_spamd.py."""

from __future__ import annotations

import asyncio
import json
import logging
import re
from email.message import EmailMessage
from pathlib import Path

import pytest

from airflow_secure_mail.archive.store import MailArchive
from airflow_secure_mail.errors import SpamRefused, SpamScanError
from airflow_secure_mail.mail.compose import MailRequest
from airflow_secure_mail.mail.outgoing import Outgoing
from airflow_secure_mail.mail.screen import MailPolicy
from airflow_secure_mail.pipeline.channel import MailChannel
from airflow_secure_mail.pipeline.send import asend_outgoing, send_mail
from airflow_secure_mail.scanning.spamd import SpamAssassinScanner, gtube, spam_checks
from airflow_secure_mail.testing._ports import free_port

pytestmark = pytest.mark.spamd  # Debian's spamd (the fixture lives in this folder's conftest.py)

# An HTML table report as a data team sends it: a heading, a sentence, a table of numbers, a sign-off.
REPORT_HTML = """<html><body>
<h2>Weekly sales by region</h2>
<p>Hello team, here are the figures for the week ending 6 December. The totals include returns.</p>
<table border="1" cellpadding="4">
<tr><th>Region</th><th>Orders</th><th>Revenue (EUR)</th><th>Change</th></tr>
<tr><td>North</td><td>1,204</td><td>183,220.50</td><td>+3.1%</td></tr>
<tr><td>South</td><td>987</td><td>142,881.00</td><td>-0.8%</td></tr>
<tr><td>East</td><td>1,530</td><td>210,004.75</td><td>+5.4%</td></tr>
<tr><td>West</td><td>842</td><td>120,117.25</td><td>+1.2%</td></tr>
</table>
<p>The dashboard has the daily breakdown. Questions to the analytics team, as usual.</p>
<p>Regards,<br>Analytics</p>
</body></html>"""
REPORT_TEXT = "Weekly sales by region: North 1,204 orders, South 987, East 1,530, West 842. Regards, Analytics"


def _report(**kw) -> MailRequest:
    fields = {"sender": "analytics@example.com", "to": ("sales@example.com",), "subject": "Weekly sales by region",
              "text": REPORT_TEXT, "html": REPORT_HTML} | kw  # fmt: skip
    return MailRequest(**fields)


def _spam(**kw) -> MailRequest:
    return _report(subject="offer", text=f"{gtube()}\r\n", html=None, **kw)


def _send(request: MailRequest, scanner: SpamAssassinScanner, **kw):
    return send_mail(request, channel=MailChannel.for_conn(), policy=MailPolicy(spam_scan=scanner), **kw)


def _records(tmp_path: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in Path(tmp_path, "archive", "messages").rglob("*[0-9a-f].json")]


def _nothing_sent(mail_env) -> None:
    assert mail_env.smtp.connections == 0 and mail_env.smtp.messages == []


def test_gtube_is_refused_before_connecting(mail_env, spamd):
    with pytest.raises(SpamRefused) as info:
        _send(_spam(), SpamAssassinScanner(spamd.tcp))
    message = str(info.value)
    assert re.fullmatch(
        r"spam score 10\d\d\.\d >= 5\.0 \(rules: GTUBE 1000(, [A-Z0-9_]+ [\d.]+)*\): the message would land in "
        r"spam folders; nothing was sent\. Change the template \(the rules say what looks like spam\) or raise "
        r"SpamAssassinScanner\(max_score=\.\.\.\)\.",
        message,
    ), message
    assert info.value.rule == "spam" and info.value.rules[0] == "GTUBE" and info.value.threshold == 5.0
    assert gtube() not in message
    _nothing_sent(mail_env)


def test_a_table_report_passes_with_its_score_archived(mail_env, spamd, tmp_path):
    result = _send(_report(), SpamAssassinScanner(spamd.tcp), archive=MailArchive(f"file://{tmp_path}/archive"))
    [received] = mail_env.smtp.messages
    assert received.rcpt_tos == ["sales@example.com"]
    [record] = _records(tmp_path)
    verdict = record["spam_scan"]
    assert verdict["verdict"] == "ham" and verdict["threshold"] == 5.0 and verdict["reason"] is None
    assert isinstance(verdict["score"], float) and verdict["score"] < 5.0
    assert all(rule["score"] > 0 for rule in verdict["rules"]) and len(verdict["rules"]) <= 5
    assert record["key"] in result.archive_keys[0]


def test_the_score_reaches_xcom(mail_env, spamd):
    xcom = _send(_report(), SpamAssassinScanner(spamd.tcp)).to_xcom()
    assert xcom["spam_scan"]["verdict"] == "ham" and xcom["spam_scan"]["score"] < 5.0
    assert set(xcom["spam_scan"]) == {"verdict", "score", "threshold", "rules"}


def test_on_spam_warn_sends_and_archives_the_spam_verdict(mail_env, spamd, tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="airflow_secure_mail"):
        _send(
            _spam(), SpamAssassinScanner(spamd.tcp, on_spam="warn"), archive=MailArchive(f"file://{tmp_path}/archive")
        )
    assert len(mail_env.smtp.messages) == 1
    [record] = _records(tmp_path)
    assert record["spam_scan"]["verdict"] == "spam" and record["spam_scan"]["score"] >= 1000
    assert record["spam_scan"]["rules"][0] == {"name": "GTUBE", "score": 1000.0}
    assert re.search(r"spam score 10\d\d\.\d >= 5\.0 \(rules: GTUBE 1000.*\): sending anyway", caplog.text)


def test_spamd_down_refuses_before_connecting(mail_env):
    address = f"tcp://127.0.0.1:{free_port()}"
    with pytest.raises(SpamScanError) as info:
        _send(_report(), SpamAssassinScanner(address))
    assert str(info.value) == (
        f"the message could not be scored for spam (spamd at {address} is unreachable or hung up "
        "(ConnectionRefusedError)); nothing was sent. Fix spamd, or set SpamAssassinScanner(on_error='allow') "
        "to send unscored mail."
    )
    assert info.value.rule == "spam_scan"
    _nothing_sent(mail_env)


def test_spamd_down_with_on_error_allow_sends_unscored_and_archives_why(mail_env, tmp_path):
    address = f"unix://{tmp_path}/no-spamd.sock"
    _send(_report(), SpamAssassinScanner(address, on_error="allow"), archive=MailArchive(f"file://{tmp_path}/archive"))
    assert len(mail_env.smtp.messages) == 1
    [record] = _records(tmp_path)
    assert record["spam_scan"] == {
        "verdict": "unscored",
        "score": None,
        "threshold": 5.0,
        "rules": [],
        "reason": f"spamd at {address} is unreachable or hung up (FileNotFoundError)",
    }


@pytest.mark.parametrize("form", ["fields", "address"])
def test_the_connection_json_policy_scores_without_a_policy_argument(mail_env, spamd, form):
    value = {"address": spamd.unix, "max_score": 5.0} if form == "fields" else spamd.unix
    mail_env.set_smtp_conn(policy={"spam_scan": value})
    with pytest.raises(SpamRefused, match=r"^spam score 10\d\d\.\d >= 5\.0 \(rules: GTUBE 1000"):
        send_mail(_spam(), channel=MailChannel.for_conn())
    _nothing_sent(mail_env)
    send_mail(_report(), channel=MailChannel.for_conn())
    assert len(mail_env.smtp.messages) == 1


def test_the_unix_socket_scores_like_tcp(spamd):
    message = f"From: a@example.com\r\nTo: b@example.com\r\nSubject: t\r\n\r\n{gtube()}\r\n".encode()
    unix = asyncio.run(SpamAssassinScanner(spamd.unix).report(message))
    tcp = asyncio.run(SpamAssassinScanner(spamd.tcp).report(message))
    assert unix[:2] == tcp[:2] and sorted(unix[2]) == sorted(tcp[2])  # spamd lists the rules in no set order
    assert unix[0] >= 1000 and ("GTUBE", 1000.0) in unix[2]


def test_every_copy_of_a_per_recipient_send_carries_the_one_score(mail_env, spamd, tmp_path):
    request = _report(to=("a@example.com", "b@example.com", "c@example.com"))
    _send(request, SpamAssassinScanner(spamd.tcp), archive=MailArchive(f"file://{tmp_path}/archive"),
          one_message_per_recipient=True)  # fmt: skip
    assert len(mail_env.smtp.messages) == 3
    verdicts = [r["spam_scan"] for r in _records(tmp_path)]
    assert len(verdicts) == 3 and all(v == verdicts[0] for v in verdicts) and verdicts[0]["verdict"] == "ham"


def test_a_message_built_elsewhere_is_scored_as_its_bytes(mail_env, spamd):
    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = "analytics@example.com", "sales@example.com", "offer"
    msg.set_content(gtube())
    item = Outgoing("analytics@example.com", ("sales@example.com",), msg.as_bytes())
    with pytest.raises(SpamRefused, match=r"rules: GTUBE 1000"):
        asyncio.run(asend_outgoing([item], channel=MailChannel.for_conn(),
                                   policy=MailPolicy(spam_scan=SpamAssassinScanner(spamd.tcp))))  # fmt: skip
    _nothing_sent(mail_env)


def test_a_protected_message_built_elsewhere_is_sent_unscored(mail_env, spamd, tmp_path):
    boundary = "enc-boundary"
    data = (
        "From: analytics@example.com\r\nTo: sales@example.com\r\nSubject: weekly\r\nMIME-Version: 1.0\r\n"
        f'Content-Type: multipart/encrypted; protocol="application/pgp-encrypted"; boundary="{boundary}"\r\n\r\n'
        f"--{boundary}\r\nContent-Type: application/pgp-encrypted\r\n\r\nVersion: 1\r\n\r\n"
        f"--{boundary}\r\nContent-Type: application/octet-stream\r\n\r\n-----BEGIN PGP MESSAGE-----\r\n\r\n"
        f"hQEMA0not0real0ciphertext\r\n-----END PGP MESSAGE-----\r\n\r\n--{boundary}--\r\n"
    ).encode()
    item = Outgoing("analytics@example.com", ("sales@example.com",), data, "<enc-1@example.com>")
    result = asyncio.run(asend_outgoing([item], channel=MailChannel.for_conn(),
                                        policy=MailPolicy(spam_scan=SpamAssassinScanner(spamd.tcp)),
                                        archive=MailArchive(f"file://{tmp_path}/archive")))  # fmt: skip
    assert len(mail_env.smtp.messages) == 1 and result.receipts
    [record] = _records(tmp_path)
    assert record["spam_scan"]["verdict"] == "unscored"
    assert record["spam_scan"]["reason"] == (
        "already signed or encrypted (PGP/S-MIME) when given: scored only before protection"
    )


def test_doctor_rows_against_the_real_spamd(spamd):
    rows = spam_checks({"spam_scan": {"address": spamd.tcp}})
    assert rows[0] == ("PASS", "spam scanner", f"{spamd.tcp}: PONG, spamd's own threshold 5.0")
    status, name, detail = rows[1]
    assert (status, name) == ("PASS", "GTUBE test message") and re.fullmatch(
        r"scored 10\d\d\.\d >= max_score 5\.0", detail
    )


SPAM_DAG = """
from datetime import datetime
from airflow.sdk import DAG
from airflow_secure_mail import SecureEmailOperator

with DAG("spam_scored", start_date=datetime(2026, 1, 1), schedule=None) as dag:
    SecureEmailOperator(task_id="report", to="sales@example.com", subject="Weekly sales by region",
                        html_content=HTML, retries=0)
    SecureEmailOperator(task_id="offer", to="sales@example.com", subject="offer", text_content=GTUBE, retries=0)
"""


def test_the_operator_is_scored_by_the_connection_json_policy(mail_env, spamd, airflow_db, caplog, capfd):
    import runpy

    from tests.conftest import DAGS

    mail_env.set_smtp_conn(policy={"spam_scan": {"address": spamd.tcp, "max_score": 5.0}})
    path = DAGS / "spam_scored.py"
    path.write_text(f"HTML = {REPORT_HTML!r}\nGTUBE = {gtube()!r}\n" + SPAM_DAG)
    run = runpy.run_path(str(path))["dag"].test()
    assert run.state == "failed"
    assert {ti.task_id: ti.state for ti in run.get_task_instances()} == {"report": "success", "offer": "failed"}
    [received] = mail_env.smtp.messages
    assert received.rcpt_tos == ["sales@example.com"] and b"Weekly sales by region" in received.data
    assert mail_env.smtp.connections == 1
    assert re.search(
        r"SpamRefused: spam score 10\d\d\.\d >= 5\.0 \(rules: GTUBE 1000", caplog.text + capfd.readouterr().out
    )


def _pgp(mail_env, tag: str):
    from airflow_secure_mail.mail.protect import Protection
    from airflow_secure_mail.testing.keys import seed_vault_keys

    seed_vault_keys(mail_env.bao.client(), "sales@example.com", "analytics@example.com", keys_path=f"spam-keys-{tag}",
                    signing_path=f"spam-signing-{tag}")  # fmt: skip
    return Protection(encrypt="pgp", sign=True, keys_vault_path=f"spam-keys-{tag}",
                      signing_vault_path=f"spam-signing-{tag}")  # fmt: skip


def test_an_encrypted_send_is_scored_before_protection_and_refused(mail_env, spamd):
    with pytest.raises(SpamRefused, match=r"^spam score 10\d\d\.\d >= 5\.0 \(rules: GTUBE 1000"):
        _send(_spam(), SpamAssassinScanner(spamd.tcp), protection=_pgp(mail_env, "refused"))
    _nothing_sent(mail_env)


def test_an_encrypted_report_is_archived_encrypted_with_its_plaintext_score(mail_env, spamd, tmp_path):
    archive = MailArchive(f"file://{tmp_path}/archive")
    _send(_report(), SpamAssassinScanner(spamd.tcp), protection=_pgp(mail_env, "sent"), archive=archive)
    [received] = mail_env.smtp.messages
    assert (
        b"multipart/encrypted" in received.data
        and b"Weekly sales by region" not in received.data.split(b"\r\n\r\n", 1)[1]
    )
    [record] = _records(tmp_path)
    assert record["spam_scan"]["verdict"] == "ham" and record["spam_scan"]["score"] < 5.0
