"""Search over the native index with the numba scorer (:mod:`plugin.scorer._kernels`).

Modes:

- ``exact``: block-max search (the best-bounded blocks scored first for a k-th score, then every
  other block whose bound reaches it); returns exactly the brute-force top-k under the quantized
  scores, ties by the lower internal doc id. Indexes under ``scan_below`` documents (default
  50,000) are scanned instead: the same hits, faster there.
- ``approx``: the same search with two recall knobs. ``alpha`` scales block bounds (a block is
  skipped or dropped when ``alpha x bound`` is below the k-th score; 1 is exact), and ``beta`` keeps the
  heaviest fraction of query terms for the bounds (documents are still scored with all terms).
- ``scan``: the exhaustive term-at-a-time baseline (exact, no pruning).

Scores are the integer impact dot products, the same numbers Lucene's impact search returns.
"""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Literal

import numba
import numpy as np
from numpy.typing import NDArray

from indexer.native.format import NativeIndex, open_index
from indexer.quantize import IMPACT_SCALE, quantize
from lsr.sparse import SparseBatch, token_index
from plugin.hits import Hit
from plugin.options import MODES, InvalidOption
from plugin.scorer import _kernels

Mode = Literal["exact", "approx", "scan"]
# Below this many documents block bounds prune little and the exhaustive scan touches few postings,
# so exact mode scans (measured on SciFact, 5,183 real docs, p50: scan 0.062 / 0.029 ms, block-max
# 0.079 / 0.035 ms for SPLADE / inference-free queries; at 200,000 topical docs block-max is 2.7x faster).
SCAN_BELOW = 50_000
# Blocks scored in the first round for a k-th score: FIRST, or k when k is larger (measured at 1M docs,
# p50: for a top-10, 16 beats 4, 8, 32, 64, 128; for a top-1000, 1,024 blocks are 21% / 37% faster than 16
# on SPLADE-style / inference-free queries, and 128 blocks 6% / 5% for a top-100).
FIRST = 16
# A query term is read entry by entry when it has at most this many entries per block a round visits,
# and seeks to the blocks from its skips otherwise (measured at 1M docs, SPLADE-style p50: 2 and 4 are
# 8-10% slower than 16, 32 or 64, which are within noise of each other).
WALK_RATIO = 32
# Query vocabularies whose term-id mapping is kept (each query batch carries its vocabulary).
MAPPINGS_KEPT = 4


class NativeSearcher:
    """Exact and approximate top-k search over an index built by ``lsr index --backend native``."""

    def __init__(self, index_dir: str | Path, verify: bool = True, scan_below: int | None = None):
        self.index: NativeIndex = open_index(index_dir, verify=verify)
        self.scan_below = SCAN_BELOW if scan_below is None else scan_below
        ix = self.index
        self._vocab_index = token_index(ix.vocab)
        # Query vocabulary -> term-id mapping, per vocabulary object (an encoder's, the index's own).
        # Plain dict reads and writes: safe when threads (the HTTP service) search at once.
        self._mappings: dict[int, tuple[tuple[str, ...], np.ndarray]] = {}
        self.scale = ix.meta["scale"] or IMPACT_SCALE
        # The index arrays in the kernels' order (plugin/scorer/_kernels.py), as plain ndarray views of
        # the maps: numba types a memmap object ~4 us slower per call.
        self._arrays = tuple(
            np.asarray(ix.arrays[name])
            for name in (
                "term_blocks", "block_gap", "long_offsets", "block_long", "head_codes", "term_multis",
                "multi_count", "term_tails", "tail_codes",
            )
        )  # fmt: skip
        self._args = (*self._arrays, ix.n_docs, ix.block_size)

    def __len__(self) -> int:
        return self.index.n_docs

    # ---------------------------------------------------------------- queries
    def _mapping(self, vocab: tuple[str, ...]) -> np.ndarray:
        """Query vocabulary id -> index term id (-1 where the index never saw the term)."""
        hit = self._mappings.get(id(vocab))
        if hit is not None and hit[0] is vocab:
            return hit[1]
        token_index(vocab)  # rejects duplicate tokens
        m = np.array([self._vocab_index.get(t, -1) for t in vocab], np.int64)
        if len(self._mappings) >= MAPPINGS_KEPT:
            self._mappings.clear()
        self._mappings[id(vocab)] = (vocab, m)
        return m

    def query_arrays(self, queries: SparseBatch, beta: float = 1.0):
        """CSR query arrays in index term ids, heaviest term first, and each query's bound-term count."""
        if not isinstance(queries, SparseBatch):
            raise TypeError(f"queries must be a SparseBatch, got {type(queries).__name__}")
        if not 0 < beta <= 1:
            raise InvalidOption("beta", f"must be in (0, 1], got {beta}")
        terms = self._mapping(queries.vocab)[queries.term_ids]
        weights = quantize(queries.weights, self.scale).astype(np.int64)
        keep = (terms >= 0) & (weights > 0)
        rows = np.repeat(np.arange(len(queries)), queries.row_nnz())[keep]
        terms, weights = terms[keep], weights[keep]
        order = np.lexsort((terms, -weights, rows))
        counts = np.bincount(rows, minlength=len(queries))
        terms, weights = terms[order], weights[order]
        offsets = np.zeros(len(queries) + 1, np.int64)
        np.cumsum(counts, out=offsets[1:])
        bound = np.array([_bound_terms(c, beta) for c in counts.tolist()], np.int64)
        return offsets, terms.astype(np.int64), weights, bound

    # ----------------------------------------------------------------- search
    def search(
        self, query: SparseBatch, k: int = 10, mode: Mode = "exact", alpha: float = 1.0, beta: float = 1.0
    ) -> list[Hit]:
        """Top-``k`` hits of a one-row query batch."""
        return self.to_hits(*self.search_ids(query, k, mode, alpha, beta))

    def batch_search(
        self,
        queries: SparseBatch,
        k: int = 10,
        threads: int = 1,
        mode: Mode = "exact",
        alpha: float = 1.0,
        beta: float = 1.0,
    ) -> list[list[Hit]]:
        """Top-``k`` hits per query row, ``threads`` queries at a time (numba threads, GIL released)."""
        return [self.to_hits(s, d) for s, d in self.batch_search_ids(queries, k, threads, mode, alpha, beta)]

    def search_ids(
        self, query: SparseBatch, k: int = 10, mode: Mode = "exact", alpha: float = 1.0, beta: float = 1.0
    ) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
        """``(scores, internal doc ids)`` of the top-``k``, best first (:meth:`search`'s hits)."""
        if not isinstance(query, SparseBatch):
            raise TypeError(f"queries must be a SparseBatch, got {type(query).__name__}")
        if len(query) != 1:
            raise ValueError(f"search takes a one-row query batch, got {len(query)} rows; use batch_search")
        alpha, beta = self._knobs(mode, alpha, beta)
        impacts = quantize(query.weights, self.scale)
        terms, weights = _kernels._query(self._mapping(query.vocab), query.term_ids, impacts)
        bound = _bound_terms(len(terms), beta)
        ix = self.index
        if self._scans(mode):
            return _kernels._scan(terms, weights, *self._arrays, ix.n_docs, ix.block_size, k)
        scores, docs, _ = _kernels._block_max(
            terms, weights, bound, *self._args, k, alpha, max(FIRST, k), WALK_RATIO
        )
        return scores, docs

    def batch_search_ids(
        self,
        queries: SparseBatch,
        k: int = 10,
        threads: int = 1,
        mode: Mode = "exact",
        alpha: float = 1.0,
        beta: float = 1.0,
    ) -> list[tuple[NDArray[np.int64], NDArray[np.int64]]]:
        """:meth:`search_ids` per query row, ``threads`` queries at a time."""
        if threads < 1:
            raise ValueError(f"threads must be >= 1, got {threads}")
        alpha, beta = self._knobs(mode, alpha, beta)
        if self._scans(mode):
            rows = [queries.take([i]) for i in range(len(queries))]
            if threads == 1 or len(rows) < 2:
                return [self.search_ids(q, k, "scan") for q in rows]
            with ThreadPoolExecutor(min(threads, len(rows))) as pool:  # the scan kernel releases the GIL
                return list(pool.map(lambda q: self.search_ids(q, k, "scan"), rows))
        offsets, terms, weights, bound = self.query_arrays(queries, beta)
        previous = numba.get_num_threads()
        numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))
        try:
            scores, docs = _kernels._batch_block_max(
                offsets, terms, weights, bound, *self._args, k, alpha, max(FIRST, k), WALK_RATIO
            )
        finally:
            numba.set_num_threads(previous)
        return [(s[d >= 0], d[d >= 0]) for s, d in zip(scores, docs, strict=True)]

    def _scans(self, mode: str) -> bool:
        """Whether ``mode`` runs the exhaustive scan (asked for, or exact on a small index)."""
        return mode == "scan" or (mode == "exact" and self.index.n_docs < self.scan_below)

    def _knobs(self, mode: str, alpha: float, beta: float) -> tuple[float, float]:
        if mode not in MODES:
            raise InvalidOption("mode", f"must be one of {', '.join(MODES)}, got {mode!r}")
        if mode != "approx":
            if alpha != 1.0 or beta != 1.0:
                raise InvalidOption("alpha" if alpha != 1.0 else "beta", "applies to mode='approx' only")
            return 1.0, 1.0
        if not 0 < alpha <= 1:
            raise InvalidOption("alpha", f"must be in (0, 1], got {alpha}")
        if not 0 < beta <= 1:
            raise InvalidOption("beta", f"must be in (0, 1], got {beta}")
        return float(alpha), float(beta)

    def to_hits(self, scores: np.ndarray, docs: np.ndarray) -> list[Hit]:
        """Hits (external ids) of ``(scores, internal doc ids)`` as :meth:`search_ids` returns them."""
        ids = self.index.docids(docs.tolist())
        return [Hit(i, float(s)) for i, s in zip(ids, scores.tolist(), strict=True)]


def _bound_terms(n_terms: int, beta: float) -> int:
    """How many of a query's ``n_terms`` (heaviest first) bound the blocks: ``beta`` of them, at least one."""
    return max(1, math.ceil(beta * n_terms)) if n_terms else 0
