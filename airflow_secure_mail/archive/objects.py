"""Write-once objects under one ``ObjectStoragePath`` location: the archive, a backup location, an export.

Nothing is ever overwritten: local files are written to a temp file, made durable and hard-linked into place
(mode 0600, ``_durable``); object stores get a conditional put (``If-None-Match: *``).
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from airflow_secure_mail.errors import ArchiveError, ConfigurationError

_PARALLEL = 8


class ObjectStore:
    """Write-once objects under one ``ObjectStoragePath`` location (the archive, a backup location)."""

    def __init__(self, location: str, conn_id: str | None = None) -> None:
        if "://" not in location:
            raise ConfigurationError(f"location {location!r} needs a scheme: file:///path or s3://bucket/prefix.")
        self.location = location.rstrip("/")
        self.conn_id = conn_id

    @functools.cached_property
    def base(self) -> Any:
        """The location's path, its connection and credentials checked on first use (never while a DAG is parsed).

        A named connection that names nothing, gives no credentials or whose filesystem cannot be set up is a
        ConfigurationError, also under ``MailArchive(on_error="send")``: a typo in a connection must not
        silently turn the archive off. Without a connection the environment must give credentials: these
        objects are written, and an anonymous request would go to the public endpoint of the bucket's name.
        """
        return storage_path(self.location, self.conn_id, anonymous=False)

    def _path(self, name: str) -> Any:
        return self.base / name

    @functools.cached_property
    def _root(self) -> Path | None:
        """The directory of a local location (plain file system calls there), None for an object store."""
        base = self.base
        return Path(base.path) if str(base.protocol) in ("file", "local") else None

    def write_once(self, name: str, data: bytes) -> None:
        """Create ``name`` with ``data``; an existing object is an ArchiveError, never overwritten."""
        error = self.write_once_many([(name, data)])[0]
        if error is not None:
            raise error

    def write_once_many(self, items: Sequence[tuple[str, bytes]]) -> list[ArchiveError | None]:
        """:meth:`write_once` for several objects at once, one outcome each; durable when it returns.

        Local files reach the disk as a group (one barrier per step, see ``_durable``); object stores get their
        conditional puts in parallel.
        """
        if self._root is not None:
            from airflow_secure_mail.archive._durable import write_new

            errors = write_new([(f"{self._root}/{name}", data) for name, data in items])
            return [None if e is None else _archive_error(n, e) for (n, _), e in zip(items, errors, strict=True)]
        return list(_pool().map(lambda item: self._put_once(*item), items))

    def copy_once_many(self, items: Sequence[tuple[str, str, bytes]]) -> list[ArchiveError | None]:
        """(existing, new name, its bytes): ``new`` made write-once with the same content as ``existing``.

        On a local disk a hard link (no new file to write and fsync), on an object store a put of the bytes.
        """
        if self._root is None:
            return self.write_once_many([(new, data) for _, new, data in items])
        from airflow_secure_mail.archive._durable import link_new

        errors = link_new([(f"{self._root}/{old}", f"{self._root}/{new}") for old, new, _ in items])
        return [None if e is None else _archive_error(n, e) for (_, n, _), e in zip(items, errors, strict=True)]

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
        root = self._root  # outside the try: a connection that does not resolve is a ConfigurationError
        try:
            if root is not None:
                with open(f"{root}/{name}", "rb") as fh:
                    return fh.read()
            return bytes(self._path(name).read_bytes())
        except FileNotFoundError:
            return None
        except Exception as exc:
            raise ArchiveError(f"cannot read archive object {name} ({type(exc).__name__}).", key=name) from None

    def read_json(self, name: str) -> dict[str, Any] | None:
        """``name`` as a JSON object, None when missing; anything else is an ArchiveIntegrityError naming it."""
        from airflow_secure_mail.archive.record import json_object

        raw = self.read(name)
        return None if raw is None else json_object(raw, where=name)

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


def require_connection(conn_id: str, location: str) -> None:
    """Fail unless ``conn_id`` resolves (environment, secrets backends, or the metadata database where the
    process reads it): the storage filesystems log a warning and fall back to anonymous access otherwise."""
    from airflow.sdk import BaseHook

    try:
        BaseHook.get_connection(conn_id)
    except Exception as exc:  # AirflowNotFoundException, or a backend that could not be read
        raise ConfigurationError(
            f"connection {conn_id!r} (for {location}) was not found ({type(exc).__name__}): define it as an Airflow "
            "connection; a named connection is never replaced by anonymous access."
        ) from None


def storage_path(location: str, conn_id: str | None, *, anonymous: bool = True) -> Any:
    """The ``ObjectStoragePath`` of ``location``, its filesystem set up; a named ``conn_id`` must resolve and give
    credentials. Without one, no credentials at all is refused unless ``anonymous`` (reading a public object)."""
    from airflow.sdk import ObjectStoragePath

    if conn_id:
        require_connection(conn_id, location)
    path = ObjectStoragePath(location, conn_id=conn_id) if conn_id else ObjectStoragePath(location)
    if getattr(_filesystem(path, location, conn_id), "anon", False):  # s3fs found no key, role or profile
        if conn_id:
            raise ConfigurationError(
                f"connection {conn_id!r} (for {location}) gives no credentials: set a key pair, a role or a "
                "profile on it; a named connection is never used for anonymous access."
            )
        if not anonymous:
            raise ConfigurationError(
                f"{location}: no credentials found (no conn_id, and no key, role or profile in the environment): "
                "give conn_id naming an Airflow connection; these objects are never written anonymously."
            )
    return path


def _filesystem(path: Any, location: str, conn_id: str | None) -> Any:
    """``path.fs``, built here: its set-up reads the connection and the cloud SDK's configuration (botocore's
    ProfileNotFound for a profile that no file defines). That is configuration to fix, never an outage to send
    through, so any failure is our one-line ConfigurationError (the library's message may quote anything)."""
    try:
        return path.fs
    except Exception as exc:
        of, fix = (f" of connection {conn_id!r}", "the connection") if conn_id else ("", "the environment's profile")
        raise ConfigurationError(
            f"{location}: cannot set up the storage{of} ({type(exc).__name__}): fix {fix}; a store that cannot be "
            "set up is never skipped."
        ) from None


def _precondition_failed(exc: BaseException) -> bool:
    text = f"{exc} {getattr(exc, '__cause__', '')}"
    return "pre-condition" in text or "PreconditionFailed" in text or " 412" in text


@functools.lru_cache(maxsize=1)
def _pool() -> ThreadPoolExecutor:
    """Threads for conditional puts issued together, kept for the process."""
    return ThreadPoolExecutor(_PARALLEL, thread_name_prefix="asm-archive")


def _archive_error(name: str, exc: BaseException) -> ArchiveError:
    if isinstance(exc, ArchiveError):
        return exc
    if isinstance(exc, FileExistsError) or _precondition_failed(exc):  # If-None-Match: * found an object there
        return ArchiveError(
            f"archive object {name} already exists; records are never overwritten.", key=name, exists=True
        )
    return ArchiveError(f"cannot write archive object {name} ({type(exc).__name__}): {exc}", key=name)


def _dumps(data: Any) -> bytes:
    return json.dumps(data, sort_keys=True, indent=1, default=str).encode()
