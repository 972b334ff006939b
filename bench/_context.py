"""What the benchmarks share: the options, what every record carries beside its figures (the machine
and the code that ran), the memory readings and the fixed-width tables they print."""

from __future__ import annotations

import argparse
import datetime as dt
import functools
import json
import logging
import os
import platform
import resource
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Self

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SCIFACT = REPO.parent / "shared" / "data" / "scifact"
RESULTS = REPO / "bench" / "results"
MB = 1e6


def machine_info() -> dict:
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        usable = os.cpu_count()
    return {
        "platform": platform.platform(),
        "machine": platform.machine(),
        "processor": platform.processor() or None,
        "cpu_count": os.cpu_count(),
        "cpus_usable": usable,
        "memory_bytes": os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"),
        "hostname": platform.node(),
        "load_avg_start": os.getloadavg(),
    }


def git_state() -> dict | None:
    """The commit benchmarked, and whether the tree had local changes (then the commit is not the code)."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=REPO,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return {"commit": commit, "dirty": bool(dirty)}


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def setup_logging(verbose: bool) -> None:
    """Diagnostics to stderr: our packages at INFO (DEBUG with ``verbose``), third parties at WARNING."""
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    if not verbose:
        for name in ("bench", "indexer", "lsr", "plugin"):
            logging.getLogger(name).setLevel(logging.INFO)


def add_output_arguments(p: argparse.ArgumentParser, name: str, work_help: str | None = None) -> None:
    """The options every benchmark shares: ``--work`` (when it keeps files; ``work_help`` says what),
    ``--out`` (JSON lines appended, default ``bench/results/NAME.jsonl``) and ``-v``."""
    if work_help is not None:
        p.add_argument("--work", type=Path, default=None, help=f"{work_help} (default: a temp dir)")
    p.add_argument(
        "--out",
        type=Path,
        default=RESULTS / f"{name}.jsonl",
        help="JSON lines file to append to (default: %(default)s)",
    )
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")


def add_data_argument(p: argparse.ArgumentParser) -> None:
    """``--data``: the SciFact BEIR directory, by default the shared one."""
    p.add_argument("--data", type=Path, default=SCIFACT, help="SciFact BEIR directory (default: %(default)s)")


def scifact_missing(data: Path, log: logging.Logger) -> bool:
    """True, with the error logged to ``log``, when ``data`` holds no ``corpus.jsonl``."""
    if (data / "corpus.jsonl").is_file():
        return False
    log.error("SciFact not found: %s has no corpus.jsonl (pass --data DIR)", data)
    return True


def psutil_missing(log: logging.Logger) -> bool:
    """True, with the error logged to ``log`` (named after the benchmark), when psutil is not installed."""
    try:
        import psutil  # noqa: F401
    except ImportError:
        log.error("%s needs psutil: pip install 'lsr[bench]'", log.name)
        return True
    return False


@contextmanager
def work_dir(work: Path | None, prefix: str) -> Iterator[Path]:
    """``work`` (created if missing, kept after the run), or a temporary directory removed after it."""
    if work:
        work.mkdir(parents=True, exist_ok=True)
        yield work
        return
    with tempfile.TemporaryDirectory(prefix=prefix) as tmp:
        yield Path(tmp)


# ------------------------------------------------------------------ what a run records
def package_version(dist: str) -> str | None:
    """The installed version of the distribution ``dist``, or None."""
    try:
        return version(dist)
    except PackageNotFoundError:
        return None


def record_context(versions: dict) -> dict:
    """The git state, the machine and ``versions``, as every record carries them."""
    return {"git": git_state(), "machine": machine_info(), "versions": versions}


def dir_bytes(path: Path) -> int:
    """The bytes of the files under ``path``."""
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def utc_stamp() -> str:
    """Now, in UTC, to the second (ISO 8601): a record's ``time``."""
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def append_jsonl(path: Path, records: Sequence[dict]) -> None:
    """Append a JSON line per record to ``path``; all are encoded before it opens, so a record json
    cannot write leaves the file as it was."""
    lines = [json.dumps(r) for r in records]
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as f:
        f.write("".join(line + "\n" for line in lines))


# ------------------------------------------------------------------ memory
def _status_kib(field_name: str) -> int | None:
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith(field_name + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def _maxrss_bytes(maxrss: int) -> int:
    """``ru_maxrss`` in bytes: kibibytes on Linux, bytes on macOS."""
    return maxrss if sys.platform == "darwin" else maxrss * 1024


def rss_bytes() -> int:
    """This process's resident set now, in bytes (0 where ``/proc`` is missing)."""
    kib = _status_kib("VmRSS")
    return kib * 1024 if kib is not None else 0


def peak_rss_bytes() -> int:
    """This process's peak RSS in bytes: ``VmHWM`` on Linux (``ru_maxrss`` keeps the parent's across exec)."""
    kib = _status_kib("VmHWM")
    if kib is not None:
        return kib * 1024
    return _maxrss_bytes(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)


def children_peak_rss_bytes() -> int:
    """The largest peak RSS of this process's waited-for children, in bytes."""
    return _maxrss_bytes(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)


class Periodic:
    """``tick()`` every ``every`` seconds on a daemon thread while in a ``with`` block, until it
    returns False (a sampler of another process stops when that process ends)."""

    every = 0.2

    def __init__(self) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def tick(self) -> bool | None:
        raise NotImplementedError

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            if self.tick() is False:
                return

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


# ------------------------------------------------------------------ printing
def fmt(value: float | None, spec: str = ".1f") -> str:
    """``value`` in ``spec``, or ``-`` for None."""
    return "-" if value is None else format(value, spec)


def percentile(values: Sequence[float], q: float) -> float | None:
    """The ``q``-th percentile of ``values``, or None when there are none."""
    return float(np.percentile(values, q)) if len(values) else None


@functools.cache
def _columns(spec: str) -> tuple[tuple[str, str], ...]:
    out = []
    for part in spec.split(" | "):
        i = max(part.rfind("<"), part.rfind(">"))
        out.append((part[:i], part[i:]))
    return tuple(out)


def table_line(spec: str, cells: Sequence[object]) -> str:
    """One line of a fixed-width table whose columns ``spec`` names, each with its alignment and width
    (``"engine<16 | docs/s>10"``): each cell in its column's; a row may stop before the last columns."""
    return "".join(f"{cell:{align}}" for (_, align), cell in zip(_columns(spec), cells, strict=False))


def table_header(spec: str) -> str:
    """The header line of a :func:`table_line` table: the column names in the columns' alignment."""
    return table_line(spec, [name for name, _ in _columns(spec)])


def print_fixed_table(spec: str, rows: Iterable[Sequence[object]], rule: bool = True) -> None:
    """Print the header of the :func:`table_line` table ``spec``, a rule of dashes under it (with
    ``rule``) and a line per row."""
    header = table_header(spec)
    print(header)
    if rule:
        print("-" * len(header))
    for cells in rows:
        print(table_line(spec, cells))


def ratio_text(numerator: str, denominator: str, value: float) -> str:
    """``"A / B = 1.23x"``: the ratio line's figure."""
    return f"{numerator} / {denominator} = {value:.2f}x"
