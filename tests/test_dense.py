"""The dense store beside a native index, and bi-granular verification against numpy references."""

from __future__ import annotations

import gzip
import json

import numpy as np
import pytest

from indexer.dense import (
    DenseStoreError,
    DenseVectors,
    ids_sha256,
    open_dense_store,
    quantize_int8,
    read_dense_files,
)
from indexer.files import IndexCorruptError
from indexer.native.build import build_native_index
from indexer.quantize import quantize
from lsr.sparse import SparseBatch
from plugin.verify import BiGranularSearcher, exact_dense, fuse

VOCAB = tuple(f"t{i}" for i in range(60))
DIM = 16


def corpus(n: int = 300, seed: int = 0):
    """Sparse docs from 3 topics, unit dense vectors that lean to the same topics, and queries."""
    rng = np.random.default_rng(seed)
    topics = rng.integers(0, 3, n)
    centers = rng.normal(size=(3, DIM))
    rows = []
    for t in topics:
        terms = np.unique(np.concatenate([rng.integers(20 * t, 20 * t + 20, 6), rng.integers(0, 60, 2)]))
        rows.append({VOCAB[x]: float(rng.uniform(0.1, 3.0)) for x in terms})
    docs = SparseBatch.from_dicts(rows, VOCAB)
    dense = centers[topics] + rng.normal(size=(n, DIM))
    dense /= np.linalg.norm(dense, axis=1, keepdims=True)
    ids = [f"doc{i}" for i in range(n)]
    queries = SparseBatch.from_dicts(
        [{VOCAB[x]: float(rng.uniform(0.2, 2.0)) for x in rng.integers(0, 60, 5)} for _ in range(12)], VOCAB
    )
    q_dense = rng.normal(size=(12, DIM)).astype(np.float32)
    return ids, docs, dense.astype(np.float32), queries, q_dense


def build(tmp_path, name="index", dtype="fp16", n=300, seed=0, reorder="bp"):
    ids, docs, dense, queries, q_dense = corpus(n, seed)
    meta = build_native_index(
        tmp_path / name,
        batches=[(ids, docs)],
        reorder=reorder,
        dense=DenseVectors(ids, dense),
        dense_dtype=dtype,
    )
    return tmp_path / name, meta, ids, docs, dense, queries, q_dense


def reference(ids, docs, dense, query, q_dense, candidates, k, fusion="linear", weight=0.3, order=None):
    """Bi-granular top-k in plain numpy over internal ids ``order`` (the index's doc order: internal id
    -> input position), ties by input position."""
    d_imp = quantize(docs.to_dense(), 100).astype(np.int64)
    q_imp = quantize(query.to_dense()[0], 100).astype(np.int64)
    sparse = d_imp[order] @ q_imp
    internal = np.arange(len(order))
    pos = internal[sparse > 0]
    cand = pos[np.lexsort((order[pos], -sparse[pos]))][:candidates]
    dense_scores = dense[order][cand] @ q_dense
    fused = fuse(sparse[cand], dense_scores, fusion, weight)
    best = np.lexsort((order[cand], -fused))[:k]
    return cand[best], fused[best]


def test_store_rows_follow_the_reordered_doc_ids(tmp_path):
    index, meta, ids, _, dense, _, _ = build(tmp_path)
    s = BiGranularSearcher(index)
    assert meta["dense"]["dim"] == DIM and meta["dense"]["dtype"] == "fp16"
    position = {rid: i for i, rid in enumerate(ids)}
    order = np.array([position[s.sparse.index.docid(i)] for i in range(len(ids))])
    assert meta["reorder"] == "bp" and (order != np.arange(len(ids))).any()
    np.testing.assert_array_equal(s.store.gather(np.arange(len(ids))), dense[order].astype(np.float16))
    rows = np.array([5, 1, 299, 1])
    np.testing.assert_array_equal(s.store.gather(rows), dense[order][rows].astype(np.float16))


def test_int8_store_is_close_to_float(tmp_path):
    index, _, ids, _, dense, _, _ = build(tmp_path, dtype="int8")
    s = BiGranularSearcher(index)
    position = {rid: i for i, rid in enumerate(ids)}
    order = np.array([position[s.sparse.index.docid(i)] for i in range(len(ids))])
    got = s.store.gather(np.arange(len(ids)))
    step = np.abs(dense[order]).max(axis=1, keepdims=True) / 127
    assert np.all(np.abs(got - dense[order]) <= step / 2 + 1e-6)
    q, scale = quantize_int8(np.zeros((2, 4), np.float32))
    assert not q.any() and not scale.any()


@pytest.mark.parametrize("fusion", ["linear", "rrf"])
@pytest.mark.parametrize("candidates", [1, 7, 50, 1000])
def test_bi_granular_equals_the_numpy_reference(tmp_path, fusion, candidates):
    index, _, ids, docs, dense, queries, q_dense = build(tmp_path)
    s = BiGranularSearcher(index, candidates=candidates, fusion=fusion)
    position = {rid: i for i, rid in enumerate(ids)}
    order = np.array([position[s.sparse.index.docid(i)] for i in range(len(ids))])
    dense16 = dense.astype(np.float16).astype(np.float32)
    for i in range(len(queries)):
        q = queries.take([i])
        want_docs, want_scores = reference(
            ids, docs, dense16, q, q_dense[i], candidates, 10, fusion, order=order
        )
        got_scores, got_docs = s.search_ids(q, q_dense[i], k=10)
        np.testing.assert_array_equal(got_docs, want_docs)
        np.testing.assert_allclose(got_scores, want_scores, rtol=1e-5, atol=1e-6)
        hits = s.search(q, q_dense[i], k=10)
        assert [h.docid for h in hits] == [s.sparse.index.docid(int(d)) for d in want_docs]


def test_all_candidates_make_bi_granular_the_exact_fused_ranking(tmp_path):
    # With every matching document verified, the candidate limit loses nothing.
    index, _, ids, docs, dense, queries, q_dense = build(tmp_path, reorder="none")
    s = BiGranularSearcher(index, candidates=len(ids))
    dense16 = dense.astype(np.float16).astype(np.float32)
    for i in range(len(queries)):
        q = queries.take([i])
        want, _ = reference(ids, docs, dense16, q, q_dense[i], len(ids), 5, order=np.arange(len(ids)))
        timings: dict[str, float] = {}
        _, got = s.search_ids(q, q_dense[i], k=5, timings=timings)
        np.testing.assert_array_equal(got, want)
        assert set(timings) == {"sparse_search", "gather", "score", "fuse"}


@pytest.mark.parametrize("dtype", ["fp16", "int8"])
def test_dense_dot_kernel_equals_its_twin_and_the_float_product(tmp_path, dtype):
    from plugin.scorer import _kernels, reference
    from plugin.verify import dense_scores

    index, *_ = build(tmp_path, dtype=dtype, n=50)
    store = BiGranularSearcher(index).store
    q = np.random.default_rng(3).normal(size=DIM).astype(np.float32)
    for rows in (np.arange(50), np.array([0, 7, 8, 49]), np.zeros(0, np.int64), np.arange(10, 20)):
        codes = store.codes[rows]
        got = _kernels._dense_dot(codes, store.table, q)
        np.testing.assert_allclose(got, reference._dense_dot(codes, store.table, q), rtol=1e-5, atol=1e-6)
        assert got.dtype == np.float32 and got.shape == (len(rows),)
        if len(rows):
            want = store.gather(rows) @ q
            np.testing.assert_allclose(dense_scores(store, rows, q), want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("dtype", ["fp16", "int8"])
def test_prefetch_covers_any_rows_and_changes_nothing(tmp_path, dtype):
    index, *_, queries, q_dense = build(tmp_path, dtype=dtype, n=2000)
    store = BiGranularSearcher(index).store
    for rows in (
        np.arange(2000),
        np.array([0]),
        np.array([1999]),
        np.array([3, 4, 5, 900, 1999]),
        np.zeros(0, int),
    ):
        store.prefetch(rows)  # page ranges inside the map, first and last row included
    on, off = (
        BiGranularSearcher(index, candidates=300),
        BiGranularSearcher(index, candidates=300, prefetch=False),
    )
    for i in range(len(queries)):
        a, b = on.search_ids(queries.take([i]), q_dense[i]), off.search_ids(queries.take([i]), q_dense[i])
        np.testing.assert_array_equal(a[1], b[1])


def test_fusion_rules():
    sparse = np.array([9, 5, 5, 1])
    dense = np.array([0.1, 0.9, 0.2, 0.5], np.float32)
    np.testing.assert_allclose(fuse(sparse, dense, "linear", 0.3), dense + 0.3 * np.array([1, 0.5, 0.5, 0]))
    np.testing.assert_allclose(
        fuse(np.array([4, 4]), np.array([0.2, 0.1], np.float32)), [0.2, 0.1], rtol=1e-6
    )
    rrf = fuse(sparse, dense, "rrf")
    np.testing.assert_allclose(rrf[1], 1 / 62 + 1 / 61)
    np.testing.assert_allclose(rrf[0], 1 / 61 + 1 / 64)
    with pytest.raises(ValueError, match="fusion must be one of linear, rrf"):
        fuse(sparse, dense, "max")


@pytest.mark.parametrize("block", [7, 64, 100_000])
def test_exact_dense_scans_every_row(tmp_path, block):
    ids, docs, dense, _, q_dense = corpus(300)
    dense[10] = dense[3]  # a tie: the lower internal id wins
    build_native_index(tmp_path / "ix", batches=[(ids, docs)], dense=DenseVectors(ids, dense))
    s = BiGranularSearcher(tmp_path / "ix")
    store, ix = s.store, s.sparse.index
    matrix = store.gather(np.arange(len(ids)))
    tied = sorted(i for i in range(len(ids)) if ix.docid(i) in ("doc3", "doc10"))
    for query in (matrix[tied[0]] / 2, q_dense[0]):
        scores, rows = exact_dense(store, query, k=12, block=block)
        full = matrix @ query
        want = np.lexsort((np.arange(len(full)), -full))[:12]
        np.testing.assert_array_equal(rows, want)
        np.testing.assert_allclose(scores, full[want], rtol=1e-5, atol=1e-6)
    assert list(exact_dense(store, matrix[tied[0]], k=12, block=block)[1][:2]) == tied
    with pytest.raises(ValueError, match=r"dense query has shape \(3,\)"):
        exact_dense(store, np.zeros(3, np.float32))


def test_dense_files_in_any_order_are_aligned_and_extras_are_left_out(tmp_path, caplog):
    ids, docs, dense, _, _ = corpus(100)
    path = tmp_path / "dense.jsonl.gz"
    order = np.random.default_rng(1).permutation(len(ids))
    with gzip.open(path, "wt") as f:
        for i in order:
            f.write(json.dumps({"id": ids[i], "contents": "x", "vector": dense[i].tolist()}) + "\n")
        f.write(json.dumps({"id": "not-indexed", "vector": [0.5] * DIM}) + "\n")
    build_native_index(tmp_path / "ix", batches=[(ids, docs)], dense=[path])
    assert "1 dense vector(s) of documents the sparse index does not hold" in caplog.text
    s = BiGranularSearcher(tmp_path / "ix")
    for internal in (0, 17, 99):
        want = dense[ids.index(s.sparse.index.docid(internal))].astype(np.float16)
        np.testing.assert_array_equal(s.store.gather(np.array([internal]))[0], want)
    assert not list(tmp_path.glob(".ix.build-*"))


def test_a_document_without_a_dense_vector_fails_the_build_and_keeps_the_old_index(tmp_path):
    index, _, ids, docs, dense, _, _ = build(tmp_path, n=50)
    before = (index / "meta.json").read_text()
    with pytest.raises(ValueError, match="'doc49' is in the sparse index but has no dense vector"):
        build_native_index(index, batches=[(ids, docs)], dense=DenseVectors(ids[:-1], dense[:-1]))
    assert (index / "meta.json").read_text() == before
    BiGranularSearcher(index)


@pytest.mark.parametrize(
    "line, message",
    [
        ("{not json", "not valid JSON"),
        ('{"vector": [1, 2]}', "needs an 'id' field"),
        ('{"id": "b", "vector": {"a": 1}}', "'vector' must be a non-empty list of numbers"),
        ('{"id": "b", "vector": [1, 2, 3]}', "dimension 3, the first one had 2"),
        ('{"id": "b", "vector": [1, NaN]}', "NaN or infinity"),
        ('{"id": "b", "vector": [1, "x"]}', "must be a list of numbers"),
        ('{"id": "a", "vector": [1, 2]}', "duplicate id 'a' \\(first at .*:1\\)"),
    ],
)
def test_bad_dense_lines_name_file_and_line(tmp_path, line, message):
    path = tmp_path / "dense.jsonl"
    path.write_text('{"id": "a", "vector": [0.6, 0.8]}\n' + line + "\n")
    with pytest.raises(ValueError, match=f"dense.jsonl:2: .*{message}"):
        read_dense_files([path], tmp_path)


def test_store_errors(tmp_path):
    index, _, ids, docs, _, queries, _ = build(tmp_path, n=60)
    other, *_ = build(tmp_path, name="other", n=60, seed=1)
    plain = tmp_path / "plain"
    build_native_index(plain, batches=[(ids, docs)])
    with pytest.raises(DenseStoreError, match="has no dense store: build it with"):
        BiGranularSearcher(plain)

    s = BiGranularSearcher(index)
    with pytest.raises(ValueError, match="dense query has shape \\(8,\\), the store holds 16-d"):
        s.search_ids(queries.take([0]), np.zeros(8, np.float32))
    with pytest.raises(IndexError, match="candidate doc 60 is outside the dense store \\(60 rows"):
        s.store.gather(np.array([3, 60]))
    with pytest.raises(ValueError, match="no dense encoder was given"):
        s.search(queries.take([0]), "text query")

    # A store copied beside another index: its checksum entry in meta.json no longer matches.
    import shutil

    shutil.rmtree(other / "dense")
    shutil.copytree(index / "dense", other / "dense")
    with pytest.raises(DenseStoreError, match="does not match the checksum the index recorded"):
        BiGranularSearcher(other)
    # ... and with the entry copied too, the doc-id alignment check refuses it.
    meta = json.loads((other / "meta.json").read_text())
    meta["dense"] = json.loads((index / "meta.json").read_text())["dense"]
    (other / "meta.json").write_text(json.dumps(meta))
    entry = meta["dense"]
    ix = BiGranularSearcher(index).sparse.index
    with pytest.raises(DenseStoreError, match="is not aligned with the index"):
        open_dense_store(other, entry, "0" * 64)
    open_dense_store(index, entry, ids_sha256(ix.id_arrays))

    vectors = index / "dense" / "vectors.npy"
    data = bytearray(vectors.read_bytes())
    data[-3] ^= 0xFF
    vectors.write_bytes(bytes(data))
    with pytest.raises(IndexCorruptError, match=r"vectors\.npy: checksum mismatch"):
        BiGranularSearcher(index)
    vectors.unlink()
    with pytest.raises(IndexCorruptError, match=r"dense array vectors\.npy is missing"):
        BiGranularSearcher(index)
    shutil.rmtree(index / "dense")
    with pytest.raises(DenseStoreError, match="the dense store is missing"):
        BiGranularSearcher(index)


def test_dense_encoder_dimension_must_match_the_store(tmp_path, tiny_bert_dir, exported):
    index, *_ = build(tmp_path, n=40)  # 16-d store; the tiny BERT makes 32-d vectors
    with pytest.raises(ValueError, match=r"makes 32-d vectors, the store at .* holds 16-d"):
        BiGranularSearcher(index, dense_encoder=exported(tiny_bert_dir, "dense"))
    with pytest.raises(ValueError, match="is not a dense encoder"):
        BiGranularSearcher(index, dense_encoder=exported(tiny_bert_dir, "splade"))
    with pytest.raises(ValueError, match="candidates must be >= 1"):
        BiGranularSearcher(index, candidates=0)


def test_cli_encode_index_and_verified_search(tmp_path, tiny_bert_dir, exported, capsys):
    """lsr encode (dense, resumable) -> lsr index --dense -> lsr search --verify, as a user runs them."""
    from indexer.jsonvector import read_vectors
    from plugin.cli import main

    splade, dense_enc = exported(tiny_bert_dir, "splade"), exported(tiny_bert_dir, "dense")
    words = "the heart blood cell cells gene protein tower paris city river water brain cancer tumor".split()
    rng = np.random.default_rng(0)
    docs = [{"_id": f"d{i}", "text": " ".join(rng.choice(words, 12))} for i in range(40)]
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("".join(json.dumps(d) + "\n" for d in docs))
    queries = tmp_path / "queries.jsonl"
    queries.write_text(
        "".join(json.dumps({"_id": f"q{i}", "text": docs[i]["text"][:30]}) + "\n" for i in range(5))
    )
    sparse_vecs, dense_vecs = tmp_path / "sparse.jsonl.gz", tmp_path / "dense.jsonl.gz"
    assert main(["encode", str(splade), str(corpus), str(sparse_vecs)]) == 0
    # Encode the dense vectors in two goes: the second run resumes after the first 25 lines.
    head = tmp_path / "head.jsonl"
    head.write_text("".join(json.dumps(d) + "\n" for d in docs[:25]))
    assert main(["encode", str(dense_enc), str(head), str(dense_vecs)]) == 0
    assert main(["encode", str(dense_enc), str(corpus), str(dense_vecs)]) == 0
    assert "wrote 15, kept 25 from an earlier run" in capsys.readouterr().out
    rows = [json.loads(line) for line in gzip.open(dense_vecs, "rt")]
    assert [r["id"] for r in rows] == [d["_id"] for d in docs] and len(rows[0]["vector"]) == 32
    assert np.linalg.norm(rows[0]["vector"]) == pytest.approx(1.0, abs=1e-5)
    assert len(dict(read_vectors(sparse_vecs))) == 40

    index = tmp_path / "index"
    assert main(["index", str(sparse_vecs), str(index), "--dense", str(dense_vecs)]) == 0
    assert "dense store of 32-d fp16 vectors" in capsys.readouterr().out
    run = tmp_path / "run.trec"
    argv = ["search", str(index), "--encoder", str(splade), "--topics", str(queries), "--output", str(run)]
    timings = tmp_path / "timings.jsonl"
    assert (
        main([*argv, "--verify", str(dense_enc), "--candidates", "20", "--k", "5", "--timings", str(timings)])
        == 0
    )
    per_query = [json.loads(line) for line in timings.read_text().splitlines()]
    assert [t["id"] for t in per_query] == [f"q{i}" for i in range(5)]
    assert all(t["sparse_encode"] > 0 and t["gather"] >= 0 and "dense_encode" in t for t in per_query)
    out = capsys.readouterr().out
    for stage in ("sparse_encode", "sparse_search", "dense_encode", "gather", "score", "fuse", "total"):
        assert stage in out
    lines = run.read_text().splitlines()
    assert len(lines) == 25
    # The run is the Python searcher's, hit for hit.
    from lsr.runtime import load_encoder

    s = BiGranularSearcher(index, dense_encoder=dense_enc, candidates=20)
    q = load_encoder(splade, "query", max_length=64).encode([docs[0]["text"][:30]])
    want = [h.docid for h in s.search(q, docs[0]["text"][:30], k=5)]
    assert [line.split()[2] for line in lines[:5]] == want

    # Bad combinations name what is wrong.
    assert main([*argv, "--verify", str(dense_enc), "--alpha", "0.5"]) == 2
    assert "alpha: applies to mode 'approx' only" in capsys.readouterr().err
    approx = tmp_path / "approx.trec"
    assert (
        main([*argv[:-1], str(approx), "--verify", str(dense_enc), "--mode", "approx", "--alpha", "0.9"]) == 0
    )
    assert (
        main(
            [
                "index",
                str(sparse_vecs),
                str(tmp_path / "l"),
                "--backend",
                "lucene",
                "--dense",
                str(dense_vecs),
            ]
        )
        == 2
    )
    assert "--dense builds a dense store beside a native index" in capsys.readouterr().err
    plain = tmp_path / "plain"
    assert main(["index", str(sparse_vecs), str(plain)]) == 0
    assert main([*argv[:1], str(plain), *argv[2:], "--verify", str(dense_enc)]) == 2
    assert "has no dense store" in capsys.readouterr().err


def test_exact_dense_with_k_0_is_empty(tmp_path):
    index, *_ = build(tmp_path, n=50)
    s = BiGranularSearcher(index)
    scores, docs = exact_dense(s.store, np.ones(DIM, np.float32), k=0)
    assert len(scores) == len(docs) == 0
    assert s.dense_search(np.ones(DIM, np.float32), k=0) == []
