"""mail/archives.py: the walk inside zip attachments before scanning — encrypted members, depth, inflation (pure).

(Attachment archives, i.e. zip files; the mail archive of sent messages is tests/test_archive.py.)
"""

from __future__ import annotations

import gzip
import io
import re
import zipfile
import zlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from airflow_secure_mail.errors import PolicyViolation, SecureMailError
from airflow_secure_mail.scanning.containers import ArchiveCorrupt, ArchiveUnchecked, check_archive
from airflow_secure_mail.testing.clamd import encrypted_zip, patched_zip, zip_of

MB = 1024 * 1024


def _check(name: str, data: bytes, **kw) -> list[str]:
    return check_archive(name, data, **{"max_depth": 5, "max_bytes": MB, **kw})


def _nested(data: bytes, depth: int) -> bytes:
    for level in range(depth):
        data = zip_of(f"level{level}.zip" if level else "data.csv", data)
    return data


def test_a_part_that_is_not_a_zip_is_left_to_the_scanner():
    assert _check("notes.txt", b"plain text") == []


def test_a_clean_zip_nested_within_the_bound_passes():
    assert _check("q3.zip", _nested(b"a,b\n1,2\n", 3)) == []


@pytest.mark.parametrize("depth", [0, 1, 2], ids=["top_level", "inside_a_zip", "two_deep"])
def test_an_encrypted_member_is_refused_naming_attachment_and_member(depth):
    data = encrypted_zip("payroll.csv", b"name,salary\nada,1\n", b"correct horse")
    for level in range(depth):
        data = zip_of(f"inner{level}.zip", data)
    with pytest.raises(
        PolicyViolation, match=r"attachment 'payroll\.zip' holds an encrypted .* member '.*payroll\.csv'"
    ) as info:
        _check("payroll.zip", data)
    assert (info.value.rule, info.value.item) == ("encrypted_archive", "payroll.zip")


def test_allowed_encrypted_members_are_returned_by_path():
    data = zip_of("inner.zip", encrypted_zip("payroll.csv", b"name,salary\n", b"pw"))
    assert _check("payroll.zip", data, allow_encrypted=True) == ["payroll.zip/inner.zip/payroll.csv"]


def test_nesting_past_the_bound_is_unchecked_naming_the_path():
    with pytest.raises(
        ArchiveUnchecked, match=r"deep\.zip/level3\.zip/level2\.zip nests archives deeper than max_archive_depth=2"
    ):
        _check("deep.zip", _nested(b"x", 4), max_depth=2)


def test_a_member_larger_than_the_scan_limit_is_unchecked():
    data = zip_of("inner.zip", zip_of("big.csv", b"0" * 5000))
    with pytest.raises(ArchiveUnchecked, match=r"deep\.zip/inner\.zip inflates to \d+ bytes, over the scan limit"):
        _check("deep.zip", data, max_bytes=100)


def test_inflation_is_bounded_in_total_not_only_per_member():
    """Many members under the per-member limit still stop at four times max_bytes read in all (zip bombs)."""
    inner = zip_of("chunk.csv", b"0" * 200)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for i in range(40):
            zf.writestr(f"part{i}.zip", inner + b"\0" * 800)
    with pytest.raises(ArchiveUnchecked, match=r"bomb\.zip/part\d+\.zip inflates to \d+ bytes, over the scan limit"):
        _check("bomb.zip", buf.getvalue(), max_bytes=4000)


@settings(max_examples=30, deadline=None)
@given(st.integers(min_value=1, max_value=6), st.integers(min_value=1, max_value=6))
def test_depth_is_refused_exactly_past_max_depth(depth, max_depth):
    data = _nested(b"payload", depth)
    if depth <= max_depth:
        assert _check("n.zip", data, max_depth=max_depth) == []
    else:
        with pytest.raises(ArchiveUnchecked, match=f"deeper than max_archive_depth={max_depth}"):
            _check("n.zip", data, max_depth=max_depth)


def test_a_member_whose_headers_understate_its_size_is_inflated_and_refused():
    """50 MB of zeros (about 50 KB deflated) declared as 1000 bytes in both headers: the real bytes are counted."""
    liar = patched_zip(zip_of("zeros.bin", bytes(50 * MB)), **_declaring_1000_zero_bytes())
    with pytest.raises(
        ArchiveUnchecked, match=r"^small\.zip/zeros\.bin inflates past 1048576 bytes, over the scan limit"
    ):
        _check("small.zip", liar)


def test_a_member_that_inflates_to_more_than_it_declares_within_the_limit_is_corrupt():
    liar = patched_zip(zip_of("a.csv", b"a,b\n" * 1000), local={"file_size": 10}, central={"file_size": 10})
    with pytest.raises(
        ArchiveCorrupt,
        match=r"^small\.zip/a\.csv is corrupt: it inflates to 4000 bytes, not the 10 its headers declare$",
    ):
        _check("small.zip", liar)


def test_the_inflation_budget_in_total_counts_real_bytes():
    """Members that each stay under max_bytes but declare nothing near it still exhaust four times max_bytes."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for i in range(6):
            zf.writestr(f"part{i}.bin", bytes(900_000))
    # each member is under max_bytes (1 MB); six of them are over four times that in all
    with pytest.raises(ArchiveUnchecked, match=r"many\.zip/part\d\.bin inflates (past|to) \d+ bytes"):
        _check("many.zip", buf.getvalue())


CSV = b"region,total\nnorth,12\n" * 50
_PLAIN = zip_of("q3.csv", CSV)
_CRC = zipfile.ZipFile(io.BytesIO(_PLAIN)).infolist()[0].CRC
_SIZE = len(CSV)


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (patched_zip(_PLAIN, local={"crc": _CRC ^ 1}, central={"crc": _CRC ^ 1}), r"CRC-32 mismatch"),
        (zip_of("inner.zip", patched_zip(_PLAIN, local={"crc": _CRC ^ 1}, central={"crc": _CRC ^ 1})), r"CRC-32"),
        (patched_zip(zip_of("inner.zip", _PLAIN), local={"crc": 7}, central={"crc": 7}), r"CRC-32 mismatch"),
        (patched_zip(_PLAIN, local={"file_size": _SIZE + 1}), r"local header .*central directory"),
        (patched_zip(_PLAIN, local={"method": 0}), r"local header .*central directory"),
        (_PLAIN.replace(b"q3.csv", b"q4.csv", 1), r"local header .*central directory"),
        (patched_zip(_PLAIN, local={"method": 99}, central={"method": 99}), r"compression method 99"),
        (patched_zip(_PLAIN, local={"compress_size": 4}, central={"compress_size": 4}), r"inflates to \d+ bytes, not the"),
        (patched_zip(_PLAIN, local={"compress_size": 9999}, central={"compress_size": 9999}), r"runs past the end"),
    ],
    ids=[
        "bad_crc", "bad_crc_inside_a_zip", "bad_crc_on_a_nested_zip", "local_size_disagrees",
        "local_method_disagrees", "local_name_disagrees", "unknown_method", "truncated_stream", "past_the_end",
    ],
)  # fmt: skip
def test_a_corrupt_zip_raises_our_error_never_a_zipfile_one(data, reason):
    with pytest.raises(ArchiveCorrupt, match=f"^q3\\.zip/.* is corrupt: .*{reason}") as info:
        _check("q3.zip", data)
    assert isinstance(info.value, ArchiveUnchecked) and isinstance(info.value, SecureMailError)
    assert "\n" not in str(info.value)


def test_zip_members_in_every_method_python_writes_are_inflated_and_pass():
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for method in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA):
            zf.writestr(f"m{method}.csv", CSV, compress_type=method)
            zf.writestr(f"m{method}.zip", _nested(CSV, 1), compress_type=method)
    assert _check("methods.zip", buf.getvalue()) == []


@pytest.mark.parametrize("method", [zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA], ids=["bzip2", "lzma"])
def test_bzip2_and_lzma_bombs_stop_at_the_budget(method):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("zeros.bin", bytes(8 * MB), compress_type=method)
    liar = patched_zip(buf.getvalue(), local={"file_size": 100}, central={"file_size": 100})
    with pytest.raises(ArchiveUnchecked, match=r"bomb\.zip/zeros\.bin inflates past 1048576 bytes"):
        _check("bomb.zip", liar)


def _declaring_1000_zero_bytes() -> dict[str, dict[str, int]]:
    """Header fields of a member claiming to be 1000 zero bytes, CRC included: a consistent lie."""
    fields = {"file_size": 1000, "crc": zlib.crc32(bytes(1000))}
    return {"local": fields, "central": fields}


# -- the walk cannot be skipped (issue 19 follow-up, finding 3) ------------------------------------------------

_SECRET = encrypted_zip("payroll.csv", b"name,salary\nada,1\n", b"pw")
_NO_CENTRAL_DIRECTORY = _SECRET[: _SECRET.index(b"PK\x01\x02")]


def _tar_gz(name: str, data: bytes) -> bytes:
    import tarfile

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        info = tarfile.TarInfo(name)
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


@pytest.mark.parametrize(
    "data",
    [_NO_CENTRAL_DIRECTORY, b"PK\x03\x04 not really a zip", zip_of("inner.zip", _NO_CENTRAL_DIRECTORY)],
    ids=["central_directory_cut", "magic_then_junk", "nested_without_central_directory"],
)
def test_a_zip_that_cannot_be_opened_is_corrupt_not_skipped(data):
    with pytest.raises(ArchiveCorrupt, match=r"^export\.zip(/inner\.zip)? is corrupt: "):
        _check("export.zip", data)


def test_a_zip_behind_a_junk_byte_is_still_walked():
    with pytest.raises(PolicyViolation, match=r"encrypted .* member 'export\.zip/payroll\.csv'") as info:
        _check("export.zip", b"X" + _SECRET)
    assert info.value.rule == "encrypted_archive"


@pytest.mark.parametrize(
    ("name", "data", "member"),
    [
        ("export.zip.gz", gzip.compress(_SECRET), "export.zip.gz/payroll.csv"),
        ("export.tar.gz", _tar_gz("inner.zip", _SECRET), "export.tar.gz/inner.zip/payroll.csv"),
        ("outer.zip", zip_of("export.zip.gz", gzip.compress(_SECRET)), "outer.zip/export.zip.gz/payroll.csv"),
    ],
    ids=["gzipped_zip", "zip_in_a_tar_gz", "gzip_member_of_a_zip"],
)
def test_an_encrypted_member_inside_gzip_or_tar_is_found(name, data, member):
    with pytest.raises(PolicyViolation, match=f"encrypted .* member '{re.escape(member)}'") as info:
        _check(name, data)
    assert info.value.rule == "encrypted_archive"


def test_a_gzip_bomb_stops_at_the_budget():
    bomb = gzip.compress(bytes(8 * MB))
    assert len(bomb) < 10_000
    with pytest.raises(ArchiveUnchecked, match=r"^zeros\.gz inflates past 1048576 bytes, over the scan limit$"):
        _check("zeros.gz", bomb)


@pytest.mark.parametrize(
    "data",
    [gzip.compress(CSV)[:-12], gzip.compress(CSV)[:10] + b"\xff" * 20],
    ids=["truncated", "damaged"],
)
def test_a_damaged_gzip_is_corrupt(data):
    with pytest.raises(ArchiveCorrupt, match=r"^q3\.csv\.gz is corrupt: "):
        _check("q3.csv.gz", data)


def test_text_with_ustar_where_a_tar_header_has_it_is_not_taken_for_a_tar():
    text = b"x" * 256 + b" ustard and other words\n" * 40
    assert text[257:262] == b"ustar" and _check("notes.txt", text) == []


def test_ordinary_gzipped_reports_and_tarballs_pass():
    assert _check("q3.csv.gz", gzip.compress(CSV)) == []
    assert _check("q3.tar.gz", _tar_gz("q3.csv", CSV)) == []


# -- member names never reach a message raw (finding 7) ----------------------------------------------------------

HOSTILE_NAME = "a.csv\r\nX-Injected: 1\r\n\x1b[31m"


def _hostile_zip() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr(HOSTILE_NAME, b"x" * 1000)
    return patched_zip(buf.getvalue(), local={"crc": 1}, central={"crc": 1})


def test_a_member_name_with_control_characters_is_printable_in_the_error():
    with pytest.raises(ArchiveCorrupt) as info:
        _check("up.zip", _hostile_zip())
    assert str(info.value) == "up.zip/a.csvX-Injected: 1[31m is corrupt: CRC-32 mismatch"
