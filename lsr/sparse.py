"""The sparse batch: the one vector contract every stage of lsr speaks.

A :class:`SparseBatch` is a CSR matrix of ``n_rows x len(vocab)`` with

- ``indptr``   int64,   shape ``[n_rows + 1]``, ``indptr[0] == 0``, non-decreasing
- ``term_ids`` int32,   shape ``[nnz]``, strictly increasing within each row
- ``weights``  float32, shape ``[nnz]``, finite and > 0
- ``vocab``    the id -> token strings (a tuple, shared, never copied)

It is validated once when built through a public constructor; kernels downstream trust it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
from numpy.typing import NDArray

PruneType = Literal["top_k", "max_ratio", "abs_value", "alpha_mass"]
PRUNE_TYPES: tuple[str, ...] = ("top_k", "max_ratio", "abs_value", "alpha_mass")


@dataclass(frozen=True, eq=False)
class SparseBatch:
    """A batch of sparse vectors over one vocabulary (CSR layout, see module docstring)."""

    indptr: NDArray[np.int64]
    term_ids: NDArray[np.int32]
    weights: NDArray[np.float32]
    vocab: tuple[str, ...]

    def __post_init__(self) -> None:
        _validate(self.indptr, self.term_ids, self.weights, self.vocab)

    # ------------------------------------------------------------------ shape
    def __len__(self) -> int:
        return len(self.indptr) - 1

    @property
    def nnz(self) -> int:
        return len(self.term_ids)

    @property
    def shape(self) -> tuple[int, int]:
        return (len(self), len(self.vocab))

    def row_nnz(self) -> NDArray[np.int64]:
        """Number of non-zero terms per row, shape ``[n_rows]``."""
        return np.diff(self.indptr)

    def row(self, i: int) -> tuple[NDArray[np.int32], NDArray[np.float32]]:
        """Term ids and weights of row ``i`` (views, not copies)."""
        if not -len(self) <= i < len(self):
            raise IndexError(f"row {i} out of range for a batch of {len(self)} rows")
        i %= max(len(self), 1)
        s, e = self.indptr[i], self.indptr[i + 1]
        return self.term_ids[s:e], self.weights[s:e]

    def __iter__(self):
        for i in range(len(self)):
            yield self.row(i)

    # ------------------------------------------------------------ conversions
    @classmethod
    def empty(cls, n_rows: int, vocab: Sequence[str]) -> SparseBatch:
        return cls(
            np.zeros(n_rows + 1, np.int64), np.zeros(0, np.int32), np.zeros(0, np.float32), as_vocab(vocab)
        )

    @classmethod
    def from_dicts(cls, vectors: Iterable[Mapping[str, float]], vocab: Sequence[str]) -> SparseBatch:
        """Build from ``{token: weight}`` dicts.

        Tokens missing from ``vocab`` raise ``KeyError`` naming the token and the row; weights
        of exactly 0 are dropped (a zero is the absence of a term); negative, NaN or infinite
        weights raise ``ValueError``.
        """
        vocab = as_vocab(vocab)
        index = token_index(vocab)
        indptr = [0]
        ids: list[int] = []
        vals: list[float] = []
        for r, vec in enumerate(vectors):
            row_ids, row_vals = [], []
            for tok, w in vec.items():
                try:
                    tid = index[tok]
                except KeyError:
                    raise KeyError(f"row {r}: token {tok!r} is not in the vocabulary") from None
                w = float(w)
                if not math.isfinite(w) or w < 0:
                    raise ValueError(
                        f"row {r}: token {tok!r} has weight {w}; weights must be finite and >= 0"
                    )
                if np.float32(w) > 0:  # below float32's range is a zero too
                    row_ids.append(tid)
                    row_vals.append(w)
            order = np.argsort(row_ids, kind="stable")
            ids.extend(np.asarray(row_ids, np.int64)[order].tolist())
            vals.extend(np.asarray(row_vals, np.float64)[order].tolist())
            indptr.append(len(ids))
        return cls(
            np.asarray(indptr, np.int64), np.asarray(ids, np.int32), np.asarray(vals, np.float32), vocab
        )

    def to_dicts(self) -> list[dict[str, float]]:
        """One ``{token: weight}`` dict per row, terms in id order."""
        vocab = self.vocab
        out = []
        for ids, ws in self:
            out.append({vocab[t]: float(w) for t, w in zip(ids.tolist(), ws.tolist(), strict=True)})
        return out

    @classmethod
    def from_dense(cls, matrix: NDArray[np.floating], vocab: Sequence[str]) -> SparseBatch:
        """Keep the strictly positive entries of a ``[n_rows, len(vocab)]`` matrix."""
        matrix = np.asarray(matrix)
        vocab = as_vocab(vocab)
        if matrix.ndim != 2 or matrix.shape[1] != len(vocab):
            raise ValueError(f"expected a [n_rows, {len(vocab)}] matrix, got shape {matrix.shape}")
        if not np.isfinite(matrix).all():
            raise ValueError("matrix holds NaN or infinite weights")
        matrix = matrix.astype(np.float32, copy=False)
        rows, cols = np.nonzero(matrix > 0)
        indptr = np.zeros(matrix.shape[0] + 1, np.int64)
        np.cumsum(np.bincount(rows, minlength=matrix.shape[0]), out=indptr[1:])
        return cls(indptr, cols.astype(np.int32), matrix[rows, cols].astype(np.float32), vocab)

    @classmethod
    def from_coo(
        cls,
        rows: NDArray[np.integer],
        cols: NDArray[np.integer],
        values: NDArray[np.floating],
        n_rows: int,
        vocab: Sequence[str],
    ) -> SparseBatch:
        """From row-major-sorted coordinates (as ONNX ``NonZero`` yields them).

        Like :meth:`from_dense`, keeps the strictly positive entries; NaN or infinite values raise.
        """
        rows = np.asarray(rows, np.int64)
        values = np.asarray(values, np.float32)
        if not np.isfinite(values).all():
            raise ValueError("values hold NaN or infinite weights")
        keep = values > 0
        rows, cols, values = rows[keep], np.asarray(cols)[keep], np.asarray(values)[keep]
        indptr = np.zeros(n_rows + 1, np.int64)
        np.cumsum(np.bincount(rows, minlength=n_rows), out=indptr[1:])
        return cls(indptr, cols.astype(np.int32), values.astype(np.float32), as_vocab(vocab))

    def to_dense(self) -> NDArray[np.float32]:
        out = np.zeros(self.shape, np.float32)
        rows = np.repeat(np.arange(len(self)), self.row_nnz())
        out[rows, self.term_ids] = self.weights
        return out

    def to_scipy(self):
        """A ``scipy.sparse.csr_matrix`` sharing ``term_ids`` and ``weights`` (``indptr`` may be narrowed)."""
        import scipy.sparse as sp

        return sp.csr_matrix((self.weights, self.term_ids, self.indptr), shape=self.shape)

    @classmethod
    def from_scipy(cls, matrix, vocab: Sequence[str]) -> SparseBatch:
        """From any scipy sparse matrix of shape ``[n_rows, len(vocab)]``; explicit zeros dropped."""
        import scipy.sparse as sp

        if not sp.issparse(matrix):
            raise TypeError(f"expected a scipy sparse matrix, got {type(matrix).__name__}")
        if matrix.ndim != 2 or matrix.shape[1] != len(vocab):
            raise ValueError(f"expected a [n_rows, {len(vocab)}] matrix, got shape {matrix.shape}")
        m = sp.csr_matrix(matrix, dtype=np.float32, copy=True)
        m.sum_duplicates()
        m.eliminate_zeros()
        m.sort_indices()
        return cls(m.indptr.astype(np.int64), m.indices.astype(np.int32), m.data, as_vocab(vocab))

    # ------------------------------------------------------------ combining
    def take(self, rows: Sequence[int] | NDArray[np.integer]) -> SparseBatch:
        """The rows at ``rows`` (negative counts from the end), in that order."""
        rows = np.asarray(rows, np.int64)
        if len(rows) and (rows.min() < -len(self) or rows.max() >= len(self)):
            raise IndexError(f"row index out of range for a batch of {len(self)} rows")
        rows = np.where(rows < 0, rows + len(self), rows)
        starts, ends = self.indptr[rows], self.indptr[rows + 1]
        lengths = ends - starts
        indptr = np.zeros(len(rows) + 1, np.int64)
        np.cumsum(lengths, out=indptr[1:])
        gather = np.repeat(starts - indptr[:-1], lengths) + np.arange(indptr[-1])
        return SparseBatch(indptr, self.term_ids[gather], self.weights[gather], self.vocab)

    @staticmethod
    def concat(batches: Sequence[SparseBatch]) -> SparseBatch:
        if not batches:
            raise ValueError("concat needs at least one batch")
        vocab = batches[0].vocab
        for b in batches[1:]:
            if b.vocab is not vocab and b.vocab != vocab:
                raise ValueError("cannot concatenate batches over different vocabularies")
        offsets = np.cumsum([0] + [b.nnz for b in batches[:-1]])
        indptr = np.concatenate([[0]] + [b.indptr[1:] + o for b, o in zip(batches, offsets, strict=True)])
        return SparseBatch(
            indptr.astype(np.int64),
            np.concatenate([b.term_ids for b in batches]),
            np.concatenate([b.weights for b in batches]),
            vocab,
        )

    # --------------------------------------------------------------- pruning
    def prune(self, kind: PruneType, value: float) -> SparseBatch:
        """Prune each row as OpenSearch's neural-sparse pruning defines it.

        - ``top_k``: keep the ``value`` (a positive integer) largest weights; ties go to the lower id.
        - ``max_ratio``: keep weights ``>= value * max(row)``, ``value`` in [0, 1).
        - ``abs_value``: keep weights ``>= value``, ``value >= 0``.
        - ``alpha_mass``: sort descending, keep the prefix whose running sum stays
          ``<= value * sum(row)``, ``value`` in [0, 1).
        """
        keep = prune_mask(self, kind, value)
        kept_before = np.concatenate([[0], np.cumsum(keep, dtype=np.int64)])
        indptr = kept_before[self.indptr]
        return SparseBatch(indptr, self.term_ids[keep], self.weights[keep], self.vocab)


def check_prune(kind: str, value: float) -> None:
    """Raise ``ValueError`` unless ``value`` is valid for prune type ``kind`` (OpenSearch's ranges)."""
    if kind not in PRUNE_TYPES:
        raise ValueError(f"unknown prune type {kind!r}; choose one of {', '.join(PRUNE_TYPES)}")
    ok = {
        "top_k": value > 0 and float(value).is_integer(),
        "max_ratio": 0 <= value < 1,
        "alpha_mass": 0 <= value < 1,
        "abs_value": value >= 0,
    }[kind]
    if not ok:
        need = {
            "top_k": "a positive integer",
            "max_ratio": "in [0, 1)",
            "alpha_mass": "in [0, 1)",
            "abs_value": "non-negative",
        }[kind]
        raise ValueError(f"prune {kind} value must be {need}, got {value}")


def parse_prune(spec: str) -> tuple[PruneType, float]:
    """Parse ``"top_k:64"``-style CLI specs."""
    kind, sep, raw = spec.partition(":")
    if not sep:
        raise ValueError(
            f"prune spec {spec!r} must look like KIND:VALUE, KIND one of {', '.join(PRUNE_TYPES)}"
        )
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"prune spec {spec!r}: {raw!r} is not a number") from None
    check_prune(kind, value)
    return kind, value  # type: ignore[return-value]


def prune_mask(batch: SparseBatch, kind: str, value: float) -> NDArray[np.bool_]:
    """Boolean mask over ``batch.weights`` of the entries each row keeps (plain numpy, row loop)."""
    check_prune(kind, value)
    keep = np.zeros(batch.nnz, bool)
    for i in range(len(batch)):
        s, e = int(batch.indptr[i]), int(batch.indptr[i + 1])
        if s == e:
            continue
        w = batch.weights[s:e].astype(np.float64)
        if kind == "abs_value":
            keep[s:e] = w >= value
        elif kind == "max_ratio":
            keep[s:e] = w >= value * w.max()
        else:
            # Descending by weight, ties by lower term id (term ids ascend within a row).
            order = np.lexsort((np.arange(e - s), -w))
            if kind == "top_k":
                keep[s + order[: int(value)]] = True
            else:  # alpha_mass
                running = np.cumsum(w[order])
                keep[s + order[running <= value * w.sum()]] = True
    return keep


# ---------------------------------------------------------------- vocabulary
def as_vocab(vocab: Sequence[str]) -> tuple[str, ...]:
    return vocab if isinstance(vocab, tuple) else tuple(vocab)


_INDEX_CACHE: dict[int, tuple[tuple[str, ...], dict[str, int]]] = {}


def token_index(vocab: tuple[str, ...]) -> dict[str, int]:
    """token -> id for ``vocab``; cached per vocabulary object (vocabularies are shared tuples)."""
    hit = _INDEX_CACHE.get(id(vocab))
    if hit is not None and hit[0] is vocab:
        return hit[1]
    index = {t: i for i, t in enumerate(vocab)}
    if len(index) != len(vocab):
        raise ValueError("vocabulary has duplicate tokens")
    _INDEX_CACHE[id(vocab)] = (vocab, index)
    return index


def _validate(indptr, term_ids, weights, vocab) -> None:
    for name, arr, dtype in (
        ("indptr", indptr, np.int64),
        ("term_ids", term_ids, np.int32),
        ("weights", weights, np.float32),
    ):
        if not isinstance(arr, np.ndarray):
            raise TypeError(f"{name} must be a numpy array, got {type(arr).__name__}")
        if arr.dtype != dtype:
            raise TypeError(f"{name} must have dtype {np.dtype(dtype).name}, got {arr.dtype}")
        if arr.ndim != 1:
            raise ValueError(f"{name} must be one-dimensional, got shape {arr.shape}")
    if not isinstance(vocab, tuple):
        raise TypeError(f"vocab must be a tuple of str (use as_vocab), got {type(vocab).__name__}")
    if len(indptr) == 0 or indptr[0] != 0:
        raise ValueError("indptr must start with 0")
    if indptr[-1] != len(term_ids) or len(term_ids) != len(weights):
        raise ValueError(
            f"indptr ends at {indptr[-1]} but there are {len(term_ids)} term ids and {len(weights)} weights"
        )
    if len(indptr) > 1 and (np.diff(indptr) < 0).any():
        raise ValueError("indptr must be non-decreasing")
    if len(term_ids):
        if term_ids.min() < 0 or term_ids.max() >= len(vocab):
            raise ValueError(f"term ids must lie in [0, {len(vocab)})")
        step = np.diff(term_ids.astype(np.int64))
        row_start = np.zeros(len(term_ids), bool)
        row_start[indptr[:-1][indptr[:-1] < len(term_ids)]] = True
        if ((step <= 0) & ~row_start[1:]).any():
            raise ValueError("term ids must be strictly increasing within each row")
        if not np.isfinite(weights).all() or (weights <= 0).any():
            raise ValueError("weights must be finite and > 0")
