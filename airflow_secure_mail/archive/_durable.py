"""Write-once files on a local disk, made durable a group at a time.

A file appears under its name only whole (written to a temp file, then hard-linked: exclusive, never an
overwrite) and only after its bytes are on disk. Each step ends with one barrier for the whole group: on Linux
5.17+ and a local file system (:data:`_LOCAL_FILE_SYSTEMS`) one ``syncfs`` (one journal commit for every file and
directory entry of the group, as PostgreSQL's ``recovery_init_sync_method = syncfs`` does; from 5.17 on it
reports both write-back and journal-commit errors), elsewhere (NFS, SMB, FUSE, overlayfs, other systems) an
``fsync`` of every file and directory.
"""

from __future__ import annotations

import contextlib
import functools
import os
import secrets
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor, wait
from typing import Any, TypeVar

_PARALLEL = 8
_T = TypeVar("_T")


def write_new(targets: Sequence[tuple[str, bytes]]) -> list[OSError | None]:
    """Create each ``(path, bytes)`` (mode 0600); one outcome each. Durable when it returns None for a path."""
    staged: list[tuple[int, str, str] | OSError] = [_temp_copy(path, data) for path, data in targets]
    written = [s for s in staged if isinstance(s, tuple)]
    try:
        _barrier_files([fd for fd, _, _ in written])
    except OSError as exc:  # nothing of the group is known durable: no file takes its name
        for fd, temp, _ in written:
            _discard(fd, temp)
        return [s if isinstance(s, OSError) else exc for s in staged]
    results = [entry if isinstance(entry, OSError) else _name(*entry) for entry in staged]
    return _after_barrier([path for path, _ in targets], results)


def link_new(pairs: Sequence[tuple[str, str]]) -> list[OSError | None]:
    """``(existing, new)``: ``new`` becomes a second name of ``existing`` (exclusive); durable on None."""
    return _after_barrier([new for _, new in pairs], [_link(old, new) for old, new in pairs])


def _temp_copy(path: str, data: bytes) -> tuple[int, str, str] | OSError:
    """A temp file beside ``path`` holding ``data``, still open (the barrier needs its descriptor).

    Its error never reads as "exists" (that means the record is already there, not a stale temp file).
    """
    temp = f"{os.path.dirname(path)}/.tmp-{os.getpid()}-{secrets.token_hex(8)}"
    try:
        fd = _in_dir(temp, lambda: os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600))
    except OSError as exc:
        return OSError(f"cannot create a temp file in {os.path.dirname(path)}: {exc}")
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
    except OSError as exc:
        _discard(fd, temp)
        return exc
    return fd, temp, path


def _name(fd: int, temp: str, path: str) -> OSError | None:
    """Close the durable temp file and give it its name; the temp name goes either way."""
    try:
        os.close(fd)
        return _link(temp, path)
    except OSError as exc:  # close can fail on network file systems: then the file never takes its name
        return exc
    finally:
        with contextlib.suppress(OSError):
            os.unlink(temp)


def _link(existing: str, new: str) -> OSError | None:
    try:
        _in_dir(new, lambda: os.link(existing, new))  # atomic and exclusive: fails if ``new`` exists
    except OSError as exc:
        return exc
    return None


def _in_dir(path: str, action: Callable[[], _T]) -> _T:
    """Run ``action``; when the directory of ``path`` is missing, create it (0700) and run it again."""
    try:
        return action()
    except FileNotFoundError:
        os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
        return action()


def _after_barrier(paths: Sequence[str], results: list[OSError | None]) -> list[OSError | None]:
    """Make the new names durable; if that fails, every name made in this step reports the error."""
    new = [path for path, result in zip(paths, results, strict=True) if result is None]
    try:
        _barrier_dirs(new)
    except OSError as exc:
        return [exc if r is None else r for r in results]
    return results


def _discard(fd: int, temp: str) -> None:
    with contextlib.suppress(OSError):
        os.close(fd)
    with contextlib.suppress(OSError):
        os.unlink(temp)


def _barrier_files(fds: list[int]) -> None:
    """The bytes written through ``fds`` reach the disk."""
    for device, group in _by_file_system(fds, os.fstat).items():
        if _syncfs is not None and _local(device, group[0]):
            _syncfs(group[0])
        else:
            _fsync_all(group)


def _barrier_dirs(paths: Iterable[str]) -> None:
    """The directory entries of ``paths`` reach the disk, and so do the folders holding them."""
    dirs = list(dict.fromkeys(os.path.dirname(path) for path in paths))
    for device, group in _by_file_system(dirs, os.stat).items():
        if _syncfs is not None and _local(device, group[0]):
            _sync_dir(group[0], _syncfs)
            continue
        for directory in group:
            _sync_dir(directory, os.fsync)
        for directory in group:
            _sync_parents(directory)


_durable_dirs: set[str] = set()
"""Folders whose entry in their parent this process has synced (``fsync`` path)."""


def _sync_parents(directory: str) -> None:
    """A folder's entry in its parent, and so on up, the first time: whoever made it may not have synced it."""
    while directory not in _durable_dirs and os.path.dirname(directory) != directory:
        parent = os.path.dirname(directory)
        _sync_dir(parent, os.fsync)
        _durable_dirs.add(directory)
        directory = parent


def _sync_dir(directory: str, sync: Callable[[int], None]) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_CLOEXEC)
    try:
        sync(fd)
    finally:
        os.close(fd)


def _fsync_all(fds: list[int]) -> None:
    """fsync every descriptor in parallel; all have finished before the first error is raised."""
    futures = [_pool().submit(os.fsync, fd) for fd in fds]
    wait(futures)
    for future in futures:
        future.result()


def _by_file_system(items: list[_T], stat: Callable[[_T], os.stat_result]) -> dict[int, list[_T]]:
    """The items by device: a syncfs through any one of them flushes that whole file system."""
    groups: dict[int, list[_T]] = {}
    for item in items:
        groups.setdefault(stat(item).st_dev, []).append(item)
    return groups


_LOCAL_FILE_SYSTEMS = {
    0xEF53: "ext2/3/4",
    0x58465342: "xfs",
    0x9123683E: "btrfs",
    0xF2F52010: "f2fs",
    0x2FC12FC1: "zfs",
    0x01021994: "tmpfs (memory: never durable, with either barrier)",
}
"""Where one syncfs makes everything written durable and reports what failed. Elsewhere each file is fsynced:
that is what NFS (a COMMIT per file), SMB and FUSE promise to honour, and overlayfs reports write-back errors of
its upper layer to the file's fsync, not to a syncfs of the overlay."""

_local_devices: dict[int, bool] = {}
"""Per device: is it on a local file system (computed again if two threads race: the answer is the same)."""


def _local(device: int, item: int | str) -> bool:
    """True when ``device`` (``item``'s: a descriptor or a path) holds one of :data:`_LOCAL_FILE_SYSTEMS`."""
    if device not in _local_devices:
        _local_devices[device] = fs_type(item) in _LOCAL_FILE_SYSTEMS
    return _local_devices[device]


def fs_type(item: int | str) -> int | None:
    """The file system's magic number (``statfs(2)`` ``f_type``) of a descriptor or path; None if unknown."""
    import ctypes

    libc = _libc()
    if libc is None:
        return None
    buffer = ctypes.create_string_buffer(512)  # struct statfs; f_type (a C long) comes first on Linux
    failed = libc.fstatfs(item, buffer) if isinstance(item, int) else libc.statfs(os.fsencode(item), buffer)
    return None if failed else ctypes.c_ulong.from_buffer(buffer).value


@functools.lru_cache(maxsize=1)
def _libc() -> Any:
    import ctypes

    try:
        return ctypes.CDLL(None, use_errno=True)
    except OSError:
        return None


def _load_syncfs() -> Callable[[int], None] | None:
    """libc's ``syncfs`` on Linux 5.17+ (earlier kernels drop the journal commit's error), else None."""
    release = os.uname().release.split(".")
    if os.uname().sysname != "Linux" or tuple(int(p) for p in release[:2] if p.isdigit()) < (5, 17):
        return None
    import ctypes

    call = getattr(_libc(), "syncfs", None)
    if call is None:
        return None
    call.argtypes, call.restype = [ctypes.c_int], ctypes.c_int

    def syncfs(fd: int) -> None:
        if call(fd) != 0:
            errno = ctypes.get_errno()
            raise OSError(errno, os.strerror(errno))

    return syncfs


_syncfs = _load_syncfs()


@functools.lru_cache(maxsize=1)
def _pool() -> ThreadPoolExecutor:
    """Threads for the per-file fsyncs where there is no syncfs, kept for the process."""
    return ThreadPoolExecutor(_PARALLEL, thread_name_prefix="asm-fsync")
