"""One query on several threads (``search(..., threads=N)``): the same hits as one thread."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from indexer.native.format import open_index
from plugin import native
from plugin.native import NativeSearcher
from plugin.scorer import _kernels as score_kernels
from plugin.scorer import reference as score_ref
from tests.test_native import NO_FILTER, build, kernel_inputs, random_docs, some_filters, ties


@pytest.mark.parametrize("weights", [[], [0], [5], [1, 1, 1, 1], [9, 0, 0, 1, 3], [0, 0, 7]])
@pytest.mark.parametrize("parts", [1, 2, 3, 7])
def test_cuts_split_in_order_into_runs_of_about_equal_weight(weights, parts):
    w = np.array(weights, np.int64)
    cuts = score_kernels._cuts(w, parts)
    assert len(cuts) == parts + 1 and cuts[0] == 0 and cuts[-1] == len(w)
    assert (np.diff(cuts) >= 0).all()
    runs = [int(w[cuts[p] : cuts[p + 1]].sum()) for p in range(parts)]
    assert sum(runs) == int(w.sum())
    # No run is heavier than its fair share plus the heaviest single item.
    assert max(runs, default=0) <= w.sum() / parts + w.max(initial=0)


@pytest.mark.parametrize(("block_size", "reorder"), [(16, "bp"), (1, "bp"), (128, "none")])
def test_split_kernel_matches_one_thread_and_the_twin(tmp_path, block_size, reorder):
    """Exact mode: every split (1-5 parts) returns the twin's hits, with and without a filter; the
    approximate knobs keep every hit a true top-k score of the scored documents."""
    docs = random_docs(900, seed=31, levels=[0.5, 1.0, 2.0, 3.5])
    path, _ = build(tmp_path, docs, block_size=block_size, reorder=reorder)
    ix = open_index(path)
    searcher = NativeSearcher(path)
    queries = random_docs(25, seed=32, max_len=14)
    offsets, terms, weights, bound = searcher.query_arrays(queries, beta=0.5)
    filters = some_filters(ix.n_docs, ix.block_size, seed=33)
    for q in range(len(queries)):
        t, w = terms[offsets[q] : offsets[q + 1]], weights[offsets[q] : offsets[q + 1]]
        for k, (allow, block_allow) in itertools.product((0, 1, 10, 2000), filters):
            args = (t, w, len(t), *kernel_inputs(ix), ix.n_docs, ix.block_size, *ties(ix), k, 1.0, 2, 32)
            want = score_ref.block_max(*args, allow, block_allow)
            for parts, min_entries in ((1, 0), (2, 0), (3, 0), (5, 0), (2, 10**9)):  # last: on one thread
                got = score_kernels._block_max_split(*args, allow, block_allow, parts, min_entries)
                np.testing.assert_array_equal(got[0], want[0])
                np.testing.assert_array_equal(got[1], want[1])
                assert got[2] == want[2]  # the same blocks scored: the split changes no bound
        for alpha, n_bound in ((0.7, len(t)), (1.0, bound[q])):
            args = (t, w, n_bound, *kernel_inputs(ix), ix.n_docs, ix.block_size, *ties(ix), 10, alpha, 2, 32)
            got = score_kernels._block_max_split(*args, *NO_FILTER, 2, 0)
            assert (np.diff(got[0]) <= 0).all() and len(set(got[1].tolist())) == len(got[1])
            true = score_ref.scan(
                t, w, *kernel_inputs(ix), ix.n_docs, ix.block_size, *ties(ix), ix.n_docs, NO_FILTER[0]
            )
            truth = dict(zip(true[1].tolist(), true[0].tolist(), strict=True))
            assert all(truth[d] == s for d, s in zip(got[1].tolist(), got[0].tolist(), strict=True))


@pytest.mark.parametrize("split_entries", [0, 10**9])  # every query split, or none
def test_search_threads_gives_the_one_thread_hits(tmp_path, monkeypatch, split_entries):
    monkeypatch.setattr(native, "SPLIT_ENTRIES", split_entries)
    docs = random_docs(3000, seed=34, n_terms=60, max_len=12, levels=[0.5, 1.0, 2.0])
    path, _ = build(tmp_path, docs, block_size=16, reorder="bp")
    searcher = NativeSearcher(path, scan_below=0)
    queries = random_docs(20, seed=35, n_terms=60, max_len=10)
    for q in range(len(queries)):
        row = queries.take([q])
        for mode, alpha in (("exact", 1.0), ("approx", 0.9)):
            one = searcher.search(row, 10, mode=mode, alpha=alpha)
            two = searcher.search(row, 10, mode=mode, alpha=alpha, threads=2)
            if mode == "exact":
                assert [(h.docid, h.score) for h in two] == [(h.docid, h.score) for h in one]
            else:
                assert len(two) == len(one)
    with pytest.raises(ValueError, match="threads"):
        searcher.search(queries.take([0]), 10, threads=0)


# ------------------------------------------------------------------ approx: the query cut
def test_cut_search_matches_its_twin_and_all_terms_is_exact(tmp_path):
    """The kernel equals its twin; with every query term in the cut and depth >= k it is the exact
    top-k; a shorter cut returns hits whose scores are their full scores."""
    docs = random_docs(900, seed=41, levels=[0.5, 1.0, 2.0, 3.5])
    path, _ = build(tmp_path, docs, block_size=16, reorder="bp", forward=True)
    ix = open_index(path)
    searcher = NativeSearcher(path, scan_below=0)
    fwd, n_vocab = searcher._forward, len(ix.vocab)
    queries = random_docs(25, seed=42, max_len=14)
    offsets, terms, weights, _ = searcher.query_arrays(queries)
    filters = some_filters(ix.n_docs, ix.block_size, seed=43)
    for q in range(len(queries)):
        t, w = terms[offsets[q] : offsets[q + 1]], weights[offsets[q] : offsets[q + 1]]
        truth = score_ref.scan(
            t, w, *kernel_inputs(ix), ix.n_docs, ix.block_size, *ties(ix), ix.n_docs, NO_FILTER[0]
        )
        full = dict(zip(truth[1].tolist(), truth[0].tolist(), strict=True))
        for (k, cut, depth), (allow, block_allow) in itertools.product(
            ((0, 3, 10), (10, 3, 30), (10, len(t), 10), (5, 1, 5), (10, 100, 0)), filters
        ):
            args = (t, w, cut, depth, *kernel_inputs(ix), ix.n_docs, ix.block_size, *ties(ix), k, 1.0, 2, 32)
            args = (*args, allow, block_allow, *fwd, n_vocab)
            got = score_kernels._cut_search(*args)
            want = score_ref.cut_search(*args)
            for g, x in zip(got, want, strict=True):
                np.testing.assert_array_equal(g, x)
            assert all(full[d] == s for d, s in zip(got[1].tolist(), got[0].tolist(), strict=True))
            if cut >= len(t):
                exact = score_ref.block_max(
                    t,
                    w,
                    len(t),
                    *kernel_inputs(ix),
                    ix.n_docs,
                    ix.block_size,
                    *ties(ix),
                    k,
                    1.0,
                    2,
                    32,
                    allow,
                    block_allow,
                )
                np.testing.assert_array_equal(got[0], exact[0])
                np.testing.assert_array_equal(got[1], exact[1])


def test_search_with_a_cut_single_and_batch_agree_and_check_their_knobs(tmp_path):
    docs = random_docs(2000, seed=44, n_terms=80, max_len=12, levels=[0.5, 1.0, 2.0])
    path, _ = build(tmp_path, docs, block_size=16, reorder="bp", forward=True)
    searcher = NativeSearcher(path, scan_below=0)
    queries = random_docs(15, seed=45, n_terms=80, max_len=10)
    batch = searcher.batch_search(queries, 10, threads=2, mode="approx", cut=3, depth=40)
    for q in range(len(queries)):
        one = searcher.search(queries.take([q]), 10, mode="approx", cut=3, depth=40)
        assert [(h.docid, h.score) for h in one] == [(h.docid, h.score) for h in batch[q]]
        every = searcher.search(queries.take([q]), 10, mode="approx", cut=100)
        exact = searcher.search(queries.take([q]), 10)
        assert [(h.docid, h.score) for h in every] == [(h.docid, h.score) for h in exact]
    row = queries.take([0])
    for kwargs, field in (
        ({"mode": "exact", "cut": 3}, "cut"),
        ({"mode": "approx", "cut": -1}, "cut"),
        ({"mode": "approx", "depth": 30}, "depth"),
        ({"mode": "approx", "cut": 3, "depth": 5}, "depth"),
    ):
        with pytest.raises(ValueError, match=field):
            searcher.search(row, 10, **kwargs)
    plain, _ = build(tmp_path, docs, name="plain", block_size=16)
    with pytest.raises(ValueError, match="forward store"):
        NativeSearcher(plain, scan_below=0).search(row, 10, mode="approx", cut=3)
