"""Ray encode (indexer.ray_encode): same vectors as the single-process encoder, resumable after kills.

One local Ray (2 CPUs, no dashboard) serves the whole module; the encoder is the tiny random BERT.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import TINY_WORDS

ray = pytest.importorskip("ray")

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module", autouse=True)
def ray_cluster():
    ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING")
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


def write_corpus(path: Path, n: int, seed: int = 0) -> Path:
    rng = random.Random(seed)
    lines = []
    for i in range(n):
        text = "" if i % 97 == 13 else " ".join(rng.choices(TINY_WORDS, k=rng.randint(2, 10)))
        lines.append(json.dumps({"_id": f"d{i}", "title": "", "text": text}) + "\n")
    path.write_text("".join(lines), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def data(tmp_path_factory, tiny_bert_dir, exported):
    """Two corpora (300 and 1200 docs), both encoders, and ``data["ref"](corpus, kind, chunk)``: the
    corpus encoded single-process (:func:`indexer.encode.encode_corpus`), ``chunk`` docs a chunk.

    With ``chunk`` equal to ``block_docs`` the single-process encoder runs the very same batches as
    the Ray workers, so the outputs are equal byte for byte; with another chunking the length buckets
    (so the padding) differ and a weight can differ in its last float32 bit.
    """
    from indexer.encode import encode_corpus
    from lsr.runtime import load_encoder

    d = tmp_path_factory.mktemp("ray-encode")
    out = {"splade": exported(tiny_bert_dir, "splade"), "dense": exported(tiny_bert_dir, "dense")}
    out["small"] = write_corpus(d / "small.jsonl", 300)
    out["large"] = write_corpus(d / "large.jsonl", 1200)
    cache: dict[tuple, Path] = {}

    def ref(corpus: str, kind: str = "splade", chunk: int = 50) -> Path:
        if (corpus, kind, chunk) not in cache:
            path = d / f"{corpus}-{kind}-{chunk}.jsonl"
            encoder = load_encoder(out[kind], "doc", max_length=32)
            encode_corpus(encoder, out[corpus], path, batch_size=8, chunk_size=chunk, show_progress=False)
            cache[corpus, kind, chunk] = path
        return cache[corpus, kind, chunk]

    out["ref"] = ref
    return out


def ray_encode(data, corpus: str, out_dir: Path, kind: str = "splade", **kw) -> dict:
    from indexer.ray_encode import encode_corpus_ray

    kw = {"block_docs": 50, "workers": 2, "max_length": 32, **kw}
    return encode_corpus_ray(data[kind], data[corpus], out_dir, **kw)


def parts(out_dir: Path) -> list[Path]:
    from indexer.ray_encode import part_files

    return part_files(out_dir)


def id_counts(out_dir: Path) -> Counter:
    return Counter(json.loads(line)["id"] for p in parts(out_dir) for line in p.read_text().splitlines())


def assert_exactly_once(out_dir: Path, reference: Path) -> None:
    """Every id of the reference exactly once across the part files, none missing, none extra, and
    the parts' bytes, concatenated in block order, are the single-process output."""
    counts = id_counts(out_dir)
    expected = [json.loads(line)["id"] for line in reference.read_text().splitlines()]
    assert [i for i, c in counts.items() if c > 1] == []
    assert sorted(counts) == sorted(expected)
    assert b"".join(p.read_bytes() for p in parts(out_dir)) == reference.read_bytes()
    assert not list(out_dir.glob(".part-*")), "temporary files left behind"


def postings_set(index_dir: Path) -> set[tuple[str, str, int]]:
    """(term, external doc id, impact) for every posting: the index's contents, whatever its doc order."""
    from indexer.native.format import open_index

    ix = open_index(index_dir)
    offsets, docs, impacts = ix.postings()
    names = ix.docids(range(ix.n_docs))
    out = set()
    for t in range(len(offsets) - 1):
        span = slice(offsets[t], offsets[t + 1])
        for d, w in zip(docs[span].tolist(), impacts[span].tolist(), strict=True):
            out.add((ix.vocab[t], names[d], int(w)))
    return out


def test_sparse_equals_single_process_and_indexes_the_same(data, tmp_path):
    from indexer.jsonvector import read_vectors
    from indexer.native.build import build_native_index

    out = tmp_path / "parts"
    summary = ray_encode(data, "small", out)
    assert summary["blocks"] == 6 and summary["encoded_blocks"] == 6 and summary["skipped_blocks"] == 0
    assert summary["documents"] == summary["encoded"] == 300 and summary["workers"] == 2
    assert summary["empty"] == 3 and summary["docs_per_s"] > 0
    assert [p.name for p in parts(out)] == [f"part-{i:05d}.jsonl" for i in range(6)]
    assert all(len(p.read_text().splitlines()) == 50 for p in parts(out))
    assert_exactly_once(out, data["ref"]("small"))
    ref = dict(read_vectors(data["ref"]("small")))  # identical weights per id
    got = {rid: v for p in parts(out) for rid, v in read_vectors(p)}
    assert got == ref
    build_native_index(tmp_path / "ray-index", vector_files=parts(out))
    build_native_index(tmp_path / "ref-index", vector_files=[data["ref"]("small")])
    assert postings_set(tmp_path / "ray-index") == postings_set(tmp_path / "ref-index")


def test_dense_equals_single_process(data, tmp_path):
    from indexer.dense import iter_dense
    from indexer.native.build import build_native_index

    out = tmp_path / "dense-parts"
    summary = ray_encode(data, "small", out, kind="dense", block_docs=64, workers=1)
    assert summary["blocks"] == 5 and summary["encoded"] == 300
    assert_exactly_once(out, data["ref"]("small", "dense", 64))
    # Against the default chunking (other padding): the same vectors up to float rounding.
    got = {rid: np.float32(vec) for p in parts(out) for _, rid, vec in iter_dense(p)}
    ref = {rid: np.float32(vec) for _, rid, vec in iter_dense(data["ref"]("small", "dense", 1024))}
    assert got.keys() == ref.keys()
    assert all(np.allclose(got[k], ref[k], rtol=0, atol=1e-6) for k in ref)
    # Sparse and dense part folders index together: the dense store aligns with the sparse ids.
    sparse = tmp_path / "sparse-parts"
    ray_encode(data, "small", sparse)
    meta = build_native_index(tmp_path / "index", vector_files=parts(sparse), dense=parts(out))
    assert meta["n_docs"] == 297  # 3 empty texts encode to empty sparse vectors, which are skipped


def test_rerun_skips_finished_blocks_and_redoes_a_broken_one(data, tmp_path):
    out = tmp_path / "parts"
    ray_encode(data, "small", out)
    before = {p.name: p.read_bytes() for p in parts(out)}
    again = ray_encode(data, "small", out)
    assert again["skipped_blocks"] == again["blocks"] == 6
    assert again["encoded"] == again["encoded_blocks"] == 0
    # A part file cut short (not a whole block) and a stray temporary file: the rerun redoes that block only.
    p3 = out / "part-00003.jsonl"
    p3.write_bytes(before[p3.name][: len(before[p3.name]) // 2])
    (out / ".part-00004.jsonl.tmp-12345").write_text("{half", encoding="utf-8")
    fixed = ray_encode(data, "small", out)
    assert fixed["skipped_blocks"] == 5 and fixed["encoded_blocks"] == 1 and fixed["encoded"] == 50
    assert {p.name: p.read_bytes() for p in parts(out)} == before
    assert_exactly_once(out, data["ref"]("small"))


def test_refuses_other_settings_and_foreign_folders(data, tmp_path):
    out = tmp_path / "parts"
    ray_encode(data, "small", out, block_docs=100)
    with pytest.raises(ValueError, match="block_docs: 100 -> 50"):
        ray_encode(data, "small", out, block_docs=50)
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("x")
    with pytest.raises(FileExistsError, match="not a Ray encode"):
        ray_encode(data, "small", foreign)
    with pytest.raises(ValueError, match="max_length must be"):
        ray_encode(data, "small", tmp_path / "long", max_length=10_000)
    with pytest.raises(ValueError, match="side must be"):
        ray_encode(data, "small", tmp_path / "side", side="both")
    with pytest.raises(ValueError, match="dense"):
        ray_encode(data, "small", tmp_path / "d", kind="dense", prune=("top_k", 5))


def test_without_ray_the_error_says_what_to_install(data, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(ImportError, match=r"pip install 'lsr\[ray\]'"):
        ray_encode(data, "small", tmp_path / "parts")


def _killer():
    """A progress callback that SIGKILLs the worker process of the first finished block, midway
    through the run (that worker has another block queued behind it)."""
    killed: list[int] = []
    pids: set[int] = set()

    def progress(done: dict) -> None:
        pids.add(done["pid"])
        if not killed:
            killed.append(done["pid"])
            os.kill(done["pid"], signal.SIGKILL)

    return progress, killed, pids


def test_killed_worker_is_restarted_and_nothing_is_written_twice(data, tmp_path):
    out = tmp_path / "parts"
    progress, killed, pids = _killer()
    summary = ray_encode(data, "large", out, progress=progress, max_retries=3)
    assert killed and summary["blocks"] == summary["encoded_blocks"] == 24
    assert len(pids) == 3, "the killed worker was not restarted (a third process)"
    assert_exactly_once(out, data["ref"]("large"))


def test_killed_worker_without_retries_fails_and_the_rerun_finishes(data, tmp_path):
    out = tmp_path / "parts"
    progress, killed, _ = _killer()
    with pytest.raises(RuntimeError, match="encode worker died"):
        ray_encode(data, "large", out, progress=progress, max_retries=0)
    assert killed
    finished = len(parts(out))
    assert 1 <= finished < 24
    summary = ray_encode(data, "large", out)
    # A surviving worker's in-flight block may still land after the failed run returned (ray.kill is
    # asynchronous): the rerun skips it too, and encodes only what no part holds.
    assert summary["skipped_blocks"] >= finished
    assert summary["skipped_blocks"] + summary["encoded_blocks"] == 24
    assert_exactly_once(out, data["ref"]("large"))


# The driver reports each finished block, then dawdles (0.2 s a block, ~5 s in all), so that the
# kill after its third block lands midway however fast the tiny encoder runs.
DRIVER = """
import sys, time
from indexer.ray_encode import encode_corpus_ray

def progress(done):
    print("BLOCK", done["block"], flush=True)
    time.sleep(0.2)

encode_corpus_ray(sys.argv[1], sys.argv[2], sys.argv[3], block_docs=50, workers=2, max_length=32,
                  address=sys.argv[4], progress=progress)
print("FINISHED", flush=True)
"""


def test_killed_driver_then_rerun_finishes(data, tmp_path, ray_cluster):
    """The driver (a subprocess on this module's cluster) is SIGKILLed after a few blocks; its workers
    die with it, and a rerun encodes the rest with every document exactly once."""
    out = tmp_path / "parts"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    args = [data["splade"], data["large"], out, ray_cluster]
    proc = subprocess.Popen(
        [sys.executable, "-c", DRIVER, *map(str, args)],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )  # fmt: skip
    blocks, deadline = 0, time.monotonic() + 90
    try:
        for line in proc.stdout:
            blocks += line.startswith("BLOCK")
            assert not line.startswith("FINISHED"), "the driver finished before it could be killed"
            if blocks >= 3 or time.monotonic() > deadline:
                break
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait(timeout=30)
        proc.stdout.close()
    assert blocks >= 3, "the driver wrote no blocks in time"
    finished = len(parts(out))
    assert finished < 24
    summary = ray_encode(data, "large", out)
    assert summary["skipped_blocks"] >= 3 and summary["blocks"] == 24
    assert summary["skipped_blocks"] + summary["encoded_blocks"] == 24
    assert_exactly_once(out, data["ref"]("large"))


LOCAL = """
import sys
import ray
from indexer.ray_encode import encode_corpus_ray
summary = encode_corpus_ray(sys.argv[1], sys.argv[2], sys.argv[3], block_docs=100, workers=1, max_length=32)
print("ENCODED", summary["encoded"], "STILL_UP", ray.is_initialized(), flush=True)
"""


def test_without_an_address_a_local_ray_is_started_and_shut_down(data, tmp_path):
    """A driver without Ray running: the encode starts a local Ray of its own and shuts it down."""
    out = tmp_path / "parts"
    args = [data["splade"], data["small"], out]
    done = subprocess.run(
        [sys.executable, "-c", LOCAL, *map(str, args)],
        cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert "ENCODED 300 STILL_UP False" in done.stdout
    assert_exactly_once(out, data["ref"]("small", chunk=100))


def test_the_cli_encodes_on_ray_and_indexes_the_part_folder(data, tmp_path, capsys):
    """`lsr encode ... --ray --workers 2` writes a folder of part files; `lsr index` takes the folder
    (its part files, in block order) and builds the index a single-process encode gives."""
    from plugin.cli import main

    out = tmp_path / "parts"
    argv = ["encode", str(data["splade"]), str(data["small"]), str(out), "--max-length", "32"]
    assert main([*argv, "--ray", "--workers", "2", "--block-docs", "50"]) == 0
    assert "6/6 blocks kept" not in capsys.readouterr().out
    assert main([*argv, "--ray", "--workers", "2", "--block-docs", "50"]) == 0  # a rerun keeps them all
    assert "6/6 blocks kept" in capsys.readouterr().out
    assert main(["index", str(out), str(tmp_path / "ix")]) == 0
    assert main(["index", str(data["ref"]("small")), str(tmp_path / "ref")]) == 0
    assert postings_set(tmp_path / "ix") == postings_set(tmp_path / "ref")
