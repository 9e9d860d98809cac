"""Write-once objects under one ``ObjectStoragePath`` location: the archive, a backup location, an export.

Nothing is ever overwritten: local files are written to a temp file, fsynced and hard-linked into place
(mode 0600); object stores get a conditional put (``If-None-Match: *``).
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import tempfile
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from airflow_secure_mail.errors import ArchiveError, ArchiveIntegrityError, ConfigurationError

_PARALLEL = 8


class ObjectStore:
    """Write-once objects under one ``ObjectStoragePath`` location (the archive, a backup location)."""

    def __init__(self, location: str, conn_id: str | None = None) -> None:
        if "://" not in location:
            raise ConfigurationError(f"location {location!r} needs a scheme: file:///path or s3://bucket/prefix.")
        self.location = location.rstrip("/")
        self.conn_id = conn_id

    @property
    def base(self) -> Any:
        from airflow.sdk import ObjectStoragePath

        return (
            ObjectStoragePath(self.location, conn_id=self.conn_id) if self.conn_id else ObjectStoragePath(self.location)
        )

    def _path(self, name: str) -> Any:
        return self.base / name

    @functools.cached_property
    def _root(self) -> Path | None:
        """The directory of a local location (plain file system calls there), None for an object store."""
        base = self.base
        return Path(base.path) if str(base.protocol) in ("file", "local") else None

    @property
    def _local(self) -> bool:
        return self._root is not None

    def write_once(self, name: str, data: bytes) -> None:
        """Create ``name`` with ``data``; an existing object is an ArchiveError, never overwritten."""
        error = self.write_once_many([(name, data)])[0]
        if error is not None:
            raise error

    def write_once_many(self, items: Sequence[tuple[str, bytes]]) -> list[ArchiveError | None]:
        """:meth:`write_once` for several objects at once, one outcome each; durable when it returns.

        Local files are fsynced together and each directory once (the journal commits them as a group);
        object stores get their conditional puts in parallel.
        """
        if self._local:
            assert self._root is not None
            paths = [(self._root / name, data) for name, data in items]
            errors = _write_local_many(paths)
            return [None if e is None else _archive_error(n, e) for (n, _), e in zip(items, errors, strict=True)]
        return list(_pool().map(lambda item: self._put_once(*item), items))

    def copy_once_many(self, items: Sequence[tuple[str, str, bytes]]) -> list[ArchiveError | None]:
        """(existing, new name, its bytes): ``new`` made write-once with the same content as ``existing``.

        On a local disk a hard link (no new file to write and fsync), on an object store a put of the bytes.
        """
        if self._root is None:
            return self.write_once_many([(new, data) for _, new, data in items])
        root = self._root
        results: list[ArchiveError | None] = []
        for existing, new, _ in items:
            try:
                (root / new).parent.mkdir(parents=True, exist_ok=True, mode=0o700)
                os.link(root / existing, root / new)
                results.append(None)
            except OSError as exc:
                results.append(_archive_error(new, exc))
        _fsync_dirs(root / new for _, new, _ in items)
        return results

    def _put_once(self, name: str, data: bytes) -> ArchiveError | None:
        try:
            with self._path(name).open("xb") as fh:
                fh.write(data)
        except Exception as exc:
            return _archive_error(name, exc)
        return None

    def write_once_or_same(self, name: str, data: bytes) -> bool:
        """Like :meth:`write_once`, but an existing object with exactly ``data`` is fine (a re-run): False then."""
        try:
            self.write_once(name, data)
            return True
        except ArchiveError:
            if self.read(name) == data:
                return False
            raise

    def read(self, name: str) -> bytes | None:
        path = self._root / name if self._root is not None else self._path(name)
        try:
            return bytes(path.read_bytes())
        except FileNotFoundError:
            return None
        except Exception as exc:
            raise ArchiveError(f"cannot read archive object {name} ({type(exc).__name__}).", key=name) from None

    def read_json(self, name: str) -> dict[str, Any] | None:
        raw = self.read(name)
        if raw is None:
            return None
        try:
            return dict(json.loads(raw))
        except ValueError:
            raise ArchiveIntegrityError(f"archive metadata {name} is not valid JSON.", key=name) from None

    def delete(self, name: str) -> None:
        path = self._root / name if self._root is not None else self._path(name)
        with contextlib.suppress(FileNotFoundError):
            path.unlink()

    def list_names(self, prefix: str) -> list[str]:
        try:
            if self._root is not None:
                return sorted(os.listdir(self._root / prefix))
            return sorted(p.name for p in self._path(prefix).iterdir())
        except (FileNotFoundError, NotADirectoryError):
            return []


def _precondition_failed(exc: BaseException) -> bool:
    text = f"{exc} {getattr(exc, '__cause__', '')}"
    return "pre-condition" in text or "PreconditionFailed" in text or " 412" in text


@functools.lru_cache(maxsize=1)
def _pool() -> ThreadPoolExecutor:
    """Threads for fsyncs and conditional puts issued together, kept for the process."""
    return ThreadPoolExecutor(_PARALLEL, thread_name_prefix="asm-archive")


def _archive_error(name: str, exc: BaseException) -> ArchiveError:
    if isinstance(exc, ArchiveError):
        return exc
    if isinstance(exc, FileExistsError) or _precondition_failed(exc):  # If-None-Match: * found an object there
        return ArchiveError(f"archive object {name} already exists; records are never overwritten.", key=name)
    return ArchiveError(f"cannot write archive object {name} ({type(exc).__name__}): {exc}", key=name)


def _write_local_many(targets: Sequence[tuple[Path, bytes]]) -> list[BaseException | None]:
    """Temp file, fsync (all in parallel), hard link into place (exclusive), fsync each directory once."""
    staged: list[tuple[int, str, Path] | BaseException] = []
    for target, data in targets:
        try:
            target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".tmp-")
            os.fchmod(fd, 0o600)
            _write_all(fd, data)
            staged.append((fd, tmp, target))
        except OSError as exc:
            staged.append(exc)
    fds = [s[0] for s in staged if isinstance(s, tuple)]
    list(_pool().map(os.fsync, fds))
    results: list[BaseException | None] = []
    for entry in staged:
        if isinstance(entry, BaseException):
            results.append(entry)
            continue
        fd, tmp, target = entry
        os.close(fd)
        try:
            os.link(tmp, target)  # atomic and exclusive: fails if target exists
            results.append(None)
        except OSError as exc:
            results.append(exc)
        finally:
            os.unlink(tmp)
    _fsync_dirs(t for t, _ in targets)
    return results


def _fsync_dirs(paths: Iterable[Path]) -> None:
    """Make new directory entries durable: each parent directory once."""
    for directory in dict.fromkeys(p.parent for p in paths):
        dir_fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _dumps(data: Any) -> bytes:
    return json.dumps(data, sort_keys=True, indent=1, default=str).encode()
