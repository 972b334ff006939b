"""Build safety, as a user meets it from the shell: two builds of one INDEX_DIR, a JVM that must die
with the build that started it, and operating-system errors (a full disk, an unwritable folder, a
file or someone's folder where the index should go) reported as one line naming the path and the
reason, exit status 2, the previous index untouched.

Decisions these tests pin down:

- a second build of an INDEX_DIR that is being built fails at once (no waiting), naming the first
  build's pid, host and command; it never touches the first build's work folder;
- a killed build leaves no lock that blocks the next one (the kernel drops ``flock`` locks);
- an INDEX_DIR that is a file, or a non-empty folder that is not an lsr index, is refused before any
  work is done and left as it was;
- ``lsr index --backend lucene`` killed by SIGKILL, SIGTERM or Ctrl-C takes Anserini's JVM with it.
"""

from __future__ import annotations

import errno
import json
import os
import re
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from indexer.native.format import open_index
from tests.conftest import needs_java

REPO = Path(__file__).resolve().parents[1]


BACKENDS = ["native", pytest.param("lucene", marks=needs_java)]


def lsr_cmd(*args) -> list[str]:
    return [sys.executable, "-m", "plugin.cli", *map(str, args)]


def lsr(*args, preexec_fn=None) -> subprocess.CompletedProcess:
    """``python -m plugin.cli ARGS`` from the repository root, as a user's shell runs ``lsr``."""
    return subprocess.run(
        lsr_cmd(*args), cwd=REPO, capture_output=True, text=True, timeout=300, preexec_fn=preexec_fn
    )


def fails(result: subprocess.CompletedProcess, command: str, message: str) -> None:
    """Exit 2 and one error line ``lsr COMMAND: error: MESSAGE`` (a regex), no traceback."""
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr, result.stderr
    pattern = rf"^lsr {command}: error: {message}"
    assert re.search(pattern, result.stderr, re.M), f"{pattern!r} not in stderr:\n{result.stderr}"


def write_vectors(path: Path, n: int, terms: int = 20, seed: int = 0, ids: str = "d{}") -> Path:
    """``n`` documents of ``terms`` random terms each, with ids ``ids.format(i)``."""
    rng = np.random.default_rng(seed)
    with open(path, "w", encoding="utf-8") as f:
        for i in range(n):
            chosen = rng.choice(500, terms, replace=False)
            vec = {f"t{j}": round(float(rng.random() * 3) + 0.01, 3) for j in chosen}
            f.write(json.dumps({"id": ids.format(i), "vector": vec}) + "\n")
    return path


def leftovers(index: Path) -> list[str]:
    """What builds left beside ``index``: work folders, lock files (there should be none)."""
    return sorted(p.name for p in index.parent.iterdir() if p.name.startswith(f".{index.name}."))


def work_folders(index: Path) -> list[Path]:
    return [p for p in index.parent.iterdir() if p.name.startswith(f".{index.name}.build-")]


def wait_for(condition, timeout: float, what: str, proc: subprocess.Popen | None = None):
    """Poll ``condition()`` every 5 ms until it returns something truthy; fail after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = condition()
        if got:
            return got
        if proc is not None and proc.poll() is not None:
            pytest.fail(f"the build exited ({proc.returncode}) before {what}")
        time.sleep(0.005)
    pytest.fail(f"timed out waiting for {what}")


def n_docs(index: Path, backend: str) -> int:
    if backend == "native":
        return open_index(index, verify=True).n_docs
    from indexer.lucene import LuceneIndexInfo

    return LuceneIndexInfo.load(index).documents


# ============================================================ 9: two builds of one INDEX_DIR
@pytest.mark.parametrize("backend", BACKENDS)
def test_a_second_build_of_the_same_index_fails_at_once_naming_the_first(tmp_path, backend):
    big = write_vectors(tmp_path / "big.jsonl", 20_000 if backend == "native" else 3_000, seed=1)
    small = write_vectors(tmp_path / "small.jsonl", 50, seed=2)
    index = tmp_path / "idx"
    first = subprocess.Popen(lsr_cmd("index", big, index, "--backend", backend), cwd=REPO)
    try:
        (work,) = wait_for(lambda: work_folders(index), 120, "the first build's work folder", first)
        # Stopped, the first build is "still running" for as long as the second one takes.
        os.kill(first.pid, signal.SIGSTOP)
        second = lsr("index", small, index, "--backend", backend)
        assert work.is_dir(), "the second build deleted the first one's work folder"
    finally:
        os.kill(first.pid, signal.SIGCONT)
        first.wait(timeout=300)
    fails(
        second,
        "index",
        re.escape(f"{index} is being built by another process (pid {first.pid} on ")
        + r".*plugin\.cli.*index.*big\.jsonl",
    )
    assert first.returncode == 0
    assert n_docs(index, backend) == (20_000 if backend == "native" else 3_000)
    assert leftovers(index) == []


def test_a_killed_build_leaves_no_lock_that_blocks_the_next(tmp_path):
    big = write_vectors(tmp_path / "big.jsonl", 20_000, seed=1)
    small = write_vectors(tmp_path / "small.jsonl", 50, seed=2)
    index = tmp_path / "idx"
    first = subprocess.Popen(lsr_cmd("index", big, index), cwd=REPO)
    wait_for(lambda: work_folders(index), 120, "the first build's work folder", first)
    os.kill(first.pid, signal.SIGKILL)
    first.wait()
    assert (tmp_path / ".idx.lock").exists()  # stale: its holder is dead, the kernel dropped the lock
    result = lsr("index", small, index)
    assert result.returncode == 0, result.stderr
    assert n_docs(index, "native") == 50
    assert leftovers(index) == []  # the killed build's work folder and the lock file are gone


def test_build_lock_in_process(tmp_path):
    from indexer.atomic import IndexLockedError, build_lock

    index = tmp_path / "sub" / "idx"
    with build_lock(index) as lock:
        assert lock == tmp_path / "sub" / ".idx.lock"
        holder = json.loads(lock.read_text())
        assert holder["pid"] == os.getpid() and holder["command"]
        # flock locks belong to open files: a second open in the same process conflicts too.
        with pytest.raises(
            IndexLockedError, match=rf"pid {os.getpid()} on .*lock file {re.escape(str(lock))}"
        ):
            with build_lock(index):
                pass
    assert not lock.exists()
    with build_lock(index):
        pass


# ======================================================= 10: the JVM dies with its build
def _java_child(proc: subprocess.Popen):
    import psutil

    try:
        children = psutil.Process(proc.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return None
    for child in children:
        try:
            if child.name() == "java" or "IndexCollection" in " ".join(child.cmdline()):
                return child
        except psutil.NoSuchProcess:
            pass
    return None


def _gone(process) -> bool:
    """Exited: no such process, or a zombie nobody reaped (a container's init may never reap it)."""
    import psutil

    try:
        return process.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def _sigint_as_from_a_terminal() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@needs_java
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM, signal.SIGINT], ids=lambda s: s.name)
def test_killing_a_lucene_build_kills_its_java_child(tmp_path, sig):
    vectors = write_vectors(tmp_path / "v.jsonl", 1_000)
    build = subprocess.Popen(
        lsr_cmd("index", vectors, tmp_path / "idx", "--backend", "lucene"),
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        # As from a terminal: a shell without job control (CI's `... &`) starts its children with
        # SIGINT ignored, and Python then keeps ignoring it, so Ctrl-C would never arrive.
        preexec_fn=_sigint_as_from_a_terminal,
    )
    java = wait_for(lambda: _java_child(build), 120, "Anserini's java child", build)
    try:
        # Stopped, it cannot finish on its own: only the build's death can end it (SIGKILL ends a
        # stopped process). Without that, it would run until its indexing was done.
        java.suspend()
        os.kill(build.pid, sig)
        _, stderr = build.communicate(timeout=60)
        deadline = time.monotonic() + 10
        while not _gone(java) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _gone(java), f"java (pid {java.pid}) outlived `lsr index` killed by {sig.name}"
    finally:
        if not _gone(java):
            java.kill()
    if sig == signal.SIGINT:
        assert build.returncode == 130 and "lsr index: interrupted" in stderr, (build.returncode, stderr)


def test_run_java_kills_the_child_on_timeout(tmp_path):
    import psutil

    from indexer.java import run_java

    pid_file = tmp_path / "pid"
    # Any command: run_java is how lsr runs Java, and its child handling does not depend on Java.
    child = f"import os, time; open({str(pid_file)!r}, 'w').write(str(os.getpid())); time.sleep(60)"
    with pytest.raises(subprocess.TimeoutExpired):
        run_java([sys.executable, "-c", child], timeout=2)
    assert not psutil.pid_exists(int(pid_file.read_text()))


# ================================================= 11: OS errors are one line, exit 2
def _file_size_limit(limit: int):
    """A ``preexec_fn``: files may not grow past ``limit`` bytes (write() then fails with EFBIG),
    a stand-in for a full disk that needs no root and no tiny file system."""

    def preexec() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # else the process is killed instead
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return preexec


@pytest.fixture
def old_index(tmp_path) -> tuple[Path, dict[str, bytes]]:
    """A small native index built without limits (numba's caches warm too), and its files' bytes."""
    index = tmp_path / "idx"
    result = lsr("index", write_vectors(tmp_path / "old.jsonl", 30, seed=3), index)
    assert result.returncode == 0, result.stderr
    return index, {p.name: p.read_bytes() for p in index.iterdir() if p.is_file()}


@pytest.mark.parametrize(
    ("shape", "file"),
    [
        # 2,000 documents of 50 terms: the spooled forward index outgrows the limit first.
        ({"n": 2_000, "terms": 50}, r"terms\.bin"),
        # 3,000 one-term documents with 200-character ids (not prefix + number: those are stored as
        # numbers): the spool fits, the id bytes array does not.
        ({"n": 3_000, "terms": 1, "ids": "{}-" + "x" * 200}, r"index/docid_bytes\.npy"),
    ],
    ids=["spool", "npy"],
)
def test_index_on_a_full_disk_names_the_file_and_the_reason(old_index, tmp_path, shape, file):
    index, before = old_index
    vectors = write_vectors(tmp_path / "new.jsonl", shape["n"], shape["terms"], 4, shape.get("ids", "d{}"))
    result = lsr("index", vectors, index, preexec_fn=_file_size_limit(100_000))
    fails(result, "index", re.escape(f"{tmp_path}/.idx.build-") + rf"\w+/{file}: File too large$")
    assert {p.name: p.read_bytes() for p in index.iterdir() if p.is_file()} == before
    assert leftovers(index) == []


def test_index_on_a_full_disk_says_no_space_left(old_index, tmp_path, monkeypatch, capsys):
    """ENOSPC as Python's write() raises it (an errno, no file name), inside numpy's .npy writer."""
    from plugin.cli import main

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(np.lib.format, "write_array", full)
    index, before = old_index
    assert main(["index", str(write_vectors(tmp_path / "new.jsonl", 100)), str(index)]) == 2
    err = capsys.readouterr().err
    assert re.search(
        "^lsr index: error: "
        + re.escape(f"{tmp_path}/.idx.build-")
        + r"\w+/index/\w+\.npy: No space left on device$",
        err,
        re.M,
    ), err
    assert {p.name: p.read_bytes() for p in index.iterdir() if p.is_file()} == before
    assert leftovers(index) == []


def test_npy_writes_to_dev_full_name_the_file_and_no_space_left():
    from indexer.native.build import _save
    from plugin.cli import _os_error

    with pytest.raises(OSError) as e:
        _save(Path("/dev/full"), np.arange(100_000, dtype=np.int64))  # bigger than any write buffer
    assert e.value.errno == errno.ENOSPC
    assert _os_error(e.value) == "/dev/full: No space left on device"


UNWRITABLE = "(Permission denied|Operation not permitted|Read-only file system)"


def test_index_into_a_folder_nobody_may_write(tmp_path):
    # /sys refuses new files even to root, where chmod would not.
    vectors = write_vectors(tmp_path / "v.jsonl", 10)
    fails(
        lsr("index", vectors, "/sys/lsr-idx"), "index", rf"/sys/lsr-idx: cannot write in /sys: {UNWRITABLE}$"
    )


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_index_into_a_read_only_folder(tmp_path):
    vectors = write_vectors(tmp_path / "v.jsonl", 10)
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        result = lsr("index", vectors, ro / "idx")
    finally:
        ro.chmod(0o755)
    fails(result, "index", re.escape(f"{ro / 'idx'}: cannot write in {ro}: ") + UNWRITABLE)


@pytest.mark.parametrize("backend", ["native", "lucene", "bm25"])
def test_index_dir_that_is_a_file_is_refused_and_left_alone(tmp_path, backend):
    # Refused before any work is done: no Java is needed for the Lucene backends.
    source = write_vectors(tmp_path / "v.jsonl", 10)
    if backend == "bm25":
        source.write_text('{"_id": "a", "text": "the cell"}\n')
    target = tmp_path / "idx"
    target.write_text("my notes\n")
    result = lsr("index", source, target, "--backend", backend)
    fails(result, "index", re.escape(f"{target} exists and is not a directory; refusing to replace it"))
    assert target.read_text() == "my notes\n"
    assert leftovers(target) == []


@pytest.mark.parametrize(
    ("backend", "marker"), [("native", "meta.json or live.json"), ("lucene", "lsr-index.json")]
)
def test_index_dir_that_is_someone_elses_folder_is_refused_and_left_alone(tmp_path, backend, marker):
    vectors = write_vectors(tmp_path / "v.jsonl", 10)
    target = tmp_path / "photos"
    target.mkdir()
    (target / "cat.jpg").write_bytes(b"\xff\xd8 a cat")
    result = lsr("index", vectors, target, "--backend", backend)
    fails(
        result,
        "index",
        re.escape(f"{target} exists and is not an lsr index ({marker} missing); refusing to replace it"),
    )
    assert [p.name for p in target.iterdir()] == ["cat.jpg"]
    assert (target / "cat.jpg").read_bytes() == b"\xff\xd8 a cat"
    assert leftovers(target) == []


def test_index_dir_inside_a_file(tmp_path):
    vectors = write_vectors(tmp_path / "v.jsonl", 10)
    notes = tmp_path / "notes.txt"
    notes.write_text("x")
    fails(lsr("index", vectors, notes / "idx"), "index", re.escape(f"{notes}: Not a directory") + "$")
    fails(lsr("index", vectors, notes / "a" / "idx"), "index", re.escape(f"{notes}: Not a directory") + "$")
    assert notes.read_text() == "x"


@pytest.fixture
def encoder_dir(tiny_bert_dir, exported) -> Path:
    return exported(tiny_bert_dir, "splade")


def test_encode_output_that_is_a_folder(encoder_dir, tmp_path):
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text('{"_id": "a", "text": "the cell"}\n')
    out = tmp_path / "vectors"
    out.mkdir()
    fails(lsr("encode", encoder_dir, corpus, out), "encode", re.escape(f"{out} is a directory; OUT is the"))
    assert list(out.iterdir()) == []


def test_encode_output_nobody_may_write(encoder_dir, tmp_path):
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text('{"_id": "a", "text": "the cell"}\n')
    fails(
        lsr("encode", encoder_dir, corpus, "/sys/v.jsonl"), "encode", rf"/sys/\S*v\.jsonl\S*: {UNWRITABLE}$"
    )
