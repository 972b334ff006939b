"""The native index and the numba scorer: kernels vs numpy twins, exact vs brute force, bad input."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest

from indexer.files import IndexCorruptError
from indexer.native import _kernels as build_kernels
from indexer.native import reference as build_ref
from indexer.native.build import build_native_index, iter_batches
from indexer.native.format import block_ids, encode_ids, entry_counts, open_index
from indexer.quantize import quantize, quantize_batch
from lsr.sparse import SparseBatch
from plugin._topk import topk
from plugin.native import DIRECT_BELOW, DocMask, NativeSearcher
from plugin.scorer import _kernels as score_kernels
from plugin.scorer import reference as score_ref

VOCAB = tuple(f"t{i}" for i in range(300))


def random_docs(n, seed=0, n_terms=300, max_len=12, levels=None):
    rng = np.random.default_rng(seed)
    rows = []
    for _ in range(n):
        ids = rng.choice(n_terms, rng.integers(0, max_len), replace=False)
        w = rng.choice(levels, len(ids)) if levels is not None else rng.random(len(ids)) * 3 + 0.01
        rows.append({VOCAB[j]: float(x) for j, x in zip(ids, w, strict=True)})
    return SparseBatch.from_dicts(rows, VOCAB)


def topical_docs(n, n_topics=8, seed=0):
    """Documents drawn from disjoint topics, shuffled: reordering should regroup them."""
    rng = np.random.default_rng(seed)
    topic = rng.integers(0, n_topics, n)
    span = len(VOCAB) // n_topics
    rows = [{VOCAB[t * span + j]: 1.0 for j in rng.choice(span, 10, replace=False)} for t in topic.tolist()]
    return SparseBatch.from_dicts(rows, VOCAB), topic


def build(tmp_path, docs, name="idx", **kw):
    ids = [f"doc{i}" for i in range(len(docs))]
    build_native_index(tmp_path / name, batches=iter_batches(ids, docs, chunk=97), **kw)
    return tmp_path / name, ids


def brute_force(docs, queries, ids, k):
    """Exact reference: quantized integer dot products, ties by lower internal id (= kept docs order)."""
    scores = (quantize_batch(queries).to_scipy() @ quantize_batch(docs).to_scipy().T).toarray()
    return [
        [(ids[i], float(scores[q, i])) for i in topk(scores[q].astype(np.float64), k)]
        for q in range(len(queries))
    ]


# ------------------------------------------------------------------ build kernels
def test_invert_and_block_groups_match_their_twins():
    docs = quantize_batch(random_docs(500, seed=1))
    offsets, terms, impacts = docs.indptr, docs.term_ids, docs.weights.astype(np.uint16)
    got = build_kernels._invert(offsets, terms, impacts, len(VOCAB))
    want = build_ref.invert(offsets, terms, impacts, len(VOCAB))
    for g, w in zip(got, want, strict=True):
        np.testing.assert_array_equal(g, w)
    for block_size in (1, 7, 64, 1000):
        got_bm = build_kernels._groups(got[0], got[1], block_size)
        want_bm = build_ref.groups(want[0], want[1], block_size)
        for g, w in zip(got_bm, want_bm, strict=True):
            np.testing.assert_array_equal(g, w)


def test_move_gains_match_their_twin():
    docs = quantize_batch(random_docs(200, seed=2))
    order = np.random.default_rng(0).permutation(200)
    left, right = np.zeros(len(VOCAB), np.int64), np.zeros(len(VOCAB), np.int64)
    build_kernels._count_degrees(order, 0, 100, docs.indptr, docs.term_ids, left)
    build_kernels._count_degrees(order, 100, 200, docs.indptr, docs.term_ids, right)
    table = np.log2(np.arange(202) + 1e-300)
    table[0] = 0
    got = build_kernels._move_gains(order, docs.indptr, docs.term_ids, 100, left, right, table)
    want = build_ref.move_gains(order, docs.indptr, docs.term_ids, 100, left, right, table)
    np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-9)


def test_graph_bisection_regroups_topics(tmp_path):
    docs, topic = topical_docs(1024)
    path, _ = build(tmp_path, docs, block_size=32, reorder="bp")
    index = open_index(path)
    order = [int(index.docid(i)[3:]) for i in range(index.n_docs)]
    assert sorted(order) == list(range(1024))
    mixed_after = np.mean([len(set(topic[order[b : b + 32]].tolist())) for b in range(0, 1024, 32)])
    mixed_before = np.mean([len(set(topic[b : b + 32].tolist())) for b in range(0, 1024, 32)])
    assert mixed_before > 6 and mixed_after < 1.5, (mixed_before, mixed_after)


# ----------------------------------------------------------------- scorer kernels
KERNEL_ARRAYS = (
    *("term_blocks", "block_gap", "long_offsets", "block_long", "head_codes"),
    *("term_multis", "multi_count", "term_tails", "tail_codes"),
)


def kernel_inputs(index):
    return tuple(getattr(index, name) for name in KERNEL_ARRAYS)


NO_FILTER = (np.zeros(0, np.uint8), np.zeros(0, np.uint8))


def ties(index):
    """The kernels' (tie keys, their inverse): empty for an index that ranks ties by internal id."""
    return index.tie_arrays


def some_filters(n_docs, block_size, seed):
    """No filter, a random half, a selective few (0.5%), and none allowed: (allow, block_allow)."""
    rng = np.random.default_rng(seed)
    out = [NO_FILTER]
    for share in (0.5, 0.005, 0.0):
        m = DocMask.from_allowed(rng.random(n_docs) < share, block_size)
        out.append((m.docs, m.blocks))
    return out


@pytest.mark.parametrize(
    ("reorder", "block_size", "levels"),
    [
        ("none", 16, [0.5, 1.0, 2.0]),  # few levels: many tied scores
        ("bp", 16, [0.5, 1.0, 2.0]),
        ("bp", 1, [0.5, 1.0, 2.0]),  # one doc a block: gaps of 128 and more, every entry single
        ("bp", 128, [0.3, 2.7, 4.9, 6.0, 9.5]),  # impacts past 511: uint32 codes
    ],
)
def test_scorer_kernels_match_their_twins(tmp_path, reorder, block_size, levels):
    docs = random_docs(700, seed=3, levels=levels)
    path, _ = build(tmp_path, docs, block_size=block_size, reorder=reorder)
    ix = open_index(path)
    searcher = NativeSearcher(path)
    queries = random_docs(30, seed=4, max_len=8)
    offsets, terms, weights, bound = searcher.query_arrays(queries, beta=0.5)
    filters = some_filters(ix.n_docs, ix.block_size, seed=5)
    for q in range(len(queries)):
        t, w = terms[offsets[q] : offsets[q + 1]], weights[offsets[q] : offsets[q + 1]]
        for k, (allow, block_allow) in itertools.product((0, 1, 10, 2000), filters):
            scan_args = (t, w, *kernel_inputs(ix), ix.n_docs, ix.block_size, *ties(ix), k, allow)
            got = score_kernels._scan(*scan_args)
            want = score_ref.scan(*scan_args)
            for g, x in zip(got, want, strict=True):
                np.testing.assert_array_equal(g, x)
            if len(allow) and k:  # a filtered search is the unfiltered one over the allowed docs only
                allowed = allow[: ix.n_docs].astype(bool)
                full = score_ref.scan(
                    t, w, *kernel_inputs(ix), ix.n_docs, ix.block_size, *ties(ix), ix.n_docs, NO_FILTER[0]
                )
                keep = allowed[full[1]]
                np.testing.assert_array_equal(got[1], full[1][keep][:k])
            for n_bound, alpha in ((len(t), 1.0), (len(t), 0.6), (bound[q], 1.0), (bound[q], 0.8)):
                for walk_ratio in (0, 32):  # seek to every block, or read the (short) terms through
                    args = (
                        t,
                        w,
                        n_bound,
                        *kernel_inputs(ix),
                        ix.n_docs,
                        ix.block_size,
                        *ties(ix),
                        k,
                        alpha,
                        2,
                        walk_ratio,
                        allow,
                        block_allow,
                    )
                    got = score_kernels._block_max(*args)
                    want = score_ref.block_max(*args)
                    np.testing.assert_array_equal(got[0], want[0])
                    np.testing.assert_array_equal(got[1], want[1])
                    assert got[2] == want[2]


@pytest.mark.parametrize("block_size", [1, 3, 16])
def test_seeking_through_long_terms_matches_reading_them(tmp_path, block_size):
    """Terms with hundreds of entries (many skips, long gaps at block size 1): seeking to the visited
    blocks from the skips scores exactly what reading every entry does, and both equal the twin."""
    docs = random_docs(3000, seed=21, n_terms=40, max_len=10, levels=[0.5, 1.0, 2.0, 3.5])
    path, _ = build(tmp_path, docs, block_size=block_size, reorder="bp")
    ix = open_index(path)
    searcher = NativeSearcher(path)
    assert np.diff(ix.term_blocks.astype(np.int64)).max() > 2 * score_kernels.STRIDE
    queries = random_docs(25, seed=22, n_terms=40, max_len=12)
    offsets, terms, weights, bound = searcher.query_arrays(queries, beta=0.5)
    for q in range(len(queries)):
        t, w = terms[offsets[q] : offsets[q + 1]], weights[offsets[q] : offsets[q + 1]]
        for k, alpha, n_bound in ((10, 1.0, len(t)), (100, 1.0, len(t)), (10, 0.7, bound[q])):
            args = (t, w, n_bound, *kernel_inputs(ix), ix.n_docs, ix.block_size, *ties(ix), k, alpha, 4)
            want = score_ref.block_max(*args, 0, *NO_FILTER)
            for walk_ratio in (0, 1, 10**9):
                got = score_kernels._block_max(*args, walk_ratio, *NO_FILTER)
                for g, x in zip(got, want, strict=True):
                    np.testing.assert_array_equal(g, x)


def test_scores_past_int32_are_exact(tmp_path):
    """Impacts and query weights at the quantization's ceiling (65,500 x 65,500): no overflow."""
    docs = random_docs(300, seed=14, levels=[0.5, 300.0, 655.0])
    path, _ = build(tmp_path, docs, block_size=16)
    searcher = NativeSearcher(path, scan_below=0)
    queries = random_docs(20, seed=15, max_len=4, levels=[1.0, 655.0])
    for q in range(len(queries)):
        row = queries.take([q])
        _, t, w, bound = searcher.query_arrays(row)
        got = score_kernels._block_max(t, w, bound[0], *searcher._args, 10, 1.0, 2, 0, *NO_FILTER)
        want = score_ref.block_max(t, w, bound[0], *searcher._args, 10, 1.0, 2, 0, *NO_FILTER)
        scan = searcher.search_ids(row, 10, mode="scan")
        for g, x, y in zip(got[:2], want[:2], scan, strict=True):
            np.testing.assert_array_equal(g, x)
            np.testing.assert_array_equal(g, y)
    assert max(searcher.search_ids(queries.take([q]), 1)[0].max(initial=0) for q in range(20)) >= 2**31


def test_query_kernel_matches_its_numpy_twin(tmp_path):
    """search() prepares one query in numba; query_arrays is the numpy path (and batch_search's)."""
    path, _ = build(tmp_path, random_docs(200, seed=11))
    searcher = NativeSearcher(path)
    rng = np.random.default_rng(12)
    other = ("zzz", *VOCAB[:50])  # a foreign term, and the index's vocabulary in another order
    rows = [{"zzz": 1.0, "t3": 0.004, "t4": 0.006, "t5": 0.015, "t6": 0.025}, {}, {"zzz": 2.0}]
    for _ in range(40):
        rows.append({t: float(rng.choice([0.5, 1.0, rng.random() * 3])) for t in rng.choice(other, 12)})
    for queries in (SparseBatch.from_dicts(rows, other), random_docs(40, seed=13)):
        mapping = searcher._mapping(queries.vocab)
        for q in range(len(queries)):
            row = queries.take([q])
            _, want_t, want_w, _ = searcher.query_arrays(row)
            got_t, got_w = score_kernels._query(mapping, row.term_ids, quantize(row.weights, 100.0))
            np.testing.assert_array_equal(got_t, want_t)
            np.testing.assert_array_equal(got_w, want_w)


# ------------------------------------------------------------- exact vs brute force
@pytest.mark.parametrize(
    ("name", "docs"),
    [
        ("random", random_docs(600, seed=5)),
        ("all-equal weights", random_docs(600, seed=6, levels=[1.0])),
        ("single-term docs", random_docs(400, seed=7, max_len=2)),
        ("topical", topical_docs(512)[0]),
    ],
)
def test_exact_search_is_brute_force_hit_for_hit(tmp_path, name, docs):
    path, ids = build(tmp_path, docs, block_size=8)
    searcher = NativeSearcher(path, scan_below=0)  # block-max even on this small index
    small = NativeSearcher(path)  # the default scans an index this small
    kept = [ids[i] for i in range(len(docs)) if docs.row_nnz()[i] > 0]
    docs_kept = docs.take(np.flatnonzero(docs.row_nnz() > 0))
    assert searcher.index.has_tie_order  # reordered: internal ids are not the input order
    rng = np.random.default_rng(8)
    queries = SparseBatch.from_dicts(
        [
            {VOCAB[j]: float(rng.random() * 2) for j in rng.choice(300, rng.integers(1, 6), replace=False)}
            for _ in range(40)
        ]
        + [{}, {"t0": 1.0}],
        VOCAB,
    )
    scores = (quantize_batch(queries).to_scipy() @ quantize_batch(docs_kept).to_scipy().T).toarray()
    for k in (1, 10, 5000):
        batch = searcher.batch_search(queries, k=k, threads=2)
        for q in range(len(queries)):
            # Ties go to the earlier document in the input (not the lower id after reordering).
            want = [(kept[i], float(scores[q][i])) for i in topk(scores[q], k)]
            got = [(h.docid, h.score) for h in searcher.search(queries.take([q]), k=k)]
            assert got == want, (name, k, q)
            assert [(h.docid, h.score) for h in batch[q]] == want
            assert [(h.docid, h.score) for h in searcher.search(queries.take([q]), k=k, mode="scan")] == want
            assert [(h.docid, h.score) for h in small.search(queries.take([q]), k=k)] == want


def test_queries_with_unknown_terms_and_other_vocabularies(tmp_path):
    docs = random_docs(100, seed=9)
    path, _ = build(tmp_path, docs)
    searcher = NativeSearcher(path)
    other = ("zzz", "t5", "t7")  # a query vocabulary that differs from the index's
    q = SparseBatch.from_dicts([{"zzz": 2.0, "t5": 1.0, "t7": 0.5}], other)
    same = SparseBatch.from_dicts([{"t5": 1.0, "t7": 0.5}], VOCAB)
    assert searcher.search(q, k=20) == searcher.search(same, k=20)
    assert searcher.search(SparseBatch.from_dicts([{"zzz": 1.0}], other), k=5) == []


def test_approximate_mode_trades_blocks_for_recall(tmp_path):
    docs, _ = topical_docs(2048, seed=1)
    path, _ = build(tmp_path, docs, block_size=16)
    searcher = NativeSearcher(path, scan_below=0)
    queries = topical_docs(50, seed=2)[0]
    exact = searcher.batch_search(queries, k=10)
    recalls = []
    for alpha in (1.0, 0.8, 0.5, 0.2):
        approx = searcher.batch_search(queries, k=10, mode="approx", alpha=alpha)
        recalls.append(
            np.mean(
                [
                    len({h.docid for h in a} & {h.docid for h in e}) / 10
                    for a, e in zip(approx, exact, strict=True)
                ]
            )
        )
    assert recalls[0] == 1.0
    assert all(a >= b - 1e-9 for a, b in itertools.pairwise(recalls))
    with pytest.raises(ValueError, match="alpha: applies to mode='approx' only"):
        searcher.search(queries.take([0]), alpha=0.5)
    with pytest.raises(ValueError, match="alpha: must be in"):
        searcher.search(queries.take([0]), mode="approx", alpha=0)
    with pytest.raises(ValueError, match="mode: must be one of exact, approx, scan"):
        searcher.search(queries.take([0]), mode="fast")


# ------------------------------------------------------------------ format and input
@pytest.mark.parametrize(
    ("ids", "kind"),
    [
        (["doc3", "doc10", "doc0", "doc7"], "numbered"),
        (["4983", "5", "0", "12"], "numbered"),  # numbers alone (BEIR's SciFact, MS MARCO)
        (["q-1", "q-18446744073709551615"], "utf8"),  # past 2**63
        (["doc1", "doc01"], "utf8"),  # a leading zero would not come back
        (["doc1", "Doc2"], "utf8"),  # two prefixes
        (["doc1", "doc"], "utf8"),  # no number
        (["doc1", "doc\u0663"], "utf8"),  # a non-ASCII digit
        (["d\u00e9j\u00e0-1", "d\u00e9j\u00e0-22"], "numbered"),
        (["a", "b", "c"], "utf8"),
    ],
)
def test_external_ids_are_stored_as_numbers_when_they_come_back(tmp_path, ids, kind):
    """Ids of one prefix and a canonical decimal number are stored as numbers (4 bytes an id), any
    others as UTF-8; the index gives every id back either way."""
    assert encode_ids(ids)[0] == kind
    docs = SparseBatch.from_dicts([{VOCAB[i]: 1.0 + i, VOCAB[i + 1]: 0.5} for i in range(len(ids))], VOCAB)
    build_native_index(tmp_path / "ix", batches=iter_batches(ids, docs, chunk=2), block_size=2)
    ix = open_index(tmp_path / "ix")
    assert ix.meta["docids"] == kind and set(ix.id_arrays) == set(encode_ids(ids)[1])
    assert sorted(ix.docids(range(ix.n_docs))) == sorted(ids)
    assert [ix.docid(i) for i in range(ix.n_docs)] == ix.docids(np.arange(ix.n_docs))


def test_numbered_ids_past_32_bits(tmp_path):
    ids = ["7", str(2**40), str(2**63 - 1)]
    kind, arrays = encode_ids(ids)
    assert kind == "numbered" and arrays["docid_numbers"].dtype == np.int64
    docs = SparseBatch.from_dicts([{"t1": 1.0}, {"t2": 1.0}, {"t1": 2.0}], VOCAB)
    build_native_index(tmp_path / "ix", batches=iter_batches(ids, docs, chunk=2))
    assert sorted(open_index(tmp_path / "ix").docids(range(3))) == sorted(ids)


def test_build_from_files_with_bad_input(tmp_path, caplog):
    v = tmp_path / "v.jsonl"
    v.write_text(
        "".join(
            json.dumps(x) + "\n"
            for x in [
                {"id": "a", "vector": {"paris": 1.5, "tower": 0.2}},
                {"id": "b", "vector": {}},
                {"id": "c", "vector": {"new york": 1.0, "café": 2.0}},
            ]
        )
    )
    meta = build_native_index(tmp_path / "idx", vector_files=[v])
    assert (meta["n_docs"], meta["skipped_empty"]) == (2, 1)
    assert "1 document(s) with empty vectors skipped" in caplog.text
    searcher = NativeSearcher(tmp_path / "idx")
    q = SparseBatch.from_dicts([{"new york": 1.0, "paris": 1.0}], ("new york", "paris"))
    assert [(h.docid, h.score) for h in searcher.search(q)] == [("a", 15000.0), ("c", 10000.0)]
    for text, message in {
        '{"id": "x", "vector": {"p": -1}}\n': r"v2\.jsonl:1: .*weight -1 must be finite",
        '{"id": "x", "vector": {"p": 1}}\n{"id": "x", "vector": {"p": 2}}\n': r"v2\.jsonl:2: duplicate id",
        '{"vector": {"p": 1}}\n': r"v2\.jsonl:1: missing field 'id'",
    }.items():
        (tmp_path / "v2.jsonl").write_text(text)
        with pytest.raises(ValueError, match=message):
            build_native_index(tmp_path / "idx", vector_files=[tmp_path / "v2.jsonl"])
        assert len(NativeSearcher(tmp_path / "idx")) == 2  # the old index is intact
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_corrupt_truncated_and_foreign_indexes_are_refused(tmp_path):
    path, _ = build(tmp_path, random_docs(200, seed=10))
    open_index(path)
    victim = path / "tail_codes.npy"
    data = bytearray(victim.read_bytes())
    data[-1] ^= 0xFF
    victim.write_bytes(bytes(data))
    with pytest.raises(IndexCorruptError, match=r"tail_codes\.npy: checksum mismatch"):
        open_index(path)
    victim.write_bytes(bytes(data[:-10]))
    with pytest.raises(IndexCorruptError, match=r"tail_codes\.npy: cannot be read"):
        open_index(path, verify=False)
    data[-1] ^= 0xFF
    victim.write_bytes(bytes(data))
    open_index(path)
    (path / "multi_count.npy").unlink()
    with pytest.raises(IndexCorruptError, match=r"multi_count\.npy is missing"):
        open_index(path, verify=False)
    meta = json.loads((path / "meta.json").read_text())
    meta["format_version"] = 99
    (path / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="format version 99 is not supported"):
        open_index(path)
    with pytest.raises(FileNotFoundError, match="not a native lsr index"):
        open_index(tmp_path)


def test_integer_and_float_vector_files_are_not_mixed(tmp_path):
    ints, floats = tmp_path / "ints.jsonl", tmp_path / "floats.jsonl"
    ints.write_text('{"id": "a", "vector": {"p": 3}}\n')
    floats.write_text('{"id": "b", "vector": {"p": 0.5}}\n')
    assert build_native_index(tmp_path / "idx", vector_files=[ints])["quantization"] == "given"
    with pytest.raises(ValueError, match="mixing pre-quantized"):
        build_native_index(tmp_path / "idx2", vector_files=[ints, floats])


@pytest.mark.parametrize(
    ("block_size", "levels", "code_dtype"),
    [(1, None, np.uint16), (4, None, np.uint16), (128, None, np.uint16), (7, [0.01, 5.11], np.uint16),
     (7, [0.01, 5.12], np.uint32), (128, [0.2, 30.0, 655.0], np.uint32)],
)  # fmt: skip
def test_block_postings_decode_to_the_quantized_documents(tmp_path, block_size, levels, code_dtype):
    """Format 4 codes an entry (term, block) in a byte (gap, one-posting flag), its highest-impact
    posting (the head) in 16 bits (impact, place), and a count byte and the other postings when it
    has more; decoding gives back every posting, and each head is its entry's maximum."""
    docs = random_docs(700, seed=5, levels=levels)
    path, ids = build(tmp_path, docs, block_size=block_size, reorder="bp")
    ix = open_index(path)
    assert ix.head_codes.dtype == ix.tail_codes.dtype == code_dtype
    assert ix.block_gap.dtype == ix.multi_count.dtype == np.uint8
    assert ix.term_blocks.dtype == ix.term_tails.dtype == ix.docid_numbers.dtype == np.uint32
    post_offsets, post_docs, post_impacts = ix.postings()
    q = quantize_batch(docs)
    internal = {ix.docid(i): i for i in range(ix.n_docs)}
    want = {}
    for row, rid in enumerate(ids):
        s, e = q.indptr[row], q.indptr[row + 1]
        for t, x in zip(q.term_ids[s:e].tolist(), q.weights[s:e].tolist(), strict=True):
            want.setdefault(ix.vocab.index(VOCAB[t]), []).append((internal[rid], int(x)))
    for t in range(len(ix.vocab)):
        s, e = post_offsets[t], post_offsets[t + 1]
        got = list(zip(post_docs[s:e].tolist(), post_impacts[s:e].tolist(), strict=True))
        assert sorted(got) == sorted(want.get(t, [])), t
    blocks = block_ids(ix.block_gap, ix.block_long, ix.term_blocks)
    counts = entry_counts(ix.block_gap, ix.multi_count)
    assert counts.sum() == len(post_docs) and (counts >= 1).all() and (counts <= block_size).all()
    entry_of_posting = np.repeat(np.arange(len(blocks)), counts)
    np.testing.assert_array_equal(blocks[entry_of_posting], post_docs // block_size)
    first = np.concatenate([[0], np.cumsum(counts)[:-1]])
    true_max = np.zeros(len(blocks), np.int64)
    np.maximum.at(true_max, entry_of_posting, post_impacts)
    np.testing.assert_array_equal(post_impacts[first], true_max)
    for term in range(len(ix.vocab)):  # a term's blocks ascend
        assert (np.diff(blocks[ix.term_blocks[term] : ix.term_blocks[term + 1]]) > 0).all()
    if block_size == 1:
        assert len(ix.block_long) > 0  # the long-gap path is exercised


def test_order_entries_matches_its_twin():
    rng = np.random.default_rng(3)
    counts = rng.integers(1, 128, 300)
    first = np.concatenate([[0], np.cumsum(counts)[:-1]])
    codes = ((rng.integers(0, 4, counts.sum()) << 7) | rng.integers(0, 128, counts.sum())).astype(np.uint16)
    got, want = codes.copy(), codes.copy()
    build_kernels._order_entries(first, counts, got)
    build_ref.order_entries(first, counts, want)
    np.testing.assert_array_equal(got, want)


def test_rows_kernel_matches_its_twin():
    """Postings back to rows (what a merge of segments does), with deleted docs and a term mapping
    that is not monotone."""
    docs = quantize_batch(random_docs(300, seed=31))
    offsets, terms, impacts = docs.indptr, docs.term_ids, docs.weights.astype(np.uint16)
    post = build_kernels._invert(offsets, terms, impacts, len(VOCAB))
    rng = np.random.default_rng(32)
    mapping = rng.permutation(len(VOCAB)).astype(np.int64)
    new_doc = np.where(rng.random(300) < 0.2, -1, 0).astype(np.int64)
    live = new_doc >= 0
    new_doc[live] = np.arange(int(live.sum()))
    order = np.argsort(mapping, kind="stable")
    got = build_kernels._rows(*post, order, mapping, new_doc, int(live.sum()))
    want = build_ref.rows(*post, order, mapping, new_doc, int(live.sum()))
    for g, w in zip(got, want, strict=True):
        np.testing.assert_array_equal(g, w)


def test_forward_store_scores_selective_filters_exactly(tmp_path):
    """An index built with forward=True stores each document's terms; a filter allowing few documents
    is scored from them (the kernel equals its twin), hit for hit what the blocks give without it."""
    docs = random_docs(4000, seed=41, levels=[0.5, 1.0, 2.0])
    with_fwd, _ = build(tmp_path, docs, name="fwd", block_size=16, forward=True, reorder="none")
    plain, _ = build(tmp_path, docs, name="plain", block_size=16, reorder="none")
    ix = open_index(with_fwd)
    assert ix.has_forward and ix.meta["forward"] is True
    offsets, post_docs, post_impacts = ix.postings()
    want_rows = build_ref.rows(
        offsets,
        post_docs,
        post_impacts,
        np.arange(ix.meta["n_terms"]),
        np.arange(ix.meta["n_terms"]),
        np.arange(ix.n_docs),
        ix.n_docs,
    )
    np.testing.assert_array_equal(np.asarray(ix.fwd_offsets, np.int64), want_rows[0])
    np.testing.assert_array_equal(np.asarray(ix.fwd_terms, np.int64), want_rows[1])
    np.testing.assert_array_equal(ix.fwd_impacts, want_rows[2])
    a, b = NativeSearcher(with_fwd, scan_below=0), NativeSearcher(plain, scan_below=0)
    rng = np.random.default_rng(42)
    queries = random_docs(20, seed=43, max_len=8)
    for share in (0.001, 0.003, 0.01, 0.3):
        allowed = rng.random(ix.n_docs) < share
        ma, mb = a.mask(allowed), b.mask(allowed)
        assert a._direct(ma) == (ma.count < DIRECT_BELOW * ix.n_docs) and not b._direct(mb)
        for q in range(len(queries)):
            row = queries.take([q])
            for k in (1, 10, 100):
                got = a.search_ids(row, k, mask=ma)
                want = b.search_ids(row, k, mask=mb)
                for g, x in zip(got, want, strict=True):
                    np.testing.assert_array_equal(g, x)
                _, t, w, _ = a.query_arrays(row)
                twin = score_ref.score_docs(
                    t,
                    w,
                    ma.ids(),
                    ix.fwd_offsets,
                    ix.fwd_terms,
                    ix.fwd_impacts,
                    ix.meta["n_terms"],
                    k,
                    *ties(ix),
                )
                for g, x in zip(got, twin, strict=True):
                    np.testing.assert_array_equal(g, x)
        batch_a = a.batch_search_ids(queries, 10, threads=2, mask=ma)
        batch_b = b.batch_search_ids(queries, 10, threads=2, mask=mb)
        for (sa, da), (sb, db) in zip(batch_a, batch_b, strict=True):
            np.testing.assert_array_equal(sa, sb)
            np.testing.assert_array_equal(da, db)


def test_locate_finds_numbered_and_text_ids(tmp_path):
    docs = random_docs(50, seed=51)
    path, _ = build(tmp_path, docs)
    ix = open_index(path)
    present = ix.docids(range(2))
    got = ix.locate([present[1], "doc07", "x", present[0], "doc"])
    assert got[1] == got[2] == got[4] == -1
    assert got[0] == 1 and got[3] == 0
    build_native_index(tmp_path / "t", batches=[([f"id-{i}x" for i in range(50)], docs)])
    tx = open_index(tmp_path / "t")
    assert tx.meta["docids"] == "utf8"
    got = tx.locate(["id-3x", "nope"])
    assert tx.docid(int(got[0])) == "id-3x" and got[1] == -1
