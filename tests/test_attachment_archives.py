"""mail/archives.py: the walk inside zip attachments before scanning — encrypted members, depth, inflation (pure).

(Attachment archives, i.e. zip files; the mail archive of sent messages is tests/test_archive.py.)
"""

from __future__ import annotations

import io
import zipfile

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from airflow_secure_mail.errors import PolicyViolation
from airflow_secure_mail.mail.archives import ArchiveUnchecked, check_archive
from airflow_secure_mail.testing.clamd import encrypted_zip, zip_of

MB = 1024 * 1024


def _check(name: str, data: bytes, **kw) -> list[str]:
    return check_archive(name, data, **{"max_depth": 5, "max_bytes": MB, **kw})


def _nested(data: bytes, depth: int) -> bytes:
    for level in range(depth):
        data = zip_of(f"level{level}.zip" if level else "data.csv", data)
    return data


def test_a_part_that_is_not_a_zip_is_left_to_the_scanner():
    assert _check("notes.txt", b"plain text") == []
    assert _check("broken.zip", b"PK\x03\x04 not really a zip") == []


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
