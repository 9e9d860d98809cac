"""mail/scan.py without clamd: settings, and the verdict for each reply a scripted clamd gives (loopback fake).

The real clamd (signatures written at test time) and sending through the pipeline are tests/test_scan.py.
"""

from __future__ import annotations

import asyncio

import pytest

from airflow_secure_mail.errors import ConfigurationError, MalwareFound, MalwareScanError, PolicyViolation
from airflow_secure_mail.mail.compose import Attachment, MailRequest, parts_of
from airflow_secure_mail.mail.screen import MailPolicy
from airflow_secure_mail.scanning.clamd import ClamdScanner, ScanReport, Verdict, database_date, eicar
from airflow_secure_mail.testing.clamd import ScriptedClamd, encrypted_zip


def _scan(scanner: ClamdScanner, *parts: tuple[str, bytes]) -> ScanReport:
    return asyncio.run(scanner.ascan(list(parts) or [("sales.csv", b"a,b\n")]))


def test_a_clean_reply_is_clean_with_the_scanner_version():
    with ScriptedClamd([b"stream: OK"], version=b"ClamAV 1.4.6/27065/Wed Oct 18 09:49:14 2023") as fake:
        report = _scan(ClamdScanner(fake.address), ("a.csv", b"1"), ("b.csv", b"2"))
    assert report == ScanReport(Verdict.CLEAN, scanner="ClamAV 1.4.6/27065/Wed Oct 18 09:49:14 2023")
    assert sorted(fake.commands) == [b"zINSTREAM", b"zINSTREAM", b"zVERSION"]


def test_a_finding_refuses_naming_part_and_signature_even_with_on_error_allow():
    with (
        ScriptedClamd([b"stream: Win.Test.Bad FOUND"]) as fake,
        pytest.raises(MalwareFound, match="clamd found Win.Test.Bad") as info,
    ):
        _scan(ClamdScanner(fake.address, on_error="allow"), ("invoice.pdf", b"%PDF"))
    assert str(info.value) == "malware in 'invoice.pdf': clamd found Win.Test.Bad; nothing was sent."
    assert (info.value.rule, info.value.item, info.value.signature) == ("malware", "invoice.pdf", "Win.Test.Bad")


def test_clamd_reporting_an_encrypted_archive_is_refused_as_such():
    with (
        ScriptedClamd([b"stream: Heuristics.Encrypted.Zip FOUND"]) as fake,
        pytest.raises(PolicyViolation, match="is encrypted") as info,
    ):
        _scan(ClamdScanner(fake.address), ("a.zip", b"PK\x05\x06" + b"\x00" * 18))
    assert str(info.value) == (
        "attachment 'a.zip' is encrypted (Heuristics.Encrypted.Zip) and cannot be scanned: send it unencrypted."
    )
    assert (info.value.rule, info.value.item) == ("encrypted_archive", "a.zip")


def test_allowed_encrypted_content_is_unscanned_with_the_reason():
    with ScriptedClamd([b"stream: Heuristics.Encrypted.Zip FOUND"]) as fake:
        report = _scan(ClamdScanner(fake.address, allow_encrypted_archives=True), ("a.zip", b"PK\x05\x06" + b"\0" * 18))
    assert (report.verdict, report.item) == (Verdict.UNSCANNED, "a.zip")
    assert report.reason == "encrypted content (Heuristics.Encrypted.Zip) not scanned"


def test_an_allowed_encrypted_zip_member_is_named_in_the_report():
    archive = encrypted_zip("payroll.csv", b"name,salary\n", b"pw")
    with ScriptedClamd([b"stream: OK"]) as fake:
        report = _scan(ClamdScanner(fake.address, allow_encrypted_archives=True), ("payroll.zip", archive))
    assert report.to_metadata() == {
        "verdict": "unscanned",
        "signature": None,
        "scanner": "ClamAV 1.4.6",
        "item": "payroll.zip",
        "reason": "encrypted member payroll.zip/payroll.csv not scanned",
    }


@pytest.mark.parametrize(
    ("reply", "reason"),
    [
        ("close", r"closed the connection without a reply"),
        (b"INSTREAM size limit exceeded. ERROR", r"clamd's StreamMaxLength is smaller than the part"),
        (b"stream: Heuristics.Limits.Exceeded.MaxScanSize FOUND", r"scan limit \(Heuristics\.Limits\.Exceeded\.MaxScanSize\)"),
        (b"stream: lstat() failed. ERROR", r"clamd replied 'stream: lstat\(\) failed\. ERROR'"),
    ],
    ids=["hangs_up", "size_limit", "limits_exceeded", "error_reply"],
)  # fmt: skip
def test_error_replies_refuse(reply, reason):
    with (
        ScriptedClamd([reply]) as fake,
        pytest.raises(MalwareScanError, match=f"^'sales.csv' could not be scanned \\(.*{reason}") as info,
    ):
        _scan(ClamdScanner(fake.address))
    assert info.value.rule == "malware_scan" and info.value.item == "sales.csv"
    assert "on_error='allow'" in str(info.value)
    assert sorted(fake.commands) == [b"zINSTREAM", b"zVERSION"]


def test_error_replies_with_on_error_allow_are_unscanned_not_refused():
    with ScriptedClamd([b"stream: lstat() failed. ERROR"]) as fake:
        report = _scan(ClamdScanner(fake.address, on_error="allow"))
    assert (report.verdict, report.item, report.reason) == (
        Verdict.UNSCANNED,
        "sales.csv",
        "clamd replied 'stream: lstat() failed. ERROR'",
    )


def test_part_above_max_bytes_is_refused_without_streaming_it():
    with (
        ScriptedClamd([b"stream: OK"]) as fake,
        pytest.raises(MalwareScanError, match="101 bytes, over the scanner's max_bytes=100") as info,
    ):
        _scan(ClamdScanner(fake.address, max_bytes=100), ("big.csv", b"x" * 101))
    assert info.value.reason == "101 bytes, over the scanner's max_bytes=100"
    assert b"zINSTREAM" not in fake.commands


def test_a_scan_judges_both_bodies_and_every_attachment_by_name():
    request = MailRequest(
        sender="a@example.com",
        to=("b@example.com",),
        text="t",
        html="<p>h</p>",
        attachments=(Attachment("x.csv", b"1"),),
    )
    assert parts_of(request) == [("text body", b"t"), ("html body", b"<p>h</p>"), ("x.csv", b"1")]


def test_the_eicar_file_is_assembled_at_run_time():
    assert len(eicar()) == 68 and eicar().startswith(b"X5O!P%@AP")


def test_policy_from_connection_json_builds_the_scanner():
    policy = MailPolicy.from_dict({"malware_scan": {"address": "tcp://127.0.0.1:3310", "timeout": 5}, "html": "strip"})
    assert policy.malware_scan == ClamdScanner("tcp://127.0.0.1:3310", timeout=5) and policy.html == "strip"
    assert MailPolicy.from_dict({"malware_scan": "unix:///run/clamav/clamd.ctl"}).malware_scan == ClamdScanner()


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ("http://127.0.0.1:3310", r"address 'http://127\.0\.0\.1:3310': use tcp://host:port"),
        ("tcp://127.0.0.1", r"address 'tcp://127\.0\.0\.1': use tcp://host:port"),
        ({"address": "unix:///x", "bogus": 1}, r"unknown ClamdScanner field\(s\) \['bogus'\]"),
        ({"on_error": "ignore"}, r"on_error must be 'reject' \(default\) or 'allow'"),
        ({"timeout": 0}, "timeout, max_bytes and max_archive_depth must be positive"),
        (3310, r"malware_scan=3310: give ClamdScanner\(\.\.\.\)"),
    ],
)
def test_bad_scanner_settings_are_refused(bad, message):
    with pytest.raises(ConfigurationError, match=message):
        MailPolicy(malware_scan=bad)


def test_database_date_is_read_from_an_official_version_string():
    built = database_date("ClamAV 1.4.6/27065/Wed Oct 18 09:49:14 2023")
    assert built is not None and (built.year, built.month, built.day) == (2023, 10, 18)
    assert database_date("ClamAV 1.4.6") is None
    assert database_date("ClamAV 1.4.6/27065/not a date") is None


# -- a clamd that answers too early or injects lines (issue 19 items 12, 13) -------------------------------------

# About 8 MB, more than loopback buffers hold while the hostile server waits before reading: the client's
# sending blocks, so the early answer is there before the end whatever the thread scheduling.
BIG = b"region,total\n" + b"north,12\n" * 900_000


def test_a_reply_before_the_stream_ended_refuses_rather_than_passes():
    with (
        ScriptedClamd([b"stream: OK"], answer_early=True) as fake,
        pytest.raises(
            MalwareScanError,
            match=r"^'sales\.csv' could not be scanned \(clamd at .* answered 'stream: OK' "
            r"before the whole stream was sent\); nothing was sent\.",
        ) as info,
    ):
        _scan(ClamdScanner(fake.address), ("sales.csv", BIG))
    assert info.value.rule == "malware_scan" and info.value.item == "sales.csv"


def test_a_reply_before_the_stream_ended_is_unscanned_with_on_error_allow():
    with ScriptedClamd([b"stream: OK"], answer_early=True) as fake:
        report = _scan(ClamdScanner(fake.address, on_error="allow"), ("sales.csv", BIG))
    assert (report.verdict, report.item) == (Verdict.UNSCANNED, "sales.csv")
    assert report.reason is not None and report.reason.endswith(
        "answered 'stream: OK' before the whole stream was sent"
    )


def test_a_signature_name_carrying_line_breaks_reaches_the_error_on_one_line():
    with (
        ScriptedClamd([b"stream: Evil\r\nX-Injected: 1 FOUND"]) as fake,
        pytest.raises(MalwareFound) as info,
    ):
        _scan(ClamdScanner(fake.address), ("invoice.pdf", b"%PDF"))
    assert str(info.value) == "malware in 'invoice.pdf': clamd found EvilX-Injected: 1; nothing was sent."
    assert info.value.signature == "EvilX-Injected: 1"


def test_a_scan_report_keeps_item_and_reason_on_one_line_from_construction():
    """Whatever built them, item and reason reach metadata without CR, LF, ESC or bidi controls (finding 7)."""
    report = ScanReport(
        Verdict.UNSCANNED, item="up.zip\r\nX-Injected: 1", reason="r\u00e9sum\u00e9.csv\x1b[31m\u202e is corrupt\n"
    )
    assert (report.item, report.reason) == ("up.zipX-Injected: 1", "r\u00e9sum\u00e9.csv[31m is corrupt")
    assert report.to_metadata()["reason"] == "r\u00e9sum\u00e9.csv[31m is corrupt"
