"""One searcher over every lsr index, shaped like Pyserini's: the text -> hits path the CLI, the
service and the demo share.

::

    from plugin.searcher import Searcher
    searcher = Searcher("indexes/scifact", encoder="enc/splade-if")
    hits = searcher.search("what causes coral bleaching?", k=10)      # [Hit(docid, score), ...]
    runs = searcher.batch_search(texts, qids, k=100, threads=2)        # {qid: [Hit, ...]}

The index kind is read from the directory: native (``meta.json``), Lucene impact or Lucene BM25
(``lsr-index.json``). A query is text (through the encoder, or BM25's analyzer), a ``{token: weight}``
dict or a :class:`~lsr.sparse.SparseBatch`. Dict weights that are all Python ``int`` are impacts
already (Anserini's convention for pre-encoded topics, as for documents) and are searched as given;
float weights go through the quantization contract (:mod:`indexer.quantize`) like encoder output.
With ``dense_encoder`` (a native index built with ``--dense``) every text query is verified:
sparse top-``candidates``, re-scored by the dense store and fused (:mod:`plugin.verify`).
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from indexer.lucene import LuceneIndexInfo
from indexer.native.format import LIVE_MARKER
from indexer.native.format import META as NATIVE_META
from indexer.quantize import IMPACT_SCALE, MAX_IMPACT, dequantize
from indexer.shards import MANIFEST as SHARDS_MANIFEST
from lsr.sparse import SparseBatch, token_index
from plugin import options as defaults
from plugin.hits import Hit
from plugin.options import InvalidOption

Query = str | Mapping[str, float] | SparseBatch
FLOAT32_MAX = float(np.finfo(np.float32).max)

# option: (default, backends it applies to). A default value is accepted on any backend.
OPTIONS: dict[str, tuple[Any, tuple[str, ...]]] = {
    "mode": ("exact", ("native", "lucene", "bm25")),
    "alpha": (1.0, ("native",)),
    "beta": (1.0, ("native",)),
    "verify": (None, ("native",)),  # None: verify text queries when a dense encoder is given
    "candidates": (defaults.DEFAULT_CANDIDATES, ("native",)),
    "fusion": ("linear", ("native",)),
    "fusion_weight": (defaults.DEFAULT_FUSION_WEIGHT, ("native",)),
    "query_max_length": (defaults.QUERY_MAX_LENGTH, ("native", "lucene")),
    "encoder_threads": (None, ("native", "lucene")),
    "k1": (defaults.BM25_K1, ("bm25",)),
    "b": (defaults.BM25_B, ("bm25",)),
    "check_index": (True, ("native", "lucene", "bm25")),
    "scan_below": (None, ("native",)),
    # A sharded index's shards in Ray actors: True (a local Ray) or a cluster address (plugin/ray_shards.py).
    "ray": (None, ("native",)),
}
VARYING = ("mode", "alpha", "beta", "verify")


def index_backend(index_dir: str | Path) -> str:
    """``"native"``, ``"lucene"`` (impact) or ``"bm25"``: the kind of lsr index at ``index_dir``.

    Parameters
    ----------
    index_dir : str or Path
        An index directory; only its metadata file (``meta.json`` or ``lsr-index.json``) is read.

    Returns
    -------
    str
        ``"native"``, ``"lucene"`` or ``"bm25"``.

    Raises
    ------
    FileNotFoundError
        When the directory is missing or holds neither metadata file.
    ValueError
        When ``lsr-index.json`` is unreadable (``IndexCorruptError``) or names another format.
    """
    index_dir = Path(index_dir)
    if any((index_dir / m).is_file() for m in (NATIVE_META, LIVE_MARKER, SHARDS_MANIFEST)):
        return "native"
    info = LuceneIndexInfo.load(index_dir)
    if info.format == "lucene-impact":
        return "lucene"
    if info.format == "lucene-bm25":
        return "bm25"
    raise ValueError(f"{index_dir}: unknown index format {info.format!r}")


class Searcher:
    """Top-k search over any lsr index, from text, ``{token: weight}`` dicts or sparse batches.

    Parameters
    ----------
    index_dir : str or Path
        A native, Lucene impact or Lucene BM25 index built by ``lsr index``.
    encoder : str, Path or encoder, optional
        The query side for text on impact indexes: an ENCODER_DIR (SPLADE runs its model,
        inference-free weights the query's tokens by IDF) or an encoder from
        :func:`lsr.runtime.load_encoder` or an :class:`lsr.runtime.SparseEncoder`. Not used by BM25
        indexes.
    dense_encoder : str, Path or encoder, optional
        A dense ENCODER_DIR (or loaded dense encoder) whose embeddings verify the sparse candidates
        against the index's dense store (native indexes built with ``--dense``).
    **options
        ``mode`` (``exact``, ``approx``, ``scan``; native only), ``alpha`` and ``beta`` (approx's
        knobs), ``verify`` (dense verification on or off; default on with a dense encoder),
        ``candidates``, ``fusion`` (``linear``, ``rrf``), ``fusion_weight``, ``query_max_length``,
        ``encoder_threads`` (onnxruntime threads), ``k1`` and ``b`` (BM25), ``check_index`` (compare
        the index files' checksums on opening), ``scan_below``. Each is validated here: a name not in
        this list, a value out of range or an option the index's kind has no use for is a
        ``ValueError`` naming it (:class:`plugin.options.InvalidOption`, whose ``field`` is the name).
    """

    def __init__(
        self,
        index_dir: str | Path,
        encoder: Any = None,
        dense_encoder: Any = None,
        **options: Any,
    ):
        self.index_dir = Path(index_dir)
        self.backend = index_backend(self.index_dir)
        self._given = dict(options)
        self.options = _check_options(self.backend, options, dense_encoder is not None)
        o = self.options
        self.encoder = _query_encoder(encoder, o) if encoder is not None else None
        if self.encoder is not None and self.backend == "bm25":
            raise InvalidOption("encoder", "a BM25 index searches query text with its own analyzer")
        self._sparse, self._verifier = self._open(dense_encoder)
        self.scale = getattr(self._sparse, "scale", IMPACT_SCALE)

    def _open(self, dense_encoder: Any):
        o = self.options
        if self.backend == "bm25":
            from plugin.lucene import BM25Searcher

            return BM25Searcher(self.index_dir, o["k1"], o["b"], verify=o["check_index"]), None
        if self.backend == "lucene":
            from plugin.lucene import LuceneSearcher

            return LuceneSearcher(self.index_dir, verify=o["check_index"]), None
        from plugin.native import NativeSearcher

        if o["ray"] is not None and not (self.index_dir / SHARDS_MANIFEST).is_file():
            raise InvalidOption(
                "ray", "puts the shards of a sharded index (lsr index --shards N) in Ray actors"
            )
        if (self.index_dir / SHARDS_MANIFEST).is_file():
            from plugin.sharded import ShardedSearcher

            if dense_encoder is not None and o["ray"] is not None:
                raise InvalidOption(
                    "dense_encoder", "verification searches shards in-process, not in Ray actors"
                )
            if o["ray"] is not None:
                from plugin.ray_shards import RayShardedSearcher

                address = None if o["ray"] is True else o["ray"]
                return RayShardedSearcher(
                    self.index_dir, address, verify=o["check_index"], scan_below=o["scan_below"]
                ), None
            searcher = ShardedSearcher(self.index_dir, verify=o["check_index"], scan_below=o["scan_below"])
            return searcher, self._segments_verifier(searcher, dense_encoder)
        if (self.index_dir / LIVE_MARKER).is_file():
            from plugin.live import LiveSearcher

            searcher = LiveSearcher(self.index_dir, verify=o["check_index"], scan_below=o["scan_below"])
            return searcher, self._segments_verifier(searcher, dense_encoder)
        native = NativeSearcher(self.index_dir, verify=o["check_index"], scan_below=o["scan_below"])
        verifier = None
        if dense_encoder is not None:
            from plugin.verify import BiGranularSearcher

            verifier = BiGranularSearcher(
                self.index_dir,
                dense_encoder,
                o["candidates"],
                o["fusion"],
                o["fusion_weight"],
                o["mode"],
                o["alpha"],
                o["beta"],
                sparse=native,
            )
        return native, verifier

    def _segments_verifier(self, searcher, dense_encoder):
        """Bi-granular search over a live or sharded index's parts (None without a dense encoder)."""
        if dense_encoder is None:
            return None
        from plugin.live import LiveBiGranularSearcher

        o = self.options
        return LiveBiGranularSearcher(
            searcher, dense_encoder, o["candidates"], o["fusion"], o["fusion_weight"], o["mode"],
            o["alpha"], o["beta"], verify=o["check_index"],
        )  # fmt: skip

    def with_options(self, **changes: Any) -> Searcher:
        """This searcher with some of ``mode``, ``alpha``, ``beta`` and ``verify`` changed (the
        service's per-request options), over the same open index and encoders; a new ``mode``
        resets the approx knobs it is not given.

        Parameters
        ----------
        **changes
            New values of ``mode``, ``alpha``, ``beta`` or ``verify``, validated as in the class doc.

        Returns
        -------
        Searcher
            A shallow copy; this searcher is unchanged.

        Raises
        ------
        ValueError
            When another option is given (it is fixed when the index opens) or a value is invalid
            (:class:`plugin.options.InvalidOption`).
        """
        fixed = sorted(set(changes) - set(VARYING))
        if fixed:
            raise InvalidOption(fixed[0], f"is fixed when the index opens; only {', '.join(VARYING)} vary")
        given = dict(self._given)
        if "mode" in changes:
            given.pop("alpha", None), given.pop("beta", None)
        view = copy.copy(self)
        view._given = {**given, **changes}
        view.options = _check_options(self.backend, view._given, self._verifier is not None)
        if self._verifier is not None:
            view._verifier = copy.copy(self._verifier)
            o = view.options
            view._verifier.mode, view._verifier.alpha, view._verifier.beta = o["mode"], o["alpha"], o["beta"]
        return view

    # ------------------------------------------------------------------ facts
    def __len__(self) -> int:
        return len(self._sparse)

    @property
    def native(self):
        """The :class:`plugin.native.NativeSearcher` of a native index, or the
        :class:`plugin.live.LiveSearcher` of a live one (``None`` for Lucene)."""
        return self._sparse if self.backend == "native" else None

    @property
    def live(self) -> bool:
        """Whether the index is a live one (segments: :mod:`indexer.live`)."""
        return hasattr(self._sparse, "refresh")

    @property
    def sharded(self) -> bool:
        """Whether the index is a sharded one (:mod:`indexer.shards`)."""
        return hasattr(self._sparse, "shards") or hasattr(self._sparse, "actors")

    def refresh(self) -> bool:
        """Pick up a newer generation of a live index (True when there was one; False otherwise)."""
        return self._sparse.refresh() if self.live else False

    @property
    def lucene(self):
        """The Lucene searcher (impact or BM25) of a Lucene index (``None`` otherwise)."""
        return self._sparse if self.backend != "native" else None

    @property
    def verifier(self):
        """The :class:`plugin.verify.BiGranularSearcher` when a dense encoder was given."""
        return self._verifier

    @property
    def verifies(self) -> bool:
        """Whether text queries are verified by the dense store."""
        return self._verifier is not None and self.options["verify"] is not False

    # ---------------------------------------------------------------- queries
    def encode(self, queries: str | Sequence[str]) -> SparseBatch:
        """Query vectors of text (one row per text) through the query encoder.

        Parameters
        ----------
        queries : str or list of str
            One text or several.

        Returns
        -------
        SparseBatch
            One row per text (one row for a single text), over the encoder's vocabulary.

        Raises
        ------
        ValueError
            With no encoder, or on a BM25 index (it searches text itself).
        """
        if self.backend == "bm25":
            raise InvalidOption("query", "a BM25 index searches query text, not vectors")
        if self.encoder is None:
            raise InvalidOption(
                "query",
                "text needs a query encoder: pass encoder=ENCODER_DIR, or send {token: weight} vectors",
            )
        texts = [queries] if isinstance(queries, str) else list(queries)
        return self.encoder.encode(texts)

    def vectors(self, vectors: Sequence[Mapping[str, float]]) -> SparseBatch:
        """``{token: weight}`` dicts as one batch (module doc: all-``int`` weights are impacts, searched
        as given; tokens the index never saw match nothing).

        Parameters
        ----------
        vectors : list of dict
            ``{token: weight}`` per query; weights finite, >= 0 and within float32, integer impacts
            at most ``MAX_IMPACT``.

        Returns
        -------
        SparseBatch
            One row per dict, over the native index's vocabulary (tokens it lacks dropped) or, for
            Lucene, the sorted tokens of all of them; zero weights dropped.

        Raises
        ------
        ValueError
            On an empty or non-string token or a bad weight, naming the query
            (:class:`plugin.options.InvalidOption`).
        """
        given = _check_vectors(vectors)
        if self.backend == "native" and self._sparse.vocab:
            # Over the index's own vocabulary (its id mapping stays cached): unknown tokens drop here.
            vocab = self._sparse.vocab
        else:
            vocab = tuple(sorted({t for v in vectors for t in v}))
        known = token_index(vocab)
        rows = [{known[t]: w for t, w in v.items() if t in known} for v in vectors]
        ids = np.fromiter((i for row in rows for i in row), np.int64)
        weights = np.fromiter((w for row in rows for w in row.values()), np.float64)
        # Integer impacts go in as the weights the searcher's quantization maps back to them exactly.
        weights = dequantize(weights, self.scale) if given else weights.astype(np.float32)
        row_of = np.repeat(np.arange(len(rows)), [len(row) for row in rows])
        keep = weights > 0  # a zero (or a weight below float32's range) is no term
        ids, weights, row_of = ids[keep], weights[keep], row_of[keep]
        order = np.lexsort((ids, row_of))
        indptr = np.zeros(len(rows) + 1, np.int64)
        np.cumsum(np.bincount(row_of, minlength=len(rows)), out=indptr[1:])
        return SparseBatch(indptr, ids[order].astype(np.int32), weights[order], vocab)

    def _batch(self, queries: Any) -> SparseBatch:
        if isinstance(queries, SparseBatch):
            return queries
        if all(isinstance(q, str) for q in queries):
            return self.encode(queries)
        if all(isinstance(q, Mapping) for q in queries):
            return self.vectors(queries)
        raise InvalidOption(
            "query", "queries must all be text, all {token: weight} dicts, or one SparseBatch"
        )

    # ----------------------------------------------------------------- search
    def search(
        self, q: Query, k: int = 10, timings: dict[str, float] | None = None, filter: Any = None
    ) -> list[Hit]:
        """Top-``k`` hits of one query: text, a ``{token: weight}`` dict or a one-row batch.

        Parameters
        ----------
        q : str, dict or SparseBatch
            The query (module doc).
        k : int
            Hits wanted (fewer when fewer documents match).
        timings : dict, optional
            Receives stage times in ms: ``sparse_encode``, ``sparse_search``, and with
            verification the other stages of :data:`plugin.verify.STAGES` (``dense_encode``, ...).
        filter : plugin.live.Filter or dict, optional
            Only documents it allows are returned (native indexes): a ``Filter``, or
            ``{"ids": [...], "where": {field: condition}}`` (:class:`plugin.live.Filter`).

        Returns
        -------
        list of Hit
            Best first; ties by the document's position in the input on every backend.

        Raises
        ------
        ValueError
            On a negative or non-integer ``k``, a batch of other than one row, a vector for a BM25
            index or under verification, text without an encoder, or a bad vector
            (:class:`plugin.options.InvalidOption`).
        """
        k = _check_k(k)
        if isinstance(q, SparseBatch) and len(q) != 1:
            raise InvalidOption("query", f"search takes a one-row batch, got {len(q)} rows; use batch_search")
        filter = self._filter(filter)
        t = {} if timings is None else timings
        if self.backend == "bm25":
            if not isinstance(q, str):
                raise InvalidOption("query", "a BM25 index searches query text, not vectors")
            t0 = time.perf_counter()
            hits = self._sparse.search(q, k)
            t["sparse_search"] = t.get("sparse_search", 0.0) + (time.perf_counter() - t0) * 1e3
            return hits
        t0 = time.perf_counter()
        batch = (
            q if isinstance(q, SparseBatch) else self.encode(q) if isinstance(q, str) else self.vectors([q])
        )
        t["sparse_encode"] = t.get("sparse_encode", 0.0) + (time.perf_counter() - t0) * 1e3
        if self.verifies:
            if not isinstance(q, str):
                raise InvalidOption("verify", "needs query text (the dense encoder reads it), not a vector")
            stages: dict[str, float] = {}
            if self.live or self.sharded:
                hits = self._verifier.search(batch, q, k, timings=stages, filter=filter)
            else:
                mask = None if filter is None else filter.mask(self._sparse)
                hits = self._verifier.search(batch, q, k, timings=stages, mask=mask)
            t["sparse_search"] = t.get("sparse_search", 0.0) + stages.pop("sparse_search")
            for stage, ms in stages.items():
                t[stage] = t.get(stage, 0.0) + ms
            return hits
        t0 = time.perf_counter()
        hits = self._sparse.search(batch, k, **self._native_knobs(filter))
        t["sparse_search"] = t.get("sparse_search", 0.0) + (time.perf_counter() - t0) * 1e3
        return hits

    def batch_search(
        self, queries: Sequence[str] | Sequence[Mapping[str, float]] | SparseBatch, qids: Sequence[str],
        k: int = 10, threads: int = 1, filter: Any = None,
    ) -> dict[str, list[Hit]]:  # fmt: skip
        """Top-``k`` hits of each query, keyed by its id (Pyserini's ``batch_search``).

        Parameters
        ----------
        queries : list of str, list of dict, or SparseBatch
            One kind throughout; a batch has one row per query.
        qids : list of str
            One distinct id per query.
        k : int
            Hits per query.
        threads : int
            Queries searched at once (numba, Java or Python threads by backend).
        filter : plugin.live.Filter or dict, optional
            As in :meth:`search`, for every query.

        Returns
        -------
        dict
            ``{qid: [Hit, ...]}`` in the order of ``qids``.

        Raises
        ------
        ValueError
            On a bad ``k`` or ``threads``, ``qids`` not one distinct id per query, mixed query kinds,
            or a query :meth:`search` refuses (:class:`plugin.options.InvalidOption`).
        """
        k = _check_k(k)
        if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
            raise InvalidOption("threads", f"must be an integer >= 1, got {threads!r}")
        qids = [str(q) for q in qids]
        if len(qids) != len(queries):
            raise InvalidOption("qids", f"{len(qids)} ids for {len(queries)} queries")
        if len(set(qids)) != len(qids):
            dup = next(q for q in qids if qids.count(q) > 1)
            raise InvalidOption("qids", f"id {dup!r} appears more than once")
        filter = self._filter(filter)
        if not len(queries):
            return {}
        if self.backend == "bm25":
            if not all(isinstance(q, str) for q in queries):
                raise InvalidOption("query", "a BM25 index searches query text, not vectors")
            results = self._sparse.batch_search(list(queries), k, threads)
        elif self.verifies:
            if not all(isinstance(q, str) for q in queries):
                raise InvalidOption("verify", "needs query text (the dense encoder reads it), not vectors")
            with ThreadPoolExecutor(threads) as pool:
                results = list(pool.map(lambda text: self.search(text, k, filter=filter), queries))
        else:
            batch = self._batch(queries)
            results = self._sparse.batch_search(batch, k=k, threads=threads, **self._native_knobs(filter))
        return dict(zip(qids, results, strict=True))

    def _native_knobs(self, filter=None) -> dict[str, Any]:
        o = self.options
        if self.backend != "native":
            return {}
        knobs = {"mode": o["mode"], "alpha": o["alpha"], "beta": o["beta"]}
        if filter is not None:
            sets = self.live or self.sharded
            knobs.update({"filter": filter} if sets else {"mask": filter.mask(self._sparse)})
        return knobs

    def _filter(self, filter: Any):
        """``filter`` as a :class:`plugin.live.Filter` (``None`` stays ``None``)."""
        if filter is None:
            return None
        from plugin.live import as_filter

        if self.backend != "native":
            raise InvalidOption("filter", f"filters need a native index; this one is {self.backend}")
        filter = as_filter(filter)
        if filter.where and not self.live:
            raise InvalidOption(
                "filter.where", "this index stores no fields: build it with lsr index --fields NAME,..."
            )
        return filter

    def close(self) -> None:
        """Release the Lucene searcher or a sharded index's threads (a native index is memory maps)."""
        if self.backend != "native" or self.sharded:
            self._sparse.close()


# ------------------------------------------------------------------- validation
def _check_options(backend: str, given: dict[str, Any], dense: bool) -> dict[str, Any]:
    """Every option with its value (given or default); ``InvalidOption`` for a bad one."""
    unknown = sorted(set(given) - set(OPTIONS))
    if unknown:
        raise InvalidOption(unknown[0], f"is not an option; choose from {', '.join(OPTIONS)}")
    out = {name: given.get(name, default) for name, (default, _) in OPTIONS.items()}
    for name, value in given.items():
        default, backends = OPTIONS[name]
        if backend not in backends and value != default:
            raise InvalidOption(name, f"applies to {' and '.join(backends)} indexes, this one is {backend}")
    mode = out["mode"]
    if mode not in defaults.MODES:
        raise InvalidOption("mode", f"must be one of {', '.join(defaults.MODES)}, got {mode!r}")
    if backend != "native" and mode != "exact":
        raise InvalidOption("mode", f"{mode!r} needs a native index; this one is {backend}")
    for knob in ("alpha", "beta"):
        v = out[knob]
        if isinstance(v, bool) or not isinstance(v, int | float) or not 0 < v <= 1:
            raise InvalidOption(knob, f"must be in (0, 1], got {v!r}")
        if mode != "approx" and v != 1:
            raise InvalidOption(knob, "applies to mode 'approx' only")
        out[knob] = float(v)
    if out["fusion"] not in defaults.FUSIONS:
        raise InvalidOption("fusion", f"must be one of {', '.join(defaults.FUSIONS)}, got {out['fusion']!r}")
    _check_int(out, "candidates", 1)
    _check_int(out, "query_max_length", 1)
    if out["encoder_threads"] is not None:
        _check_int(out, "encoder_threads", 1)
    if out["scan_below"] is not None:
        _check_int(out, "scan_below", 0)
    for name, low, high in (("fusion_weight", 0, math.inf), ("k1", 0, math.inf), ("b", 0, 1)):
        v = out[name]
        if (
            isinstance(v, bool)
            or not isinstance(v, int | float)
            or not (low <= v <= high and math.isfinite(v))
        ):
            raise InvalidOption(name, f"must be a finite number in [{low}, {high}], got {v!r}")
        out[name] = float(v)
    for name in ("verify", "check_index"):
        if out[name] is not None and not isinstance(out[name], bool):
            raise InvalidOption(name, f"must be True or False, got {out[name]!r}")
    if not dense:
        for name in ("candidates", "fusion", "fusion_weight"):
            if out[name] != OPTIONS[name][0]:
                raise InvalidOption(name, "applies to dense verification: pass dense_encoder")
        if out["verify"]:
            raise InvalidOption("verify", "needs dense_encoder (a dense ENCODER_DIR) and a dense store")
    return out


def _check_int(out: dict[str, Any], name: str, low: int) -> None:
    v = out[name]
    if isinstance(v, bool) or not isinstance(v, int) or v < low:
        raise InvalidOption(name, f"must be an integer >= {low}, got {v!r}")


def _check_k(k: Any) -> int:
    if isinstance(k, bool) or not isinstance(k, int | np.integer) or k < 0:
        raise InvalidOption("k", f"must be an integer >= 0, got {k!r}")
    return int(k)


def _check_vectors(vectors: Sequence[Mapping[str, float]]) -> bool:
    """Weights are numbers, finite, >= 0 and within float32; True when all are ``int`` (impacts)."""
    given = True
    for r, v in enumerate(vectors):
        for token, w in v.items():
            if not isinstance(token, str) or not token:
                raise InvalidOption("vector", f"query {r}: token {token!r} must be a non-empty string")
            if isinstance(w, bool) or not isinstance(w, int | float):
                raise InvalidOption(
                    "vector", f"query {r}: token {token[:40]!r} has weight {w!r}, not a number"
                )
            if not (math.isfinite(w) and 0 <= w <= FLOAT32_MAX):
                raise InvalidOption(
                    "vector",
                    f"query {r}: token {token[:40]!r} has weight {w}; weights must be finite, >= 0 "
                    f"and at most {FLOAT32_MAX:.7g} (float32)",
                )
            given = given and isinstance(w, int)
    if given:
        for r, v in enumerate(vectors):
            for token, w in v.items():
                if w > MAX_IMPACT:
                    raise InvalidOption(
                        "vector",
                        f"query {r}: token {token[:40]!r} has integer impact {w}, over {MAX_IMPACT}, "
                        "the largest an index holds",
                    )
    return given


def _query_encoder(encoder: Any, o: dict[str, Any]):
    if hasattr(encoder, "encode_queries"):  # lsr.runtime.SparseEncoder: its query side
        return encoder.side("query")
    if not isinstance(encoder, str | Path):
        if not hasattr(encoder, "encode") or not hasattr(encoder, "vocab"):
            raise InvalidOption(
                "encoder", f"must be an ENCODER_DIR or a sparse encoder, got {type(encoder).__name__}"
            )
        return encoder
    from lsr.runtime import load_encoder

    enc = load_encoder(encoder, side="query", threads=o["encoder_threads"], max_length=o["query_max_length"])
    if not hasattr(enc, "vocab"):
        raise InvalidOption("encoder", f"{encoder} is a dense encoder; the query side must be sparse")
    return enc
