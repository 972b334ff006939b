"""A sharded native index served by Ray actors: one actor per shard holds that shard's
:class:`NativeSearcher` (opened once, memory-mapped), and a query fans out to all of them.

A query travels as ``{token: weight}`` (a few hundred bytes; each actor maps it to its own
vocabulary) and comes back as the shard's top hits with their input positions, merged exactly as
:class:`plugin.sharded.ShardedSearcher` merges them (ties by input position). Actors restart when
they die (``max_restarts=-1``): a query that meets a dead actor is retried once on its restarted
self; one whose shard does not answer within ``deadline_s`` fails with :class:`ShardUnavailable`
naming the shard, never hangs.
"""

from __future__ import annotations

import heapq
import time
from pathlib import Path

import numpy as np

from indexer.shards import open_sharded
from lsr.sparse import SparseBatch
from plugin.hits import Hit
from plugin.options import Mode

try:
    import ray
except ImportError as e:  # the extra is optional
    _RAY_ERROR: ImportError | None = e
else:
    _RAY_ERROR = None

# Seconds a shard has to answer a query before the query fails naming it.
DEADLINE_S = 10.0
# Seconds the shard actors have to start (import numba, open and check their shard).
STARTUP_S = 180.0


class ShardUnavailable(RuntimeError):
    """A shard did not answer (dead, restarting, or over the deadline); ``shard`` names it."""

    def __init__(self, shard: str, why: str):
        super().__init__(f"shard {shard} {why}")
        self.shard = shard


def _require_ray():
    if _RAY_ERROR is not None:
        raise ImportError("pip install 'lsr[ray]'") from _RAY_ERROR
    return ray


class _ShardActor:
    """Holds one shard; answers ``{token: weight}`` queries with ``(scores, ordinals, docids)``."""

    def __init__(self, shard_dir: str, ordinals_sha256: str, scan_below: int | None, verify: bool):
        from indexer.files import open_array
        from plugin.native import NativeSearcher

        self.searcher = NativeSearcher(shard_dir, verify=verify, scan_below=scan_below)
        file = Path(shard_dir) / "ordinals.npy"
        spec = {"shape": [len(self.searcher)], "dtype": "int64", "sha256": ordinals_sha256}
        with open(file, "rb") as f:
            self.ordinals = np.asarray(open_array(f, file, spec, verify))
        self.known = frozenset(self.searcher.vocab)

    def ping(self) -> int:
        return len(self.searcher)

    def pid(self) -> int:
        import os

        return os.getpid()

    def search(self, vectors: list[dict[str, float]], k: int, mode: str, alpha: float, beta: float):
        from plugin.sharded import deep_enough

        out = []
        for vector in vectors:
            q = SparseBatch.from_dicts(
                [{t: w for t, w in vector.items() if t in self.known}], self.searcher.vocab
            )
            scores, docs = deep_enough(self.searcher, q, k, mode, alpha, beta, None)
            out.append((scores, self.ordinals[docs], self.searcher.index.docids(docs.tolist())))
        return out


class RayShardedSearcher:
    """Top-k over a sharded index whose shards live in Ray actors (one each).

    Parameters
    ----------
    index_dir : str or Path
        A sharded index (``lsr index --shards N``), on a path every Ray node can read.
    address : str, optional
        A Ray cluster to join; without one a local Ray is started (and shut down on :meth:`close`).
    deadline_s : float
        Seconds each shard has per query (:class:`ShardUnavailable` past it).
    verify : bool
        Check checksums when the manifest and each actor's shard open.
    scan_below : int, optional
        As in :class:`NativeSearcher`, per shard.
    """

    def __init__(
        self,
        index_dir: str | Path,
        address: str | None = None,
        deadline_s: float = DEADLINE_S,
        verify: bool = True,
        scan_below: int | None = None,
    ):
        r = _require_ray()
        self.path = Path(index_dir).resolve()
        self.manifest, _ = open_sharded(self.path, verify=False)  # shard arrays open in the actors
        self.deadline_s = deadline_s
        self._started = False
        if not r.is_initialized():
            r.init(address=address, include_dashboard=False, log_to_driver=False)
            self._started = address is None
        remote = r.remote(max_restarts=-1, max_task_retries=0, num_cpus=0)(_ShardActor)
        self.names = [s["name"] for s in self.manifest["shards"] if s["n_docs"]]
        self.actors = [
            remote.remote(str(self.path / s["name"]), s["ordinals_sha256"], scan_below, verify)
            for s in self.manifest["shards"]
            if s["n_docs"]
        ]
        # Every shard opened (an actor's first start imports numba and maps its shard), or a clear error.
        for name, ref in zip(self.names, [a.ping.remote() for a in self.actors], strict=True):
            try:
                ray.get(ref, timeout=STARTUP_S)
            except Exception as e:
                self.close()
                raise ShardUnavailable(
                    name, f"did not start within {STARTUP_S:g} s ({type(e).__name__}: {e})"
                ) from None
        self.scale = self.manifest["scale"]

    def __len__(self) -> int:
        return int(self.manifest["n_docs"])

    def health(self) -> dict[str, str]:
        """``{shard: "ok" | why it is unavailable}``, each shard asked within the deadline."""
        out = {}
        refs = [a.ping.remote() for a in self.actors]
        for name, ref in zip(self.names, refs, strict=True):
            try:
                ray.get(ref, timeout=self.deadline_s)
                out[name] = "ok"
            except Exception as e:  # dead, restarting or slow: say which
                out[name] = f"unavailable: {type(e).__name__}"
        return out

    @property
    def vocab(self) -> tuple[str, ...]:
        """No vocabulary here (each actor holds its shard's): ``{token: weight}`` queries go as given."""
        return ()

    def search(
        self,
        query: dict[str, float] | SparseBatch,
        k: int = 10,
        mode: Mode = "exact",
        alpha: float = 1.0,
        beta: float = 1.0,
        filter=None,
    ) -> list[Hit]:
        """Top-``k`` hits of one ``{token: weight}`` query or one-row batch (float weights, quantized by
        the global rule).

        Raises
        ------
        ShardUnavailable
            When a shard does not answer within the deadline, or its actor died twice in a row.
        """
        return self.batch_search(
            query if isinstance(query, SparseBatch) else [query], k, 1, mode, alpha, beta
        )[0]

    def batch_search(
        self,
        queries: list[dict[str, float]] | SparseBatch,
        k: int = 10,
        threads: int = 1,
        mode: Mode = "exact",
        alpha: float = 1.0,
        beta: float = 1.0,
        filter=None,
    ) -> list[list[Hit]]:
        """:meth:`search` per query; one round trip per shard for the whole list (``threads``: unused,
        each shard is its own process)."""
        if filter is not None:
            from plugin.options import InvalidOption

            raise InvalidOption("filter", "shards in Ray actors take no filters yet (search them in-process)")
        from plugin.native import refuse_float

        refuse_float(mode, "a sharded")
        if isinstance(queries, SparseBatch):
            queries = queries.to_dicts()
        results = self._ask(lambda a: a.search.remote(list(queries), k, mode, alpha, beta))
        out = []
        for q in range(len(queries)):
            merged = heapq.nsmallest(
                max(k, 0),
                (
                    (-int(score), int(ordinal), doc)
                    for per_shard in results
                    for score, ordinal, doc in zip(*per_shard[q], strict=True)
                ),
            )
            out.append([Hit(doc, float(-neg)) for neg, _, doc in merged])
        return out

    def _ask(self, call) -> list:
        """``call(actor)`` on every shard; each answer within the deadline, a dead actor retried once."""
        r = ray
        refs = [call(a) for a in self.actors]
        out = [None] * len(refs)
        end = time.monotonic() + self.deadline_s
        for i, ref in enumerate(refs):
            for attempt in range(2):
                try:
                    out[i] = r.get(ref, timeout=max(0.0, end - time.monotonic()))
                    break
                except r.exceptions.GetTimeoutError:
                    r.cancel(ref, force=False)
                    raise ShardUnavailable(
                        self.names[i], f"did not answer within {self.deadline_s:g} s"
                    ) from None
                except (r.exceptions.RayActorError, r.exceptions.ActorUnavailableError) as e:
                    if attempt == 1:
                        raise ShardUnavailable(self.names[i], f"is down ({type(e).__name__})") from None
                    ref = call(self.actors[i])  # the actor restarts: once more
        return out

    def close(self) -> None:
        for a in self.actors:
            ray.kill(a)
        self.actors = []
        if self._started:
            ray.shutdown()
