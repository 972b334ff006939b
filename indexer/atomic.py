"""Building an index directory under a lock and publishing it atomically, for every index kind.

A build holds an exclusive ``flock`` on ``.NAME.lock`` beside ``NAME`` (not inside it: ``NAME`` is
swapped) for as long as it runs: a second build of the same index fails at once, naming the holder.
The kernel drops the lock when its holder dies, so a killed build leaves at most a stale lock file,
which the next build takes over. A build (:func:`atomic_build`, the frame of every builder) writes
into a temporary sibling ``.NAME.build-*`` and publishes it with :func:`swap_in`: on Linux the two
directories are exchanged with one ``renameat2(RENAME_EXCHANGE)`` call, so a reader (or a crash) sees
either the old index or the new one, never neither; elsewhere the old index is renamed aside first (a
crash in that instant leaves it at ``.NAME.old-*``). A build killed before publishing leaves its
temporary directory, which the next build of the same index removes: it holds the lock, so no live
build can own one.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import fcntl
import json
import os
import shlex
import shutil
import socket
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import TextIO

_AT_FDCWD = -100
_RENAME_EXCHANGE = 2


class IndexLockedError(RuntimeError):
    """Another process is building the same index directory."""


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths in one system call; False where the platform cannot."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError, TypeError):
        return False
    rc = renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE)
    if rc != 0:
        err = ctypes.get_errno()
        if err in (22, 38, 95):  # EINVAL, ENOSYS, EOPNOTSUPP: the filesystem cannot exchange
            return False
        raise OSError(err, os.strerror(err), str(b))
    return True


def lock_path(target: Path) -> Path:
    """The lock file of index directory ``target``: ``.NAME.lock`` in its parent."""
    return target.with_name(f".{target.name}.lock")


def check_target(target: Path, marker: str | tuple[str, ...]) -> None:
    """Refuse to build at ``target`` when it is a file or a non-empty folder without ``marker`` (or
    any of several markers).

    Raises ``FileExistsError`` (the user's file or folder is never replaced by an index).
    """
    markers = (marker,) if isinstance(marker, str) else marker
    if target.is_dir():
        if not any((target / m).is_file() for m in markers) and any(target.iterdir()):
            raise FileExistsError(
                f"{target} exists and is not an lsr index ({' or '.join(markers)} missing); "
                "refusing to replace it"
            )
    elif target.exists() or target.is_symlink():
        raise FileExistsError(f"{target} exists and is not a directory; refusing to replace it")


def _parent_dir(target: Path) -> None:
    """Create ``target``'s parent, naming the path component that is a file if there is one."""
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        parents = (target.parent, *target.parent.parents)
        blocker = next((p for p in parents if p.exists() and not p.is_dir()), target.parent)
        raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), str(blocker)) from None


def _holder(f) -> str:
    """Who holds the lock, from what the holder wrote into the lock file (may be empty yet)."""
    try:
        f.seek(0)
        info = json.loads(f.read() or "{}")
        return f"pid {info['pid']} on {info['host']} since {info['since']}: {info['command']}"
    except (OSError, ValueError, KeyError, TypeError):
        return "a process that has not said who it is yet"


@contextmanager
def locked_file(lock: Path, busy: Callable[[TextIO], None]) -> Iterator[TextIO]:
    """Hold an exclusive ``flock`` on file ``lock`` (created, removed on release) and yield it open.

    When another process holds it, ``busy(f)`` is called: it raises to give up, or returns to wait
    for the lock. A waiter that got the lock on a file its holder removed in between takes a fresh
    one, so two processes never both hold it.
    """
    while True:
        f = open(lock, "a+", encoding="utf-8")
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            try:
                busy(f)
            except BaseException:
                f.close()
                raise
            fcntl.flock(f, fcntl.LOCK_EX)
        try:
            if os.fstat(f.fileno()).st_ino == os.stat(lock).st_ino:
                break
        except FileNotFoundError:
            pass
        f.close()
    try:
        yield f
    finally:
        lock.unlink(missing_ok=True)
        f.close()


@contextmanager
def build_lock(target: Path) -> Iterator[Path]:
    """Hold the exclusive build lock of index directory ``target`` (yields the lock file's path).

    Raises :class:`IndexLockedError` naming the holder (pid, host, start time, command) when another
    build holds it (:func:`locked_file`).
    """
    target = Path(target)
    _parent_dir(target)
    lock = lock_path(target)

    def busy(f) -> None:
        raise IndexLockedError(
            f"{target} is being built by another process ({_holder(f)}); wait for it to finish or stop "
            f"it (lock file {lock})"
        )

    with ExitStack() as stack:
        try:
            f = stack.enter_context(locked_file(lock, busy))
        except IndexLockedError:
            raise
        except OSError as e:
            reason = f"cannot write in {target.parent}: {os.strerror(e.errno)}"
            raise type(e)(e.errno, reason, str(target)) from None
        f.seek(0)
        f.truncate()
        since = time.strftime("%Y-%m-%d %H:%M:%S")
        command = shlex.join(getattr(sys, "orig_argv", sys.argv))[:300]
        holder = {"pid": os.getpid(), "host": socket.gethostname(), "since": since, "command": command}
        f.write(json.dumps(holder))
        f.flush()
        yield lock


@contextmanager
def atomic_build(target: str | Path, marker: str | tuple[str, ...]) -> Iterator[tuple[Path, Path]]:
    """Build index directory ``target`` under its lock and publish it atomically: every builder's frame.

    Yields ``(work, staged)``: ``work`` is a fresh directory beside ``target`` for scratch files,
    removed on exit; ``staged`` (``work / "index"``, not yet created) is where the block writes the
    index, ``marker`` included. When the block ends normally ``staged`` is published at ``target``
    (:func:`swap_in`) before the lock is released; when it raises, nothing is published and a
    previous index stays as it was.

    ``target`` is checked (:func:`check_target`) before any work is done and again under the lock.
    Leftovers of killed builds are removed (under the lock, none belongs to a live build).
    Raises :class:`IndexLockedError` when another build holds the lock (:func:`build_lock`), and
    ``FileExistsError`` when ``target`` is not an index holding ``marker``.
    """
    target = Path(target)
    check_target(target, marker)
    with build_lock(target):
        check_target(target, marker)  # may have changed while we were not holding the lock
        for stale in target.parent.iterdir():
            if stale.name.startswith(f".{target.name}.build-"):
                shutil.rmtree(stale, ignore_errors=True)
        work = Path(tempfile.mkdtemp(prefix=f".{target.name}.build-", dir=target.parent))
        try:
            staged = work / "index"
            yield work, staged
            swap_in(staged, target, marker)
        finally:
            shutil.rmtree(work, ignore_errors=True)


def swap_in(new: Path, target: Path, marker: str | tuple[str, ...]) -> None:
    """Publish directory ``new`` at ``target``; an existing ``target`` must hold ``marker`` (ours)."""
    if target.exists():
        check_target(target, marker)
        if _exchange(new, target):
            shutil.rmtree(new, ignore_errors=True)  # now the old index
            return
        old = target.with_name(f".{target.name}.old-{time.time_ns()}")
        target.rename(old)
        new.rename(target)
        shutil.rmtree(old, ignore_errors=True)
    else:
        new.rename(target)
