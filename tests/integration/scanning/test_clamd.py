"""Malware scanning with a real clamd (signatures written at test time), through the pipeline to the SMTP catcher.

The scanner's verdicts against a scripted clamd are tests/test_scan_verdicts.py; the wire, tests/test_clamd_wire.py.
"""

from __future__ import annotations

import asyncio
import bz2
import email
import email.policy
import gzip
import io
import json
import logging
import lzma
import re
import zipfile
import zlib
from pathlib import Path

import pytest

from airflow_secure_mail.archive.store import MailArchive
from airflow_secure_mail.errors import MalwareFound, MalwareScanError, PolicyViolation
from airflow_secure_mail.mail.compose import Attachment, MailRequest
from airflow_secure_mail.mail.screen import MailPolicy
from airflow_secure_mail.pipeline.channel import MailChannel
from airflow_secure_mail.pipeline.send import send_mail
from airflow_secure_mail.scanning.clamd import ClamdScanner, Verdict, eicar
from airflow_secure_mail.testing._ports import free_port
from airflow_secure_mail.testing.clamd import ClamdServer, ScriptedClamd, encrypted_zip, patched_zip, zip_of

EICAR_FOUND = "Eicar-Test-Signature-HDB.UNOFFICIAL"
# A harmless PDF these tests make; the database gets a hash signature for exactly these bytes.
QUARANTINED_PDF = b"%PDF-1.4\n% built by test_scan as a stand-in for a known-bad invoice\n%%EOF\n"


@pytest.fixture(scope="module")
def clamd():
    server = ClamdServer({"Test.Made.Invoice": QUARANTINED_PDF}, stream_max_length="2M", max_recursion=8).start()
    yield server
    server.stop()


def _request(*attachments: Attachment, text: str = "the weekly report") -> MailRequest:
    return MailRequest(
        sender="airflow@example.com", to=("ops@example.com",), subject="report", text=text, attachments=attachments
    )


def _send(request: MailRequest, scanner: ClamdScanner, **kw):
    return send_mail(request, channel=MailChannel.for_conn(), policy=MailPolicy(malware_scan=scanner), **kw)


def _records(tmp_path: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in Path(tmp_path, "archive", "messages").rglob("*[0-9a-f].json")]


def _nothing_sent(mail_env) -> None:
    assert mail_env.smtp.connections == 0 and mail_env.smtp.messages == []


def _nested(data: bytes, depth: int) -> bytes:
    for level in range(depth):
        data = zip_of(f"level{level}.zip" if level else "eicar.com.txt", data)
    return data


@pytest.mark.parametrize(
    ("attachment", "depth"),
    [(Attachment("eicar.txt", b""), 0), (Attachment("logs.zip", b""), 1), (Attachment("logs.zip", b""), 2)],
    ids=["file", "inside_zip", "zip_inside_zip"],
)
def test_eicar_attachment_is_refused_before_connecting(mail_env, clamd, attachment, depth):
    infected = Attachment(attachment.filename, _nested(eicar(), depth) if depth else eicar())
    expected = f"malware in '{attachment.filename}': clamd found {EICAR_FOUND}; nothing was sent."
    with pytest.raises(MalwareFound, match=f"^{re.escape(expected)}$") as info:
        _send(_request(infected), ClamdScanner(clamd.tcp))
    assert (info.value.rule, info.value.item, info.value.signature) == ("malware", attachment.filename, EICAR_FOUND)
    _nothing_sent(mail_env)


def test_file_matching_test_made_signature_is_refused(mail_env, clamd):
    with pytest.raises(MalwareFound, match=r"malware in 'invoice\.pdf': clamd found Test\.Made\.Invoice") as info:
        _send(_request(Attachment("invoice.pdf", QUARANTINED_PDF)), ClamdScanner(clamd.tcp))
    assert info.value.item == "invoice.pdf" and info.value.signature == "Test.Made.Invoice.UNOFFICIAL"
    _nothing_sent(mail_env)


def test_body_parts_are_scanned_too(mail_env, clamd):
    with pytest.raises(MalwareFound, match=f"malware in 'text body': clamd found {EICAR_FOUND}") as info:
        _send(_request(text=eicar().decode()), ClamdScanner(clamd.unix))
    assert info.value.item == "text body"
    _nothing_sent(mail_env)


@pytest.mark.parametrize("nested", [False, True], ids=["top_level", "inside_a_zip"])
def test_encrypted_zip_is_refused_before_connecting(mail_env, clamd, nested):
    archive = encrypted_zip("payroll.csv", b"name,salary\nada,1\n", b"correct horse")
    attachment = Attachment("payroll.zip", zip_of("inner.zip", archive) if nested else archive)
    member = "payroll.zip/inner.zip/payroll.csv" if nested else "payroll.zip/payroll.csv"
    with pytest.raises(
        PolicyViolation, match=f"holds an encrypted \\(password-protected\\) archive member '{member}'"
    ) as info:
        _send(_request(attachment), ClamdScanner(clamd.tcp))
    assert info.value.rule == "encrypted_archive" and info.value.item == "payroll.zip"
    _nothing_sent(mail_env)


def test_allowed_encrypted_zip_is_sent_but_archived_as_unscanned(mail_env, clamd, tmp_path):
    archive = MailArchive(f"file://{tmp_path}/archive")
    attachment = Attachment("payroll.zip", encrypted_zip("payroll.csv", b"name,salary\n", b"correct horse"))
    result = _send(_request(attachment), ClamdScanner(clamd.tcp, allow_encrypted_archives=True), archive=archive)
    assert len(mail_env.smtp.messages) == 1 and result.to_xcom()["malware_scan"] == "unscanned"
    [record] = [json.loads(p.read_text()) for p in Path(tmp_path, "archive", "messages").rglob("*[0-9a-f].json")]
    scan = record["malware_scan"]
    assert scan["verdict"] == "unscanned" and scan["item"] == "payroll.zip"
    assert scan["reason"] == "encrypted member payroll.zip/payroll.csv not scanned"


def test_clean_report_is_sent_with_its_verdict_archived(mail_env, clamd, tmp_path):
    archive = MailArchive(f"file://{tmp_path}/archive")
    report = Attachment("sales.csv", b"region,total\nnorth,12\n")
    result = _send(
        _request(report, Attachment("q3.zip", zip_of("q3.csv", b"a,b\n1,2\n"))),
        ClamdScanner(clamd.tcp),
        archive=archive,
    )
    [received] = mail_env.smtp.messages
    assert b'filename="sales.csv"' in received.data and b'filename="q3.zip"' in received.data
    assert result.to_xcom()["malware_scan"] == "clean"
    [record] = [json.loads(p.read_text()) for p in Path(tmp_path, "archive", "messages").rglob("*[0-9a-f].json")]
    assert record["status"] == "sent"
    scan = record["malware_scan"]
    assert scan["verdict"] == "clean" and scan["signature"] is None and scan["scanner"].startswith("ClamAV 1.")


def test_scanner_works_over_the_unix_socket(clamd):
    scanner = ClamdScanner(clamd.unix)
    report = asyncio.run(scanner.ascan([("notes.txt", b"all fine")]))
    assert report.verdict is Verdict.CLEAN and report.scanner and report.scanner.startswith("ClamAV")
    assert asyncio.run(scanner.instream(eicar())) == f"stream: {EICAR_FOUND} FOUND"


def test_clamd_down_refuses_rather_than_passes(mail_env):
    with pytest.raises(
        MalwareScanError, match=r"could not be scanned \(clamd at .* is unreachable .*; nothing was sent"
    ) as info:
        _send(_request(Attachment("sales.csv", b"a,b\n")), ClamdScanner(f"tcp://127.0.0.1:{free_port()}"))
    assert info.value.rule == "malware_scan" and "unreachable (ConnectionRefusedError)" in info.value.reason
    _nothing_sent(mail_env)


def test_missing_unix_socket_refuses(mail_env, tmp_path):
    with pytest.raises(
        MalwareScanError, match=r"clamd at unix://.*/no-clamd\.sock is unreachable \(FileNotFoundError\)"
    ):
        _send(_request(), ClamdScanner(f"unix://{tmp_path}/no-clamd.sock"))
    _nothing_sent(mail_env)


def test_clamd_that_never_answers_times_out_and_refuses(mail_env):
    with ScriptedClamd(["hang"]) as fake, pytest.raises(MalwareScanError, match=r"did not answer within 0\.5s"):
        _send(_request(), ClamdScanner(fake.address, timeout=0.5))
    _nothing_sent(mail_env)


def test_real_clamd_size_limit_reply_refuses(mail_env, clamd):
    big = Attachment("big.csv", b"a,b\n" * (3 * 1024 * 1024 // 4))  # over the server's StreamMaxLength 2M
    with pytest.raises(MalwareScanError, match=r"^'big\.csv' could not be scanned \(clamd's StreamMaxLength") as info:
        _send(_request(big), ClamdScanner(clamd.tcp, max_bytes=8 * 1024 * 1024))
    assert info.value.item == "big.csv"
    _nothing_sent(mail_env)


def test_real_clamd_recursion_limit_refuses(mail_env, clamd):
    deep = Attachment("deep.zip", _nested(b"harmless", 11))  # clamd's MaxRecursion is 8
    with pytest.raises(MalwareScanError, match=r"scan limit \(Heuristics\.Limits\.Exceeded\.MaxRecursion\)") as info:
        _send(_request(deep), ClamdScanner(clamd.tcp, max_archive_depth=20))
    assert info.value.item == "deep.zip"
    _nothing_sent(mail_env)


def test_archives_nested_past_our_bound_refuse_whatever_clamd_allows(clamd):
    with pytest.raises(
        MalwareScanError, match=r"^'deep\.zip' could not be scanned \(.* deeper than max_archive_depth=2"
    ):
        asyncio.run(ClamdScanner(clamd.tcp, max_archive_depth=2).ascan([("deep.zip", _nested(b"x", 3))]))


def test_on_error_allow_sends_unscanned_and_archives_why(mail_env, tmp_path, caplog):
    archive = MailArchive(f"file://{tmp_path}/archive")
    scanner = ClamdScanner(f"tcp://127.0.0.1:{free_port()}", on_error="allow")
    with caplog.at_level(logging.WARNING, logger="airflow_secure_mail.scanning.clamd"):
        result = _send(_request(Attachment("sales.csv", b"a,b\n")), scanner, archive=archive)
    assert len(mail_env.smtp.messages) == 1 and result.to_xcom()["malware_scan"] == "unscanned"
    assert "sending unscanned" in caplog.text
    [record] = [json.loads(p.read_text()) for p in Path(tmp_path, "archive", "messages").rglob("*[0-9a-f].json")]
    scan = record["malware_scan"]
    assert scan["verdict"] == "unscanned" and scan["scanner"] is None and "unreachable" in scan["reason"]


def test_on_error_allow_never_lets_a_finding_through(mail_env, clamd):
    with pytest.raises(MalwareFound, match=f"malware in 'eicar.txt': clamd found {EICAR_FOUND}"):
        _send(_request(Attachment("eicar.txt", eicar())), ClamdScanner(clamd.tcp, on_error="allow"))
    _nothing_sent(mail_env)


def test_connection_policy_default_scans_without_a_policy_argument(mail_env, clamd):
    mail_env.set_smtp_conn(policy={"malware_scan": {"address": clamd.unix, "timeout": 10}})
    with pytest.raises(MalwareFound, match=f"malware in 'eicar.txt': clamd found {EICAR_FOUND}"):
        send_mail(_request(Attachment("eicar.txt", eicar())), channel=MailChannel.for_conn())
    _nothing_sent(mail_env)


def test_doctor_checks_the_configured_scanner_with_eicar(mail_env, clamd, capsys):
    from airflow_secure_mail.cli import main

    mail_env.set_smtp_conn(policy={"malware_scan": clamd.unix})
    assert main(["doctor", "--conn-id", "secure_smtp_default"]) == 0
    out = capsys.readouterr().out
    assert "PASS  malware scanner" in out and "ClamAV 1." in out
    assert "PASS  EICAR test file" in out and EICAR_FOUND in out
    assert "WARN  signature database age" in out and "undated" in out


def test_doctor_fails_when_the_scanner_is_down(mail_env, capsys):
    from airflow_secure_mail.cli import main

    mail_env.set_smtp_conn(policy={"malware_scan": f"tcp://127.0.0.1:{free_port()}"})
    assert main(["doctor", "--conn-id", "secure_smtp_default"]) == 1
    assert "FAIL  malware scanner" in capsys.readouterr().out


# -- zips that lie or are damaged: inflated with a budget, refused in our words (issue 19 items 14, 15) ----------

Q3 = b"region,total\nnorth,12\n" * 50
_Q3_ZIP = zip_of("q3.csv", Q3)
_Q3_CRC = zlib.crc32(Q3)
CORRUPT = {
    "bad_crc": patched_zip(_Q3_ZIP, local={"crc": _Q3_CRC ^ 1}, central={"crc": _Q3_CRC ^ 1}),
    "bad_crc_on_a_nested_zip": patched_zip(zip_of("q3.csv", _Q3_ZIP), local={"crc": 7}, central={"crc": 7}),
    "local_size_disagrees": patched_zip(_Q3_ZIP, local={"file_size": len(Q3) + 1}),
    "local_name_disagrees": _Q3_ZIP.replace(b"q3.csv", b"q4.csv", 1),
}


@pytest.mark.parametrize("kind", list(CORRUPT))
def test_a_corrupt_zip_is_refused_in_one_line_with_on_error_reject(mail_env, clamd, kind):
    with pytest.raises(
        MalwareScanError, match=r"^'q3\.zip' could not be scanned \(q3\.zip/q3\.csv is corrupt: "
    ) as info:
        _send(_request(Attachment("q3.zip", CORRUPT[kind])), ClamdScanner(clamd.tcp))
    assert info.value.rule == "malware_scan" and info.value.item == "q3.zip" and "\n" not in str(info.value)
    _nothing_sent(mail_env)


@pytest.mark.parametrize("kind", list(CORRUPT))
def test_a_corrupt_zip_is_sent_unscanned_with_on_error_allow(mail_env, clamd, tmp_path, kind):
    archive = MailArchive(f"file://{tmp_path}/archive")
    result = _send(
        _request(Attachment("q3.zip", CORRUPT[kind])), ClamdScanner(clamd.tcp, on_error="allow"), archive=archive
    )
    [received] = mail_env.smtp.messages
    assert b'filename="q3.zip"' in received.data and result.to_xcom()["malware_scan"] == "unscanned"
    [record] = _records(tmp_path)
    assert record["malware_scan"]["item"] == "q3.zip"
    assert record["malware_scan"]["reason"].startswith("q3.zip/q3.csv is corrupt: ")


def _understated() -> bytes:
    """50 MB of zeros (about 50 KB deflated) whose headers both declare 1000 bytes."""
    return patched_zip(zip_of("zeros.bin", bytes(50 * 1024 * 1024)), **_declaring_1000_zero_bytes())


def test_a_zip_understating_a_member_is_refused_not_sent_as_clean(mail_env, clamd):
    with pytest.raises(
        MalwareScanError,
        match=r"^'small\.zip' could not be scanned \(small\.zip/zeros\.bin inflates past 26214400 bytes",
    ):
        _send(_request(Attachment("small.zip", _understated())), ClamdScanner(clamd.tcp))
    _nothing_sent(mail_env)


def test_a_zip_understating_a_member_goes_as_unscanned_with_on_error_allow(mail_env, clamd, tmp_path):
    archive = MailArchive(f"file://{tmp_path}/archive")
    result = _send(
        _request(Attachment("small.zip", _understated())), ClamdScanner(clamd.tcp, on_error="allow"), archive=archive
    )
    assert len(mail_env.smtp.messages) == 1 and result.to_xcom()["malware_scan"] == "unscanned"
    [record] = _records(tmp_path)
    assert record["malware_scan"]["reason"] == "small.zip/zeros.bin inflates past 26214400 bytes, over the scan limit"


def _declaring_1000_zero_bytes() -> dict[str, dict[str, int]]:
    """Header fields of a member claiming to be 1000 zero bytes, CRC included: a consistent lie."""
    fields = {"file_size": 1000, "crc": zlib.crc32(bytes(1000))}
    return {"local": fields, "central": fields}


def test_scanner_text_reaches_log_archive_and_xcom_without_line_breaks(mail_env, tmp_path, caplog):
    """A hostile clamd's VERSION and reply carry CR/LF: what is logged and archived is one printable line each."""
    archive = MailArchive(f"file://{tmp_path}/archive")
    hostile = [b"stream: Heuristics.Limits.Exceeded\r\nX-Injected: 1 FOUND"]
    with (
        ScriptedClamd(hostile, version=b"ClamAV 1.4.6\r\nX-Injected: 2\x1b[0m") as fake,
        caplog.at_level(logging.DEBUG, logger="airflow_secure_mail"),
    ):
        result = _send(
            _request(Attachment("sales.csv", b"a,b\n")), ClamdScanner(fake.address, on_error="allow"), archive=archive
        )
    assert result.to_xcom()["malware_scan"] == "unscanned" and len(mail_env.smtp.messages) == 1
    [record] = _records(tmp_path)
    assert record["malware_scan"] == {
        "verdict": "unscanned",
        "signature": None,
        "scanner": "ClamAV 1.4.6X-Injected: 2[0m",
        "item": "text body",  # the first part judged; every part got the same reply
        "reason": "clamd stopped at a scan limit (Heuristics.Limits.ExceededX-Injected: 1)",
    }
    logged = [r.getMessage() for r in caplog.records]
    assert (
        "sending unscanned: text body: clamd stopped at a scan limit (Heuristics.Limits.ExceededX-Injected: 1)"
        in logged
    )
    assert not [m for m in logged if "Injected" in m and any(c in m for c in "\r\n\x1b")]


# -- gzip attachments end to end (issue 19 item 3) ---------------------------------------------------------------

REPORT_CSV = b"region,total\nnorth,12\nsouth,7\n" * 200


def _received_attachments(mail_env) -> list[tuple[str | None, str, bytes]]:
    [received] = mail_env.smtp.messages
    parsed = email.message_from_bytes(received.data, policy=email.policy.default)
    return [(p.get_filename(), p.get_content_type(), p.get_content()) for p in parsed.iter_attachments()]


def test_a_gzipped_report_is_scanned_and_received_by_the_server(mail_env, clamd):
    report = Attachment("report.csv.gz", gzip.compress(REPORT_CSV), content_type="application/gzip")
    result = _send(_request(report), ClamdScanner(clamd.tcp))
    [(name, kind, data)] = _received_attachments(mail_env)
    assert (name, kind, gzip.decompress(data)) == ("report.csv.gz", "application/gzip", REPORT_CSV)
    assert result.to_xcom()["malware_scan"] == "clean"


def test_eicar_inside_a_gzip_is_found_by_clamd(mail_env, clamd):
    """The walk inflates gzip but judges no content; clamd unpacks gzip itself, which this pins with the real scanner."""
    infected = Attachment("eicar.txt.gz", gzip.compress(eicar()), content_type="application/gzip")
    with pytest.raises(MalwareFound, match=f"^malware in 'eicar\\.txt\\.gz': clamd found {EICAR_FOUND}; ") as info:
        _send(_request(infected), ClamdScanner(clamd.tcp))
    assert info.value.signature == EICAR_FOUND
    _nothing_sent(mail_env)


def test_a_gzipped_report_named_by_its_file_alone_is_sent_as_gzip(mail_env):
    send_mail(_request(Attachment("report.csv.gz", gzip.compress(REPORT_CSV))), channel=MailChannel.for_conn())
    [(name, kind, data)] = _received_attachments(mail_env)
    assert (name, kind, gzip.decompress(data)) == ("report.csv.gz", "application/gzip", REPORT_CSV)


# -- an early FOUND is a finding (issue 19 follow-up, finding 13) --------------------------------------------------


def test_a_found_reply_before_the_stream_ended_refuses_even_with_on_error_allow(mail_env):
    """A hostile clamd answers FOUND before reading the stream: still a finding, never 'unscanned'."""
    big = Attachment("sales.csv", b"region,total\n" + b"north,12\n" * 900_000)
    with (
        ScriptedClamd([b"stream: Eicar-Test-Signature FOUND"], answer_early=True) as fake,
        pytest.raises(MalwareFound) as info,
    ):
        scanner = ClamdScanner(fake.address, on_error="allow")
        policy = MailPolicy(malware_scan=scanner, max_message_bytes=20_000_000)  # the part must outlast the reply
        send_mail(_request(big, text=None), channel=MailChannel.for_conn(), policy=policy)
    assert str(info.value) == "malware in 'sales.csv': clamd found Eicar-Test-Signature; nothing was sent."
    assert (info.value.rule, info.value.item, info.value.signature) == ("malware", "sales.csv", "Eicar-Test-Signature")
    _nothing_sent(mail_env)


# -- zip member names reach log, archive and XCom printable (finding 7) ----------------------------------------


def test_a_zip_member_name_with_line_breaks_reaches_log_archive_and_xcom_on_one_line(mail_env, clamd, tmp_path, caplog):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("a.csv\r\nX-Injected: 1\r\n\x1b[31m", b"x" * 1000)
    hostile = patched_zip(buf.getvalue(), local={"crc": 1}, central={"crc": 1})
    archive = MailArchive(f"file://{tmp_path}/archive")
    with caplog.at_level(logging.DEBUG, logger="airflow_secure_mail"):
        result = _send(
            _request(Attachment("up.zip", hostile)), ClamdScanner(clamd.tcp, on_error="allow"), archive=archive
        )
    assert result.to_xcom()["malware_scan"] == "unscanned" and len(mail_env.smtp.messages) == 1
    reason = "up.zip/a.csvX-Injected: 1[31m is corrupt: CRC-32 mismatch"
    [record] = _records(tmp_path)
    assert (record["malware_scan"]["item"], record["malware_scan"]["reason"]) == ("up.zip", reason)
    logged = [r.getMessage() for r in caplog.records]
    assert f"sending unscanned: up.zip: {reason}" in logged
    assert not [m for m in logged if "Injected" in m and any(c in m for c in "\r\n\x1b")]


def test_a_zip_member_name_with_line_breaks_is_one_line_in_the_refusal(mail_env, clamd):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("a.csv\r\nX-Injected: 1\r\n\x1b[31m", b"x" * 1000)
    hostile = patched_zip(buf.getvalue(), local={"crc": 1}, central={"crc": 1})
    with pytest.raises(MalwareScanError) as info:
        _send(_request(Attachment("up.zip", hostile)), ClamdScanner(clamd.tcp))
    assert str(info.value).startswith(
        "'up.zip' could not be scanned (up.zip/a.csvX-Injected: 1[31m is corrupt: CRC-32 mismatch); nothing was sent."
    )
    _nothing_sent(mail_env)


# -- walked through gzip, with the real scanner (finding 3) --------------------------------------------------------


def test_an_encrypted_zip_gzipped_is_refused_before_connecting(mail_env, clamd):
    secret = encrypted_zip("payroll.csv", b"name,salary\nada,1\n", b"pw")
    with pytest.raises(PolicyViolation, match=r"member 'export\.zip\.gz/payroll\.csv'") as info:
        _send(_request(Attachment("export.zip.gz", gzip.compress(secret))), ClamdScanner(clamd.tcp))
    assert (info.value.rule, info.value.item) == ("encrypted_archive", "export.zip.gz")
    _nothing_sent(mail_env)


def test_a_gzip_bomb_is_refused_as_unscannable_before_connecting(mail_env, clamd):
    bomb = Attachment("zeros.csv.gz", gzip.compress(bytes(3 * 1024 * 1024)))
    with pytest.raises(MalwareScanError, match=r"zeros\.csv\.gz inflates past 2097152 bytes, over the scan limit"):
        _send(_request(bomb), ClamdScanner(clamd.tcp, max_bytes=2 * 1024 * 1024))
    _nothing_sent(mail_env)


# -- one compression table for compose and screen (finding 10) ---------------------------------------------------

COMPRESSED_TYPES = ("application/x-bzip2", "application/x-xz", "text/plain")


@pytest.mark.parametrize(
    ("filename", "compress", "kind"),
    [
        ("report.csv.bz2", bz2.compress, "application/x-bzip2"),
        ("report.bz2", bz2.compress, "application/x-bzip2"),
        ("report.csv.xz", lzma.compress, "application/x-xz"),
    ],
    ids=["csv_bz2", "bz2", "csv_xz"],
)
def test_bzip2_and_xz_reports_are_sent_where_allowed(mail_env, filename, compress, kind):
    policy = MailPolicy(allowed_attachment_types=COMPRESSED_TYPES)
    send_mail(_request(Attachment(filename, compress(REPORT_CSV))), channel=MailChannel.for_conn(), policy=policy)
    [(name, received_kind, data)] = _received_attachments(mail_env)
    assert (name, received_kind, data) == (filename, kind, compress(REPORT_CSV))


@pytest.mark.parametrize(
    ("filename", "compress", "kind"),
    [("report.csv.bz2", bz2.compress, "application/x-bzip2"), ("report.csv.xz", lzma.compress, "application/x-xz")],
    ids=["csv_bz2", "csv_xz"],
)
def test_bzip2_and_xz_are_refused_by_the_default_allow_list(mail_env, filename, compress, kind):
    with pytest.raises(PolicyViolation) as info:
        send_mail(_request(Attachment(filename, compress(REPORT_CSV))), channel=MailChannel.for_conn())
    assert str(info.value) == (
        f"attachment {filename!r} would be sent as {kind}, which allowed_attachment_types does not allow."
    )
    assert (info.value.rule, info.value.item) == ("allowed_attachment_types", filename)
    _nothing_sent(mail_env)
