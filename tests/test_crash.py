"""Crash safety: index builds killed with SIGKILL at random points leave the old index or the new one
(its dense store included)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from indexer.native.format import open_index
from lsr.sparse import SparseBatch
from plugin.native import NativeSearcher

pytestmark = pytest.mark.slow
VOCAB = tuple(f"t{i}" for i in range(500))


def write_vectors(path, n, seed):
    """Sparse vectors at ``path`` and 8-d dense ones beside it (``.dense`` suffix) for the dense store."""
    rng = np.random.default_rng(seed)
    with open(path, "w") as f, open(path.with_suffix(".dense"), "w") as d:
        for i in range(n):
            ids = rng.choice(len(VOCAB), 20, replace=False)
            vec = {VOCAB[j]: round(float(rng.random() * 3), 3) for j in ids}
            f.write(json.dumps({"id": f"s{seed}-{i}", "vector": vec}) + "\n")
            d.write(json.dumps({"id": f"s{seed}-{i}", "vector": rng.normal(size=8).round(4).tolist()}) + "\n")


def build_cmd(vectors, index):
    return [
        *(sys.executable, "-m", "plugin.cli", "--log-level", "ERROR", "index", str(vectors), str(index)),
        *("--dense", str(vectors.with_suffix(".dense"))),
    ]


def search(index, query):
    """Sparse hits and bi-granular hits (the dense store opened: checksum and alignment checked)."""
    from plugin.verify import BiGranularSearcher

    dense_query = np.linspace(-1, 1, 8).astype(np.float32)
    return NativeSearcher(index).search(query), BiGranularSearcher(index, candidates=50).search(
        query, dense_query
    )


def test_sigkill_during_native_builds(tmp_path):
    old, new = tmp_path / "old.jsonl", tmp_path / "new.jsonl"
    write_vectors(old, 300, seed=1)
    write_vectors(new, 20_000, seed=2)
    index = tmp_path / "idx"
    assert subprocess.run(build_cmd(old, index), timeout=300).returncode == 0
    query = SparseBatch.from_dicts([{"t1": 1.0, "t2": 0.5, "t3": 2.0}], VOCAB)
    old_hits = search(index, query)

    # One full build tells how long a build takes; kills then land anywhere inside that span.
    start = time.perf_counter()
    assert subprocess.run(build_cmd(new, tmp_path / "timing"), timeout=600).returncode == 0
    span = time.perf_counter() - start
    new_hits = search(tmp_path / "timing", query)
    assert new_hits != old_hits

    rng = np.random.default_rng(0)
    outcomes = {"old": 0, "new": 0}
    for trial in range(20):
        proc = subprocess.Popen(build_cmd(new, index))
        time.sleep(float(rng.uniform(0.05, span * 1.1)))
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        ix = open_index(index, verify=True)  # loads, checksums match
        hits = search(index, query)
        kind = "new" if ix.n_docs == 20_000 else "old"
        assert hits == (new_hits if kind == "new" else old_hits), trial
        outcomes[kind] += 1
        if kind == "new":  # back to the old index for the next trial
            assert subprocess.run(build_cmd(old, index), timeout=300).returncode == 0
    print(f"SIGKILL trials: {outcomes}")
    assert outcomes["old"] > 0
    # The next build clears what killed builds left behind.
    assert subprocess.run(build_cmd(old, index), timeout=300).returncode == 0
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".idx.")]
