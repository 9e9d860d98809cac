"""Write-once objects under one ``ObjectStoragePath`` location: the archive, a backup location, an export.

Nothing is ever overwritten: local files are written to a temp file, fsynced and hard-linked into place
(mode 0600); object stores get a conditional put (``If-None-Match: *``).
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

from airflow_secure_mail.errors import ArchiveError, ArchiveIntegrityError, ConfigurationError


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
        path = self._path(name)
        try:
            if self._local:
                _write_local_once(Path(path.path), data)
            else:
                with path.open("xb") as fh:
                    fh.write(data)
        except FileExistsError:
            raise ArchiveError(
                f"archive object {name} already exists; records are never overwritten.", key=name
            ) from None
        except ArchiveError:
            raise
        except Exception as exc:
            if _precondition_failed(exc):  # the conditional put (If-None-Match: *) found an object there
                raise ArchiveError(
                    f"archive object {name} already exists; records are never overwritten.", key=name
                ) from None
            raise ArchiveError(f"cannot write archive object {name} ({type(exc).__name__}): {exc}", key=name) from None

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


def _write_local_once(target: Path, data: bytes) -> None:
    target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".tmp-")
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.link(tmp, target)  # atomic and exclusive: fails if target exists
    finally:
        os.unlink(tmp)
    dir_fd = os.open(target.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def _dumps(data: Any) -> bytes:
    return json.dumps(data, sort_keys=True, indent=1, default=str).encode()
