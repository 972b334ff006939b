"""Crash safety and concurrent readers of live native indexes (:mod:`indexer.live`, :mod:`plugin.live`).

Appends (with upserts), deletes and merges SIGKILLed at random points of the change leave the old
generation or the new one, whole: the same live documents, exact search equal to brute force over
them, and the next change succeeds on top (leftovers removed, the stale lock taken over). Readers that
search and refresh while changes publish never fail, and each search equals brute force over the
generation the reader held; a reader pinned before a merge keeps its results after the merge's
old files are removed.

The changes run in processes forked by one helper subprocess that imported everything and loaded the
numba kernels first, so a kill lands inside the change (not in Python's start-up): the helper forks a
worker, the worker says ``ready <pid>`` and waits for ``go`` (forwarded from the helper's stdin), runs
the change and says ``done``. The worker stays unreaped (a zombie) until the test says ``reap``, so
its pid cannot be reused by the time it is killed.
"""

from __future__ import annotations

import json
import os
import select
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from indexer import live
from indexer.atomic import lock_path
from indexer.native.build import build_native_index
from indexer.native.format import open_index
from indexer.quantize import quantize
from lsr.sparse import SparseBatch
from plugin.live import LiveSearcher, internal_order
from plugin.native import NativeSearcher

pytestmark = pytest.mark.slow

VOCAB = tuple(f"t{i}" for i in range(60))
LEVELS = (0.5, 1.0, 2.0)  # few weight levels: many tied scores
OPTIONS = {"block_size": 4}
TRIALS = 20
REPO = Path(__file__).resolve().parents[1]

# ------------------------------------------------------------------ helpers (as in test_live.py)


def random_vectors(rng, n):
    out = []
    for _ in range(n):
        terms = rng.choice(len(VOCAB), rng.integers(1, 9), replace=False)
        out.append({VOCAB[t]: float(rng.choice(LEVELS)) for t in terms})
    return out


def write(path, docs: dict[str, dict[str, float]]):
    with open(path, "w") as f:
        for i, v in docs.items():
            f.write(json.dumps({"id": i, "vector": v}) + "\n")
    return path


_IMPACTS: dict[float, int] = {}


def impact(w: float) -> int:
    hit = _IMPACTS.get(w)
    if hit is None:
        hit = _IMPACTS[w] = int(quantize(np.array([w], np.float32))[0])
    return hit


def brute_force(docs: dict[str, dict[str, float]], order, query, k):
    """Quantized dot products over the live documents, ties by ``order`` (the stated tie rule)."""
    q = {t: impact(w) for t, w in query.items()}
    scored = []
    for rank, i in enumerate(order):
        d = docs[i]
        s = sum(w * impact(d[t]) for t, w in q.items() if t in d)
        if s > 0:
            scored.append((-s, rank, i))
    scored.sort()
    return [(i, float(-s)) for s, _, i in scored[:k]]


def as_query(vector):
    return SparseBatch.from_dicts([vector], VOCAB)


def hits(searcher, query, k):
    return [(h.docid, h.score) for h in searcher.search(as_query(query), k)]


def run_change(spec: dict) -> live.Change:
    """What a worker runs (the same code, in-process)."""
    if spec["op"] == "append":
        return live.append(spec["root"], spec["files"], upsert=True, **spec["options"])
    if spec["op"] == "delete":
        return live.delete(spec["root"], spec["ids"])
    return live.merge(spec["root"], max_segments=1, **spec["options"])


def assert_clean(root: Path, staging: bool = True) -> None:
    """After a change: only the kept generations' files are left, and the lock is released (and,
    with ``staging``, no conversion's staging directory is left beside the index)."""
    names = set(os.listdir(root))
    numbers = sorted(int(m.group(1)) for n in names if (m := live.MANIFEST.fullmatch(n)))
    assert 1 <= len(numbers) <= live.KEEP, sorted(names)
    expected = {"live.json"}
    for n in numbers:
        expected.add(f"segments-{n}.json")
        for s in json.loads((root / f"segments-{n}.json").read_text())["segments"]:
            expected.add(s["name"])
            if s["deleted"]:
                expected.add(s["deleted"])
    assert names == expected, f"leftovers: {sorted(names - expected)}, missing: {sorted(expected - names)}"
    assert not lock_path(root).exists(), "the build lock was not released"
    if staging:
        assert not [p.name for p in root.parent.iterdir() if p.name.startswith(f".{root.name}.live-")]


# ------------------------------------------------------------------ the helper subprocess

HELPER = r"""
import json, os, sys, traceback
import numpy as np
from indexer import live
from plugin.live import LiveSearcher, internal_order
from plugin.native import NativeSearcher

def run(spec):
    if spec["op"] == "append":
        live.append(spec["root"], spec["files"], upsert=True, **spec["options"])
    elif spec["op"] == "delete":
        live.delete(spec["root"], spec["ids"])
    else:
        live.merge(spec["root"], max_segments=1, **spec["options"])

def line():
    buf = b""
    while not buf.endswith(b"\n"):
        c = os.read(0, 1)
        if not c:
            os._exit(0)
        buf += c
    return buf.decode().strip()

def say(text):
    os.write(1, (text + "\n").encode())

for spec in json.loads(sys.argv[1]):  # warm up: every change once, on a scratch index
    run(spec)
say("warm")
while True:
    spec = json.loads(line())
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(w)
            say(f"ready {os.getpid()}")
            if not os.read(r, 1):  # the test gave up before "go"
                os._exit(2)
            run(spec)
            say("done")
            os._exit(0)
        except BaseException:
            traceback.print_exc()
            os._exit(1)
    os.close(r)
    assert line() == "go"
    os.write(w, b"g")
    os.close(w)
    assert line() == "reap"
    _, status = os.waitpid(pid, 0)
    say(f"exit {status}")
"""


class Helper:
    def __init__(self, warmup: list[dict]):
        self.proc = subprocess.Popen(
            [sys.executable, "-c", HELPER, json.dumps(warmup)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            cwd=REPO,
        )
        self.buf = b""
        assert self.line(120) == "warm"

    def line(self, timeout: float = 60) -> str:
        fd = self.proc.stdout.fileno()
        deadline = time.monotonic() + timeout
        while b"\n" not in self.buf:
            left = deadline - time.monotonic()
            assert left > 0, "the helper process did not answer"
            if select.select([fd], [], [], left)[0]:
                chunk = os.read(fd, 4096)
                assert chunk, f"the helper process died (rc {self.proc.poll()})"
                self.buf += chunk
        text, self.buf = self.buf.split(b"\n", 1)
        return text.decode()

    def send(self, text: str) -> None:
        self.proc.stdin.write((text + "\n").encode())
        self.proc.stdin.flush()

    def change(self, spec: dict, kill_after: float | None) -> tuple[float, bool, int]:
        """Run ``spec`` in a forked worker, SIGKILLed ``kill_after`` seconds after ``go`` (or left to
        finish): (seconds from ``go`` to ``done`` or the kill, whether it said done, wait status)."""
        self.send(json.dumps(spec))
        word, pid = self.line().split()
        assert word == "ready"
        start = time.perf_counter()
        self.send("go")
        if kill_after is None:
            assert self.line() == "done"
            took, done = time.perf_counter() - start, True
        else:
            time.sleep(max(0.0, start + kill_after - time.perf_counter()))
            os.kill(int(pid), signal.SIGKILL)  # unreaped until "reap": never another process
            took, done = time.perf_counter() - start, False
        self.send("reap")
        while (text := self.line()) == "done":
            done = True
        word, status = text.split()
        assert word == "exit"
        return took, done, int(status)

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=30)


# ------------------------------------------------------------------ the index every trial starts from


class Setup:
    """A pristine live index (5 segments, some deletions) and one change of each kind to apply to it."""

    def __init__(self, base: Path):
        rng = np.random.default_rng(20240601)
        self.base = base
        self.pristine = base / "pristine"
        self.docs: dict[str, dict[str, float]] = {}
        for s in range(5):
            batch = {f"s{s}d{i}": v for i, v in enumerate(random_vectors(rng, 60))}
            live.append(self.pristine, [write(base / f"v{s}.jsonl", batch)], **OPTIONS)
            self.docs.update(batch)
        gone = rng.choice(list(self.docs), 30, replace=False).tolist()
        live.delete(self.pristine, gone)
        for i in gone:
            del self.docs[i]
        self.queries = random_vectors(rng, 6)
        self.root = base / "work" / "live"

        # append: 50 new documents and 10 upserted ones (from several segments)
        batch = {f"n{i}": v for i, v in enumerate(random_vectors(rng, 50))}
        for i in rng.choice(list(self.docs), 10, replace=False).tolist():
            batch[i] = random_vectors(rng, 1)[0]
        appended = {**self.docs, **batch}
        # delete: 40 documents of every segment, and all of segment 2 (which is dropped)
        gone = rng.choice([i for i in self.docs if not i.startswith("s2")], 40, replace=False).tolist()
        gone += [i for i in self.docs if i.startswith("s2")] + ["never-there"]
        deleted = {i: v for i, v in self.docs.items() if i not in gone}
        files = [str(write(base / "append.jsonl", batch))]
        self.changes = {
            "append": ({"op": "append", "files": files, "options": OPTIONS}, appended),
            "delete": ({"op": "delete", "ids": gone}, deleted),
            "merge": ({"op": "merge", "options": OPTIONS}, dict(self.docs)),
        }
        self.generation = live.current(self.pristine).number
        self.order = internal_order(LiveSearcher(self.pristine)).tolist()

    def restore(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)
        self.root.parent.mkdir(exist_ok=True)
        shutil.copytree(self.pristine, self.root)

    def spec(self, op: str) -> dict:
        return {**self.changes[op][0], "root": str(self.root)}

    def check(self, docs, order=None) -> tuple[int, list[str]]:
        """The index opens (checksums verified), holds exactly ``docs`` (in ``order`` when given), and
        exact search equals brute force over them; returns its generation number and tie order."""
        gen = live.current(self.root)
        searcher = LiveSearcher(self.root, verify=True)
        assert searcher.generation.number == gen.number
        got = internal_order(searcher).tolist()
        assert len(got) == len(set(got)) == len(searcher), "a document is live twice"
        assert set(got) == set(docs), (
            f"lost {sorted(set(docs) - set(got))[:5]}, extra {sorted(set(got) - set(docs))[:5]}"
        )
        if order is not None:
            assert got == order
        for q in self.queries:
            for k in (10, 1000):
                assert hits(searcher, q, k) == brute_force(docs, got, q, k), (gen.number, k)
        return gen.number, got


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    base = tmp_path_factory.mktemp("live-crash")
    setup = Setup(base)
    scratch = base / "scratch"
    shutil.copytree(setup.pristine, scratch)
    warmup = [{**setup.changes[op][0], "root": str(scratch)} for op in ("append", "delete", "merge")]
    helper = Helper(warmup)
    # The test process runs the same changes in-process (retries, follow-ups): warm it up too.
    scratch2 = base / "scratch2"
    shutil.copytree(setup.pristine, scratch2)
    for spec in warmup:
        run_change({**spec, "root": str(scratch2)})
    setup.helper = helper
    yield setup
    helper.close()


@pytest.mark.parametrize("op", ["append", "delete", "merge"])
def test_sigkill_during_a_change_leaves_the_old_or_the_new_generation(setup, op):
    new_docs = setup.changes[op][1]
    spec = setup.spec(op)
    old_docs, old_number = setup.docs, setup.generation

    # Uninterrupted changes: how long one takes (the median of 3), and the new generation (its tie
    # order, the same each time).
    spans, new_order = [], None
    for _ in range(3):
        setup.restore()
        took, done, status = setup.helper.change(spec, None)
        assert done and status == 0
        spans.append(took)
        new_number, new_order = setup.check(new_docs, new_order)
        assert new_number == old_number + 1
    span = float(np.median(spans))

    rng = np.random.default_rng({"append": 1, "delete": 2, "merge": 3}[op])
    # Uniform in [0, 1.2 x span], stratified so that every part of the change is hit.
    delays = (rng.permutation(TRIALS) + rng.random(TRIALS)) / TRIALS * 1.2 * span
    outcomes = {"old": 0, "new": 0}
    for trial, delay in enumerate(delays.tolist()):
        setup.restore()
        _, done, status = setup.helper.change(spec, delay)
        killed = os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
        assert killed or (done and os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0), (trial, status)
        context = f"{op} trial {trial}: killed after {delay * 1000:.1f} ms of {span * 1000:.1f} ms"

        # The index opens at the old generation or the new one, whole.
        number = live.current(setup.root).number
        assert number in (old_number, new_number), context
        kind = "new" if number == new_number else "old"
        if done:
            assert kind == "new", context
        docs, order = (new_docs, new_order) if kind == "new" else (old_docs, setup.order)
        setup.check(docs, order)
        outcomes[kind] += 1

        # The change retried, and then another append, succeed on top of it.
        change = run_change(spec)
        assert change.generation >= number, context
        setup.check(new_docs)
        batch = {f"x{trial}-{i}": v for i, v in enumerate(random_vectors(rng, 5))}
        change = live.append(setup.root, [write(setup.base / "more.jsonl", batch)], **OPTIONS)
        assert change.added == 5
        assert_clean(setup.root)
        setup.check({**new_docs, **batch})
    print(f"{op}: {span * 1000:.1f} ms, SIGKILL outcomes {outcomes}")
    assert outcomes["old"] > 0, outcomes  # (how many land after the publish depends on the load)


def test_sigkill_while_a_plain_index_becomes_live(setup, tmp_path):
    """The first append to a plain native index converts it (hard links, one swap) and then appends:
    a kill leaves the plain index, the converted one (the same documents) or the appended one."""
    rng = np.random.default_rng(4)
    docs = {f"p{i}": v for i, v in enumerate(random_vectors(rng, 200))}
    plain = tmp_path / "plain"
    build_native_index(plain, vector_files=[write(tmp_path / "p.jsonl", docs)], **OPTIONS)
    plain_order = open_index(plain).docids(open_index(plain).input_order.tolist())  # the tie order
    assert plain_order == list(docs)
    batch = {f"n{i}": v for i, v in enumerate(random_vectors(rng, 30))}
    root = tmp_path / "work" / "ix"
    spec = {"op": "append", "files": [str(write(tmp_path / "n.jsonl", batch))], "options": OPTIONS}
    spec["root"] = str(root)

    def restore():
        shutil.rmtree(root, ignore_errors=True)
        root.parent.mkdir(exist_ok=True)
        shutil.copytree(plain, root)

    spans = []
    for _ in range(3):
        restore()
        took, done, status = setup.helper.change(spec, None)
        assert done and status == 0 and live.current(root).number == 2
        spans.append(took)
    span = float(np.median(spans))
    trials = 12
    delays = (rng.permutation(trials) + rng.random(trials)) / trials * 1.2 * span
    outcomes = {"plain": 0, "converted": 0, "appended": 0}
    for trial, delay in enumerate(delays.tolist()):
        restore()
        setup.helper.change(spec, delay)
        if not live.is_live(root):
            kind, want, order = "plain", docs, plain_order
            searcher = NativeSearcher(open_index(root, verify=True))
        else:
            number = live.current(root).number
            assert number in (1, 2), (trial, number)
            kind = "converted" if number == 1 else "appended"
            searcher = LiveSearcher(root, verify=True)
            want = docs if number == 1 else {**docs, **batch}
            order = internal_order(searcher).tolist()
            assert set(order) == set(want) and len(order) == len(want), (trial, kind)
            if number == 1:
                assert order == plain_order
        outcomes[kind] += 1
        for q in setup.queries:
            assert hits(searcher, q, 1000) == brute_force(want, order, q, 1000), (trial, kind)
        more = {f"x{trial}": {"t1": 1.0}}
        live.append(root, [write(tmp_path / "more.jsonl", more)], upsert=True, **OPTIONS)
        assert_clean(root, staging=False)  # (see the next test)
        after = LiveSearcher(root, verify=True)
        assert sorted(internal_order(after).tolist()) == sorted({**want, **more})
        for p in root.parent.iterdir():
            if p.name.startswith(".ix.live-"):
                shutil.rmtree(p)
    print(f"conversion: {span * 1000:.1f} ms, SIGKILL outcomes {outcomes}")
    assert outcomes["plain"] > 0, outcomes


KILL_AT_SWAP = """
import os, signal, sys
from indexer import live
live.swap_in = lambda *a: os.kill(os.getpid(), signal.SIGKILL)  # dies just before the swap
live.append(sys.argv[1], [sys.argv[2]])
"""


def test_a_killed_conversion_leaves_no_staging_directory_behind(tmp_path):
    plain = tmp_path / "ix"
    build_native_index(plain, vector_files=[write(tmp_path / "p.jsonl", {"a": {"t1": 1.0}})])
    more = write(tmp_path / "n.jsonl", {"b": {"t2": 1.0}})
    proc = subprocess.run([sys.executable, "-c", KILL_AT_SWAP, str(plain), str(more)], cwd=REPO, timeout=120)
    assert proc.returncode == -signal.SIGKILL
    assert not live.is_live(plain)  # the plain index, untouched
    live.append(plain, [more])  # the next change succeeds ...
    assert sorted(internal_order(LiveSearcher(plain)).tolist()) == ["a", "b"]
    assert_clean(plain)  # ... and should remove what the killed one left


def test_current_survives_two_publishes_between_listing_and_reading(tmp_path, monkeypatch):
    root = tmp_path / "live"
    live.append(root, [write(tmp_path / "a.jsonl", {f"d{i}": {"t1": 1.0} for i in range(5)})])
    live.delete(root, ["d0"])
    reader = LiveSearcher(root)
    listing = live._generations

    def slow_listing(path):
        found = listing(path)  # a reader lists segments-N.json, is descheduled, ...
        monkeypatch.setattr(live, "_generations", listing)
        live.delete(root, ["d1"])  # ... two changes publish (the second removes the listed ones) ...
        live.delete(root, ["d2"])
        return found  # ... and it reads what it listed

    monkeypatch.setattr(live, "_generations", slow_listing)
    assert reader.refresh()
    assert sorted(internal_order(reader).tolist()) == ["d3", "d4"]


# ------------------------------------------------------------------ readers during changes


def test_readers_never_fail_while_changes_publish(tmp_path):
    rng = np.random.default_rng(11)
    root = tmp_path / "live"
    docs: dict[str, dict[str, float]] = {}
    for s in range(3):
        batch = {f"s{s}d{i}": v for i, v in enumerate(random_vectors(rng, 60))}
        live.append(root, [write(tmp_path / f"v{s}.jsonl", batch)], **OPTIONS)
        docs.update(batch)
    generations = {live.current(root).number: dict(docs)}
    queries = random_vectors(rng, 8)
    stop = threading.Event()
    errors: list[BaseException] = []
    seen: list[dict] = []

    def reader(n: int) -> None:
        results: set = set()
        orders: dict[int, list[str]] = {}
        record = {"results": results, "orders": orders, "searches": 0, "refreshes": 0}
        seen.append(record)
        try:
            searcher = LiveSearcher(root, verify=True)
            last = searcher.generation.number
            i = 0
            while not stop.is_set():
                if i % 3 == n:
                    record["refreshes"] += bool(searcher.refresh())
                number = searcher.generation.number
                assert number >= last, f"went back from generation {last} to {number}"
                last = number
                order = internal_order(searcher).tolist()
                assert orders.setdefault(number, order) == order
                q = i % len(queries)
                results.add((number, q, tuple(hits(searcher, queries[q], 10))))
                record["searches"] += 1
                i += 1
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=reader, args=(n,), daemon=True) for n in range(2)]
    for t in threads:
        t.start()
    time.sleep(0.2)
    plan = ["append", "delete", "upsert", "merge", "append", "delete", "merge"] * 2 + ["merge1"]
    next_id = 0
    for step, op in enumerate(plan):
        if op in ("append", "upsert"):
            batch = {f"a{next_id + i}": v for i, v in enumerate(random_vectors(rng, 30))}
            next_id += 30
            if op == "upsert":
                for i in rng.choice(list(docs), 8, replace=False).tolist():
                    batch[i] = random_vectors(rng, 1)[0]
            change = live.append(root, [write(tmp_path / f"c{step}.jsonl", batch)], upsert=True, **OPTIONS)
            docs.update(batch)
        elif op == "delete":
            gone = rng.choice(list(docs), 25, replace=False).tolist()
            change = live.delete(root, gone)
            for i in gone:
                del docs[i]
        else:
            change = live.merge(root, max_segments=1 if op == "merge1" else 2, **OPTIONS)
        generations.setdefault(change.generation, dict(docs))
        assert generations[change.generation] == docs
        time.sleep(0.03)
    time.sleep(0.1)
    stop.set()
    for t in threads:
        t.join(timeout=60)
    assert not errors, errors
    assert max(generations) >= len(plan), "every change published a generation"

    checked = set()
    for record in seen:
        assert record["searches"] > 50 and record["refreshes"] >= 3, record["searches"]
        for number, order in record["orders"].items():
            assert sorted(order) == sorted(generations[number]), number
        for number, q, got in record["results"]:
            order = record["orders"][number]
            assert list(got) == brute_force(generations[number], order, queries[q], 10), (number, q)
            checked.add(number)
    assert len(checked) >= 5, f"the readers saw only generations {sorted(checked)}"


def test_a_reader_pinned_before_a_merge_keeps_its_results_after_the_old_files_are_gone(tmp_path):
    rng = np.random.default_rng(12)
    root = tmp_path / "live"
    docs: dict[str, dict[str, float]] = {}
    for s in range(3):
        batch = {f"s{s}d{i}": v for i, v in enumerate(random_vectors(rng, 60))}
        live.append(root, [write(tmp_path / f"v{s}.jsonl", batch)], **OPTIONS)
        docs.update(batch)
    gone = rng.choice(list(docs), 20, replace=False).tolist()
    live.delete(root, gone)
    for i in gone:
        del docs[i]
    queries = random_vectors(rng, 10)
    held = LiveSearcher(root, verify=True)
    number, order = held.generation.number, internal_order(held).tolist()
    before = [hits(held, q, 20) for q in queries]
    assert before == [brute_force(docs, order, q, 20) for q in queries]
    old_files = [root / s.name for s in held.generation.segments] + [
        root / s.deleted for s in held.generation.segments if s.deleted
    ]

    assert live.merge(root, **OPTIONS).segments == 1
    live.delete(root, [order[0]])  # the next change removes what only the old generation named
    del docs[order[0]]
    batch = {f"n{i}": v for i, v in enumerate(random_vectors(rng, 10))}
    live.append(root, [write(tmp_path / "n.jsonl", batch)], **OPTIONS)
    docs.update(batch)
    assert not [p for p in old_files if p.exists()], "the old generation's files were removed"

    assert held.generation.number == number
    assert internal_order(held).tolist() == order
    assert [hits(held, q, 20) for q in queries] == before, "a pinned reader searches what it opened"
    assert held.refresh()
    now = internal_order(held).tolist()
    assert sorted(now) == sorted(docs)
    assert [hits(held, q, 20) for q in queries] == [brute_force(docs, now, q, 20) for q in queries]
