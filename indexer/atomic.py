"""Publishing a finished index directory atomically, for every index kind.

A build writes into a temporary sibling ``.NAME.build-*`` and publishes it with
:func:`swap_in`: on Linux the two directories are exchanged with one ``renameat2(RENAME_EXCHANGE)``
call, so a reader (or a crash) sees either the old index or the new one, never neither; elsewhere
the old index is renamed aside first (a crash in that instant leaves it at ``.NAME.old-*``).
A build killed before publishing leaves only its temporary directory, which the next build of the
same index removes (one build per index at a time).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import shutil
import tempfile
import time
from pathlib import Path

_AT_FDCWD = -100
_RENAME_EXCHANGE = 2


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


def build_dir(target: Path) -> Path:
    """A fresh temporary directory beside ``target``; leftovers of killed builds are removed first."""
    target.parent.mkdir(parents=True, exist_ok=True)
    for stale in target.parent.glob(f".{target.name}.build-*"):
        shutil.rmtree(stale, ignore_errors=True)
    return Path(tempfile.mkdtemp(prefix=f".{target.name}.build-", dir=target.parent))


def swap_in(new: Path, target: Path, marker: str) -> None:
    """Publish directory ``new`` at ``target``; an existing ``target`` must hold ``marker`` (ours)."""
    if target.exists():
        if not (target / marker).is_file() and any(target.iterdir()):
            raise FileExistsError(
                f"{target} exists and is not an lsr index ({marker} missing); refusing to replace it"
            )
        if _exchange(new, target):
            shutil.rmtree(new, ignore_errors=True)  # now the old index
            return
        old = target.with_name(f".{target.name}.old-{time.time_ns()}")
        target.rename(old)
        new.rename(target)
        shutil.rmtree(old, ignore_errors=True)
    else:
        new.rename(target)
