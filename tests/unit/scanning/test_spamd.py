"""scanning/spamd.py and spamc_wire.py without spamd: settings, the request on the wire, and the verdict for
each reply a scripted spamd gives (loopback fake). The real spamd is tests/integration/scanning/test_spamd.py."""

from __future__ import annotations

import asyncio
import logging

import pytest

from airflow_secure_mail.errors import ConfigurationError, SpamRefused, SpamScanError
from airflow_secure_mail.mail.screen import MailPolicy
from airflow_secure_mail.scanning.spamc_wire import report_rules
from airflow_secure_mail.scanning.spamd import (
    SpamAssassinScanner,
    SpamReport,
    SpamVerdict,
    gtube,
    spam_checks,
)
from airflow_secure_mail.testing._ports import free_port
from airflow_secure_mail.testing.spamd import ScriptedSpamd, spamd_reply

MESSAGE = b"From: a@example.com\r\nTo: b@example.com\r\nSubject: weekly\r\n\r\nthe weekly numbers\r\n"
RULES = "\n".join(
    [
        " 0.6 MISSING_MID            Missing Message-Id: header",
        "-0.0 NO_RECEIVED            Informational: message has no Received headers",
        " 2.7 MISSING_DATE           Missing Date: header",
        "1000 GTUBE                  BODY: Generic Test for Unsolicited Bulk Email",
        "-1.9 BAYES_00               BODY: Bayes spam probability is 0 to 1%",
        "                            [score: 0.0000]",
        " 0.1 A_ONE                  one",
        " 0.2 A_TWO                  two",
        " 0.3 A_THREE                three",
    ]
)


def _score(scanner: SpamAssassinScanner, data: bytes = MESSAGE) -> SpamReport:
    return asyncio.run(scanner.ascore(data))


def test_the_request_is_report_with_the_exact_content_length_and_message():
    with ScriptedSpamd([spamd_reply(1.2)]) as fake:
        _score(SpamAssassinScanner(fake.address))
    assert fake.requests == [b"REPORT SPAMC/1.5\r\nContent-length: %d\r\n\r\n" % len(MESSAGE) + MESSAGE]


def test_a_low_score_is_ham_with_the_top_positive_rules_highest_first():
    with ScriptedSpamd([spamd_reply(3.4, 5.0, RULES)]) as fake:
        report = _score(SpamAssassinScanner(fake.address, max_score=4.0))
    assert report == SpamReport(
        SpamVerdict.HAM,
        3.4,
        4.0,
        (("GTUBE", 1000.0), ("MISSING_DATE", 2.7), ("MISSING_MID", 0.6), ("A_THREE", 0.3), ("A_TWO", 0.2)),
    )
    assert report.to_xcom() == {
        "verdict": "ham",
        "score": 3.4,
        "threshold": 4.0,
        "rules": ["GTUBE", "MISSING_DATE", "MISSING_MID", "A_THREE", "A_TWO"],
    }


def test_only_the_report_table_is_read_not_the_preview_of_the_message():
    rules = report_rules(spamd_reply(1.0, rules=" 0.5 REAL_RULE   a rule")[100:])
    assert rules == [("REAL_RULE", 0.5)]
    assert report_rules(b"a custom report template\n 12.5 LOOKS_LIKE_A_RULE\n") == []


def test_a_score_at_max_score_is_refused_naming_score_threshold_and_rules():
    with ScriptedSpamd([spamd_reply(7.1, 5.0, RULES)]) as fake, pytest.raises(SpamRefused) as info:
        _score(SpamAssassinScanner(fake.address, max_score=7.1, on_error="allow"))
    assert str(info.value) == (
        "spam score 7.1 >= 7.1 (rules: GTUBE 1000, MISSING_DATE 2.7, MISSING_MID 0.6, A_THREE 0.3, A_TWO 0.2): "
        "the message would land in spam folders; nothing was sent. Change the template (the rules say what "
        "looks like spam) or raise SpamAssassinScanner(max_score=...)."
    )
    assert (info.value.rule, info.value.score, info.value.threshold) == ("spam", 7.1, 7.1)
    assert info.value.rules == ("GTUBE", "MISSING_DATE", "MISSING_MID", "A_THREE", "A_TWO")


def test_on_spam_warn_returns_a_spam_verdict_and_logs(caplog):
    with ScriptedSpamd([spamd_reply(9.0, 5.0, " 9.0 SOME_RULE  x")]) as fake, caplog.at_level(logging.WARNING):
        report = _score(SpamAssassinScanner(fake.address, on_spam="warn"))
    assert report == SpamReport(SpamVerdict.SPAM, 9.0, 5.0, (("SOME_RULE", 9.0),))
    assert "spam score 9.0 >= 5.0 (rules: SOME_RULE 9): sending anyway (on_spam='warn')" in caplog.text


@pytest.mark.parametrize(
    ("reply", "reason"),
    [
        (b"SPAMD/1.0 76 Bad header line: (Content-Length mismatch: 1 vs. 2)\r\n\r\n",
         "spamd at {a} refused the request: 76 Bad header line: (Content-Length mismatch: 1 vs. 2)"),
        (b"HTTP/1.1 200 OK\r\n\r\n", "spamd at {a} answered 'HTTP/1.1 200 OK', not a SPAMD/1.x reply"),
        (b"SPAMD/1.1 0 EX_OK\r\nContent-length: 0\r\n\r\n", "spamd at {a} sent no score (Spam header: 'none')"),
        (b"SPAMD/1.1 0 EX_OK\r\nSpam: maybe\x1b[2J\r\n\r\n", "spamd at {a} sent no score (Spam header: 'maybe[2J')"),
        (b"SPAMD/1.1 0 EX_OK\r\nContent-length: 999999999\r\nSpam: True ; 1 / 5\r\n\r\n",
         "spamd at {a} announced a reply of 999999999 bytes, over the 262144-byte limit"),
        (b"SPAMD/1.1 0 EX_OK\r\nContent-length: 50\r\nSpam: False ; 1 / 5\r\n\r\nshort",
         "spamd at {a} is unreachable or hung up (IncompleteReadError)"),
        (b"SPAMD/1.1 0 EX_OK\r\n" + b"X" * 10000 + b"\r\n\r\n", "spamd at {a} is unreachable or hung up (ValueError)"),
        ("close", "spamd at {a} closed the connection without a reply"),
        ("hang", "spamd at {a} did not answer within 0.5s"),
    ],
    ids=["error_code", "not_spamd", "no_score", "garbled_score", "huge_reply", "short_body", "long_line", "close",
         "hang"],
)  # fmt: skip
def test_an_unusable_reply_refuses_failing_closed_with_the_reason(reply, reason):
    with ScriptedSpamd([reply]) as fake, pytest.raises(SpamScanError) as info:
        _score(SpamAssassinScanner(fake.address, timeout=0.5))
    expected = reason.format(a=fake.address)
    assert str(info.value) == (
        f"the message could not be scored for spam ({expected}); nothing was sent. Fix spamd, "
        "or set SpamAssassinScanner(on_error='allow') to send unscored mail."
    )
    assert (info.value.rule, info.value.reason) == ("spam_scan", expected)


def test_spamd_down_is_allowed_unscored_with_on_error_allow(caplog):
    address = f"tcp://127.0.0.1:{free_port()}"
    with caplog.at_level(logging.WARNING):
        report = _score(SpamAssassinScanner(address, on_error="allow"))
    reason = f"spamd at {address} is unreachable or hung up (ConnectionRefusedError)"
    assert report == SpamReport(SpamVerdict.UNSCORED, threshold=5.0, reason=reason)
    assert f"sending without a spam score: {reason}" in caplog.text


def test_a_message_over_max_bytes_is_not_sent_to_spamd():
    with ScriptedSpamd([spamd_reply(0.0)]) as fake, pytest.raises(SpamScanError) as info:
        _score(SpamAssassinScanner(fake.address, max_bytes=10))
    assert info.value.reason == f"the message is {len(MESSAGE)} bytes, over the scanner's max_bytes=10"
    assert fake.requests == []


def test_policy_takes_the_scanner_as_an_object_a_string_or_connection_json():
    scanner = SpamAssassinScanner("unix:///run/spamd.sock", max_score=3)
    assert MailPolicy(spam_scan=scanner).spam_scan is scanner
    assert MailPolicy(spam_scan="tcp://spam.internal:783").spam_scan == SpamAssassinScanner("tcp://spam.internal:783")
    policy = MailPolicy.from_dict({"spam_scan": {"address": "tcp://127.0.0.1:783", "max_score": 4, "on_spam": "warn"}})
    assert policy.spam_scan == SpamAssassinScanner("tcp://127.0.0.1:783", max_score=4.0, on_spam="warn")
    assert MailPolicy().spam_scan is None


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ({"adress": "tcp://h:783"}, "unknown SpamAssassinScanner field(s) ['adress']; known: ['address', "
         "'max_bytes', 'max_score', 'on_error', 'on_spam', 'timeout']."),
        ({"on_spam": "drop"}, "SpamAssassinScanner.on_spam must be 'refuse' (default) or 'warn'."),
        ({"on_error": "ignore"}, "SpamAssassinScanner.on_error must be 'reject' (default) or 'allow'."),
        ({"max_score": "high"}, "SpamAssassinScanner.max_score='high': give a number like 5.0."),
        ({"timeout": 0}, "SpamAssassinScanner timeout and max_bytes must be positive."),
        ("spamd.internal:783", "SpamAssassinScanner address 'spamd.internal:783': use tcp://host:783 or "
         "unix:///path/to/spamd.sock."),
        ("tcp://spamd.internal", "SpamAssassinScanner address 'tcp://spamd.internal': use tcp://host:783 or "
         "unix:///path/to/spamd.sock."),
        (5, "spam_scan=5: give SpamAssassinScanner(...) or an address like tcp://127.0.0.1:783."),
    ],
)  # fmt: skip
def test_a_bad_setting_is_a_configuration_error_naming_it(value, message):
    with pytest.raises(ConfigurationError) as info:
        MailPolicy(spam_scan=value)
    assert str(info.value) == message


def test_gtube_is_the_standard_string():
    assert gtube().startswith("XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD") and gtube().endswith("*C.34X")


def test_doctor_rows_without_a_scanner_or_with_a_bad_one():
    assert spam_checks(None) == [
        ("WARN", "spam scanner", "none configured (policy.spam_scan): mail is not scored before sending")
    ]
    assert spam_checks('{"spam_scan": {"max_score": "x"}}') == [
        ("FAIL", "spam scanner", "SpamAssassinScanner.max_score='x': give a number like 5.0.")
    ]
    address = f"tcp://127.0.0.1:{free_port()}"
    assert spam_checks({"spam_scan": address}) == [
        ("FAIL", "spam scanner", f"spamd at {address} is unreachable or hung up (ConnectionRefusedError)")
    ]
