"""Search over a live native index (:mod:`indexer.live`): one :class:`NativeSearcher` per segment.

Each segment is searched for its own top-k among its live documents (the kernels skip deleted ones,
and blocks with none left), and the lists are merged: higher score first, ties by the older segment,
then the segment's tie order (a document's position in what was appended). With exact search per
segment this is exactly the top-k of the live documents; it is what a fresh build of them, in
segment order, returns (and what a merge of the segments leaves unchanged).

A searcher keeps the generation it opened (its memory maps hold the files even after a merge removes
them) until :meth:`LiveSearcher.refresh`, which opens only the segments that changed.
"""

from __future__ import annotations

import heapq
import logging
import math
import time
import weakref
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from indexer.dense import DenseStore, ids_sha256, open_dense_store
from indexer.files import IndexCorruptError
from indexer.live import Generation, current, open_segments
from indexer.quantize import IMPACT_SCALE
from lsr.sparse import SparseBatch
from plugin.hits import Hit
from plugin.native import DocMask, NativeSearcher, check_one_row, refuse_float
from plugin.options import DEFAULT_CANDIDATES, DEFAULT_FUSION_WEIGHT, Fusion, InvalidOption, Mode
from plugin.verify import check_fusion, dense_query_encoder, dense_scores, fuse, top_k

log = logging.getLogger(__name__)

# Opens retried when a change removed the files of the generation being opened.
_OPEN_ATTEMPTS = 5


class Filter:
    """Which documents a search may return: an allow-list of external ids, a predicate on stored
    fields (``lsr index --fields``), or both (a document must pass both). Compiled once per segment.

    Parameters
    ----------
    ids : collection of str, optional
        The external ids allowed (ids the index lacks allow nothing).
    where : dict, optional
        ``{field: condition}``, all to hold: a string or number (equality), a list of them (in-set), or
        ``{"gt"|"gte"|"lt"|"lte": number, ...}`` (a numeric range). A document without the field fails.

    Raises
    ------
    InvalidOption
        On a malformed condition, naming the field (``filter.where.FIELD``).
    """

    def __init__(self, ids: Collection[str] | None = None, where: Mapping[str, Any] | None = None):
        if isinstance(ids, str):
            raise InvalidOption("filter.ids", "must be a list of ids, not one string")
        if ids is not None and not all(isinstance(i, str) for i in ids):
            raise InvalidOption("filter.ids", "must be a list of strings")
        self.ids = None if ids is None else frozenset(ids)
        self.where = _check_where(where) if where is not None else None
        # Per segment searcher (a new one for every change of its deletions), dropped with it.
        self._masks: weakref.WeakKeyDictionary[NativeSearcher, DocMask | None] = weakref.WeakKeyDictionary()

    def mask(self, segment: NativeSearcher) -> DocMask | None:
        """The segment's mask: its live documents that pass the filter."""
        if segment in self._masks:
            return self._masks[segment]
        n = segment.index.n_docs
        allowed = np.ones(n, bool)
        if self.ids is not None:
            allowed[:] = False
            allowed[segment.internal_ids(self.ids)] = True
        for name, cond in (self.where or {}).items():
            allowed &= _matches(segment.fields.get(name), cond, n)
        mask = self._masks[segment] = segment.mask(allowed)
        return mask


def as_filter(value: Any) -> Filter:
    """A :class:`Filter` from itself, ``{"ids": [...], "where": {...}}`` (either key optional), or a
    list of ids.

    Raises
    ------
    InvalidOption
        On anything else, or a bad part of it (naming ``filter``, ``filter.ids`` or ``filter.where...``).
    """
    if isinstance(value, Filter):
        return value
    if isinstance(value, Mapping):
        extra = sorted(set(value) - {"ids", "where"})
        if extra:
            raise InvalidOption("filter", f"takes the keys ids and where, got {extra[0]!r}")
        return Filter(value.get("ids"), value.get("where"))
    if isinstance(value, list | tuple | set | frozenset):
        return Filter(value)
    raise InvalidOption("filter", f'must be {{"ids": [...], "where": {{...}}}}, got {type(value).__name__}')


RANGES = {"gt": np.greater, "gte": np.greater_equal, "lt": np.less, "lte": np.less_equal}


def _is_scalar(v) -> bool:
    return isinstance(v, str) or (isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v))


def _check_where(where) -> dict[str, Any]:
    if not isinstance(where, Mapping):
        raise InvalidOption(
            "filter.where", f"must be an object {{field: condition}}, got {type(where).__name__}"
        )
    for name, cond in where.items():
        field = f"filter.where.{name}"
        if isinstance(cond, Mapping):
            if not cond or set(cond) - set(RANGES):
                raise InvalidOption(field, f"a range takes {', '.join(RANGES)}, got {sorted(cond)}")
            if not all(_is_scalar(v) and not isinstance(v, str) for v in cond.values()):
                raise InvalidOption(field, "range bounds must be finite numbers")
        elif isinstance(cond, list | tuple):
            if not all(_is_scalar(v) for v in cond):
                raise InvalidOption(field, "an in-set condition is a list of strings or numbers")
        elif not _is_scalar(cond):
            raise InvalidOption(
                field, f"must be a string, a number, a list or a range, got {type(cond).__name__}"
            )
    return dict(where)


def _column(values: list) -> np.ndarray:
    """A stored column as numpy: float64 (NaN for null) when every value is a number, else objects."""
    if all(v is None or (isinstance(v, int | float) and not isinstance(v, bool)) for v in values):
        return np.array([np.nan if v is None else v for v in values], np.float64)
    return np.array(values, dtype=object)


def _matches(column: np.ndarray | None, cond, n: int) -> np.ndarray:
    if column is None:
        return np.zeros(n, bool)
    if isinstance(cond, Mapping):
        if column.dtype != np.float64:
            return np.zeros(n, bool)
        ok = ~np.isnan(column)
        for op, bound in cond.items():
            ok &= RANGES[op](np.nan_to_num(column), bound)
        return ok
    wanted = list(cond) if isinstance(cond, list | tuple) else [cond]
    if column.dtype == np.float64:
        numbers = [v for v in wanted if not isinstance(v, str)]
        return np.isin(column, np.array(numbers, np.float64)) if numbers else np.zeros(n, bool)
    return np.isin(column, np.array(wanted, dtype=object))


class LiveSearcher:
    """Exact and approximate top-k over the segments of a live index.

    Parameters
    ----------
    index_dir : str or Path
        A live index directory.
    verify : bool
        Check the segments' checksums on opening (and on refresh, for new segments).
    scan_below : int, optional
        As in :class:`NativeSearcher`, per segment.
    """

    def __init__(self, index_dir: str | Path, verify: bool = True, scan_below: int | None = None):
        self.path = Path(index_dir)
        self.verify = verify
        self.scan_below = scan_below
        self.generation: Generation
        self.segments: list[NativeSearcher] = []
        self._by_name: dict[tuple[str, str | None], NativeSearcher] = {}
        self._open(current(self.path))

    def _open(self, generation: Generation) -> None:
        for attempt in range(_OPEN_ATTEMPTS):
            try:
                self._load(generation)
                return
            except (FileNotFoundError, IndexCorruptError):
                newer = current(self.path)
                if attempt + 1 == _OPEN_ATTEMPTS or newer.number == generation.number:
                    raise
                generation = newer  # a change removed what we were opening: take the newer one

    def _load(self, generation: Generation) -> None:
        segments, by_name = [], {}
        # A segment whose deletions changed keeps its opened (and verified) index and fields.
        indexes = {s.index.path.name: s for s in self._by_name.values()}
        todo = [s for s in generation.segments if s.name not in indexes]
        opened = dict(
            zip((s.name for s in todo), open_segments(_only(generation, todo), self.verify), strict=True)
        )
        for seg in generation.segments:
            key = (seg.name, seg.deleted)
            searcher = self._by_name.get(key)
            if searcher is None:
                if seg.name in opened:
                    index, deleted = opened[seg.name]
                    fields = {n: _column(c) for n, c in generation.fields(seg).items()}
                else:
                    index, fields = indexes[seg.name].index, indexes[seg.name].fields
                    deleted = generation.deleted_mask(seg)
                searcher = NativeSearcher(index, scan_below=self.scan_below, deleted=deleted)
                searcher.fields = fields
            segments.append(searcher)
            by_name[key] = searcher
        self.generation, self.segments, self._by_name = generation, segments, by_name
        scales = {s.index.meta["scale"] for s in segments}
        self.scale = scales.pop() if len(scales) == 1 and None not in scales else IMPACT_SCALE
        self.vocab = union_vocab(segments)
        self.field_names = sorted({n for s in segments for n in s.fields})

    def refresh(self) -> bool:
        """Open the current generation if it is newer than the one held; True when it was."""
        newest = current(self.path)
        if newest.number == self.generation.number:
            return False
        self._open(newest)
        return True

    def __len__(self) -> int:
        return sum(len(s) for s in self.segments)

    # ----------------------------------------------------------------- search
    def search(
        self,
        query: SparseBatch,
        k: int = 10,
        mode: Mode = "exact",
        alpha: float = 1.0,
        beta: float = 1.0,
        filter: Filter | Collection[str] | None = None,
    ) -> list[Hit]:
        """Top-``k`` hits of a one-row query batch over the live documents.

        Parameters
        ----------
        query : SparseBatch
            One row.
        k : int
            Hits wanted.
        mode, alpha, beta
            As in :meth:`NativeSearcher.search`, per segment.
        filter : Filter or collection of str, optional
            Only these external ids may be returned (exact under the filter).

        Returns
        -------
        list of Hit
            Best first; ties by the older segment, then the segment's tie order.
        """
        check_one_row(query)
        return self.batch_search(query, k, 1, mode, alpha, beta, filter)[0]

    def batch_search(
        self,
        queries: SparseBatch,
        k: int = 10,
        threads: int = 1,
        mode: Mode = "exact",
        alpha: float = 1.0,
        beta: float = 1.0,
        filter: Filter | Collection[str] | None = None,
    ) -> list[list[Hit]]:
        """:meth:`search` per query row, ``threads`` queries at a time within each segment.

        Returns
        -------
        list of list of Hit
            One list per row, in row order.
        """
        return [_hits(m) for m in self.merged(queries, k, threads, mode, alpha, beta, filter)]

    def merged(
        self,
        queries: SparseBatch,
        k: int = 10,
        threads: int = 1,
        mode: Mode = "exact",
        alpha: float = 1.0,
        beta: float = 1.0,
        filter: Filter | Collection[str] | None = None,
    ) -> list[list[tuple[int, int, int, NativeSearcher]]]:
        """Per query row, the merged top-``k`` as ``(-score, segment position, internal id, segment)``,
        best first (the tie order: older segment, then the segment's own tie order)."""
        if not isinstance(queries, SparseBatch):
            raise TypeError(f"queries must be a SparseBatch, got {type(queries).__name__}")
        refuse_float(mode, "a live")
        filter = self._check_filter(filter)
        segments = self.segments  # read once: a refresh meanwhile does not change this search
        per_segment = []
        for s, seg in enumerate(segments):
            mask = seg.mask() if filter is None else filter.mask(seg)
            if mask is not None and mask.count == 0:
                continue
            if len(queries) == 1:  # one query: the single-query kernels, no thread-pool round trip
                results = [seg.search_ids(queries, k, mode, alpha, beta, mask)]
            else:
                results = seg.batch_search_ids(queries, k, threads, mode, alpha, beta, mask)
            per_segment.append((s, seg, results))
        if len(per_segment) == 1 and len(queries) == 1:  # nothing to merge
            s, seg, ((scores, docs),) = per_segment[0]
            return [
                [(-score, s, doc, seg) for score, doc in zip(scores.tolist(), docs.tolist(), strict=True)]
            ]
        return [
            heapq.nsmallest(
                max(k, 0),
                (
                    (-int(score), s, int(doc), seg)
                    for s, seg, results in per_segment
                    for score, doc in zip(*results[q], strict=True)
                ),
                key=lambda h: (h[0], self.tie_key(h[1], h[3], h[2])),
            )
            for q in range(len(queries))
        ]

    def tie_key(self, s: int, segment: NativeSearcher, doc: int) -> int:
        """The global tie order of internal doc ``doc`` of ``segment``, the ``s``-th of the searched
        generation: older segment, then the segment's tie order (the hit's own segment is read, not
        ``self.segments``, which a refresh may have replaced since)."""
        return (s << 32) + int(segment.tie_key(doc))

    def _check_filter(self, filter) -> Filter | None:
        if filter is not None and not isinstance(filter, Filter):
            filter = Filter(filter)
        if filter is not None and filter.where:
            unknown = sorted(set(filter.where) - set(self.field_names))
            if unknown:
                stored = ", ".join(self.field_names) or "none (build with lsr index --fields)"
                raise InvalidOption(f"filter.where.{unknown[0]}", f"is not a stored field; stored: {stored}")
        return filter


class LiveBiGranularSearcher:
    """Bi-granular search over a live index's segments or a sharded index's shards
    (:mod:`plugin.verify`'s, across parts): the top ``candidates`` of all parts are verified with each
    part's own dense store and fused once over all of them, so the result is what one index of those
    documents returns (fused ties by the parts' global order: ``sparse.tie_key``).

    Parameters
    ----------
    sparse : LiveSearcher or ShardedSearcher
        Every part has a dense store (``lsr index --append --dense``, ``--shards N --dense``).
    dense_encoder, candidates, fusion, weight, mode, alpha, beta
        As in :class:`plugin.verify.BiGranularSearcher`.
    """

    def __init__(
        self,
        sparse: LiveSearcher,
        dense_encoder=None,
        candidates: int = DEFAULT_CANDIDATES,
        fusion: Fusion = "linear",
        weight: float = DEFAULT_FUSION_WEIGHT,
        mode: Mode = "exact",
        alpha: float = 1.0,
        beta: float = 1.0,
        verify: bool = True,
    ):
        check_fusion(candidates, fusion)
        self.sparse = sparse
        self.verify = verify
        self._stores: dict[str, DenseStore] = {}
        self.candidates, self.fusion, self.weight = candidates, fusion, float(weight)
        self.mode, self.alpha, self.beta = mode, alpha, beta
        first = self.store  # every segment's store opens (and is checked) here and on refresh
        self.encoder = dense_query_encoder(dense_encoder, first.dim, f"the stores of {sparse.path} hold")

    def _store(self, seg: NativeSearcher) -> DenseStore:
        ix = seg.index
        store = self._stores.get(str(ix.path))
        if store is None:
            store = open_dense_store(
                ix.path, ix.meta.get("dense"), ids_sha256(ix.id_arrays), self.verify, ix.n_docs
            )
            self._stores[str(ix.path)] = store
        return store

    @property
    def store(self) -> DenseStore:
        """The first segment's dense store (all share its dim and dtype)."""
        stores = [self._store(seg) for seg in self.sparse.segments]
        if not stores:
            raise ValueError(f"{self.sparse.path}: a live index without segments has no dense store")
        if len({(st.dim, st.meta["dtype"]) for st in stores}) > 1:
            raise ValueError(f"{self.sparse.path}: its segments' dense stores differ in dim or dtype")
        return stores[0]

    def encode(self, texts: list[str]) -> NDArray[np.float32]:
        if self.encoder is None:
            raise ValueError("no dense encoder was given: pass dense_encoder")
        return self.encoder.encode(texts)

    def search(
        self,
        sparse_query: SparseBatch,
        dense_query: NDArray[np.float32] | str,
        k: int = 10,
        timings: dict[str, float] | None = None,
        filter: Filter | None = None,
    ) -> list[Hit]:
        """Top-``k`` fused hits of one query (as :meth:`plugin.verify.BiGranularSearcher.search`)."""
        t = {} if timings is None else timings
        t0 = time.perf_counter()
        if isinstance(dense_query, str):
            dense_query = self.encode([dense_query])[0]
            t["dense_encode"] = t.get("dense_encode", 0.0) + (time.perf_counter() - t0) * 1e3
        dense_query = np.asarray(dense_query, np.float32)
        t0 = time.perf_counter()
        hits = self.sparse.merged(sparse_query, self.candidates, 1, self.mode, self.alpha, self.beta, filter)[
            0
        ]
        t1 = time.perf_counter()
        sparse = np.array([-h[0] for h in hits], np.float64)
        dense = np.empty(len(hits), np.float32)
        by_segment: dict[int, list[int]] = {}
        for i, h in enumerate(hits):
            by_segment.setdefault(h[1], []).append(i)
        segments = {h[1]: h[3] for h in hits}
        for s, where in by_segment.items():
            where = np.array(where)
            docs = np.array([hits[i][2] for i in where], np.int64)
            order = np.argsort(docs)  # read each store forward
            dense[where[order]] = dense_scores(self._store(segments[s]), docs[order], dense_query)
        t2 = time.perf_counter()
        keys = np.array([self.sparse.tie_key(h[1], h[3], h[2]) for h in hits], np.int64)  # global tie order
        fused, top = top_k(fuse(sparse, dense, self.fusion, self.weight), keys, k)
        position = {int(key): i for i, key in enumerate(keys)}
        out = []
        for f, key in zip(fused.tolist(), top.tolist(), strict=True):
            _, _, doc, seg = hits[position[key]]
            out.append(Hit(seg.index.docid(doc), float(f)))
        t3 = time.perf_counter()
        for stage, dt in (("sparse_search", t1 - t0), ("score", t2 - t1), ("fuse", t3 - t2)):
            t[stage] = t.get(stage, 0.0) + dt * 1e3
        return out


def _hits(merged) -> list[Hit]:
    out = []
    for neg, _, doc, seg in merged:
        out.append(Hit(seg.index.docid(doc), float(-neg)))
    return out


def _only(generation: Generation, segments) -> Generation:
    return Generation(
        generation.root, generation.number, tuple(segments), generation.next_segment,
        generation.quantization, generation.scale,
    )  # fmt: skip


def union_vocab(segments: list[NativeSearcher]) -> tuple[str, ...]:
    """Every segment's terms, in first-seen order (what ``{token: weight}`` queries are mapped to)."""
    if len(segments) == 1:
        return segments[0].vocab
    seen: dict[str, None] = {}
    for s in segments:
        seen.update(dict.fromkeys(s.vocab))
    return tuple(seen)


def internal_order(searcher: LiveSearcher) -> NDArray[np.object_]:
    """External ids of the live documents in the tie order (segment, then the segment's tie order)."""
    ids = []
    for seg in searcher.segments:
        live = seg.index.input_order
        if seg.live is not None:
            live = live[seg.live.docs[live] != 0]
        ids.extend(seg.index.docids(live.tolist()))
    return np.array(ids, dtype=object)
