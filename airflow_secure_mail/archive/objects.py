"""Write-once objects under one ``ObjectStoragePath`` location: the archive, a backup location, an export.

Nothing is ever overwritten: local files are written to a temp file, fsynced and hard-linked into place
(mode 0600); object stores get a conditional put (``If-None-Match: *``).
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Sequence
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

    @property
    def _local(self) -> bool:
        return str(self.base.protocol) in ("file", "local")

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
            paths = [(Path(self._path(name).path), data) for name, data in items]
            errors = _write_local_many(paths)
            return [None if e is None else _archive_error(n, e) for (n, _), e in zip(items, errors, strict=True)]
        with ThreadPoolExecutor(min(_PARALLEL, max(1, len(items)))) as pool:
            return list(pool.map(lambda item: self._put_once(*item), items))

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
        path = self._path(name)
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
        path = self._path(name)
        with contextlib.suppress(FileNotFoundError):
            path.unlink()

    def list_names(self, prefix: str) -> list[str]:
        path = self._path(prefix)
        try:
            return sorted(p.name for p in path.iterdir())
        except (FileNotFoundError, NotADirectoryError):
            return []


def _precondition_failed(exc: BaseException) -> bool:
    text = f"{exc} {getattr(exc, '__cause__', '')}"
    return "pre-condition" in text or "PreconditionFailed" in text or " 412" in text


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
    with ThreadPoolExecutor(min(_PARALLEL, max(1, len(fds)))) as pool:
        list(pool.map(os.fsync, fds))
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
    for directory in dict.fromkeys(t.parent for t, _ in targets):
        dir_fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    return results


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _dumps(data: Any) -> bytes:
    return json.dumps(data, sort_keys=True, indent=1, default=str).encode()
