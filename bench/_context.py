"""What every benchmark records beside its figures: the machine and the code that ran."""

from __future__ import annotations

import argparse
import logging
import os
import platform
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SCIFACT = REPO.parent / "shared" / "data" / "scifact"
RESULTS = REPO / "bench" / "results"


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
