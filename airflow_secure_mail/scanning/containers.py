"""Look inside zip, gzip and tar attachments before they are scanned: encrypted members, nesting, real sizes.

clamd scans inside archives itself, but whether it flags encrypted ones (``AlertEncryptedArchive``) or
archives nested past its ``MaxRecursion`` (``AlertExceedsMax``) depends on the server's configuration.
This walk makes those refusals hold whatever the server is set to. Every member is inflated here with a
byte budget: the sizes a zip declares are the attacker's to choose, so only bytes actually inflated are
counted, and a zip whose headers disagree with each other or with its data is refused as corrupt.

zipfile reads the central directory; members are inflated here rather than with ``ZipFile.open``, which
stops at the declared size (so it cannot see an understated one), never compares the local header's
sizes with the central directory's, and inflates bzip2 and LZMA without an output bound (a few KB of
bzip2 can be gigabytes).

The walk cannot be stepped around: bytes that start like a zip, or that ``zipfile.is_zipfile`` accepts
(a zip behind junk bytes, as self-extractors are), are walked, and one zipfile cannot open is corrupt.
gzip is inflated here too, within the same byte budget, and a tar (ustar) inside it or anywhere in the
walk has each member visited: a zip gzipped as ``export.zip.gz`` is checked like the zip itself.
Member names are attacker text: they reach errors, logs and archive metadata only through ``one_line``.
"""

from __future__ import annotations

import io
import struct
import zipfile
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from airflow_secure_mail.errors import PolicyViolation, SecureMailError
from airflow_secure_mail.scanning.clamd_wire import one_line, printable

_ZIP_MAGIC = b"PK\x03\x04"
_GZIP_MAGIC = b"\x1f\x8b"
_TAR_MAGIC = (257, b"ustar")  # POSIX ustar and GNU tar both carry it; a v7 tar is left to clamd
_NAME_LIMIT = 1000  # a path of nested member names, printable, capped
_ENCRYPTED = 0x1
_DATA_DESCRIPTOR = 0x8  # sizes and CRC follow the data; the local header holds zeros
_UTF8_NAME = 0x800
_ZIP64_SIZE = 0xFFFFFFFF  # the real size is in the zip64 extra field, which zipfile has read for the central entry
_LOCAL_HEADER = struct.Struct("<4s2B4HL2L2H")  # APPNOTE 4.3.7, as zipfile.structFileHeader
_CHUNK = 64 * 1024
# What zipfile, zlib, bz2 (OSError), lzma (LZMAError, an Exception) raise on a damaged archive: never raw.
ZIP_ERRORS = (zipfile.BadZipFile, zlib.error, NotImplementedError, EOFError, struct.error, ValueError, OSError)


class ArchiveUnchecked(SecureMailError):
    """The walk could not look all the way inside (too deep, too large): the part counts as unscanned."""


class ArchiveCorrupt(ArchiveUnchecked):
    """The zip is damaged or its headers lie (bad CRC, local header against central directory): unscanned."""


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
        """Walk ``data`` if it is a zip, gzip or tar (anything else is clamd's alone to judge)."""
        if data.startswith(_GZIP_MAGIC):
            self._checked_depth(path, depth)
            self._gzip(path, data, depth)
        elif _is_tar(data):
            self._checked_depth(path, depth)
            self._tar(path, data, depth)
        elif data.startswith(_ZIP_MAGIC) or _is_zip(data):
            self._zip(path, data, depth)

    def _checked_depth(self, path: str, depth: int) -> None:
        if depth > self.max_depth:
            raise ArchiveUnchecked(f"{path} nests archives deeper than max_archive_depth={self.max_depth}")

    def _zip(self, path: str, data: bytes, depth: int) -> None:
        """Every member of a zip; one that looks like a zip but will not open is corrupt, never skipped."""
        try:
            archive = zipfile.ZipFile(io.BytesIO(data))
        except ZIP_ERRORS as exc:
            raise ArchiveCorrupt(f"{path} is corrupt: {_why(exc)}") from None
        self._checked_depth(path, depth)
        with archive:
            for info in archive.infolist():
                self._member(path, data, info, depth)

    def _gzip(self, path: str, data: bytes, depth: int) -> None:
        """Inflate a gzip (every member of a concatenated one) within the budget, then walk what it holds."""
        limit = min(self.max_bytes, self.remaining)
        try:
            inflated = b"".join(_gzip_chunks(data, limit))
        except _Overrun:
            raise ArchiveUnchecked(f"{path} inflates past {limit} bytes, over the scan limit") from None
        except (zlib.error, EOFError) as exc:
            raise ArchiveCorrupt(f"{path} is corrupt: {_why(exc)}") from None
        self.remaining -= len(inflated)
        self.visit(path, inflated, depth + 1)

    def _tar(self, path: str, data: bytes, depth: int) -> None:
        """Every regular member of a tar held in memory; member bytes count against the budget too."""
        for member, body in _tar_files(path, data, lambda: min(self.max_bytes, self.remaining)):
            self.remaining -= len(body)
            self.visit(member, body, depth + 1)

    def _member(self, path: str, data: bytes, info: zipfile.ZipInfo, depth: int) -> None:
        """Inflate one member within the budget; walk into it (zip, gzip, tar)."""
        member = f"{path}/{_printable_name(info.filename)}"
        if info.flag_bits & _ENCRYPTED:
            self._encrypted(member)
            return
        limit = min(self.max_bytes, self.remaining)
        if info.file_size > limit:  # a declared size over the limit is believed; a smaller one is checked
            raise ArchiveUnchecked(f"{member} inflates to {info.file_size} bytes, over the scan limit")
        # every member is kept: a zip is known by its end (is_zipfile) as well as by its first bytes
        inflated, kept = inflate_member(member, data, info, limit)
        self.remaining -= inflated
        if kept is not None:
            self.visit(member, kept, depth + 1)

    def _encrypted(self, member: str) -> None:
        if not self.allow_encrypted:
            raise PolicyViolation(
                f"attachment {self.item!r} holds an encrypted (password-protected) archive member {member!r}, "
                "which cannot be scanned: send it unencrypted or protect the whole mail instead.",
                rule="encrypted_archive",
                item=self.item,
            )
        self.encrypted.append(member)


class _Overrun(Exception):
    """A member inflated past its byte budget."""


def inflate_member(
    where: str, data: bytes, info: zipfile.ZipInfo, limit: int, *, keep: Callable[[bytes], bool] = lambda _: True
) -> tuple[int, bytes | None]:
    """Inflate one member of the zip ``data`` counting real bytes; its size and CRC must be what the headers say.

    Returns the bytes inflated and the member's bytes if ``keep`` accepts their first four (else None).
    Raises ArchiveUnchecked past ``limit`` and ArchiveCorrupt for a damaged or lying member (``where`` names it).
    """
    from lzma import LZMAError

    try:
        return _inflate(data, info, limit, keep)
    except _Overrun:
        raise ArchiveUnchecked(f"{where} inflates past {limit} bytes, over the scan limit") from None
    except (*ZIP_ERRORS, LZMAError) as exc:
        raise ArchiveCorrupt(f"{where} is corrupt: {_why(exc)}") from None


def _inflate(data: bytes, info: zipfile.ZipInfo, limit: int, keep: Callable[[bytes], bool]) -> tuple[int, bytes | None]:
    """inflate_member's work: raises _Overrun, or BadZipFile / the codec's error for a damaged member."""
    total, crc = 0, 0
    kept: list[bytes] | None = []
    head = b""  # the first bytes, until there are enough for ``keep`` to decide
    for chunk in _chunks(info.compress_type, _member_body(data, info)):
        total += len(chunk)
        if total > limit:
            raise _Overrun
        crc = zlib.crc32(chunk, crc)
        if kept is not None:
            kept.append(chunk)
            if len(head) < len(_ZIP_MAGIC):
                head += chunk[: len(_ZIP_MAGIC)]
                kept = kept if len(head) < len(_ZIP_MAGIC) or keep(head) else None
    if total != info.file_size:
        raise zipfile.BadZipFile(f"it inflates to {total} bytes, not the {info.file_size} its headers declare")
    if crc != info.CRC:
        raise zipfile.BadZipFile("CRC-32 mismatch")
    if kept is None or (len(head) < len(_ZIP_MAGIC) and not keep(head)):
        return total, None
    return total, b"".join(kept)


def _member_body(data: bytes, info: zipfile.ZipInfo) -> bytes:
    """The member's compressed bytes, after checking its local header against the central directory."""
    start = info.header_offset
    fields = _LOCAL_HEADER.unpack_from(data, start)
    signature, flags, method, crc, packed, size, name_len, extra_len = (fields[i] for i in (0, 3, 4, 7, 8, 9, 10, 11))
    if signature != _ZIP_MAGIC:
        raise zipfile.BadZipFile("no local header where the central directory points")
    name = data[start + _LOCAL_HEADER.size : start + _LOCAL_HEADER.size + name_len]
    disagree = [
        what
        for what, local, central in (
            ("compression method", method, info.compress_type),
            ("file name", name.decode("utf-8" if flags & _UTF8_NAME else "cp437", "replace"), info.orig_filename),
            ("encryption flag", flags & _ENCRYPTED, info.flag_bits & _ENCRYPTED),
            *(() if flags & _DATA_DESCRIPTOR else _sizes(crc, packed, size, info)),
        )
        if local != central
    ]
    if disagree:
        raise zipfile.BadZipFile(f"its local header disagrees with the central directory ({', '.join(disagree)})")
    begin = start + _LOCAL_HEADER.size + name_len + extra_len
    body = data[begin : begin + info.compress_size]
    if len(body) < info.compress_size:
        raise zipfile.BadZipFile("its data runs past the end of the archive")
    return body


def _sizes(crc: int, packed: int, size: int, info: zipfile.ZipInfo) -> list[tuple[str, int, int]]:
    """The local header's CRC and sizes beside the central directory's (zip64 markers stand for either)."""
    pairs = [("CRC-32", crc, info.CRC)]
    if packed != _ZIP64_SIZE:
        pairs.append(("compressed size", packed, info.compress_size))
    if size != _ZIP64_SIZE:
        pairs.append(("size", size, info.file_size))
    return pairs


def _chunks(method: int, body: bytes) -> Iterator[bytes]:
    """The inflated member in pieces of at most _CHUNK bytes, whatever the compression ratio."""
    if method == zipfile.ZIP_STORED:
        yield from (body[i : i + _CHUNK] for i in range(0, len(body), _CHUNK))
    elif method == zipfile.ZIP_DEFLATED:
        yield from _zlib_chunks(body)
    elif method == zipfile.ZIP_BZIP2:
        import bz2

        yield from _bounded_chunks(bz2.BZ2Decompressor(), body)
    elif method == zipfile.ZIP_LZMA:
        yield from _bounded_chunks(*_lzma(body))
    else:
        raise NotImplementedError(f"compression method {method} is not one this check can inflate")


def _zlib_chunks(body: bytes) -> Iterator[bytes]:
    decompressor = zlib.decompressobj(-zlib.MAX_WBITS)  # raw deflate, as zip stores it
    pending = body
    while True:
        out = decompressor.decompress(pending, _CHUNK)
        pending = decompressor.unconsumed_tail
        if not out and (decompressor.eof or not pending):
            return
        yield out


def _bounded_chunks(decompressor: Any, body: bytes) -> Iterator[bytes]:
    """bz2 and lzma decompressors: ``max_length`` output per call, the rest on calls with no new input."""
    out = decompressor.decompress(body, _CHUNK)
    while True:
        if out:
            yield out
        if decompressor.eof or decompressor.needs_input:
            return
        out = decompressor.decompress(b"", _CHUNK)


def _lzma(body: bytes) -> tuple[Any, bytes]:
    """A raw LZMA1 decompressor for a zip member (APPNOTE 5.8.8: version, properties size, properties)."""
    import lzma

    (props_size,) = struct.unpack_from("<H", body, 2)
    props = body[4 : 4 + props_size]
    if props_size != 5 or len(props) != 5:
        raise zipfile.BadZipFile("malformed LZMA properties")
    lc_lp_pb = props[0]
    lzma1 = {
        "id": lzma.FILTER_LZMA1,
        "dict_size": int.from_bytes(props[1:5], "little"),
        "lc": lc_lp_pb % 9,
        "lp": lc_lp_pb // 9 % 5,
        "pb": lc_lp_pb // 45,
    }
    return lzma.LZMADecompressor(lzma.FORMAT_RAW, filters=[lzma1]), body[4 + props_size :]


def _gzip_chunks(data: bytes, limit: int) -> Iterator[bytes]:
    """A gzip inflated in pieces of at most _CHUNK bytes, every member of it; raises _Overrun past ``limit``.

    A stream that ends early, or bytes after it that are not another gzip member, are an error (EOFError).
    """
    total, pending = 0, data
    while pending:
        decompressor = zlib.decompressobj(16 + zlib.MAX_WBITS)
        while not decompressor.eof:
            out = decompressor.decompress(pending, _CHUNK)
            pending = decompressor.unconsumed_tail
            if not out and not pending and not decompressor.eof:
                raise EOFError("the gzip stream ends before its end marker")
            total += len(out)
            if total > limit:
                raise _Overrun
            yield out
        pending = decompressor.unused_data
        if pending and not pending.startswith(_GZIP_MAGIC):
            raise EOFError("bytes that are not gzip follow the gzip stream")


def _tar_files(path: str, data: bytes, limit: Callable[[], int]) -> Iterator[tuple[str, bytes]]:
    """``(path/name, bytes)`` of each regular tar member, each within ``limit()``; tarfile's errors are ours.

    A generator, so what the caller raises while visiting a member never passes through this handler.
    """
    import tarfile

    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tar:
            for info in tar:
                if info.isfile():
                    yield _tar_member(path, tar, info, limit())
    except (tarfile.TarError, EOFError, OSError, ValueError) as exc:
        raise ArchiveCorrupt(f"{path} is corrupt: {_why(exc)}") from None


def _tar_member(path: str, tar: Any, info: Any, limit: int) -> tuple[str, bytes]:
    member = f"{path}/{_printable_name(info.name)}"
    if info.sparse is not None:  # a sparse member's size is declared, not stored: zeros without limit
        raise ArchiveUnchecked(f"{member} is a sparse tar member, which this check does not expand")
    if info.size > limit:
        raise ArchiveUnchecked(f"{member} inflates to {info.size} bytes, over the scan limit")
    handle = tar.extractfile(info)
    body = handle.read(limit + 1) if handle is not None else b""
    if len(body) != info.size:
        raise ArchiveCorrupt(f"{member} is corrupt: it is shorter than its header declares")
    return member, body


def _is_tar(data: bytes) -> bool:
    """A ustar header with a valid checksum first: "ustar" at offset 257 alone could be a word in a text."""
    import tarfile

    offset, magic = _TAR_MAGIC
    if data[offset : offset + len(magic)] != magic:
        return False
    try:
        tarfile.TarInfo.frombuf(data[:512], "utf-8", "surrogateescape")
    except tarfile.HeaderError:
        return False
    return True


def _is_zip(data: bytes) -> bool:
    """zipfile would take these bytes for a zip (an end-of-central-directory record near the end)."""
    return zipfile.is_zipfile(io.BytesIO(data))


def _printable_name(name: str) -> str:
    """A member name as it may appear in errors, logs and metadata: one line, no control characters."""
    return one_line(name, _NAME_LIMIT) or "?"


def _why(exc: BaseException) -> str:
    """One line on what the library found wrong (its message is ours to shorten; no member bytes in it)."""
    text = printable(" ".join(str(exc).split()), 160)
    return text or type(exc).__name__


def check_archive(
    name: str, data: bytes, *, max_depth: int, max_bytes: int, allow_encrypted: bool = False
) -> list[str]:
    """Raise PolicyViolation (rule ``encrypted_archive``) or ArchiveUnchecked; return encrypted members allowed.

    ``max_bytes`` bounds every member inflated and, four times over, the bytes inflated in total (zip bombs).
    ArchiveCorrupt (an ArchiveUnchecked) names a damaged or lying zip.
    """
    walk = _Walk(name, max_depth, max_bytes, allow_encrypted, remaining=4 * max_bytes)
    walk.visit(name, data, 1)  # the attachment's name was checked by compose; member names are made printable
    return walk.encrypted
