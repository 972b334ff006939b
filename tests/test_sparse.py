"""Unit tests for lsr.sparse: SparseBatch validation, conversions, combining and pruning (CPU only)."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import scipy.sparse as sp

from lsr.sparse import PRUNE_TYPES, SparseBatch, check_prune, parse_prune, prune_mask

VOCAB = tuple(f"t{i}" for i in range(50))


# ------------------------------------------------------------------ helpers
def make(indptr, term_ids, weights, vocab=VOCAB) -> SparseBatch:
    """A batch from plain lists, with the dtypes the contract asks for."""
    return SparseBatch(
        np.asarray(indptr, np.int64), np.asarray(term_ids, np.int32), np.asarray(weights, np.float32), vocab
    )


def rows_as_lists(batch: SparseBatch) -> list[list[tuple[int, float]]]:
    return [list(zip(ids.tolist(), ws.tolist(), strict=True)) for ids, ws in batch]


def assert_same(a: SparseBatch, b: SparseBatch) -> None:
    assert a.indptr.dtype == np.int64 and a.term_ids.dtype == np.int32 and a.weights.dtype == np.float32
    np.testing.assert_array_equal(a.indptr, b.indptr)
    np.testing.assert_array_equal(a.term_ids, b.term_ids)
    np.testing.assert_array_equal(a.weights, b.weights)
    assert a.vocab == b.vocab


def random_batch(seed: int, n_rows: int = 40, vocab=VOCAB) -> SparseBatch:
    """Rows of 0..12 terms: continuous weights, few-valued weights (ties) or all-equal weights."""
    rng = np.random.default_rng(seed)
    indptr, ids, ws = [0], [], []
    for _ in range(n_rows):
        n = int(rng.integers(0, 13))
        row_ids = np.sort(rng.choice(len(vocab), n, replace=False))
        mode = rng.integers(0, 3)
        if mode == 0:
            row_ws = rng.random(n) * 3 + 0.01
        elif mode == 1:
            row_ws = rng.integers(1, 4, n) * 0.25
        else:
            row_ws = np.full(n, 0.5 + rng.random())
        ids.extend(row_ids.tolist())
        ws.extend(row_ws.tolist())
        indptr.append(len(ids))
    return make(indptr, ids, ws, vocab)


# ------------------------------------------------------------- validation
@pytest.mark.parametrize(
    ("indptr", "term_ids", "weights", "name"),
    [
        (np.array([0, 1], np.int32), np.array([1], np.int32), np.array([1], np.float32), "indptr"),
        (np.array([0, 1], np.int64), np.array([1], np.int64), np.array([1], np.float32), "term_ids"),
        (np.array([0, 1], np.int64), np.array([1], np.int32), np.array([1], np.float64), "weights"),
        ([0, 1], np.array([1], np.int32), np.array([1], np.float32), "indptr"),
        (np.array([0, 1], np.int64), [1], np.array([1], np.float32), "term_ids"),
    ],
)
def test_wrong_dtype_or_type_is_a_type_error(indptr, term_ids, weights, name):
    with pytest.raises(TypeError, match=name):
        SparseBatch(indptr, term_ids, weights, VOCAB)


def test_vocab_must_be_a_tuple():
    with pytest.raises(TypeError, match="vocab"):
        SparseBatch(np.array([0, 1], np.int64), np.array([1], np.int32), np.ones(1, np.float32), list(VOCAB))


def test_arrays_must_be_one_dimensional():
    with pytest.raises(ValueError, match="one-dimensional"):
        make([[0, 1]], [1], [1.0])


@pytest.mark.parametrize("indptr", [[1, 2], [], [-1, 2]])
def test_indptr_must_start_at_zero(indptr):
    with pytest.raises(ValueError, match="start with 0"):
        make(indptr, [1, 2], [1.0, 1.0])


def test_indptr_must_end_at_nnz():
    with pytest.raises(ValueError, match="indptr ends at 1"):
        make([0, 1], [1, 2], [1.0, 1.0])
    with pytest.raises(ValueError, match="2 term ids and 1 weights"):
        make([0, 2], [1, 2], [1.0])


@pytest.mark.parametrize("indptr", [[0, 3, 1, 3], [0, 2, 1, 2, 3]])
def test_indptr_must_not_decrease(indptr):
    with pytest.raises(ValueError, match="non-decreasing"):
        make(indptr, [1, 2, 3], [1.0, 1.0, 1.0])


@pytest.mark.parametrize("bad_id", [-1, 50, 1000])
def test_term_ids_must_lie_in_the_vocabulary(bad_id):
    with pytest.raises(ValueError, match=r"\[0, 50\)"):
        make([0, 2], sorted([3, bad_id]), [1.0, 1.0])


@pytest.mark.parametrize(
    ("indptr", "term_ids"),
    [
        ([0, 2], [3, 1]),  # unsorted
        ([0, 2], [2, 2]),  # duplicate
        ([0, 2, 4], [5, 9, 3, 1]),  # unsorted inside the second row
        ([0, 2, 2, 5], [1, 4, 0, 7, 7]),  # duplicate after an empty row
    ],
)
def test_term_ids_must_strictly_increase_within_a_row(indptr, term_ids):
    with pytest.raises(ValueError, match="strictly increasing"):
        make(indptr, term_ids, [1.0] * len(term_ids))


@pytest.mark.parametrize(
    ("indptr", "term_ids"),
    [([0, 2, 4], [5, 9, 1, 3]), ([0, 2, 2, 4], [5, 9, 1, 3]), ([0, 1, 2, 3], [49, 0, 0])],
)
def test_a_row_may_start_below_the_previous_rows_last_id(indptr, term_ids):
    b = make(indptr, term_ids, [1.0] * len(term_ids))
    assert [[t for t, _ in row] for row in rows_as_lists(b)] == [
        term_ids[s:e] for s, e in itertools.pairwise(indptr)
    ]


@pytest.mark.parametrize("bad", [0.0, -1.0, -0.0, math.nan, math.inf, -math.inf])
def test_weights_must_be_finite_and_positive(bad):
    with pytest.raises(ValueError, match="finite and > 0"):
        make([0, 2], [1, 2], [1.0, bad])


def test_shape_len_nnz_and_rows():
    b = make([0, 2, 2, 3], [1, 4, 0], [0.5, 1.5, 2.0])
    assert (len(b), b.nnz, b.shape) == (3, 3, (3, 50))
    np.testing.assert_array_equal(b.row_nnz(), [2, 0, 1])
    ids, ws = b.row(-1)
    assert ids.tolist() == [0] and ws.tolist() == [2.0]
    assert b.row(1)[0].tolist() == []
    with pytest.raises(IndexError):
        b.row(3)
    with pytest.raises(IndexError):
        b.row(-4)


# ------------------------------------------------------------ conversions
DICTS = [{"t3": 0.5, "t1": 2.0}, {}, {"t49": 1.25, "t0": 0.75, "t10": 3.0}, {}]


def test_from_dicts_sorts_terms_by_id_and_keeps_empty_rows():
    b = SparseBatch.from_dicts(DICTS, VOCAB)
    np.testing.assert_array_equal(b.indptr, [0, 2, 2, 5, 5])
    np.testing.assert_array_equal(b.term_ids, [1, 3, 0, 10, 49])
    np.testing.assert_array_equal(b.weights, [2.0, 0.5, 0.75, 3.0, 1.25])
    assert b.vocab is VOCAB


@pytest.mark.parametrize(
    "dicts", [DICTS, [{}, {}, {}], [], [{f"t{i}": 1 + i / 7 for i in range(0, 50, 3)}]], ids=repr
)
def test_dicts_round_trip(dicts):
    b = SparseBatch.from_dicts(dicts, VOCAB)
    back = b.to_dicts()
    assert len(back) == len(dicts)
    for got, want in zip(back, dicts, strict=True):
        assert list(got) == sorted(want, key=VOCAB.index)  # id order
        assert got == {t: float(np.float32(w)) for t, w in want.items()}
    assert_same(SparseBatch.from_dicts(back, VOCAB), b)


def test_from_dicts_drops_zero_weights():
    b = SparseBatch.from_dicts([{"t1": 0.0, "t2": 1.0}, {"t5": 0}], VOCAB)
    assert b.to_dicts() == [{"t2": 1.0}, {}]


def test_from_dicts_unknown_token_names_token_and_row():
    with pytest.raises(KeyError, match=r"row 1: token 'nope'"):
        SparseBatch.from_dicts([{"t1": 1.0}, {"t2": 1.0, "nope": 1.0}], VOCAB)


@pytest.mark.parametrize("bad", [-0.5, math.nan, math.inf])
def test_from_dicts_bad_weight_names_token_and_row(bad):
    with pytest.raises(ValueError, match=r"row 2: token 't7' has weight"):
        SparseBatch.from_dicts([{}, {"t1": 1.0}, {"t3": 1.0, "t7": bad}], VOCAB)


def test_from_dicts_positive_weight_below_float32_range_is_not_rejected():
    b = SparseBatch.from_dicts([{"t1": 1e-50, "t2": 1.0}], VOCAB)
    assert b.to_dicts() == [{"t2": 1.0}]


def test_dense_round_trip_keeps_only_positive_entries():
    dense = np.zeros((4, 50), np.float32)
    dense[0, [1, 7]] = [0.5, 2.0]
    dense[2, [0, 49]] = [1.0, 3.0]
    dense[3, 5] = -1.0  # negatives are not terms
    b = SparseBatch.from_dense(dense, VOCAB)
    np.testing.assert_array_equal(b.indptr, [0, 2, 2, 4, 4])
    np.testing.assert_array_equal(b.term_ids, [1, 7, 0, 49])
    np.testing.assert_array_equal(b.to_dense(), np.maximum(dense, 0))
    assert_same(SparseBatch.from_dense(b.to_dense(), VOCAB), b)


@pytest.mark.parametrize("n_rows", [0, 3])
def test_dense_round_trip_of_empty_batches(n_rows):
    b = SparseBatch.from_dense(np.zeros((n_rows, 50)), VOCAB)
    assert (len(b), b.nnz) == (n_rows, 0)
    assert b.to_dense().shape == (n_rows, 50)
    assert not b.to_dense().any()


def test_from_dense_rejects_wrong_shape_and_non_finite():
    with pytest.raises(ValueError, match="shape"):
        SparseBatch.from_dense(np.ones((2, 49)), VOCAB)
    with pytest.raises(ValueError, match="shape"):
        SparseBatch.from_dense(np.ones(50), VOCAB)
    bad = np.zeros((2, 50))
    bad[1, 3] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        SparseBatch.from_dense(bad, VOCAB)


@pytest.mark.parametrize("seed", [0, 1])
def test_random_dense_round_trip(seed):
    b = random_batch(seed)
    dense = b.to_dense()
    assert dense.dtype == np.float32
    assert rows_as_lists(b) == [[(int(t), float(r[t])) for t in np.flatnonzero(r)] for r in dense]
    assert_same(SparseBatch.from_dense(dense, VOCAB), b)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_scipy_round_trip(seed):
    b = random_batch(seed)
    m = b.to_scipy()
    assert sp.issparse(m) and m.shape == b.shape
    np.testing.assert_array_equal(m.toarray(), b.to_dense())
    assert_same(SparseBatch.from_scipy(m, VOCAB), b)
    assert_same(SparseBatch.from_scipy(m.tocoo(), VOCAB), b)
    assert_same(SparseBatch.from_scipy(m.tocsc(), VOCAB), b)


@pytest.mark.parametrize("n_rows", [0, 1, 4])
def test_scipy_round_trip_of_empty_batches(n_rows):
    b = SparseBatch.empty(n_rows, VOCAB)
    m = b.to_scipy()
    assert m.shape == (n_rows, 50) and m.nnz == 0
    back = SparseBatch.from_scipy(m, VOCAB)
    assert_same(back, b)
    assert len(back) == n_rows


def test_from_scipy_drops_explicit_zeros_sums_duplicates_and_sorts():
    coo = sp.coo_matrix(
        (np.array([1.0, 0.0, 2.0, 0.5, 0.25]), (np.array([0, 0, 2, 2, 2]), np.array([9, 3, 4, 1, 4]))),
        shape=(3, 50),
    )
    b = SparseBatch.from_scipy(coo, VOCAB)
    assert b.to_dicts() == [{"t9": 1.0}, {}, {"t1": 0.5, "t4": 2.25}]


def test_from_scipy_rejects_dense_input():
    with pytest.raises(TypeError, match="scipy sparse"):
        SparseBatch.from_scipy(np.ones((2, 50)), VOCAB)


def test_from_scipy_rejects_matrix_with_wrong_column_count():
    with pytest.raises(ValueError, match=r"expected a \[n_rows, 50\] matrix"):
        SparseBatch.from_scipy(sp.csr_matrix((2, 100), dtype=np.float32), VOCAB)


def test_from_coo_drops_zeros_and_keeps_trailing_empty_rows():
    b = SparseBatch.from_coo(
        np.array([0, 0, 0, 2]), np.array([1, 3, 8, 0]), np.array([1.0, 0.0, 0.5, 2.0]), 4, VOCAB
    )
    np.testing.assert_array_equal(b.indptr, [0, 2, 2, 3, 3])
    assert b.to_dicts() == [{"t1": 1.0, "t8": 0.5}, {}, {"t0": 2.0}, {}]


def test_from_coo_of_all_zeros():
    b = SparseBatch.from_coo(np.array([0, 1]), np.array([1, 2]), np.zeros(2), 3, VOCAB)
    assert (len(b), b.nnz) == (3, 0)


def test_empty():
    b = SparseBatch.empty(3, list(VOCAB))
    assert (len(b), b.nnz, b.shape) == (3, 0, (3, 50))
    assert b.to_dicts() == [{}, {}, {}]


# -------------------------------------------------------------- combining
def test_take_reorders_repeats_and_keeps_empty_rows():
    b = SparseBatch.from_dicts(DICTS, VOCAB)
    t = b.take([2, 1, 0, 2, 3])
    assert t.to_dicts() == [b.to_dicts()[i] for i in [2, 1, 0, 2, 3]]
    np.testing.assert_array_equal(t.indptr, [0, 3, 3, 5, 8, 8])


@pytest.mark.parametrize("seed", [3, 4])
def test_take_random_rows(seed):
    b = random_batch(seed)
    rows = np.random.default_rng(seed).integers(0, len(b), 25)
    t = b.take(rows)
    assert rows_as_lists(t) == [rows_as_lists(b)[i] for i in rows]


def test_take_nothing_and_only_empty_rows():
    b = SparseBatch.from_dicts(DICTS, VOCAB)
    assert (len(b.take([])), b.take([]).nnz) == (0, 0)
    assert b.take(np.array([1, 3])).to_dicts() == [{}, {}]


def test_concat_joins_rows_in_order():
    a = SparseBatch.from_dicts(DICTS, VOCAB)
    b = SparseBatch.from_dicts([{}, {"t2": 4.0}], tuple(VOCAB))  # equal, not identical, vocab
    c = SparseBatch.empty(0, VOCAB)
    joined = SparseBatch.concat([a, c, b, a])
    assert joined.to_dicts() == a.to_dicts() + b.to_dicts() + a.to_dicts()
    np.testing.assert_array_equal(joined.indptr, [0, 2, 2, 5, 5, 5, 6, 8, 8, 11, 11])


@pytest.mark.parametrize("seed", [5, 6])
def test_concat_of_random_batches_matches_take(seed):
    b = random_batch(seed)
    parts = [b.take(range(0, 10)), b.take(range(10, 10)), b.take(range(10, 25)), b.take(range(25, 40))]
    assert_same(SparseBatch.concat(parts), b)


def test_concat_of_empty_batches():
    joined = SparseBatch.concat([SparseBatch.empty(2, VOCAB), SparseBatch.empty(0, VOCAB)])
    assert (len(joined), joined.nnz) == (2, 0)
    assert len(SparseBatch.concat([SparseBatch.empty(0, VOCAB)])) == 0


def test_concat_rejects_different_vocabularies_and_no_batches():
    other = (*VOCAB[:-1], "zz")
    with pytest.raises(ValueError, match="different vocabularies"):
        SparseBatch.concat([SparseBatch.empty(1, VOCAB), SparseBatch.empty(1, other)])
    with pytest.raises(ValueError, match="at least one"):
        SparseBatch.concat([])


# ---------------------------------------------------------------- pruning
def reference_prune_row(row: list[tuple[int, float]], kind: str, value: float) -> list[tuple[int, float]]:
    """OpenSearch PruneUtils semantics for one row of (term id, weight), written plainly."""
    if not row:
        return []
    by_weight = sorted(row, key=lambda p: (-p[1], p[0]))  # descending, ties -> lower id
    if kind == "top_k":
        kept = by_weight[: int(value)]
    elif kind == "max_ratio":
        top = max(w for _, w in row)
        kept = [p for p in row if p[1] >= value * top]
    elif kind == "abs_value":
        kept = [p for p in row if p[1] >= value]
    else:
        total = sum(w for _, w in row)
        kept, running = [], 0.0
        for p in by_weight:
            running += p[1]
            if running > value * total:
                break
            kept.append(p)
    return sorted(kept)


PRUNE_CASES = [
    ("top_k", 1),
    ("top_k", 2),
    ("top_k", 3),
    ("top_k", 7),
    ("top_k", 100),
    ("max_ratio", 0.0),
    ("max_ratio", 0.1),
    ("max_ratio", 0.5),
    ("max_ratio", 0.9),
    ("max_ratio", 0.999),
    ("abs_value", 0.0),
    ("abs_value", 0.25),
    ("abs_value", 0.5),
    ("abs_value", 1.3),
    ("abs_value", 100.0),
    ("alpha_mass", 0.0),
    ("alpha_mass", 0.3),
    ("alpha_mass", 0.5),
    ("alpha_mass", 0.75),
    ("alpha_mass", 0.9),
    ("alpha_mass", 0.99),
]


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
@pytest.mark.parametrize(("kind", "value"), PRUNE_CASES)
def test_prune_matches_reference_on_random_batches(seed, kind, value):
    b = random_batch(seed)
    pruned = b.prune(kind, value)
    assert len(pruned) == len(b) and pruned.vocab is b.vocab
    assert rows_as_lists(pruned) == [reference_prune_row(r, kind, value) for r in rows_as_lists(b)]
    mask = prune_mask(b, kind, value)
    assert mask.dtype == np.bool_ and mask.shape == (b.nnz,)
    np.testing.assert_array_equal(b.weights[mask], pruned.weights)


def test_random_batches_exercise_ties_equal_rows_and_empty_rows():
    rows = [r for seed in range(4) for r in rows_as_lists(random_batch(seed))]
    assert any(not r for r in rows)
    assert any(len(r) > 2 and len({w for _, w in r}) == 1 for r in rows)
    assert any(len({w for _, w in r}) < len(r) for r in rows if len({w for _, w in r}) > 1)


# One row: ids 2, 5, 7, 9 with weights 0.5, 2.0, 1.0, 0.5 (sum 4.0, max 2.0); a second row is empty.
HAND = make([0, 4, 4], [2, 5, 7, 9], [0.5, 2.0, 1.0, 0.5])


@pytest.mark.parametrize(
    ("kind", "value", "kept"),
    [
        ("top_k", 1, [5]),
        ("top_k", 2, [5, 7]),
        ("top_k", 3, [2, 5, 7]),  # 0.5 tie between ids 2 and 9 goes to the lower id
        ("top_k", 4, [2, 5, 7, 9]),
        ("top_k", 10, [2, 5, 7, 9]),
        ("max_ratio", 0.5, [5, 7]),  # w >= 1.0, the boundary is kept
        ("max_ratio", 0.51, [5]),
        ("max_ratio", 0.25, [2, 5, 7, 9]),
        ("abs_value", 1.0, [5, 7]),
        ("abs_value", 0.6, [5, 7]),
        ("abs_value", 0.5, [2, 5, 7, 9]),
        ("abs_value", 2.5, []),
        ("alpha_mass", 0.4, []),  # 2.0 > 1.6 already
        ("alpha_mass", 0.5, [5]),  # running 2.0 <= 2.0
        ("alpha_mass", 0.75, [5, 7]),  # running 3.0 <= 3.0
        ("alpha_mass", 0.8, [5, 7]),  # 3.5 > 3.2
        ("alpha_mass", 0.875, [2, 5, 7]),  # 3.5 <= 3.5; the tie again goes to id 2
        ("alpha_mass", 0.99, [2, 5, 7]),
    ],
)
def test_prune_hand_computed(kind, value, kept):
    pruned = HAND.prune(kind, value)
    assert pruned.row(0)[0].tolist() == kept
    weights = dict(zip([2, 5, 7, 9], [0.5, 2.0, 1.0, 0.5], strict=True))
    assert pruned.row(0)[1].tolist() == [weights[t] for t in kept]
    assert pruned.row(1)[0].tolist() == []
    np.testing.assert_array_equal(pruned.indptr, [0, len(kept), len(kept)])


def test_prune_all_equal_weights():
    b = make([0, 4], [1, 2, 3, 4], [0.25] * 4)
    assert b.prune("top_k", 2).row(0)[0].tolist() == [1, 2]
    assert b.prune("alpha_mass", 0.5).row(0)[0].tolist() == [1, 2]
    assert b.prune("alpha_mass", 0.49).row(0)[0].tolist() == [1]
    assert b.prune("max_ratio", 0.99).row(0)[0].tolist() == [1, 2, 3, 4]


def test_prune_rejects_invalid_values():
    with pytest.raises(ValueError, match="positive integer"):
        HAND.prune("top_k", 0)


# ----------------------------------------------------- prune spec checking
@pytest.mark.parametrize(
    ("kind", "value", "need"),
    [
        ("top_k", 0, "a positive integer"),
        ("top_k", -3, "a positive integer"),
        ("top_k", 2.5, "a positive integer"),
        ("top_k", math.nan, "a positive integer"),
        ("top_k", math.inf, "a positive integer"),
        ("max_ratio", 1.0, r"in \[0, 1\)"),
        ("max_ratio", -0.1, r"in \[0, 1\)"),
        ("max_ratio", math.nan, r"in \[0, 1\)"),
        ("alpha_mass", 1.0, r"in \[0, 1\)"),
        ("alpha_mass", -0.5, r"in \[0, 1\)"),
        ("abs_value", -1, "non-negative"),
        ("abs_value", math.nan, "non-negative"),
    ],
)
def test_check_prune_rejects_out_of_range(kind, value, need):
    with pytest.raises(ValueError, match=f"prune {kind} value must be {need}"):
        check_prune(kind, value)


@pytest.mark.parametrize(
    ("kind", "value"),
    [("top_k", 1), ("top_k", 64.0), ("max_ratio", 0), ("max_ratio", 0.99), ("alpha_mass", 0)]
    + [("alpha_mass", 0.5), ("abs_value", 0), ("abs_value", 7.5)],
)
def test_check_prune_accepts_in_range(kind, value):
    check_prune(kind, value)


def test_check_prune_rejects_unknown_kind_naming_the_choices():
    with pytest.raises(ValueError, match="unknown prune type 'top_p'; choose one of") as e:
        check_prune("top_p", 0.5)
    assert all(k in str(e.value) for k in PRUNE_TYPES)


@pytest.mark.parametrize(
    ("spec", "expected"),
    [("top_k:64", ("top_k", 64.0)), ("max_ratio:0.1", ("max_ratio", 0.1))]
    + [("abs_value:0", ("abs_value", 0.0)), ("alpha_mass:0.4", ("alpha_mass", 0.4))],
)
def test_parse_prune(spec, expected):
    assert parse_prune(spec) == expected


@pytest.mark.parametrize(
    ("spec", "match"),
    [
        ("top_k", "must look like KIND:VALUE, KIND one of top_k, max_ratio, abs_value, alpha_mass"),
        ("top_k:abc", "'abc' is not a number"),
        ("top_k:", "'' is not a number"),
        ("top_k:0", "a positive integer"),
        ("top_k:2.5", "a positive integer"),
        ("max_ratio:1.0", r"in \[0, 1\)"),
        ("alpha_mass:1", r"in \[0, 1\)"),
        ("abs_value:-1", "non-negative"),
        ("top_p:3", "choose one of top_k, max_ratio, abs_value, alpha_mass"),
    ],
)
def test_parse_prune_rejects_bad_specs(spec, match):
    with pytest.raises(ValueError, match=match):
        parse_prune(spec)


def test_from_coo_drops_negatives_and_rejects_nan():
    b = SparseBatch.from_coo(np.array([0, 0]), np.array([1, 2]), np.array([1.0, -1.0]), 1, VOCAB)
    assert b.to_dicts() == [{"t1": 1.0}]
    for bad in (np.nan, np.inf):
        with pytest.raises(ValueError, match="NaN or infinite"):
            SparseBatch.from_coo(np.array([0, 0]), np.array([1, 2]), np.array([1.0, bad]), 1, VOCAB)


def test_take_counts_negative_rows_from_the_end_and_checks_bounds():
    b = SparseBatch.from_dicts([{"t1": 1.0}, {}, {"t2": 2.0}], VOCAB)
    assert b.take([-1, 0]).to_dicts() == [{"t2": 2.0}, {"t1": 1.0}]
    with pytest.raises(IndexError):
        b.take([3])
    with pytest.raises(IndexError):
        b.take([-4])
