"""The real-seeded generator (bench.realseed) on hand-made seeds, and the corpus statistics on a tiny case."""

from __future__ import annotations

import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal

from bench.corpus_stats import corpus_stats, posting_stats, tie_stats, weight_skew
from bench.realseed import RealSeededCollection, Seeds, msmarco_queries, nearest_neighbours, seeds_missing
from lsr.idf import bm25_idf
from lsr.sparse import SparseBatch
from tests.conftest import SHARED_DATA

VOCAB = tuple(f"t{i}" for i in range(200))


def random_batch(rng, n: int, terms: int, vocab=VOCAB) -> SparseBatch:
    """``n`` rows of ``terms`` distinct terms each, weights in (0.05, 2.5)."""
    ids = np.sort(np.stack([rng.choice(len(vocab), terms, replace=False) for _ in range(n)]), axis=1)
    w = rng.uniform(0.05, 2.5, ids.shape).astype(np.float32)
    indptr = np.arange(n + 1, dtype=np.int64) * terms
    return SparseBatch(indptr, ids.ravel().astype(np.int32), w.ravel(), vocab)


@pytest.fixture(scope="module")
def seeds() -> Seeds:
    rng = np.random.default_rng(0)
    docs = random_batch(rng, 40, 30)
    queries = random_batch(rng, 12, 8)
    tokens = SparseBatch(queries.indptr, queries.term_ids, np.ones(queries.nnz, np.float32), VOCAB)
    return Seeds(docs, queries, tokens, {"hand": (40, 12)})


def generate(coll: RealSeededCollection, n: int, chunk: int = 64) -> tuple[list[str], SparseBatch]:
    ids, parts = [], []
    for i, b in coll.documents(n, chunk=chunk):
        ids.extend(i)
        parts.append(b)
    return ids, SparseBatch.concat(parts)


def seed_of(ids: list[str], seeds: Seeds) -> np.ndarray:
    return np.array([int(i[3:]) for i in ids]) % len(seeds.docs)


def as_sets(batch: SparseBatch) -> list[set[int]]:
    return [set(t.tolist()) for t, _ in batch]


# ------------------------------------------------------------------ generator
def test_deterministic_from_seed(seeds):
    a_ids, a = generate(RealSeededCollection(seeds, seed=3), 300)
    b_ids, b = generate(RealSeededCollection(seeds, seed=3), 300)
    assert a_ids == b_ids
    for x, y in ((a.indptr, b.indptr), (a.term_ids, b.term_ids), (a.weights, b.weights)):
        assert_array_equal(x, y)
    c_ids, c = generate(RealSeededCollection(seeds, seed=4), 300)
    assert c_ids != a_ids
    assert c.nnz != a.nnz or not np.array_equal(c.term_ids, a.term_ids)


def test_ids_are_a_permutation_in_random_order(seeds):
    ids, batch = generate(RealSeededCollection(seeds), 250, chunk=32)
    assert len(batch) == 250 and batch.vocab == VOCAB
    assert sorted(ids) == sorted(f"doc{i}" for i in range(250))
    assert ids != [f"doc{i}" for i in range(250)]


def test_every_seed_used_equally(seeds):
    ids, _ = generate(RealSeededCollection(seeds), 400)
    assert_array_equal(np.bincount(seed_of(ids, seeds)), np.full(40, 10))


def test_keep_subsamples_the_seed(seeds):
    ids, batch = generate(RealSeededCollection(seeds, keep=0.5, noise=0.0, borrow=0.0), 400)
    src = seed_of(ids, seeds)
    seed_sets = as_sets(seeds.docs)
    for (terms, w), s in zip(batch, src, strict=True):
        st, sw = seeds.docs.row(int(s))
        assert set(terms.tolist()) <= seed_sets[s]
        assert_array_equal(w, sw[np.searchsorted(st, terms)])  # no noise: the seed's own weights
    assert batch.row_nnz().mean() == pytest.approx(0.5 * 30, rel=0.05)
    full_ids, full = generate(RealSeededCollection(seeds, keep=1.0, noise=0.0, borrow=0.0), 40)
    want = seeds.docs.take(seed_of(full_ids, seeds))
    assert_array_equal(full.term_ids, want.term_ids)
    assert_array_equal(full.weights, want.weights)


def test_noise_moves_the_activation_log_normally(seeds):
    coll = RealSeededCollection(seeds, keep=1.0, noise=0.2, borrow=0.0)
    ids, batch = generate(coll, 2000, chunk=500)
    want = seeds.docs.take(seed_of(ids, seeds))
    assert_array_equal(batch.term_ids, want.term_ids)
    lo, hi = coll.weight_range
    assert batch.weights.min() >= np.float32(lo) and batch.weights.max() <= np.float32(hi)
    inside = (batch.weights > np.float32(lo)) & (batch.weights < np.float32(hi))
    ratio = np.log(np.expm1(batch.weights[inside].astype(np.float64)) / np.expm1(want.weights[inside]))
    assert ratio.std() == pytest.approx(0.2, rel=0.05)
    assert abs(np.median(ratio)) < 0.02


def test_borrowed_terms_come_from_a_neighbour(seeds):
    coll = RealSeededCollection(seeds, keep=0.6, noise=0.0, borrow=0.3, neighbours=3)
    ids, batch = generate(coll, 600)
    nbrs = nearest_neighbours(seeds.docs, 3)
    seed_sets = as_sets(seeds.docs)
    foreign = 0
    for (terms, w), s in zip(batch, seed_of(ids, seeds), strict=True):
        extra = set(terms.tolist()) - seed_sets[s]
        foreign += len(extra)
        if extra:
            # All of them from one of the seed's neighbours, with that neighbour's weights.
            donors = [n for n in nbrs[s] if n >= 0 and extra <= seed_sets[n]]
            assert donors
            nt, nw = seeds.docs.row(int(donors[0]))
            picked = np.isin(terms, list(extra))
            if len(donors) == 1:
                assert_array_equal(w[picked], nw[np.searchsorted(nt, terms[picked])])
    assert foreign / batch.nnz == pytest.approx(0.3, abs=0.03)
    _, none = generate(RealSeededCollection(seeds, keep=0.6, noise=0.0, borrow=0.0), 600)
    assert none.row_nnz().mean() < batch.row_nnz().mean()


def test_knobs_are_checked(seeds):
    for bad in ({"keep": 0.0}, {"keep": 1.5}, {"noise": -0.1}, {"borrow": 1.0}, {"neighbours": 0}):
        with pytest.raises(ValueError):
            RealSeededCollection(seeds, **bad)


def test_nearest_neighbours_match_brute_force(seeds, tmp_path):
    dense = seeds.docs.to_dense().astype(np.float64)
    scores = dense @ dense.T
    np.fill_diagonal(scores, -np.inf)
    got = nearest_neighbours(seeds.docs, 5)
    assert_array_equal(got, np.argsort(-scores, axis=1, kind="stable")[:, :5])
    cached = nearest_neighbours(seeds.docs, 5, tmp_path)
    assert_array_equal(cached, got)
    assert len(list(tmp_path.glob("*.npy"))) == 1
    assert_array_equal(nearest_neighbours(seeds.docs, 5, tmp_path), got)  # read back
    two = SparseBatch(
        np.array([0, 1, 2], np.int64), np.array([0, 1], np.int32), np.ones(2, np.float32), VOCAB
    )
    assert_array_equal(nearest_neighbours(two, 3), [[-1, -1, -1], [-1, -1, -1]])  # no shared term


def test_queries(seeds):
    coll = RealSeededCollection(seeds)
    q = coll.splade_queries(5)
    assert len(q) == 5
    rows = {tuple(t.tolist()) for t, _ in seeds.queries}
    assert all(tuple(t.tolist()) in rows for t, _ in q)
    with pytest.raises(ValueError):
        coll.splade_queries(5, "bm25")
    _, docs = generate(coll, 200)
    df = np.bincount(docs.term_ids, minlength=len(VOCAB))
    idf = coll.idf_queries(5, df, len(docs))
    tokens = seeds.query_tokens.take(coll._query_order(5))
    for (t, w), (qt, _) in zip(idf, tokens, strict=True):
        assert_array_equal(t, qt[df[qt] > 0])
        assert_allclose(w, bm25_idf(df[t], len(docs)))


@pytest.mark.slow
def test_real_seeds_and_queries():
    reason = seeds_missing(("med",), SHARED_DATA)
    if reason:
        pytest.skip(reason)
    from bench.realseed import load_seeds

    seeds = load_seeds(("med",), SHARED_DATA)
    assert len(seeds.docs) == seeds.sizes["med"][0] and len(seeds.queries) == seeds.sizes["med"][1]
    assert len(seeds.query_tokens) == len(seeds.queries)
    _, batch = generate(RealSeededCollection(seeds), 2000, chunk=1000)
    assert 150 < batch.row_nnz().mean() < 200
    assert batch.weights.max() <= seeds.docs.weights.max()


def test_msmarco_query_vectors():
    from bench.synthetic import QUERY_DATA, QUERY_FILES

    if not (QUERY_DATA / QUERY_FILES["splade-v3"]).is_file():
        pytest.skip(f"real query vectors not found under {QUERY_DATA} (the shared msmarco-dev-queries data)")
    from lsr.models import SPLADE_TINY
    from lsr.tokenize import Tokenizer
    from tests.conftest import fetch_or_skip

    vocab = Tokenizer(fetch_or_skip(SPLADE_TINY, "SPLADE model") / "tokenizer.json").vocab
    q = msmarco_queries(20, vocab)
    assert len(q) == 20 and 10 < q.row_nnz().mean() < 50
    assert_allclose(q.weights * 100, np.round(q.weights * 100), atol=1e-4)  # x100 integers
    assert_array_equal(msmarco_queries(20, vocab).term_ids, q.term_ids)


# ------------------------------------------------------------------ statistics
def tiny(rows: list[dict[int, float]]) -> SparseBatch:
    return SparseBatch.from_dicts([{VOCAB[t]: w for t, w in r.items()} for r in rows], VOCAB)


DOCS = tiny(
    [
        {0: 4.0, **{t: 1.0 for t in range(1, 10)}},  # 10 terms: the top term holds 4/13
        {0: 2.0},
        {0: 2.0, 1: 1.0},
        {0: 1.95},
        {},
    ]
)
QUERIES = tiny([{0: 1.0}, {9: 1.0}])


def test_weight_skew_by_hand():
    share, peak = weight_skew(DOCS)
    assert_allclose(share, [4 / 13, 1, 2 / 3, 1])  # the empty row left out
    assert_allclose(peak, [4 / 1.3, 1, 2 / 1.5, 1])


def test_posting_stats_by_hand():
    df = np.bincount(DOCS.term_ids, minlength=len(VOCAB))
    s = posting_stats(df, len(DOCS), QUERIES)
    assert s["df"]["mean"] == 2.5 and s["postings_per_query"]["p50"] == 2.5
    assert s["df_share"]["mean"] == pytest.approx(2.5 / 5)


def test_tie_stats_by_hand():
    # q0 scores 4, 2, 2, 1.95, 0: the 2nd score 2 ties once, 2 (1%) and 1.95 (5%) lie just below;
    # q1 matches one document only, fewer than k.
    s = tie_stats(DOCS, QUERIES, k=2)
    assert s["short"] == 1 and s["queries"] == 2
    assert s["tied"]["mean"] == 1
    assert s["near_1pct"]["mean"] == 1
    assert s["near_5pct"]["mean"] == 2
    assert s["kth_over_top"]["mean"] == 0.5
    assert s["matched_share"]["mean"] == pytest.approx((4 / 5 + 1 / 5) / 2)


def test_corpus_stats_by_hand():
    s = corpus_stats(DOCS, {"q": QUERIES}, k=2)
    assert s["docs"]["rows"] == 5
    assert s["docs"]["terms"] == {"mean": 14 / 5, "p50": 1.0, "p99": pytest.approx(9.68)}
    assert s["queries"]["q"]["terms"]["mean"] == 1 and s["queries"]["q"]["ties"]["k"] == 2
    with pytest.raises(ValueError):
        corpus_stats(DOCS, {"q": QUERIES}, k=0)
