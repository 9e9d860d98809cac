"""Look inside zip attachments before they are scanned: encrypted members and nesting beyond a bound.

clamd scans inside archives itself, but whether it flags encrypted ones (``AlertEncryptedArchive``) or
archives nested past its ``MaxRecursion`` (``AlertExceedsMax``) depends on the server's configuration.
This walk makes both refusals hold whatever the server is set to.
"""

from __future__ import annotations

import io
import zipfile
from dataclasses import dataclass, field

from airflow_secure_mail.errors import PolicyViolation

_ZIP_MAGIC = b"PK\x03\x04"
_ENCRYPTED = 0x1


class ArchiveUnchecked(Exception):
    """The walk could not look all the way inside (too deep, too large): the part counts as unscanned."""


@dataclass
class _Walk:
    """One attachment's walk: its limits, the inflation budget left, and encrypted members allowed through."""

    item: str
    max_depth: int
    max_bytes: int
    allow_encrypted: bool
    remaining: int
    encrypted: list[str] = field(default_factory=list)

    def visit(self, path: str, data: bytes, depth: int) -> None:
        try:
            archive = zipfile.ZipFile(io.BytesIO(data))
        except (zipfile.BadZipFile, ValueError, EOFError):
            return  # not a readable zip: clamd judges the bytes as they are
        if depth > self.max_depth:
            raise ArchiveUnchecked(f"{path} nests archives deeper than max_archive_depth={self.max_depth}")
        with archive:
            for info in archive.infolist():
                member = f"{path}/{info.filename}"
                if info.flag_bits & _ENCRYPTED:
                    self._encrypted(member)
                    continue
                if info.is_dir():
                    continue
                if info.file_size > min(self.max_bytes, self.remaining):
                    raise ArchiveUnchecked(f"{member} inflates to {info.file_size} bytes, over the scan limit")
                with archive.open(info) as fh:
                    if fh.read(len(_ZIP_MAGIC)) != _ZIP_MAGIC:
                        continue
                inner = archive.read(info)
                self.remaining -= len(inner)
                self.visit(member, inner, depth + 1)

    def _encrypted(self, member: str) -> None:
        if not self.allow_encrypted:
            raise PolicyViolation(
                f"attachment {self.item!r} holds an encrypted (password-protected) archive member {member!r}, "
                "which cannot be scanned: send it unencrypted or protect the whole mail instead.",
                rule="encrypted_archive",
                item=self.item,
            )
        self.encrypted.append(member)


def check_archive(
    name: str, data: bytes, *, max_depth: int, max_bytes: int, allow_encrypted: bool = False
) -> list[str]:
    """Raise PolicyViolation (rule ``encrypted_archive``) or ArchiveUnchecked; return encrypted members allowed.

    ``max_bytes`` bounds every member read and, four times over, the bytes inflated in total (zip bombs).
    """
    walk = _Walk(name, max_depth, max_bytes, allow_encrypted, remaining=4 * max_bytes)
    if data.startswith(_ZIP_MAGIC):
        walk.visit(name, data, 1)
    return walk.encrypted
