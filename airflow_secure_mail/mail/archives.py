"""Look inside zip attachments before they are scanned: encrypted members and nesting beyond a bound.

clamd scans inside archives itself, but whether it flags encrypted ones (``AlertEncryptedArchive``) or
archives nested past its ``MaxRecursion`` (``AlertExceedsMax``) depends on the server's configuration.
This walk makes both refusals hold whatever the server is set to.
"""

from __future__ import annotations

import io
import zipfile
from dataclasses import dataclass

from airflow_secure_mail.errors import PolicyViolation

_ZIP_MAGIC = b"PK\x03\x04"
_ENCRYPTED = 0x1


class ArchiveUnchecked(Exception):
    """The walk could not look all the way inside (too deep, too large): the part counts as unscanned."""


@dataclass
class _Budget:
    remaining: int


def check_archive(name: str, data: bytes, *, max_depth: int, max_bytes: int, allow_encrypted: bool = False) -> int:
    """Raise PolicyViolation (rule ``encrypted_archive``) or ArchiveUnchecked; return the nesting depth found.

    ``max_bytes`` bounds every member read and, four times over, the bytes inflated in total (zip bombs).
    """
    if not data.startswith(_ZIP_MAGIC):
        return 0
    return _walk(name, name, data, 1, max_depth, max_bytes, allow_encrypted, _Budget(4 * max_bytes))


def _walk(
    item: str, path: str, data: bytes, depth: int, max_depth: int, max_bytes: int, allow: bool, budget: _Budget
) -> int:
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except (zipfile.BadZipFile, ValueError, EOFError):
        return depth - 1  # not a readable zip: clamd judges the bytes as they are
    if depth > max_depth:
        raise ArchiveUnchecked(f"{path} nests archives deeper than max_archive_depth={max_depth}")
    deepest = depth
    with archive:
        for info in archive.infolist():
            member = f"{path}/{info.filename}"
            if info.flag_bits & _ENCRYPTED:
                if allow:
                    continue
                raise PolicyViolation(
                    f"attachment {item!r} holds an encrypted (password-protected) archive member {member!r}, "
                    "which cannot be scanned: send it unencrypted or protect the whole mail instead.",
                    rule="encrypted_archive",
                    item=item,
                )
            if info.is_dir():
                continue
            if info.file_size > max_bytes or info.file_size > budget.remaining:
                raise ArchiveUnchecked(f"{member} inflates to {info.file_size} bytes, over the scan limit")
            with archive.open(info) as fh:
                if fh.read(len(_ZIP_MAGIC)) != _ZIP_MAGIC:
                    continue
            inner = archive.read(info)
            budget.remaining -= len(inner)
            deepest = max(deepest, _walk(item, member, inner, depth + 1, max_depth, max_bytes, allow, budget))
    return deepest
