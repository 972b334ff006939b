"""Search over a sharded native index (:mod:`indexer.shards`): every query fans out to one
:class:`NativeSearcher` per shard (threads: the kernels release the GIL), and the per-shard top-k
lists are merged exactly: higher score first, ties by the document's position in the input (its
ordinal), the global rule that makes a sharded exact search equal one index of the same input built
without reordering, hit for hit.
"""

from __future__ import annotations

import heapq
from collections.abc import Collection
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from indexer.quantize import IMPACT_SCALE
from indexer.shards import open_sharded
from lsr.sparse import SparseBatch
from plugin.hits import Hit
from plugin.live import Filter, as_filter, union_vocab
from plugin.native import NativeSearcher, check_one_row, refuse_float
from plugin.options import Mode


class ShardedSearcher:
    """Exact and approximate top-k over the shards of a sharded native index.

    Parameters
    ----------
    index_dir : str or Path
        A sharded index (``lsr index --shards N``).
    verify : bool
        Check every shard's checksums on opening.
    scan_below : int, optional
        As in :class:`NativeSearcher`, per shard.
    threads : int, optional
        Shards searched at once per query (default: one thread per shard).
    """

    def __init__(
        self,
        index_dir: str | Path,
        verify: bool = True,
        scan_below: int | None = None,
        threads: int | None = None,
    ):
        self.path = Path(index_dir)
        self.manifest, opened = open_sharded(self.path, verify)
        self.shards: list[NativeSearcher] = []
        self.ordinals: list[np.ndarray] = []
        for item in opened:
            if item is not None:
                index, ordinals = item
                self.shards.append(NativeSearcher(index, scan_below=scan_below))
                self.ordinals.append(ordinals)
        self.scale = self.manifest["scale"] or IMPACT_SCALE
        self.vocab = union_vocab(self.shards)
        self.field_names: list[str] = []
        self._pool = ThreadPoolExecutor(threads or max(1, len(self.shards)), thread_name_prefix="lsr-shard")

    def __len__(self) -> int:
        return sum(len(s) for s in self.shards)

    def close(self) -> None:
        self._pool.shutdown()

    def search(
        self,
        query: SparseBatch,
        k: int = 10,
        mode: Mode = "exact",
        alpha: float = 1.0,
        beta: float = 1.0,
        filter: Filter | Collection[str] | None = None,
    ) -> list[Hit]:
        """Top-``k`` hits of a one-row query batch (as :meth:`NativeSearcher.search`, over all shards).

        Returns
        -------
        list of Hit
            Best first; ties by the document's position in the input.
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
        """:meth:`search` per query row; each shard searches the batch with ``threads`` numba threads.

        Returns
        -------
        list of list of Hit
            One list per row, in row order.
        """
        if not isinstance(queries, SparseBatch):
            raise TypeError(f"queries must be a SparseBatch, got {type(queries).__name__}")
        if filter is not None:
            filter = as_filter(filter)
            if filter.where:
                from plugin.options import InvalidOption

                raise InvalidOption("filter.where", "a sharded index stores no fields; filter by ids")

        per_shard = self._fan_out(queries, k, threads, mode, alpha, beta, filter)
        out = []
        for q in range(len(queries)):
            merged = self._merge(per_shard, q, k)
            out.append([Hit(self.shards[s].index.docid(doc), float(-neg)) for neg, _, s, doc in merged])
        return out

    @property
    def segments(self) -> list[NativeSearcher]:
        """The shards' searchers, in shard order (what :class:`plugin.live.LiveBiGranularSearcher` reads)."""
        return self.shards

    def tie_key(self, s: int, shard: NativeSearcher, doc: int) -> int:
        """The global tie order of shard ``s``'s (``shard``'s) internal doc ``doc``: its position in the
        input."""
        return int(self.ordinals[s][doc])

    def merged(self, queries, k=10, threads=1, mode="exact", alpha=1.0, beta=1.0, filter=None):
        """Per query row, the merged top-``k`` as ``(-score, shard, internal id, shard searcher)``, best
        first, ties by input position (what bi-granular verification across shards reads)."""
        if filter is not None:
            filter = as_filter(filter)
        per_shard = self._fan_out(queries, k, threads, mode, alpha, beta, filter)
        return [
            [(neg, s, doc, self.shards[s]) for neg, _, s, doc in self._merge(per_shard, q, k)]
            for q in range(len(queries))
        ]

    def _merge(self, per_shard, q: int, k: int):
        return heapq.nsmallest(
            max(k, 0),
            (
                (-int(score), int(self.ordinals[s][doc]), s, int(doc))
                for s, results in enumerate(per_shard)
                for score, doc in zip(*results[q], strict=True)
            ),
        )

    def _fan_out(self, queries, k, threads, mode, alpha, beta, filter):
        """Every shard's deep-enough top hits of every query (threads: one shard each)."""
        refuse_float(mode, "a sharded")

        def one(s: int):
            shard = self.shards[s]
            mask = None if filter is None else filter.mask(shard)
            if mask is not None and mask.count == 0:
                return [(np.zeros(0, np.int64), np.zeros(0, np.int64))] * len(queries)
            if len(queries) == 1:
                return [deep_enough(shard, queries, k, mode, alpha, beta, mask)]
            results = shard.batch_search_ids(
                queries, _first_depth(shard, k), threads, mode, alpha, beta, mask
            )
            return [
                _deepen(shard, queries.take([q]), k, mode, alpha, beta, mask, *r)
                for q, r in enumerate(results)
            ]

        return list(self._pool.map(one, range(len(self.shards))))


def _first_depth(shard: NativeSearcher, k: int) -> int:
    """``k`` for a shard that breaks ties by input position as the merge does (it stores a tie order,
    or was never reordered): nothing past its k-th hit can enter. ``k + 1`` for one reordered before
    tie orders were stored, so :func:`_deepen` sees whether the k-th score ties on."""
    ties_by_input = shard.index.has_tie_order or shard.index.meta.get("reorder") == "none"
    return k if ties_by_input else k + 1


def deep_enough(shard: NativeSearcher, query: SparseBatch, k: int, mode, alpha, beta, mask):
    """One shard's top hits of a one-row query for an exact merge: its top ``k``, and past it every
    document tied with the ``k``-th score where the shard ranks ties in another order than the merge
    (:func:`_first_depth`). ``(scores, internal docs)``."""
    first = shard.search_ids(query, _first_depth(shard, k), mode, alpha, beta, mask)
    return _deepen(shard, query, k, mode, alpha, beta, mask, *first)


def _deepen(shard, query, k, mode, alpha, beta, mask, scores, docs):
    # ``scores`` holds the top k + 1 (or only k: then nothing is deepened): when the (k+1)-th ties the
    # k-th, more documents may share that score: ask for twice as many until the list ends below it.
    deeper = k + 1
    while k > 0 and len(scores) == deeper and scores[k - 1] == scores[-1] and deeper < len(shard):
        deeper *= 2
        scores, docs = shard.search_ids(query, deeper, mode, alpha, beta, mask)
    return scores, docs
