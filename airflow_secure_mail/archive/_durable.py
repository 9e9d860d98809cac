"""Write-once files on a local disk, made durable a group at a time.

A file appears under its name only whole (written to a temp file, then hard-linked: exclusive, never an
overwrite) and only after its bytes are on disk. Each step ends with one barrier for the whole group: on Linux 5.8+
and a local file system (:data:`_LOCAL_FILE_SYSTEMS`) one ``syncfs`` (one journal commit for every file and
directory entry of the group, as PostgreSQL's ``recovery_init_sync_method = syncfs`` does; since 5.8 it reports
write-back errors), elsewhere (NFS, SMB, FUSE, other systems) an ``fsync`` of every file and directory.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import os
import threading
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

_PARALLEL = 8
_temp_names = itertools.count()
_T = TypeVar("_T")


def write_new(targets: Sequence[tuple[str, bytes]]) -> list[OSError | None]:
    """Create each ``(path, bytes)`` (mode 0600); one outcome each. Durable when it returns None for a path."""
    made: list[str] = []
    staged: list[tuple[int, str, str] | OSError] = [_temp_copy(path, data, made) for path, data in targets]
    written = [s for s in staged if isinstance(s, tuple)]
    try:
        _barrier_files([fd for fd, _, _ in written])
    except OSError as exc:  # nothing of the group is known durable: no file takes its name
        for fd, temp, _ in written:
            _discard(fd, temp)
        return [s if isinstance(s, OSError) else exc for s in staged]
    results: list[OSError | None] = []
    for entry in staged:
        if isinstance(entry, OSError):
            results.append(entry)
            continue
        fd, temp, path = entry
        os.close(fd)
        results.append(_link(temp, path, made))
        with contextlib.suppress(OSError):
            os.unlink(temp)
    return _after_barrier([t for t, _ in targets], results, made)


def link_new(pairs: Sequence[tuple[str, str]]) -> list[OSError | None]:
    """``(existing, new)``: ``new`` becomes a second name of ``existing`` (exclusive); durable on None."""
    made: list[str] = []
    return _after_barrier([new for _, new in pairs], [_link(old, new, made) for old, new in pairs], made)


def _temp_copy(path: str, data: bytes, made: list[str]) -> tuple[int, str, str] | OSError:
    """A temp file beside ``path`` holding ``data``, still open (the barrier needs its descriptor)."""
    temp = f"{os.path.dirname(path)}/.tmp-{os.getpid()}-{threading.get_ident()}-{next(_temp_names)}"
    try:
        fd = _in_dir(temp, made, lambda: os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600))
    except OSError as exc:
        return exc
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
    except OSError as exc:
        _discard(fd, temp)
        return exc
    return fd, temp, path


def _link(existing: str, new: str, made: list[str]) -> OSError | None:
    try:
        _in_dir(new, made, lambda: os.link(existing, new))  # atomic and exclusive: fails if ``new`` exists
    except OSError as exc:
        return exc
    return None


def _in_dir(path: str, made: list[str], action: Callable[[], _T]) -> _T:
    """Run ``action``; when the directory of ``path`` is missing, create it (0700), note it, and run it again."""
    try:
        return action()
    except FileNotFoundError:
        directory = os.path.dirname(path)
        missing = []
        while directory and not os.path.isdir(directory):
            missing.append(directory)
            directory = os.path.dirname(directory)
        os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
        made += missing
        return action()


def _after_barrier(paths: Sequence[str], results: list[OSError | None], made: list[str]) -> list[OSError | None]:
    """Make the new names (and directories made for them) durable; on failure every new name reports it."""
    new = [path for path, result in zip(paths, results, strict=True) if result is None]
    try:
        _barrier_dirs(new + made if new else [])
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
            for _ in _pool().map(os.fsync, group):
                pass


def _barrier_dirs(paths: Iterable[str]) -> None:
    """The directory entries of ``paths`` reach the disk: each parent directory synced once."""
    dirs = list(dict.fromkeys(os.path.dirname(path) for path in paths))
    for device, group in _by_file_system(dirs, os.stat).items():
        if _syncfs is not None and _local(device, group[0]):
            _sync_dir(group[0], _syncfs)
        else:
            for directory in group:
                _sync_dir(directory, os.fsync)


def _sync_dir(directory: str, sync: Callable[[int], None]) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_CLOEXEC)
    try:
        sync(fd)
    finally:
        os.close(fd)


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
    0x01021994: "tmpfs",
    0x794C7630: "overlayfs",
}
"""Where one syncfs is known to make everything written durable. Elsewhere (NFS, SMB, FUSE, ...) each file is
fsynced: that is what those file systems promise to honour (NFS sends a COMMIT per file)."""

_local_devices: dict[int, bool] = {}


def _local(device: int, item: int | str) -> bool:
    """True when ``device`` (``item``'s: a descriptor or a path) holds one of :data:`_LOCAL_FILE_SYSTEMS`."""
    if device not in _local_devices:
        _local_devices[device] = fs_type(item) in _LOCAL_FILE_SYSTEMS
    return _local_devices[device]


def fs_type(item: int | str) -> int | None:
    """The file system's magic number (``statfs(2)`` ``f_type``) of a descriptor or path; None if unknown."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    buffer = ctypes.create_string_buffer(512)  # struct statfs; f_type (a C long) comes first
    failed = libc.fstatfs(item, buffer) if isinstance(item, int) else libc.statfs(os.fsencode(item), buffer)
    return None if failed else ctypes.c_long.from_buffer(buffer).value


def _load_syncfs() -> Callable[[int], None] | None:
    """libc's ``syncfs`` on Linux 5.8+ (earlier kernels do not report write-back errors through it), else None."""
    release = os.uname().release.split(".")
    if os.uname().sysname != "Linux" or tuple(int(p) for p in release[:2] if p.isdigit()) < (5, 8):
        return None
    import ctypes

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        call = libc.syncfs
    except (OSError, AttributeError):
        return None

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
