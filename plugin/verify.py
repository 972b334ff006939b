"""Bi-granular search: sparse candidates from the in-memory index, verified by dense vectors on disk.

After BiDR (Microsoft, WWW'22): the light representation (here the learned sparse index) finds the
top-``candidates`` documents, their dense rows are gathered from the memory-mapped store in doc-id
order, scored against the dense query embedding, and the two scores are fused:

- ``linear`` (default): ``dense + weight x (sparse - min) / (max - min)``, min and max over the
  candidates (a constant sparse score normalises to 0). ``weight`` 0.3 is BiDR's and DESIGN.md's.
- ``rrf``: reciprocal-rank fusion, ``1 / (rrf_k + sparse rank) + 1 / (rrf_k + dense rank)`` with
  ranks from 1 among the candidates, ``rrf_k`` 60 as in Cormack et al.

Ties in the fused score go to the lower tie key (the document's input position), as in the sparse
search. Exact dense search
(:func:`exact_dense`) scans the whole store in blocks: the baseline, and the dense-only mode.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from indexer.dense import DenseStore, ids_sha256, open_dense_store
from lsr.sparse import SparseBatch
from plugin.hits import Hit
from plugin.native import DocMask, NativeSearcher
from plugin.options import DEFAULT_CANDIDATES, DEFAULT_FUSION_WEIGHT, FUSIONS, Fusion, Mode
from plugin.scorer import _kernels

RRF_K = 60
STAGES: tuple[str, ...] = ("sparse_search", "dense_encode", "gather", "score", "fuse")


def fuse(
    sparse: NDArray,
    dense: NDArray[np.float32],
    fusion: Fusion = "linear",
    weight: float = DEFAULT_FUSION_WEIGHT,
) -> NDArray[np.float64]:
    """Fused scores of candidates given in sparse rank order (best first), as in the module doc.

    Parameters
    ----------
    sparse : NDArray
        ``[n]`` sparse scores, best first (``rrf`` reads only their order).
    dense : NDArray[np.float32]
        ``[n]`` dense scores of the same candidates.
    fusion : {"linear", "rrf"}
        How the two are fused.
    weight : float
        ``linear``'s weight on the min-max normalised sparse score (unused by ``rrf``).

    Returns
    -------
    NDArray[np.float64]
        ``[n]`` fused scores, in the candidates' order.

    Raises
    ------
    ValueError
        On an unknown ``fusion``.
    """
    if fusion == "linear":
        s = np.asarray(sparse, np.float64)
        span = s.max() - s.min() if len(s) else 0.0
        norm = (s - s.min()) / span if span > 0 else np.zeros_like(s)
        return dense.astype(np.float64) + weight * norm
    if fusion == "rrf":
        n = len(dense)
        dense_rank = np.empty(n, np.int64)
        dense_rank[np.argsort(-dense, kind="stable")] = np.arange(1, n + 1)
        return 1.0 / (RRF_K + np.arange(1, n + 1)) + 1.0 / (RRF_K + dense_rank)
    raise ValueError(f"fusion must be one of {', '.join(FUSIONS)}, got {fusion!r}")


def check_fusion(candidates: int, fusion: str) -> None:
    """``ValueError`` for fewer than one candidate or an unknown fusion."""
    if candidates < 1:
        raise ValueError(f"candidates must be >= 1, got {candidates}")
    if fusion not in FUSIONS:
        raise ValueError(f"fusion must be one of {', '.join(FUSIONS)}, got {fusion!r}")


def dense_query_encoder(dense_encoder, dim: int, holder: str):
    """The dense query encoder of a verifier (``None`` stays ``None``): an ENCODER_DIR is loaded; it
    must be dense and make ``dim``-d vectors (``holder``: "the store at X holds", for the error)."""
    if dense_encoder is None:
        return None
    from lsr.runtime import OnnxDenseEncoder, load_encoder

    loaded = not isinstance(dense_encoder, str | Path)
    encoder = dense_encoder if loaded else load_encoder(dense_encoder, side="query")
    if not isinstance(encoder, OnnxDenseEncoder):
        raise ValueError(f"{dense_encoder} is not a dense encoder (kind {encoder.manifest.kind})")
    if encoder.manifest.dim != dim:
        raise ValueError(
            f"dense encoder {dense_encoder} makes {encoder.manifest.dim}-d vectors, {holder} {dim}-d vectors"
        )
    return encoder


def top_k(
    scores: NDArray, docs: NDArray[np.int64], k: int, keys: NDArray[np.int64] | None = None
) -> tuple[NDArray, NDArray[np.int64]]:
    """The ``k`` best ``(score, doc)`` pairs, best first, ties by the lower key (the doc id itself
    when ``keys`` is None).

    Parameters
    ----------
    scores : NDArray
        ``[n]`` scores.
    docs : NDArray[np.int64]
        ``[n]`` their doc ids.
    k : int
        Pairs wanted (all ``n`` when ``k > n``).
    keys : NDArray[np.int64], optional
        ``[n]`` their tie keys (:meth:`plugin.native.NativeSearcher.tie_key`).

    Returns
    -------
    scores : NDArray
        ``[min(k, n)]`` scores, dtype of ``scores``; every score is kept, 0 and negative included.
    docs : NDArray[np.int64]
        ``[min(k, n)]`` their doc ids.
    """
    order = np.lexsort((docs if keys is None else keys, -scores))[:k]
    return scores[order], docs[order]


def dense_scores(
    store: DenseStore, rows: NDArray[np.int64], query: NDArray[np.float32], codes: NDArray | None = None
) -> NDArray[np.float32]:
    """Inner products of ``query`` with the store's rows ``rows`` (ascending: one forward read).

    ``codes`` are those rows' raw codes when already gathered (``store.codes[rows]``).

    Parameters
    ----------
    store : DenseStore
        The dense store.
    rows : NDArray[np.int64]
        ``[n]`` row (internal doc) ids, ascending.
    query : NDArray[np.float32]
        ``[dim]`` query embedding.
    codes : NDArray, optional
        ``[n, dim]`` raw codes of ``rows``; read from the store when not given.

    Returns
    -------
    NDArray[np.float32]
        ``[n]`` inner products (times the rows' scales when the store keeps them).
    """
    if codes is None:
        codes = store.codes[rows]
    scores = _kernels._dense_dot(codes, store.table, query)
    if store.scales is not None:
        scores *= store.scales[rows]
    return scores


def exact_dense(
    store: DenseStore, query: NDArray[np.float32], k: int = 10, block: int = 65_536
) -> tuple[NDArray[np.float32], NDArray[np.int64]]:
    """Exact dense top-``k`` by inner product over every row of ``store``, read block by block.

    Parameters
    ----------
    store : DenseStore
        The dense store.
    query : NDArray[np.float32]
        ``[dim]`` query embedding.
    k : int
        Hits wanted (all rows when ``k`` exceeds them).
    block : int
        Rows read and scored at a time.

    Returns
    -------
    scores : NDArray[np.float32]
        ``[min(k, n_docs)]`` inner products, best first, ties by the lower doc id.
    docs : NDArray[np.int64]
        ``[min(k, n_docs)]`` internal doc ids.

    Raises
    ------
    ValueError
        When ``query`` is not ``[store.dim]``.
    """
    query = np.asarray(query, np.float32)
    if query.shape != (store.dim,):
        raise ValueError(f"dense query has shape {query.shape}, the store holds {store.dim}-d vectors")
    best_s, best_d = np.zeros(0, np.float32), np.zeros(0, np.int64)
    if k <= 0:
        return best_s, best_d
    with store.sequential():
        for start in range(0, store.n_docs, block):
            rows = np.arange(start, min(start + block, store.n_docs))
            scores = dense_scores(store, rows, query, store.codes[start : start + block])
            if len(scores) > k:
                keep = np.argpartition(-scores, k - 1)[:k]
                # argpartition may drop a doc tied with the k-th: keep every doc at the k-th score.
                keep = np.flatnonzero(scores >= scores[keep].min())
            else:
                keep = np.arange(len(scores))
            best_s, best_d = top_k(
                np.concatenate([best_s, scores[keep]]), np.concatenate([best_d, keep + start]), k
            )
    return best_s, best_d


class BiGranularSearcher:
    """Sparse top-``candidates`` from a native index, re-scored by its dense store, fused, top-k.

    Parameters
    ----------
    index_dir : a native index built with a dense store (``lsr index ... --dense``).
    dense_encoder : an exported dense ENCODER_DIR (or a dense encoder loaded from one) for query
        text; optional when every query comes with its embedding.
    candidates : how many sparse hits are verified (BiDR used 1000).
    fusion, weight : see the module doc.
    mode, alpha, beta : how the sparse candidates are searched (:class:`plugin.native.NativeSearcher`);
        ``approx`` with ``alpha`` < 1 finds a top-1000 much faster and verification forgives its misses.
    prefetch : ask the kernel for all candidate pages at once before gathering them (a store that is
        not in the page cache is then read in parallel, not one page fault at a time).
    """

    def __init__(
        self,
        index_dir: str | Path,
        dense_encoder=None,
        candidates: int = DEFAULT_CANDIDATES,
        fusion: Fusion = "linear",
        weight: float = DEFAULT_FUSION_WEIGHT,
        mode: Mode = "exact",
        alpha: float = 1.0,
        beta: float = 1.0,
        verify: bool = True,
        sparse: NativeSearcher | None = None,
        prefetch: bool = True,
    ):
        check_fusion(candidates, fusion)
        self.sparse = sparse or NativeSearcher(index_dir, verify=verify)
        ix = self.sparse.index
        self.store = open_dense_store(
            ix.path, ix.meta.get("dense"), ids_sha256(ix.id_arrays), verify, n_docs=ix.n_docs
        )
        if self.store.n_docs != ix.n_docs:
            raise ValueError(f"{self.store.path}: {self.store.n_docs} dense rows for {ix.n_docs} documents")
        self.candidates = candidates
        self.prefetch = prefetch
        self.alpha, self.beta = self.sparse._knobs(mode, alpha, beta)
        self.mode: Mode = mode
        self.fusion: Fusion = fusion
        self.weight = float(weight)
        self.encoder = dense_query_encoder(
            dense_encoder, self.store.dim, f"the store at {self.store.path} holds"
        )

    def __len__(self) -> int:
        return self.store.n_docs

    def encode(self, texts: list[str]) -> NDArray[np.float32]:
        """Dense query embeddings ``[len(texts), dim]`` from the dense encoder.

        Parameters
        ----------
        texts : list of str
            Query texts.

        Returns
        -------
        NDArray[np.float32]
            ``[len(texts), dim]`` embeddings, one row per text.

        Raises
        ------
        ValueError
            When no dense encoder was given.
        """
        if self.encoder is None:
            raise ValueError("no dense encoder was given: pass dense_encoder or precomputed embeddings")
        return self.encoder.encode(texts)

    def search_ids(
        self,
        sparse_query: SparseBatch,
        dense_query: NDArray[np.float32],
        k: int = 10,
        timings: dict[str, float] | None = None,
        mask: DocMask | None = None,
    ) -> tuple[NDArray[np.float64], NDArray[np.int64]]:
        """``(fused scores, internal doc ids)`` of the top-``k``; adds stage times (ms) to ``timings``.

        Parameters
        ----------
        sparse_query : SparseBatch
            One row, searched for the top ``candidates`` (the searcher's mode and knobs).
        dense_query : NDArray[np.float32]
            ``[dim]`` query embedding.
        k : int
            Hits wanted, from among the candidates (so at most ``candidates``).
        timings : dict, optional
            Receives ``sparse_search``, ``gather``, ``score`` and ``fuse`` times in ms (added to any
            already there).
        mask : DocMask, optional
            Only these documents are candidates (a filter: :meth:`NativeSearcher.search`).

        Returns
        -------
        scores : NDArray[np.float64]
            ``[n_hits]`` fused scores, best first, ties by the lower input position; ``n_hits <= k``.
        docs : NDArray[np.int64]
            ``[n_hits]`` internal doc ids.

        Raises
        ------
        ValueError
            When ``dense_query`` is not ``[dim]``, or as :meth:`NativeSearcher.search_ids` does.
        """
        dense_query = np.asarray(dense_query, np.float32)
        if dense_query.shape != (self.store.dim,):
            raise ValueError(
                f"dense query has shape {dense_query.shape}, the store holds {self.store.dim}-d vectors"
            )
        t0 = time.perf_counter()
        sparse_scores, docs = self.sparse.search_ids(
            sparse_query, self.candidates, self.mode, self.alpha, self.beta, mask
        )
        t1 = time.perf_counter()
        self.store.check_rows(docs)
        order = np.argsort(docs)  # read the store forward, in doc-id order
        rows = docs[order]
        if self.prefetch:
            self.store.prefetch(rows)
        codes = self.store.codes[rows]
        t2 = time.perf_counter()
        dense = np.empty(len(docs), np.float32)
        dense[order] = dense_scores(self.store, rows, dense_query, codes)
        t3 = time.perf_counter()
        fused = fuse(sparse_scores, dense, self.fusion, self.weight)
        fused, top = top_k(fused, docs, k, self.sparse.tie_key(docs))
        t4 = time.perf_counter()
        if timings is not None:
            for stage, dt in (
                ("sparse_search", t1 - t0),
                ("gather", t2 - t1),
                ("score", t3 - t2),
                ("fuse", t4 - t3),
            ):
                timings[stage] = timings.get(stage, 0.0) + dt * 1e3
        return fused, top

    def search(
        self,
        sparse_query: SparseBatch,
        dense_query: NDArray[np.float32] | str,
        k: int = 10,
        timings: dict[str, float] | None = None,
        mask: DocMask | None = None,
    ) -> list[Hit]:
        """Top-``k`` fused hits; ``dense_query`` is an embedding, or text for the dense encoder.

        Parameters
        ----------
        sparse_query : SparseBatch
            One row.
        dense_query : NDArray[np.float32] or str
            ``[dim]`` embedding, or query text (encoded by the dense encoder).
        k : int
            Hits wanted (at most ``candidates``).
        timings : dict, optional
            As in :meth:`search_ids`, plus ``dense_encode`` when ``dense_query`` is text.
        mask : DocMask, optional
            As in :meth:`search_ids`.

        Returns
        -------
        list of Hit
            Best first by fused score, ties by the lower input position.

        Raises
        ------
        ValueError
            As :meth:`search_ids`; for text without a dense encoder.
        """
        if isinstance(dense_query, str):
            t0 = time.perf_counter()
            dense_query = self.encode([dense_query])[0]
            if timings is not None:
                timings["dense_encode"] = timings.get("dense_encode", 0.0) + (time.perf_counter() - t0) * 1e3
        return self.sparse.to_hits(*self.search_ids(sparse_query, dense_query, k, timings, mask))

    def dense_search(self, dense_query: NDArray[np.float32] | str, k: int = 10) -> list[Hit]:
        """Dense-only top-``k`` over the whole store (exact, :func:`exact_dense`): the baseline.

        Parameters
        ----------
        dense_query : NDArray[np.float32] or str
            ``[dim]`` embedding, or query text (encoded by the dense encoder).
        k : int
            Hits wanted.

        Returns
        -------
        list of Hit
            Best first by inner product, ties by the lower internal doc id.

        Raises
        ------
        ValueError
            When the embedding is not ``[dim]``, or for text without a dense encoder.
        """
        if isinstance(dense_query, str):
            dense_query = self.encode([dense_query])[0]
        scores, docs = exact_dense(self.store, dense_query, k)
        return self.sparse.to_hits(scores, docs)

    def batch_search(
        self,
        sparse_queries: SparseBatch,
        dense_queries: NDArray[np.float32],
        k: int = 10,
        timings: list[dict[str, float]] | None = None,
    ) -> list[list[Hit]]:
        """:meth:`search` per row; ``timings``, when given, receives one stage-time dict per query.

        Parameters
        ----------
        sparse_queries : SparseBatch
            ``[n_queries]`` rows.
        dense_queries : NDArray[np.float32]
            ``[n_queries, dim]`` embeddings, one per row.
        k : int
            Hits per query.
        timings : list, optional
            One ``{stage: ms}`` dict is appended per query, in order.

        Returns
        -------
        list of list of Hit
            One list per query, in order, as :meth:`search` returns it.

        Raises
        ------
        ValueError
            When the two counts differ, or as :meth:`search`.
        """
        if len(sparse_queries) != len(dense_queries):
            raise ValueError(f"{len(sparse_queries)} sparse queries but {len(dense_queries)} dense queries")
        out = []
        for i in range(len(sparse_queries)):
            t: dict[str, float] = {}
            out.append(self.search(sparse_queries.take([i]), dense_queries[i], k, t))
            if timings is not None:
                timings.append(t)
        return out
