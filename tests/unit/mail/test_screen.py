"""mail/screen.py: MailPolicy rules on a composed message — headers as emitted, recipients, types by content (pure)."""

from __future__ import annotations

import bz2
import email
import email.policy
import gzip
import io
import lzma
import zipfile

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from airflow_secure_mail.errors import ConfigurationError, PolicyViolation
from airflow_secure_mail.mail.compose import Attachment, Envelope, MailRequest, compose
from airflow_secure_mail.mail.screen import MailPolicy, screen, sniff
from airflow_secure_mail.testing.clamd import patched_zip
from tests.strategies import encoded_controls

PDF = b"%PDF-1.4\n1 0 obj<<>>endobj\ntrailer<<>>\n%%EOF\n"
EXE = b"MZ\x90\x00\x03\x00\x00\x00\x04\x00\x00\x00\xff\xff\x00\x00" + b"\x00" * 48 + b"PE\x00\x00" + b"\x00" * 64
PNG = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + b"\x00" * 32
JPEG = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01" + b"\x00" * 32
GIF = b"GIF89a" + b"\x00" * 32
CSV = b"name,amount\nalice,10\n"
CONTROL = "contains a control character"


def _request(*attachments: Attachment, to: tuple[str, ...] = ("ops@example.com",), **kw) -> MailRequest:
    base = {"sender": "airflow@example.com", "to": to, "subject": "report", "text": "see attached"}
    return MailRequest(attachments=attachments, **{**base, **kw})


def _screen(request: MailRequest, policy: MailPolicy | None = None) -> tuple[bytes, Envelope]:
    """Compose and screen as the pipeline does; the bytes that would go on the wire."""
    policy = policy or MailPolicy()
    message, envelope = compose(request, allow_special_use_domains=policy.allow_special_use_domains)
    data = message.as_bytes(policy=email.policy.SMTP)
    screen(message, envelope, policy, request.attachments, encoded_size=len(data))
    return data, envelope


def _office(*members: tuple[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in members:
            zf.writestr(name, data)
    return buf.getvalue()


# -- attachment types, judged by content ----------------------------------------------------------


def test_pdf_named_file_holding_an_executable_is_refused():
    with pytest.raises(PolicyViolation, match=r"'report\.pdf' is application/x-dosexec by content") as info:
        _screen(_request(Attachment("report.pdf", EXE)))
    assert (info.value.rule, info.value.item) == ("allowed_attachment_types", "report.pdf")


def test_extension_must_agree_with_content():
    with pytest.raises(PolicyViolation, match=r"'chart\.pdf' holds image/png but its name says otherwise") as info:
        _screen(_request(Attachment("chart.pdf", PNG)))
    assert info.value.rule == "extension_mismatch"


def test_text_family_extensions_accept_any_text_content():
    data, _ = _screen(_request(Attachment("data.json", CSV), Attachment("data.tsv", CSV), Attachment("d.txt", CSV)))
    assert data.count(b"Content-Disposition: attachment") == 3


@pytest.mark.parametrize("filename", ["report.bin", "report", "report.exe"])
def test_a_name_without_a_matching_extension_is_refused(filename):
    with pytest.raises(PolicyViolation, match=f"'{filename}' holds text/plain but its name says otherwise") as info:
        _screen(_request(Attachment(filename, CSV, content_type="text/plain")))
    assert info.value.rule == "extension_mismatch"


def test_macro_enabled_office_file_is_refused():
    workbook = _office(("[Content_Types].xml", b"<Types/>"), ("xl/workbook.xml", b"<w/>"), ("xl/vbaProject.bin", b"m"))
    with pytest.raises(PolicyViolation, match="is application/vnd.ms-office.macroenabled by content") as info:
        _screen(_request(Attachment("numbers.xlsx", workbook)))
    assert info.value.rule == "allowed_attachment_types"


def test_office_and_odf_containers_are_known_by_their_members():
    xlsx = _office(("[Content_Types].xml", b"<Types/>"), ("xl/workbook.xml", b"<w/>"))
    ods = _office(("mimetype", b"application/vnd.oasis.opendocument.spreadsheet"), ("content.xml", b"<x/>"))
    assert sniff(Attachment("a.xlsx", xlsx)) == "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
    assert sniff(Attachment("a.ods", ods)) == "application/vnd.oasis.opendocument.spreadsheet"
    _screen(_request(Attachment("a.xlsx", xlsx), Attachment("a.ods", ods)))


_ODS_MIMETYPE = b"application/vnd.oasis.opendocument.spreadsheet"


@pytest.mark.parametrize(
    "broken",
    [
        {"local": {"method": 99}, "central": {"method": 99}},
        {"local": {"crc": 1}, "central": {"crc": 1}},
        {"local": {"file_size": 3}},
    ],
    ids=["unknown_method", "bad_crc", "local_header_disagrees"],
)
def test_a_corrupt_container_is_refused_by_content_never_with_a_zipfile_error(broken):
    ods = patched_zip(_office(("mimetype", _ODS_MIMETYPE), ("content.xml", b"<x/>")), **broken)
    with pytest.raises(PolicyViolation, match=r"'a\.ods' is application/octet-stream by content") as info:
        _screen(_request(Attachment("a.ods", ods)))
    assert info.value.rule == "allowed_attachment_types"


def test_an_odf_mimetype_member_is_read_only_when_stored_small_as_the_format_requires():
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("mimetype", _ODS_MIMETYPE + b" " * 8_000_000, compress_type=zipfile.ZIP_BZIP2)
    assert sniff(Attachment("a.ods", buf.getvalue())) == "application/zip"


# -- gzip (issue 19 item 3): the allow-list names application/gzip, so gzip files must be sendable ------------

GZ_CSV = gzip.compress(CSV)
GZIP_NAMES = ["report.csv.gz", "report.gz", "backup.tgz", "backup.tar.gz", "events.json.gz"]


@pytest.mark.parametrize("declared", ["application/gzip", "application/x-gzip"])
@pytest.mark.parametrize("filename", GZIP_NAMES)
def test_gzip_files_are_sent_under_the_gzip_type_they_declare(filename, declared):
    data, _ = _screen(_request(Attachment(filename, GZ_CSV, content_type=declared)))
    parsed = email.message_from_bytes(data, policy=email.policy.default)
    [part] = parsed.iter_attachments()
    assert (part.get_filename(), part.get_content_type(), part.get_content()) == (filename, declared, GZ_CSV)


@pytest.mark.parametrize("filename", ["backup.tgz", "backup.tar.gz"])
def test_a_gzipped_tarball_may_be_declared_a_tar_where_tar_is_allowed(filename):
    policy = MailPolicy(allowed_attachment_types=(*MailPolicy().allowed_attachment_types, "application/x-tar"))
    _screen(_request(Attachment(filename, GZ_CSV, content_type="application/x-tar")), policy)
    with pytest.raises(PolicyViolation, match=r"'report\.csv\.gz' is declared application/x-tar but its content is "):
        _screen(_request(Attachment("report.csv.gz", GZ_CSV, content_type="application/x-tar")), policy)


@pytest.mark.parametrize(
    ("filename", "content", "content_type", "rule", "message"),
    [
        ("report.csv.gz", CSV, None, "extension_mismatch", r"'report\.csv\.gz' holds text/(csv|plain) but its"),
        ("report.csv.gz", CSV, "application/gzip", "declared_type_mismatch", r"declared application/gzip but its co"),
        ("report.gz", PDF, "application/gzip", "declared_type_mismatch", r"its content is application/pdf"),
        ("report.gz", _office(("a.csv", CSV)), "application/x-gzip", "declared_type_mismatch", r"content is application/zip"),
    ],
    ids=["csv_text", "csv_text_declared_gzip", "pdf", "zip"],
)  # fmt: skip
def test_a_gz_name_on_content_that_is_not_gzip_is_refused(filename, content, content_type, rule, message):
    with pytest.raises(PolicyViolation, match=message) as info:
        _screen(_request(Attachment(filename, content, content_type=content_type)))
    assert (info.value.rule, info.value.item) == (rule, filename)


def test_gzip_sniffed_as_x_gzip_agrees_with_either_name():
    assert sniff(Attachment("report.csv.gz", GZ_CSV)) == "application/gzip"
    assert MailPolicy(allowed_attachment_types=("application/x-gzip",)).allowed_attachment_types == (
        "application/gzip",
    )


# -- one compression table (issue 19 follow-up, finding 10): bzip2 and xz agree with their names -----------------

BZ_XZ = ("application/x-bzip2", "application/x-xz")


@pytest.mark.parametrize(
    ("filename", "content", "kind"),
    [
        ("report.csv.bz2", bz2.compress(CSV), "application/x-bzip2"),
        ("report.bz2", bz2.compress(CSV), "application/x-bzip2"),
        ("backup.tar.bz2", bz2.compress(CSV), "application/x-bzip2"),
        ("report.csv.xz", lzma.compress(CSV), "application/x-xz"),
        ("backup.tar.xz", lzma.compress(CSV), "application/x-xz"),
    ],
    ids=["csv_bz2", "bz2", "tar_bz2", "csv_xz", "tar_xz"],
)
def test_bzip2_and_xz_files_pass_where_allowed_under_the_type_compose_gives(filename, content, kind):
    assert sniff(Attachment(filename, content)) == kind
    data, _ = _screen(_request(Attachment(filename, content)), MailPolicy(allowed_attachment_types=BZ_XZ))
    [part] = email.message_from_bytes(data, policy=email.policy.default).iter_attachments()
    assert (part.get_filename(), part.get_content_type(), part.get_content()) == (filename, kind, content)


@pytest.mark.parametrize(
    ("filename", "content", "kind"),
    [
        ("report.csv.bz2", bz2.compress(CSV), "application/x-bzip2"),
        ("report.csv.xz", lzma.compress(CSV), "application/x-xz"),
    ],
    ids=["csv_bz2", "csv_xz"],
)
def test_bzip2_and_xz_are_refused_by_the_default_allow_list_saying_so(filename, content, kind):
    with pytest.raises(PolicyViolation) as info:
        _screen(_request(Attachment(filename, content)))
    assert (
        str(info.value)
        == f"attachment {filename!r} would be sent as {kind}, which allowed_attachment_types does not allow."
    )
    assert (info.value.rule, info.value.item) == ("allowed_attachment_types", filename)


def test_bzip2_bytes_under_an_xz_name_are_refused():
    with pytest.raises(PolicyViolation, match=r"'report\.csv\.xz' holds application/x-bzip2 but its name") as info:
        _screen(
            _request(Attachment("report.csv.xz", bz2.compress(CSV), content_type="application/x-bzip2")),
            MailPolicy(allowed_attachment_types=BZ_XZ),
        )
    assert info.value.rule == "extension_mismatch"


@pytest.mark.parametrize("filename", ["report.csv.gz", "backup.tgz", "events.json.gz"])
def test_gzip_bytes_never_go_out_under_the_type_inside_them(filename):
    """Without content_type the wire type comes from the name: gzip bytes are never labelled text/csv or tar."""
    try:
        data, _ = _screen(_request(Attachment(filename, GZ_CSV)))
    except PolicyViolation as exc:  # refused until compose labels a gzip-encoded name application/gzip
        assert exc.rule in ("declared_type_mismatch", "allowed_attachment_types"), exc
        assert exc.rule != "declared_type_mismatch" or "set content_type='application/gzip'" in str(exc)
    else:
        [part] = email.message_from_bytes(data, policy=email.policy.default).iter_attachments()
        assert part.get_content_type() == "application/gzip"


def test_shell_script_disguised_as_text_is_refused():
    with pytest.raises(PolicyViolation, match=r"'notes\.txt' is application/octet-stream by content") as info:
        _screen(_request(Attachment("notes.txt", b"#!/bin/sh\nrm -rf /\n")))
    assert info.value.rule == "allowed_attachment_types"


def test_allowed_attachments_pass_with_their_names_on_the_wire():
    data, _ = _screen(_request(Attachment("r.pdf", PDF), Attachment("d.csv", b"a,b\n1,2\n")))
    parsed = email.message_from_bytes(data, policy=email.policy.default)
    assert [(p.get_filename(), p.get_content_type()) for p in parsed.iter_attachments()] == [
        ("r.pdf", "application/pdf"),
        ("d.csv", "text/csv"),
    ]


def test_attachment_over_max_attachment_bytes_is_refused():
    with pytest.raises(PolicyViolation, match=r"'d\.csv' is 400 bytes, over max_attachment_bytes=100") as info:
        _screen(_request(Attachment("d.csv", b"a,b\n" * 100)), MailPolicy(max_attachment_bytes=100))
    assert (info.value.rule, info.value.item) == ("max_attachment_bytes", "d.csv")


# -- declared types ---------------------------------------------------------------------------------


def test_csv_declared_html_is_refused_as_html():
    att = Attachment("report.csv", b"name\n<img src=x onerror=alert(1)>\n", content_type="text/html")
    with pytest.raises(PolicyViolation, match="would be sent as text/html") as info:
        _screen(_request(att))
    assert info.value.rule == "allowed_attachment_types"


def test_declared_type_must_agree_with_content_even_when_both_are_allowed():
    att = Attachment("report.png", PDF, content_type="image/png")
    with pytest.raises(PolicyViolation, match="declared image/png but its content is application/pdf") as info:
        _screen(_request(att))
    assert info.value.rule == "declared_type_mismatch"


def test_text_family_declared_types_agree_with_text_content():
    data, _ = _screen(_request(Attachment("report.csv", CSV, content_type="text/plain")))
    assert b"Content-Type: text/plain" in data


_SAMPLES = {
    "application/pdf": (PDF, "pdf"),
    "image/png": (PNG, "png"),
    "image/jpeg": (JPEG, "jpg"),
    "image/gif": (GIF, "gif"),
    "text/csv": (CSV, "csv"),
    "application/zip": (_office(("data.csv", CSV)), "zip"),
}
_TEXT = {"text/csv", "text/plain"}


@settings(max_examples=40, deadline=None)
@given(st.sampled_from(sorted(_SAMPLES)), st.sampled_from(sorted(_SAMPLES)), st.binary(max_size=24))
def test_a_declared_type_that_disagrees_with_content_is_refused(actual, declared, tail):
    """Any allowed type declared over any allowed content: sent when they agree, refused naming both when not."""
    content, extension = _SAMPLES[actual]
    if actual not in _TEXT and actual != "application/zip":
        content += tail
    att = Attachment(f"f.{extension}", content, content_type=declared)
    kind = sniff(att)
    if declared == kind or (declared in _TEXT and kind in _TEXT):
        _screen(_request(att))
        return
    with pytest.raises(PolicyViolation, match=f"declared {declared} but its content is {kind}") as info:
        _screen(_request(att))
    assert info.value.rule == "declared_type_mismatch"


# -- recipients -------------------------------------------------------------------------------------

_ALLOW = MailPolicy(allowed_recipient_domains=("allowed.example",))


@pytest.mark.parametrize(
    ("rcpt", "rule", "message"),
    [
        ("bob@evil.example", "allowed_recipient_domains", "recipient bob@evil.example is outside"),
        ("bob@allowed.example.evil.example", "allowed_recipient_domains", "add allowed.example.evil.example"),
        ('"alice@allowed.example" <bob@evil.example>', "allowed_recipient_domains", "recipient bob@evil.example"),
        ("alice@allowed.example, bob@evil.example", "allowed_recipient_domains", "recipient bob@evil.example"),
        ("bob@аllowed.example", "allowed_recipient_domains", "add xn--llowed-2nf.example"),  # Cyrillic a
        ("alice@allowed.example@evil.example", "address", "is invalid"),
        ('"bob@evil.example"@allowed.example', "address", "is not a single address"),
        ("alice@allowed.example <bob@evil.example>", "address", "is not a single address"),
    ],
    ids=[
        "other_domain", "suffix_trick", "address_as_name", "second_address", "homograph", "two_at_signs",
        "quoted_local", "address_before_brackets",
    ],
)  # fmt: skip
def test_recipient_outside_allow_list_is_refused(rcpt, rule, message):
    with pytest.raises(PolicyViolation, match=message) as info:
        _screen(_request(to=(rcpt,)), _ALLOW)
    assert info.value.rule == rule


def test_allow_list_is_case_and_idna_normalized():
    _, envelope = _screen(
        _request(to=("Leser@BÜCHER.example",)), MailPolicy(allowed_recipient_domains=("Bücher.Example",))
    )
    assert envelope.recipients == ("Leser@xn--bcher-kva.example",)


def test_bcc_recipients_are_held_to_the_allow_list_too():
    with pytest.raises(PolicyViolation, match="recipient hidden@evil.example is outside"):
        _screen(_request(to=("a@allowed.example",), bcc=("hidden@evil.example",)), _ALLOW)


def test_too_many_recipients_refused():
    with pytest.raises(PolicyViolation, match="3 recipients exceed max_recipients=2") as info:
        _screen(_request(to=("a@example.com", "b@example.com", "c@example.com")), MailPolicy(max_recipients=2))
    assert info.value.rule == "max_recipients"


def test_oversized_message_is_refused():
    with pytest.raises(PolicyViolation, match=r"message is \d+ bytes encoded, over max_message_bytes=10000") as info:
        _screen(_request(text="x" * 20_000), MailPolicy(max_message_bytes=10_000))
    assert info.value.rule == "max_message_bytes"


def test_size_is_measured_when_the_caller_gives_none():
    message, envelope = compose(_request(text="x" * 20_000))
    with pytest.raises(PolicyViolation, match="over max_message_bytes=10000"):
        screen(message, envelope, MailPolicy(max_message_bytes=10_000))


# -- headers as emitted -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "filename",
    [
        "=?utf-8?q?r=0D=0ABcc:_attacker@evil.example?=.csv",
        "=?utf-8?b?cg0KQmNjOiBhdHRhY2tlckBldmlsLmV4YW1wbGU=?=.csv",
        "=?iso-8859-1?q?r=0ABcc:_attacker@evil.example?=.csv",
        "utf-8''r%0D%0ABcc%3A%20attacker%40evil.example.csv",
    ],
    ids=["rfc2047-q", "rfc2047-b", "rfc2047-lf-latin1", "rfc2231"],
)
def test_encoded_file_name_decoding_to_crlf_is_refused(filename):
    with pytest.raises(PolicyViolation, match=f"attachment file name {CONTROL}") as info:
        _screen(_request(Attachment(filename, CSV)))
    assert info.value.rule == "header_injection"


@pytest.mark.parametrize(
    "content_type",
    [
        'text/csv; name="=?utf-8?q?r=0D=0ABcc:_attacker@evil.example?="',
        "text/csv; name*=utf-8''r%0D%0ABcc%3A%20attacker%40evil.example",
        "text/csv; x-note*=utf-8''a%0Db",
        "text/csv\r\nBcc: attacker@evil.example",
    ],
    ids=["rfc2047-param", "rfc2231-param", "rfc2231-other-param", "raw-crlf"],
)
def test_content_type_parameter_decoding_to_crlf_is_refused(content_type):
    with pytest.raises(PolicyViolation, match=rf"attachment content_type( parameter \S+)? {CONTROL}") as info:
        _screen(_request(Attachment("report.csv", CSV, content_type=content_type)))
    assert info.value.rule == "header_injection"


def test_emitted_part_headers_are_screened_even_if_compose_let_them_through():
    """A part header added after compose that decodes to CR/LF is caught by screen, which reads what is emitted."""
    message, envelope = compose(_request(Attachment("report.csv", CSV)))
    [part] = list(message.iter_attachments())
    part.set_param("name", "=?utf-8?q?r=0D=0ABcc:_attacker@evil.example?=")
    with pytest.raises(PolicyViolation, match=f"attachment content_type parameter name {CONTROL}") as info:
        screen(message, envelope, MailPolicy(), (Attachment("report.csv", CSV),))
    assert info.value.rule == "header_injection"


def test_emitted_top_level_header_is_screened_even_if_compose_let_it_through():
    message, envelope = compose(_request())
    message["X-Note"] = "=?utf-8?q?ok=00?="
    with pytest.raises(PolicyViolation, match=f"header X-Note {CONTROL}"):
        screen(message, envelope, MailPolicy())


@settings(max_examples=40, deadline=None)
@given(encoded_controls(), st.sampled_from(["filename", "name", "x-note"]))
def test_encoded_control_characters_in_file_names_and_parameters_are_refused(encoded, where):
    form, value = encoded
    if where == "filename":
        att = Attachment(f"{value}.csv", CSV)
    elif form == "rfc2231":
        att = Attachment("report.csv", CSV, content_type=f"text/csv; {where}*={value}")
    else:
        att = Attachment("report.csv", CSV, content_type=f'text/csv; {where}="{value}"')
    with pytest.raises(PolicyViolation, match=CONTROL) as info:
        _screen(_request(att))
    assert info.value.rule == "header_injection"


@given(st.text(min_size=1, max_size=30))
@settings(max_examples=60, deadline=None)
def test_no_file_name_makes_an_extra_header_line(name):
    """Whatever the file name, either compose/screen refuse it or the part has exactly our four headers."""
    try:
        data, _ = _screen(_request(Attachment(f"{name}.csv", CSV)))
    except PolicyViolation:
        return
    parsed = email.message_from_bytes(data, policy=email.policy.default)
    [part] = list(parsed.iter_attachments())
    assert sorted(k.lower() for k in part) == [
        "content-disposition",
        "content-transfer-encoding",
        "content-type",
        "mime-version",
    ]


# -- HTML attachments -------------------------------------------------------------------------------

HTML_REPORT = b"<!DOCTYPE html>\n<html><body><h1>Summary</h1><p>42 rows loaded.</p></body></html>\n"
HTML_ALLOWED = MailPolicy(allowed_attachment_types=(*MailPolicy().allowed_attachment_types, "text/html"))


def test_html_attachment_is_off_by_default_and_the_error_says_how_to_allow_it():
    with pytest.raises(PolicyViolation, match="add 'text/html' to allowed_attachment_types") as info:
        _screen(_request(Attachment("summary.html", HTML_REPORT)))
    assert info.value.rule == "allowed_attachment_types"
    assert "would be sent as text/html" in str(info.value)


def test_allowed_html_attachment_is_sent_as_html_by_file_name():
    data, _ = _screen(_request(Attachment("summary.html", HTML_REPORT)), HTML_ALLOWED)
    assert b"Content-Type: text/html" in data and b'filename="summary.html"' in data


def test_allowed_html_attachment_with_active_content_is_refused_naming_the_file():
    evil = HTML_REPORT.replace(b"<p>", b'<p onclick="steal()">')
    with pytest.raises(
        PolicyViolation, match=r"^attachment 'summary\.html': HTML body: event handler onclick="
    ) as info:
        _screen(_request(Attachment("summary.html", evil)), HTML_ALLOWED)
    assert info.value.rule == "html_event_handler"
    assert info.value.item == 'summary.html: <p onclick="steal()">'


def test_text_that_is_not_html_cannot_travel_as_an_html_attachment():
    with pytest.raises(PolicyViolation, match=r"'summary\.html' holds text/plain but its name says otherwise") as info:
        _screen(_request(Attachment("summary.html", b"name,amount\nalice,10\n")), HTML_ALLOWED)
    assert info.value.rule == "extension_mismatch"


# -- the policy itself ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"max_message_bytes": 0}, "max_message_bytes must be positive"),
        ({"max_recipients": -1}, "max_recipients must be positive"),
        ({"allowed_recipient_domains": "example.com"}, "must be a list of domains"),
        ({"html": "allow_everything"}, "use 'refuse_active' \\(default\\) or 'strip'"),
    ],
)
def test_a_policy_that_cannot_work_is_refused_when_built(fields, message):
    with pytest.raises(ConfigurationError, match=message):
        MailPolicy(**fields)


def test_policy_from_connection_json_refuses_unknown_fields_and_takes_lists():
    with pytest.raises(ConfigurationError, match=r"unknown MailPolicy field\(s\) \['max_size'\]"):
        MailPolicy.from_dict({"max_size": 1})
    policy = MailPolicy.from_dict(
        {"allowed_recipient_domains": ["Example.COM"], "allowed_attachment_types": ["TEXT/CSV"]}
    )
    assert policy.allowed_recipient_domains == ("example.com",) and policy.allowed_attachment_types == ("text/csv",)
