"""Search over a live native index (:mod:`indexer.live`): one :class:`NativeSearcher` per segment.

Each segment is searched for its own top-k among its live documents (the kernels skip deleted ones,
and blocks with none left), and the lists are merged: higher score first, ties by the older segment,
then the lower internal id. With exact search per segment this is exactly the top-k of the live
documents; it is what a fresh build of them, without reordering and in segment order, returns.

A searcher keeps the generation it opened (its memory maps hold the files even after a merge removes
them) until :meth:`LiveSearcher.refresh`, which opens only the segments that changed.
"""

from __future__ import annotations

import heapq
import logging
from collections.abc import Collection
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from indexer.files import IndexCorruptError
from indexer.live import Generation, current, open_segments
from indexer.quantize import IMPACT_SCALE
from lsr.sparse import SparseBatch
from plugin.hits import Hit
from plugin.native import DocMask, NativeSearcher
from plugin.options import Mode

log = logging.getLogger(__name__)

# Opens retried when a change removed the files of the generation being opened.
_OPEN_ATTEMPTS = 5


class Filter:
    """An allow-list of external ids, compiled once per segment of one generation.

    Parameters
    ----------
    ids : collection of str
        The external ids a search may return (ids the index lacks allow nothing).
    """

    def __init__(self, ids: Collection[str]):
        if isinstance(ids, str):
            raise TypeError("filter ids must be a collection of str, not one str")
        self.ids = frozenset(ids)
        self._masks: dict[tuple[int, int], DocMask | None] = {}

    def mask(self, segment: NativeSearcher) -> DocMask | None:
        """The segment's mask: the allowed ids that are live there."""
        key = (id(segment), id(segment.live))
        hit = self._masks.get(key)
        if hit is None:
            allowed = np.zeros(segment.index.n_docs, bool)
            allowed[segment.internal_ids(self.ids)] = True
            hit = self._masks[key] = segment.mask(allowed)
        return hit


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
        todo = [s for s in generation.segments if (s.name, s.deleted) not in self._by_name]
        opened = dict(
            zip((s.name for s in todo), open_segments(_only(generation, todo), self.verify), strict=True)
        )
        for seg in generation.segments:
            key = (seg.name, seg.deleted)
            searcher = self._by_name.get(key)
            if searcher is None:
                index, deleted = opened[seg.name]
                searcher = NativeSearcher(index, scan_below=self.scan_below, deleted=deleted)
            segments.append(searcher)
            by_name[key] = searcher
        self.generation, self.segments, self._by_name = generation, segments, by_name
        scales = {s.index.meta["scale"] for s in segments}
        self.scale = scales.pop() if len(scales) == 1 and None not in scales else IMPACT_SCALE
        self.vocab = _union_vocab(segments)

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
            Best first; ties by the older segment, then the lower internal id.
        """
        if not isinstance(query, SparseBatch):
            raise TypeError(f"queries must be a SparseBatch, got {type(query).__name__}")
        if len(query) != 1:
            raise ValueError(f"search takes a one-row query batch, got {len(query)} rows; use batch_search")
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
        if not isinstance(queries, SparseBatch):
            raise TypeError(f"queries must be a SparseBatch, got {type(queries).__name__}")
        if filter is not None and not isinstance(filter, Filter):
            filter = Filter(filter)
        per_segment = []
        for s, seg in enumerate(self.segments):
            mask = seg.mask() if filter is None else filter.mask(seg)
            if mask is not None and mask.count == 0:
                continue
            results = seg.batch_search_ids(queries, k, threads, mode, alpha, beta, mask)
            per_segment.append((s, seg, results))
        out = []
        for q in range(len(queries)):
            merged = heapq.nsmallest(
                max(k, 0),
                (
                    (-int(score), s, int(doc), seg)
                    for s, seg, results in per_segment
                    for score, doc in zip(*results[q], strict=True)
                ),
                key=lambda h: h[:3],
            )
            out.append(_hits(merged))
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


def _union_vocab(segments: list[NativeSearcher]) -> tuple[str, ...]:
    """Every segment's terms, in first-seen order (what ``{token: weight}`` queries are mapped to)."""
    if len(segments) == 1:
        return segments[0].vocab
    seen: dict[str, None] = {}
    for s in segments:
        seen.update(dict.fromkeys(s.vocab))
    return tuple(seen)


def internal_order(searcher: LiveSearcher) -> NDArray[np.object_]:
    """External ids of the live documents in the tie order (segment, then internal id)."""
    ids = []
    for seg in searcher.segments:
        live = (
            np.arange(seg.index.n_docs)
            if seg.live is None
            else np.flatnonzero(seg.live.docs[: seg.index.n_docs])
        )
        ids.extend(seg.index.docids(live.tolist()))
    return np.array(ids, dtype=object)
