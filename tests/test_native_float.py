"""Mode "float": search exact under the float scores, from the float store (``float_weights``)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from indexer.files import IndexCorruptError
from indexer.native.build import build_native_index, iter_batches
from indexer.native.format import open_index
from indexer.quantize import quantize
from lsr.sparse import SparseBatch
from plugin.native import NativeSearcher
from plugin.options import InvalidOption
from plugin.scorer import _kernels as score_kernels
from plugin.scorer import reference as score_ref

VOCAB = tuple(f"t{i}" for i in range(200))


def float_docs(n, seed, levels=None, max_len=14):
    """Random documents whose weights reach below the rounding step (0.005 at scale 100)."""
    rng = np.random.default_rng(seed)
    rows = []
    for _ in range(n):
        terms = rng.choice(len(VOCAB), rng.integers(1, max_len), replace=False)
        if levels is not None:
            w = rng.choice(levels, len(terms))
        else:  # log-uniform over 1e-4 .. 3: a few percent round to impact 0
            w = np.exp(rng.uniform(np.log(1e-4), np.log(3.0), len(terms)))
        rows.append({VOCAB[t]: float(x) for t, x in zip(terms, w, strict=True)})
    return SparseBatch.from_dicts(rows, VOCAB)


def float_queries(n, seed, levels=None):
    rng = np.random.default_rng(seed)
    rows = []
    for _ in range(n):
        terms = rng.choice(len(VOCAB), rng.integers(1, 9), replace=False)
        w = rng.choice(levels, len(terms)) if levels is not None else rng.uniform(0.001, 2.0, len(terms))
        rows.append({VOCAB[t]: float(x) for t, x in zip(terms, w, strict=True)})
    return SparseBatch.from_dicts(rows + [{"t0": 0.001}], VOCAB)  # one that rounds to nothing


def build(tmp_path, docs, name="idx", **kw):
    ids = [f"doc{i}" for i in range(len(docs))]
    build_native_index(tmp_path / name, batches=iter_batches(ids, docs, chunk=53), float_weights=True, **kw)
    return tmp_path / name, ids


def float_truth(searcher, docs, ids, queries, k, allowed=None):
    """The float top-k over the indexed documents (those with an impact), ties by input position."""
    indexed = (quantize(docs.to_dense()) > 0).any(axis=1)
    internal = searcher.index.locate([ids[i] for i in np.flatnonzero(indexed)])
    dense = np.zeros((searcher.index.n_docs, len(VOCAB)), np.float64)
    dense[internal] = docs.to_dense()[indexed]
    scores = queries.to_dense().astype(np.float64) @ dense.T
    out = []
    for q in range(len(queries)):
        s = scores[q].copy()
        if allowed is not None:
            s[~allowed] = 0
        order = np.lexsort((searcher.tie_key(np.arange(len(s))), -s))
        out.append([(int(d), float(s[d])) for d in order[:k] if s[d] > 0])
    return out


@pytest.mark.parametrize(
    ("name", "levels", "q_levels"),
    [("log-uniform", None, None), ("ties", [0.5, 1.0, 2.0, 0.003], [1.0, 0.5])],
)
def test_float_mode_is_the_float_top_k_hit_for_hit(tmp_path, name, levels, q_levels):
    docs = float_docs(700, seed=1, levels=levels)
    path, ids = build(tmp_path, docs, block_size=8)
    queries = float_queries(30, seed=2, levels=q_levels)
    blocks = NativeSearcher(path, scan_below=0)  # candidates from block-max even on this small index
    scans = NativeSearcher(path)
    quantized_misses = 0
    for k in (1, 10, 60, 5000):
        want = float_truth(blocks, docs, ids, queries, k)
        batch = blocks.batch_search_ids(queries, k=k, threads=2, mode="float")
        for q in range(len(queries)):
            for s in (blocks, scans):
                scores, got = s.search_ids(queries.take([q]), k=k, mode="float")
                assert got.tolist() == [d for d, _ in want[q]], (name, k, q)
                assert scores == pytest.approx([x for _, x in want[q]], rel=1e-12)
            assert batch[q][1].tolist() == [d for d, _ in want[q]]
            exact = blocks.search_ids(queries.take([q]), k=k)[1].tolist()
            quantized_misses += exact != [d for d, _ in want[q]]
    assert quantized_misses > 0  # rounding does reorder some of these rankings: the mode is not a no-op
    hits = blocks.search(queries.take([0]), k=3, mode="float")
    assert [h.docid for h in hits] == blocks.index.docids([d for d, _ in want[0][:3]])


def test_float_mode_under_masks_and_deletions(tmp_path):
    docs = float_docs(500, seed=3)
    path, ids = build(tmp_path, docs, block_size=4)
    queries = float_queries(20, seed=4)
    rng = np.random.default_rng(5)
    n = open_index(path).n_docs  # internal ids: documents without an impact are not indexed
    deleted = rng.random(n) < 0.3
    s = NativeSearcher(path, scan_below=0, deleted=deleted)
    allowed = rng.random(n) < 0.05  # selective: fewer than k documents may match
    for k in (10, 100):
        want = float_truth(s, docs, ids, queries, k, allowed=~deleted)
        masked = float_truth(s, docs, ids, queries, k, allowed=~deleted & allowed)
        for q in range(len(queries)):
            assert s.search_ids(queries.take([q]), k=k, mode="float")[1].tolist() == [d for d, _ in want[q]]
            got = s.search_ids(queries.take([q]), k=k, mode="float", mask=s.mask(allowed))[1]
            assert got.tolist() == [d for d, _ in masked[q]]


def test_the_float_store_keeps_every_weight_as_given(tmp_path):
    docs = float_docs(300, seed=6)
    path, ids = build(tmp_path, docs)
    ix = open_index(path)
    assert ix.has_float_weights and not ix.has_forward
    offsets, terms, weights = (np.asarray(ix.arrays[n]) for n in ("flt_offsets", "flt_terms", "flt_weights"))
    by_id = dict(zip(ids, docs.to_dicts(), strict=True))
    tiny = 0
    for d in range(ix.n_docs):
        span = slice(offsets[d], offsets[d + 1])
        row = {ix.vocab[t]: w for t, w in zip(terms[span], weights[span], strict=True)}
        assert row == pytest.approx(by_id[ix.docid(d)], rel=0, abs=0)
        tiny += sum(w * 100 < 0.5 for w in row.values())
    assert tiny > 0  # weights that round to impact 0 are kept too


def test_float_scores_kernel_matches_its_twin(tmp_path):
    path, _ = build(tmp_path, float_docs(200, seed=7))
    ix = open_index(path)
    store = tuple(np.asarray(ix.arrays[n]) for n in ("flt_offsets", "flt_terms", "flt_weights"))
    rng = np.random.default_rng(8)
    terms = rng.choice(len(ix.vocab), 12, replace=False).astype(np.int64)
    weights = rng.random(12)
    docs = rng.choice(ix.n_docs, 50, replace=False).astype(np.int64)
    got = score_kernels._float_scores(terms, weights, docs, *store, len(ix.vocab))
    want = score_ref.float_scores(terms, weights, docs, *store, len(ix.vocab))
    np.testing.assert_allclose(got, want, rtol=1e-12)
    assert score_kernels._float_scores(terms, weights, docs[:0], *store, len(ix.vocab)).shape == (0,)


def test_term_max_is_each_terms_largest_impact(tmp_path):
    docs = float_docs(300, seed=9)
    path, _ = build(tmp_path, docs, block_size=4)
    s = NativeSearcher(path)
    impacts = quantize(docs.to_dense())
    got = dict(zip(s.vocab, s.term_max().tolist(), strict=True))
    assert got == {t: int(impacts[:, VOCAB.index(t)].max()) for t in s.vocab}


def test_float_mode_refusals(tmp_path):
    docs = float_docs(100, seed=10)
    ids = [f"doc{i}" for i in range(100)]
    build_native_index(tmp_path / "plain", batches=iter_batches(ids, docs))
    q = float_queries(1, seed=11).take([0])
    with pytest.raises(InvalidOption, match=r"^mode: 'float' needs an index that keeps float weights"):
        NativeSearcher(tmp_path / "plain").search(q, mode="float")
    path, _ = build(tmp_path, docs)
    with pytest.raises(InvalidOption, match=r"^alpha: applies to mode='approx' only"):
        NativeSearcher(path).search(q, mode="float", alpha=0.5)
    assert NativeSearcher(path).search_ids(q, k=0, mode="float")[1].shape == (0,)
    vectors = tmp_path / "impacts.jsonl"
    vectors.write_text(json.dumps({"id": "a", "vector": {"t1": 3, "t2": 7}}) + "\n")
    with pytest.raises(ValueError, match="integer impacts already"):
        build_native_index(tmp_path / "given", vector_files=[vectors], float_weights=True)
    assert not (tmp_path / "given").exists()


def test_cli_builds_and_searches_float_weights(tmp_path, capsys):
    from plugin.cli import main

    docs = float_docs(400, seed=12)
    ids = [f"d{i}" for i in range(len(docs))]
    vectors = tmp_path / "vectors.jsonl"
    vectors.write_text(
        "".join(json.dumps({"id": i, "vector": v}) + "\n" for i, v in zip(ids, docs.to_dicts(), strict=True))
    )
    queries = float_queries(8, seed=13)
    topics = tmp_path / "topics.jsonl"
    topics.write_text(
        "".join(json.dumps({"id": f"q{i}", "vector": v}) + "\n" for i, v in enumerate(queries.to_dicts()))
    )
    assert main(["index", str(vectors), str(tmp_path / "idx"), "--float-weights"]) == 0
    run = tmp_path / "run.trec"
    argv = ["search", str(tmp_path / "idx"), "--topics", str(topics), "--output", str(run), "--k", "10"]
    assert main([*argv, "--mode", "float"]) == 0
    s = NativeSearcher(tmp_path / "idx")
    want = float_truth(s, docs, ids, queries, 10)
    lines = [line.split() for line in run.read_text().splitlines()]
    for q in range(len(queries)):
        got = [(row[2], float(row[4])) for row in lines if row[0] == f"q{q}"]
        assert [d for d, _ in got] == s.index.docids([d for d, _ in want[q]])
        assert [x for _, x in got] == pytest.approx([x for _, x in want[q]], abs=1e-6)  # a run's 6 decimals
    capsys.readouterr()
    for extra in (["--shards", "2"], ["--append"], ["--backend", "lucene"]):
        assert main(["index", str(vectors), str(tmp_path / "other"), "--float-weights", *extra]) != 0
        assert "--float-weights keeps float weights in a plain native index" in capsys.readouterr().err


def test_live_and_sharded_searchers_refuse_float_mode(tmp_path):
    from indexer.shards import build_sharded_index
    from plugin.live import LiveSearcher
    from plugin.sharded import ShardedSearcher

    docs = float_docs(120, seed=14)
    ids = [f"d{i}" for i in range(len(docs))]
    vectors = tmp_path / "vectors.jsonl"
    vectors.write_text(
        "".join(json.dumps({"id": i, "vector": v}) + "\n" for i, v in zip(ids, docs.to_dicts(), strict=True))
    )
    build_sharded_index(tmp_path / "sharded", [vectors], 2)
    q = float_queries(1, seed=15).take([0])
    refused = r"^mode: 'float' searches a plain native index, not a {} one"
    with pytest.raises(InvalidOption, match=refused.format("sharded")):
        ShardedSearcher(tmp_path / "sharded").search(q, mode="float")
    from indexer import live

    live.append(tmp_path / "live", [vectors])
    with pytest.raises(InvalidOption, match=refused.format("live")):
        LiveSearcher(tmp_path / "live").search(q, mode="float")


def test_corrupt_float_stores_are_refused(tmp_path):
    from indexer.files import META_SHA256, array_spec, meta_checksum

    path, _ = build(tmp_path, float_docs(100, seed=16))
    victim = path / "flt_weights.npy"
    array = np.load(victim)
    array[3] = 0.0
    np.save(victim, array)
    with pytest.raises(IndexCorruptError, match=r"flt_weights\.npy: checksum mismatch"):
        open_index(path)
    meta = json.loads((path / "meta.json").read_text())

    def rewrite(**arrays):  # consistent checksums: only the checks on the values can tell
        for name, a in arrays.items():
            np.save(path / f"{name}.npy", a)
            meta["arrays"][name] = array_spec(path / f"{name}.npy")
        meta[META_SHA256] = meta_checksum(meta)
        (path / "meta.json").write_text(json.dumps(meta))

    rewrite(flt_weights=array)
    with pytest.raises(IndexCorruptError, match="flt_weights holds a weight that is not a positive finite"):
        open_index(path)
    open_index(path, verify=False)  # values are checked with verify; shapes always
    rewrite(flt_weights=array[:-1])
    with pytest.raises(IndexCorruptError, match="flt_terms and flt_weights must hold as many values"):
        open_index(path, verify=False)
