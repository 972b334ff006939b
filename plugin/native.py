"""Search over the native index with the numba scorer (:mod:`plugin.scorer._kernels`).

Modes:

- ``exact``: block-max search (the best-bounded blocks scored first for a k-th score, then every
  other block whose bound reaches it); returns exactly the brute-force top-k under the quantized
  scores, ties by the lower position in the input (the index's tie order: what a Lucene index of the
  same files ranks ties by). Indexes under ``scan_below`` documents (default
  50,000) are scanned instead: the same hits, faster there.
- ``approx``: the same search with two recall knobs. ``alpha`` scales block bounds (a block is
  skipped or dropped when ``alpha x bound`` is below the k-th score; 1 is exact), and ``beta`` keeps the
  heaviest fraction of query terms for the bounds (documents are still scored with all terms). On an
  index with a forward store, ``cut`` (Seismic's query cut) takes the top ``depth`` documents under
  the query's ``cut`` heaviest terms as candidates and re-scores them with all its terms.
- ``scan``: the exhaustive term-at-a-time baseline (exact, no pruning).
- ``float``: exact under the *float* scores (an index built with ``float_weights``): the exact
  quantized top ``FLOAT_DEPTH x k`` re-scored with the documents' and the query's float weights,
  certified by a bound on what rounding can move a score (``s^2 F(d) <= Q(d) + sum over the query's
  terms of (max(f_t, 0) M_t + s w_t / 2)``, with ``w_t`` the query weight, ``f_t = s w_t - p_t`` its
  rounding to the impact ``p_t``, ``M_t`` the term's largest document impact, ``s`` the scale): when
  the k-th re-scored candidate beats every other document's bound, the hits are the float top-k;
  otherwise the search goes 4x deeper, and past the last matching document scores every document
  from the float store. Scores are float dot products.

A mask (deleted documents, a filter) restricts every mode to the documents it allows; blocks
without one are never scored. A selective mask (under :data:`DIRECT_BELOW` of the documents) on an
index built with a forward store is scored document by document instead, in every mode: exact.

Scores are the integer impact dot products, the same numbers Lucene's impact search returns
(mode ``float``: the float dot products).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numba
import numpy as np
from numpy.typing import NDArray

from indexer.native.format import LOCAL_BITS, NativeIndex, open_index
from indexer.quantize import IMPACT_SCALE, quantize
from lsr.sparse import SparseBatch, token_index
from plugin.hits import Hit
from plugin.options import MODES, InvalidOption, Mode
from plugin.scorer import _kernels

# Below this many documents block bounds prune little: scanning is faster (bench/results/constants.md).
SCAN_BELOW = 50_000
# Blocks scored in the first round for a k-th score: FIRST, or k when larger (bench/results/constants.md).
FIRST = 16
# A term with at most this many entries per visited block is read in order, others seek from their skips.
WALK_RATIO = 32
# A query on several threads reads at least this many entries (its terms' blocks), or it runs on one:
# below, starting the threads costs more than they save (realseed at 200k documents, bench/search.py).
SPLIT_ENTRIES = 4096
# approx's query cut: candidates re-scored per hit wanted, by default.
CUT_DEPTH = 10
# A filter allowing fewer than this share of the documents is scored document by document from the
# forward store, when the index has one. At 1M topical documents: 0.1% 0.25 ms against 2.3 ms through
# the blocks, 1% 7.6 ms against 6.0 (random reads of 10k documents' terms): bench/results/live.jsonl.
DIRECT_BELOW = 0.005
# Mode "float" re-scores the quantized top FLOAT_DEPTH x k first (bench/results/constants.md).
FLOAT_DEPTH = 2
# Mode "float"'s certificate keeps this relative margin for float64 rounding in its sums.
FLOAT_MARGIN = 1e-9
# Query vocabularies whose term-id mapping is kept (each query batch carries its vocabulary).
MAPPINGS_KEPT = 4


@dataclass
class DocMask:
    """Which internal documents a search may return (deletions, a filter, or both).

    Attributes
    ----------
    docs : NDArray[np.uint8]
        ``[n_blocks x block_size]`` 1 for an allowed document.
    blocks : NDArray[np.uint8]
        ``[n_blocks]`` 1 where a block holds an allowed document (the others are never scored).
    count : int
        Allowed documents.
    """

    docs: NDArray[np.uint8]
    blocks: NDArray[np.uint8]
    count: int
    _ids: NDArray[np.int64] | None = None

    def ids(self) -> NDArray[np.int64]:
        """The allowed internal doc ids, ascending (made once)."""
        if self._ids is None:
            self._ids = np.flatnonzero(self.docs).astype(np.int64)
        return self._ids

    @classmethod
    def from_allowed(cls, allowed: NDArray[np.bool_], block_size: int) -> DocMask:
        """The mask of ``allowed`` (``[n_docs]`` bool), padded to whole blocks."""
        n_blocks = -(-len(allowed) // block_size)
        docs = np.zeros(n_blocks * block_size, np.uint8)
        docs[: len(allowed)] = allowed
        blocks = docs.reshape(n_blocks, block_size).any(axis=1).astype(np.uint8)
        return cls(docs, blocks, int(np.count_nonzero(allowed)))

    def __and__(self, other: DocMask) -> DocMask:
        docs = self.docs & other.docs
        blocks = docs.reshape(len(self.blocks), -1).any(axis=1).astype(np.uint8)
        return DocMask(docs, blocks, int(np.count_nonzero(docs)))


# The kernels' "no filter": empty arrays.
_NONE = np.zeros(0, np.uint8)


class NativeSearcher:
    """Exact and approximate top-k search over an index built by ``lsr index --backend native``.

    Parameters
    ----------
    index_dir : str or Path
        The index directory.
    verify : bool
        Compare the index files' sha256 checksums on opening (shapes and dtypes are always checked).
    scan_below : int, optional
        ``exact`` scans indexes with fewer documents than this (default :data:`SCAN_BELOW`).
    deleted : NDArray[np.bool_], optional
        ``[n_docs]`` documents never returned (a live index's deletions: :mod:`indexer.live`).

    ``index_dir`` may also be an opened :class:`indexer.native.format.NativeIndex`.
    """

    def __init__(
        self,
        index_dir: str | Path | NativeIndex,
        verify: bool = True,
        scan_below: int | None = None,
        deleted: NDArray[np.bool_] | None = None,
    ):
        if isinstance(index_dir, NativeIndex):
            self.index: NativeIndex = index_dir
        else:
            self.index = open_index(index_dir, verify=verify)
        self.live: DocMask | None = None
        if deleted is not None and deleted.any():
            self.live = DocMask.from_allowed(~np.asarray(deleted, bool), self.index.block_size)
        # Stored metadata columns (a live segment's, for filters: plugin/live.py), name -> [n_docs].
        self.fields: dict[str, np.ndarray] = {}
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
        self._ties = ix.tie_arrays  # (each internal doc's input position, inverse); empty: by internal id
        self._args = (*self._arrays, ix.n_docs, ix.block_size, *self._ties)
        self._forward = (
            tuple(np.asarray(ix.arrays[n]) for n in ("fwd_offsets", "fwd_terms", "fwd_impacts"))
            if ix.has_forward
            else None
        )
        self._floats = (
            tuple(np.asarray(ix.arrays[n]) for n in ("flt_offsets", "flt_terms", "flt_weights"))
            if ix.has_float_weights
            else None
        )
        self._term_max: np.ndarray | None = None  # each term's largest impact, made on first use

    def __len__(self) -> int:
        """Documents searched (deleted ones not counted)."""
        return self.index.n_docs if self.live is None else self.live.count

    @property
    def vocab(self) -> tuple[str, ...]:
        return self.index.vocab

    # ---------------------------------------------------------------- filters
    def internal_ids(self, ids) -> NDArray[np.int64]:
        """Internal ids of the external ``ids`` the index holds (others dropped), ascending."""
        found = self.index.locate(ids)
        return np.unique(found[found >= 0])

    def mask(self, allowed: NDArray[np.bool_] | None = None) -> DocMask | None:
        """The mask of a search: ``allowed`` (``[n_docs]`` bool, ``None``: every document) less
        the deleted documents; ``None`` when nothing is masked."""
        if allowed is None:
            return self.live
        m = DocMask.from_allowed(np.asarray(allowed, bool), self.index.block_size)
        return m if self.live is None else m & self.live

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
        """CSR query arrays in index term ids, heaviest term first, and each query's bound-term count.

        Parameters
        ----------
        queries : SparseBatch
            ``[n_queries]`` rows; weights are quantized by the index's scale.
        beta : float
            Fraction in (0, 1] of each query's terms (heaviest first) that bound the blocks.

        Returns
        -------
        offsets : NDArray[np.int64]
            ``[n_queries + 1]``; query ``i``'s terms are ``offsets[i]:offsets[i + 1]``.
        terms : NDArray[np.int64]
            ``[nnz]`` index term ids, per query by impact descending, ties by lower term id; terms the
            index lacks and impacts of 0 are dropped.
        weights : NDArray[np.int64]
            ``[nnz]`` the matching query impacts.
        bound : NDArray[np.int64]
            ``[n_queries]`` bound-term counts: ``ceil(beta x n_terms)``, at least 1 (0 for no terms).

        Raises
        ------
        TypeError
            When ``queries`` is not a SparseBatch.
        ValueError
            When ``beta`` is outside (0, 1], or the query vocabulary repeats a token.
        """
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
        self,
        query: SparseBatch,
        k: int = 10,
        mode: Mode = "exact",
        alpha: float = 1.0,
        beta: float = 1.0,
        mask: DocMask | None = None,
        threads: int = 1,
        cut: int = 0,
        depth: int = 0,
    ) -> list[Hit]:
        """Top-``k`` hits of a one-row query batch.

        Parameters
        ----------
        query : SparseBatch
            One row; tokens the index never saw match nothing.
        k : int
            Hits wanted (fewer when fewer documents score above 0; none for ``k <= 0``).
        mode : {"exact", "approx", "scan"}
            As in the module doc.
        alpha, beta : float
            ``approx``'s knobs in (0, 1]; must be 1 in the other modes.
        mask : DocMask, optional
            The documents that may be returned (:meth:`mask`); default: all but the deleted ones.
        threads : int
            Threads on this one query (``exact`` and ``approx`` block-max search, not the query cut;
            capped at numba's thread count): the same hits in ``exact`` mode, sooner when cores are
            idle; a query under :data:`SPLIT_ENTRIES` entries runs on one.
        cut, depth : int
            ``approx`` on an index with a forward store: candidates are the top ``depth`` (default
            10 x ``k``) under the query's ``cut`` heaviest terms, re-scored with all of them; 0: no cut.

        Returns
        -------
        list of Hit
            Best first; scores are integer impact dot products, ties by the lower input position.

        Raises
        ------
        TypeError
            When ``query`` is not a SparseBatch.
        ValueError
            When ``query`` has other than one row, or on a bad ``mode``, ``alpha``, ``beta``,
            ``threads``, ``cut`` or ``depth``.
        """
        return self.to_hits(*self.search_ids(query, k, mode, alpha, beta, mask, threads, cut, depth))

    def batch_search(
        self,
        queries: SparseBatch,
        k: int = 10,
        threads: int = 1,
        mode: Mode = "exact",
        alpha: float = 1.0,
        beta: float = 1.0,
        mask: DocMask | None = None,
        cut: int = 0,
        depth: int = 0,
    ) -> list[list[Hit]]:
        """Top-``k`` hits per query row, ``threads`` queries at a time (numba threads, GIL released).

        Parameters
        ----------
        queries : SparseBatch
            ``[n_queries]`` rows.
        k : int
            Hits per query.
        threads : int
            Queries searched at once (capped at numba's thread count; Python threads for a scan).
        mode, alpha, beta, mask, cut, depth
            As in :meth:`search`.

        Returns
        -------
        list of list of Hit
            One list per row, in row order, as :meth:`search` returns it.

        Raises
        ------
        TypeError
            When ``queries`` is not a SparseBatch.
        ValueError
            When ``threads < 1``, or on a bad ``mode``, ``alpha``, ``beta``, ``cut`` or ``depth``.
        """
        results = self.batch_search_ids(queries, k, threads, mode, alpha, beta, mask, cut, depth)
        return [self.to_hits(s, d) for s, d in results]

    def search_ids(
        self,
        query: SparseBatch,
        k: int = 10,
        mode: Mode = "exact",
        alpha: float = 1.0,
        beta: float = 1.0,
        mask: DocMask | None = None,
        threads: int = 1,
        cut: int = 0,
        depth: int = 0,
    ) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
        """``(scores, internal doc ids)`` of the top-``k``, best first (:meth:`search`'s hits).

        Parameters
        ----------
        query : SparseBatch
            One row.
        k : int
            Hits wanted.
        mode, alpha, beta, mask, threads, cut, depth
            As in :meth:`search`.

        Returns
        -------
        scores : NDArray[np.int64]
            ``[n_hits]`` impact dot products, ``n_hits <= k``, all > 0; ties by the lower doc id.
        docs : NDArray[np.int64]
            ``[n_hits]`` internal doc ids (:meth:`to_hits` maps them to external ids).

        Raises
        ------
        TypeError, ValueError
            As :meth:`search`.
        """
        check_one_row(query)
        if threads < 1:
            raise ValueError(f"threads must be >= 1, got {threads}")
        alpha, beta = self._knobs(mode, alpha, beta)
        depth = self._cut_knobs(mode, k, cut, depth)
        if mode == "float":
            return self._float_search(query, k, mask)
        impacts = quantize(query.weights, self.scale)
        terms, weights = _kernels._query(self._mapping(query.vocab), query.term_ids, impacts)
        bound = _bound_terms(len(terms), beta)
        ix = self.index
        allow, block_allow = self._mask_arrays(mask)
        if self._direct(mask):
            return _kernels._score_docs(
                terms, weights, mask.ids(), *self._forward, len(ix.vocab), k, *self._ties
            )
        if self._scans(mode):
            return _kernels._scan(terms, weights, *self._args, k, allow)
        if cut:
            return _kernels._cut_search(
                terms, weights, cut, depth, *self._args, k, alpha, FIRST, WALK_RATIO, allow, block_allow,
                *self._forward, len(ix.vocab),
            )  # fmt: skip
        if threads == 1 or numba.config.NUMBA_NUM_THREADS == 1:
            scores, docs, _ = _kernels._block_max(
                terms, weights, bound, *self._args, k, alpha, max(FIRST, k), WALK_RATIO, allow, block_allow
            )
            return scores, docs
        with numba_threads(threads) as n:
            scores, docs, _ = _kernels._block_max_split(
                terms, weights, bound, *self._args, k, alpha, max(FIRST, k), WALK_RATIO, allow, block_allow,
                n, SPLIT_ENTRIES,
            )  # fmt: skip
        return scores, docs

    def batch_search_ids(
        self,
        queries: SparseBatch,
        k: int = 10,
        threads: int = 1,
        mode: Mode = "exact",
        alpha: float = 1.0,
        beta: float = 1.0,
        mask: DocMask | None = None,
        cut: int = 0,
        depth: int = 0,
    ) -> list[tuple[NDArray[np.int64], NDArray[np.int64]]]:
        """:meth:`search_ids` per query row, ``threads`` queries at a time.

        Parameters
        ----------
        queries : SparseBatch
            ``[n_queries]`` rows.
        k, threads, mode, alpha, beta, mask, cut, depth
            As in :meth:`batch_search`.

        Returns
        -------
        list of tuple
            ``[n_queries]`` pairs ``(scores, docs)``, each ``NDArray[np.int64]`` ``[n_hits]`` with
            ``n_hits <= k``, as :meth:`search_ids` returns them.

        Raises
        ------
        TypeError
            When ``queries`` is not a SparseBatch.
        ValueError
            When ``threads < 1``, or on a bad ``mode``, ``alpha`` or ``beta``.
        """
        if threads < 1:
            raise ValueError(f"threads must be >= 1, got {threads}")
        alpha, beta = self._knobs(mode, alpha, beta)
        depth = self._cut_knobs(mode, k, cut, depth)
        if self._scans(mode) or mode == "float":
            one = "float" if mode == "float" else "scan"
            rows = [queries.take([i]) for i in range(len(queries))]
            if threads == 1 or len(rows) < 2:
                return [self.search_ids(q, k, one, mask=mask) for q in rows]
            with ThreadPoolExecutor(min(threads, len(rows))) as pool:  # the kernels release the GIL
                return list(pool.map(lambda q: self.search_ids(q, k, one, mask=mask), rows))
        offsets, terms, weights, bound = self.query_arrays(queries, beta)
        with numba_threads(threads):
            if self._direct(mask):
                scores, docs = _kernels._batch_score_docs(
                    offsets, terms, weights, mask.ids(), *self._forward, len(self.index.vocab), k, *self._ties
                )
                return [(s[d >= 0], d[d >= 0]) for s, d in zip(scores, docs, strict=True)]
            if cut:
                scores, docs = _kernels._batch_cut_search(
                    offsets, terms, weights, cut, depth, *self._args, k, alpha, FIRST, WALK_RATIO,
                    *self._mask_arrays(mask), *self._forward, len(self.index.vocab),
                )  # fmt: skip
            else:
                scores, docs = _kernels._batch_block_max(
                    offsets, terms, weights, bound, *self._args, k, alpha, max(FIRST, k), WALK_RATIO,
                    *self._mask_arrays(mask),
                )  # fmt: skip
        return [(s[d >= 0], d[d >= 0]) for s, d in zip(scores, docs, strict=True)]

    def _float_search(
        self, query: SparseBatch, k: int, mask: DocMask | None
    ) -> tuple[NDArray[np.float64], NDArray[np.int64]]:
        """Mode ``float`` (module doc): ``(float scores, internal docs)`` of the float top-``k``."""
        if self._floats is None:
            raise InvalidOption(
                "mode", "'float' needs an index that keeps float weights (lsr index --float-weights)"
            )
        if k <= 0:
            return np.zeros(0, np.float64), np.zeros(0, np.int64)
        n_terms = len(self.index.vocab)
        terms = self._mapping(query.vocab)[query.term_ids]
        weights = np.asarray(query.weights, np.float64)
        keep = (terms >= 0) & (weights > 0)
        terms, weights = terms[keep], weights[keep]
        if len(terms) == 0:
            return np.zeros(0, np.float64), np.zeros(0, np.int64)
        # s^2 F(d) - Q(d) = sum_t f_t q_t(d) + (p_t + f_t) e_t, with f_t = s w_t - p_t the query's own
        # rounding (known) and |e_t| <= 1/2 the document's: at most sum_t max(f_t, 0) M_t + s w_t / 2.
        scaled = weights * self.scale
        ahead = np.maximum(scaled - quantize(weights, self.scale), 0.0)
        slack = float(ahead @ self.term_max()[terms] + scaled.sum() / 2)
        scale2 = float(self.scale) ** 2
        depth = max(FLOAT_DEPTH * k, k + 1)
        while True:
            scores, docs = self.search_ids(query, depth, "exact", mask=mask)
            floats = _kernels._float_scores(terms, weights, docs, *self._floats, n_terms)
            order = np.lexsort((self.tie_key(docs), -floats))[:k]
            exhausted = len(docs) < depth
            # Every other document's quantized score is at most the last candidate's (0 past the end).
            others = 0.0 if exhausted else float(scores[-1])
            if len(order) == k and floats[order[-1]] * scale2 * (1 - FLOAT_MARGIN) > others + slack:
                return floats[order], docs[order]
            if exhausted:
                break
            depth *= 4
        # Fewer than k candidates are certain: documents whose shared weights all round to 0 may rank.
        allowed = mask if mask is not None else self.live
        every = allowed.ids() if allowed is not None else np.arange(self.index.n_docs, dtype=np.int64)
        floats = _kernels._float_scores(terms, weights, every, *self._floats, n_terms)
        positive = floats > 0
        floats, every = floats[positive], every[positive]
        order = np.lexsort((self.tie_key(every), -floats))[:k]
        return floats[order], every[order]

    def tie_key(self, docs):
        """The tie keys of internal ``docs`` (an int or an int array): their positions in the input."""
        return self._ties[0][docs] if self.index.has_tie_order else docs

    def term_max(self) -> NDArray[np.int64]:
        """``[n_terms]`` each term's largest document impact (0 for a term with no posting)."""
        if self._term_max is None:
            bounds = np.asarray(self.index.arrays["term_blocks"], np.int64)
            heads = np.asarray(self.index.arrays["head_codes"]).astype(np.int64) >> LOCAL_BITS
            out = np.zeros(len(bounds) - 1, np.int64)
            has = np.diff(bounds) > 0
            if has.any():  # a head code is its block's highest impact
                out[has] = np.maximum.reduceat(heads, bounds[:-1][has])
            self._term_max = out
        return self._term_max

    def _mask_arrays(self, mask: DocMask | None) -> tuple[np.ndarray, np.ndarray]:
        """The kernels' (allow, block_allow): the given mask, else the deletions, else none."""
        mask = mask if mask is not None else self.live
        if mask is None:
            return _NONE, _NONE
        n_blocks = self.index.meta["n_blocks"]
        if len(mask.blocks) != n_blocks:
            raise ValueError(f"the mask covers {len(mask.blocks)} blocks, the index has {n_blocks}")
        return mask.docs, mask.blocks

    def _direct(self, mask: DocMask | None) -> bool:
        """Whether a search under ``mask`` scores the allowed documents one by one (module doc)."""
        return (
            mask is not None and self._forward is not None and mask.count < DIRECT_BELOW * self.index.n_docs
        )

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

    def _cut_knobs(self, mode: str, k: int, cut: int, depth: int) -> int:
        """Check ``cut`` and ``depth``; returns the depth to search (10 x ``k`` by default)."""
        if cut < 0:
            raise InvalidOption("cut", f"must be >= 0, got {cut}")
        if not cut:
            if depth:
                raise InvalidOption("depth", "applies with cut > 0 only")
            return 0
        if mode != "approx":
            raise InvalidOption("cut", "applies to mode='approx' only")
        if self._forward is None:
            raise InvalidOption("cut", "needs an index built with a forward store (lsr index --forward)")
        if depth and depth < k:
            raise InvalidOption("depth", f"must be >= k ({k}), got {depth}")
        return depth or CUT_DEPTH * k

    def to_hits(self, scores: np.ndarray, docs: np.ndarray) -> list[Hit]:
        """Hits (external ids) of ``(scores, internal doc ids)`` as :meth:`search_ids` returns them.

        Parameters
        ----------
        scores : np.ndarray
            ``[n]`` scores (any numeric dtype; each becomes a ``float``).
        docs : np.ndarray
            ``[n]`` internal doc ids, integer.

        Returns
        -------
        list of Hit
            ``[n]`` hits in the given order.
        """
        ids = self.index.docids(docs.tolist())
        return [Hit(i, float(s)) for i, s in zip(ids, scores.tolist(), strict=True)]


@contextmanager
def numba_threads(threads: int) -> Iterator[int]:
    """numba's thread count at ``threads`` (capped at numba's pool) inside, restored after. It is a
    per-thread setting, so searching threads do not disturb each other; set only when it differs,
    since setting and restoring it costs ~5 us, a share of a short query."""
    n = min(threads, numba.config.NUMBA_NUM_THREADS)
    previous = numba.get_num_threads()
    if previous != n:
        numba.set_num_threads(n)
    try:
        yield n
    finally:
        if previous != n:
            numba.set_num_threads(previous)


def check_one_row(query) -> None:
    """``TypeError`` unless ``query`` is a SparseBatch, ``ValueError`` unless it has one row (the check
    every ``search`` of a native, live or sharded index makes)."""
    if not isinstance(query, SparseBatch):
        raise TypeError(f"queries must be a SparseBatch, got {type(query).__name__}")
    if len(query) != 1:
        raise ValueError(f"search takes a one-row query batch, got {len(query)} rows; use batch_search")


def refuse_float(mode: str, which: str) -> None:
    """``InvalidOption`` for mode ``float`` on ``which`` index: it merges integer scores."""
    if mode == "float":
        raise InvalidOption("mode", f"'float' searches a plain native index, not {which} one")


def _bound_terms(n_terms: int, beta: float) -> int:
    """How many of a query's ``n_terms`` (heaviest first) bound the blocks: ``beta`` of them, at least one."""
    return max(1, math.ceil(beta * n_terms)) if n_terms else 0
