"""Search engines behind one interface, for :mod:`bench.search`: ours, the peers, and brute force.

Every adapter answers the same calls, so that the benchmark treats them alike:

- ``missing()``: why the engine cannot run here (a module not installed), or ``None``;
- ``build(docs, work) -> Built``: index the collection; seconds are the build alone, and an index kept
  from an earlier run (``--work``) is reused and says so;
- ``size_bytes()``: what the engine searches, on disk or in memory;
- ``settings()``: the knob values to time (one row each), with whether each is exact for the
  engine's own scoring problem and which exact ranking that problem is (``float``, ``quantized``, or
  ``own`` with ``own_truth(k)`` giving it);
- ``prepare(queries) -> list``: each query row in the engine's own input form (not timed), and
  ``done_preparing()`` once every query set is prepared;
- ``search(query, k, **params)``: one query, the call that is timed;
- ``indexes(raw) -> list[int]``: the hits as internal doc indexes, the row numbers of ``docs``.

Peers are imported inside the adapters, so that this module imports without them. Their gotchas,
found the hard way and handled here:

- Seismic (``pyseismic-lsr``): built from CSR with ``SeismicDataset.add_documents_by_id`` (integer
  components) and ``SeismicIndex.build_from_dataset(num_threads=1)``; queries name components as
  strings of its own string dtype; a component that no document holds is dropped before the call.
- BMP (``bmp``): document impacts are stored as u8, so they must be integers in 1..255 (256 wraps to 0):
  weights are rescaled so the largest is 255. ``Searcher.search`` rescales query weights so the
  largest is 32, and sums them in u16, which wraps above 65,535: the adapter checks the exact maximum
  score of the queries at hand and warns. A query with no indexed term panics, so such terms are
  filtered and an empty query returns no hits without a call. Its search starts from a threshold, the
  largest of (a query term's k-th best impact x its weight), scores only blocks whose bound is above
  it and keeps only documents above it: when k or more documents tie at that threshold (many
  documents sharing a term's top impact, 255) it returns fewer than k hits, or panics on an empty
  block list (a one-term query); a panic is counted (``panics``) and answered with no hits.
  ``RAYON_NUM_THREADS=1`` must be set before the import (the benchmark does).
- PISA (``pyterrier-pisa``): its binary collection is written directly from CSR (the Python
  ``toks_indexer`` takes minutes), with document impacts by our quantization contract, and queries
  are sent as our integer query impacts (``query_weighted=1``), so its ``quantized`` scorer solves
  exactly our quantized problem. ``_pisathon.retrieve`` is called per query with numpy buffers
  (the DataFrame path costs more than the search).
- splade-index: its numba kernel ``_retrieve_numba_functional`` is called directly with
  ``n_threads=1`` on a term-major CSC whose ``indptr`` is int32 (so at most 2**31 - 1 postings).

Doc-id order matters to block-max engines (DESIGN.md): BMP and PISA can be given our recursive
graph bisection order (``order``), which is how their own papers run them.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from bench._context import dir_bytes, package_version
from lsr.sparse import SparseBatch

log = logging.getLogger("bench.peers")


# ------------------------------------------------------------------ shared types
@dataclass
class Docs:
    """The collection every engine indexes: ids, the CSR batch, and what adapters derive from it."""

    ids: list[str]
    batch: SparseBatch
    name: str
    order: np.ndarray | None = None  # internal -> row, the doc-id order block-max peers get (None: input)
    order_name: str = "input"
    _csr: object = field(default=None, repr=False)
    _digest: str | None = field(default=None, repr=False)
    _id_index: dict[str, int] | None = field(default=None, repr=False)
    _df: np.ndarray | None = field(default=None, repr=False)

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def csr(self):
        """scipy CSR, ``[n_docs, vocab]`` float32 (shares the batch's arrays)."""
        if self._csr is None:
            self._csr = self.batch.to_scipy()
        return self._csr

    @property
    def digest(self) -> str:
        """A content hash of the ids and vectors: the key of kept indexes."""
        if self._digest is None:
            h = hashlib.sha1()
            for a in (self.batch.indptr, self.batch.term_ids, self.batch.weights):
                h.update(np.ascontiguousarray(a).data)
            h.update("\n".join(self.ids).encode())
            h.update(hashlib.sha1("\n".join(self.batch.vocab).encode()).digest())
            self._digest = h.hexdigest()[:12]
        return self._digest

    @property
    def id_index(self) -> dict[str, int]:
        if self._id_index is None:
            self._id_index = {d: i for i, d in enumerate(self.ids)}
        return self._id_index

    @property
    def df(self) -> np.ndarray:
        """Documents per vocabulary term, int64 ``[vocab]``."""
        if self._df is None:
            self._df = np.bincount(self.batch.term_ids, minlength=len(self.batch.vocab))
        return self._df

    def in_order(self) -> np.ndarray:
        return np.arange(len(self), dtype=np.int64) if self.order is None else self.order


@dataclass
class Truth:
    """Per query, the documents whose exact score reaches the k-th best, and min(k, positives)."""

    tied: list[np.ndarray]
    wanted: np.ndarray

    @classmethod
    def from_scores(cls, rows, k: int, rel_tol: float = 0.0) -> Truth:
        """From each query's exact scores over all documents (dense rows); scores within ``rel_tol``
        (relative) of the k-th best count as tied with it."""
        tied, wanted = [], []
        for row in rows:
            n = min(k, int(np.count_nonzero(row > 0)))
            wanted.append(n)
            if n == 0:
                tied.append(np.zeros(0, np.int64))
                continue
            kth = np.partition(row, len(row) - n)[len(row) - n]
            tied.append(np.flatnonzero((row >= kth - rel_tol * abs(kth)) & (row > 0)))
        return cls(tied, np.array(wanted, np.int64))

    def recall(self, hits: list[list[int]], k: int) -> float:
        """Mean over queries of |hits[:k] among the tied-in documents| / min(k, positives)."""
        values = []
        for found, right, n in zip(hits, self.tied, self.wanted.tolist(), strict=True):
            if n == 0:
                values.append(1.0)
                continue
            values.append(np.isin(np.asarray(found[:k], np.int64), right).sum() / n)
        return float(np.mean(values)) if values else float("nan")


@dataclass
class Setting:
    label: str
    params: dict
    exact: bool  # returns the exact top-k of the engine's own scoring problem
    problem: str  # the exact ranking the engine approximates: "float", "quantized" or "own"


@dataclass
class Built:
    seconds: float
    reused: bool = False
    extra: dict = field(default_factory=dict)


def _csr_bytes(m) -> int:
    return int(m.data.nbytes + m.indices.nbytes + m.indptr.nbytes)


# Build records written by this process: an index built earlier in the same run is not "kept".
_BUILT_HERE: set[Path] = set()


def _kept(record: Path, key: dict, *paths: Path) -> Built | None:
    """The build record of an index already there (from an earlier run, or this one), when its key matches."""
    if not record.is_file() or not all(p.exists() for p in paths):
        return None
    kept = json.loads(record.read_text(encoding="utf-8"))
    if kept.get("key") != key:
        return None
    earlier = record not in _BUILT_HERE
    log.info(
        "reusing %s (built %s in %.1f s)",
        paths[0],
        "in an earlier run" if earlier else "above",
        kept["seconds"],
    )
    return Built(kept["seconds"], reused=earlier, extra=kept.get("extra", {}))


def _record(record: Path, key: dict, built: Built) -> Built:
    record.write_text(
        json.dumps({"key": key, "seconds": built.seconds, "extra": built.extra}) + "\n", encoding="utf-8"
    )
    _BUILT_HERE.add(record)
    return built


def _top_k(scores: np.ndarray, ids: np.ndarray, k: int) -> np.ndarray:
    """The ``k`` best ``ids`` by score, ties by the lower id."""
    if len(scores) > k:
        kth = np.partition(scores, len(scores) - k)[len(scores) - k]
        keep = scores >= kth
        scores, ids = scores[keep], ids[keep]
    return ids[np.lexsort((ids, -scores))[:k]]


def _row_arrays(queries: SparseBatch, keep_terms: np.ndarray | None = None):
    """Per query, (term ids, weights); with ``keep_terms`` (bool over the vocabulary) only those terms."""
    out = []
    for terms, weights in queries:
        if keep_terms is not None:
            m = keep_terms[terms]
            terms, weights = terms[m], weights[m]
        out.append((terms, weights))
    return out


class Engine:
    """The interface (see the module docstring); subclasses fill it in."""

    name = "engine"
    modules: tuple[str, ...] = ()
    install = ""
    warmup_passes = 1  # untimed passes over the queries before the timed one

    def missing(self) -> str | None:
        import importlib.util

        for m in self.modules:
            if importlib.util.find_spec(m) is None:
                return f"module {m!r} not installed ({self.install})"
        return None

    def build(self, docs: Docs, work: Path) -> Built:
        raise NotImplementedError

    def size_bytes(self) -> int:
        raise NotImplementedError

    def settings(self) -> list[Setting]:
        raise NotImplementedError

    def prepare(self, queries: SparseBatch) -> list:
        return [queries.take([i]) for i in range(len(queries))]

    def own_truth(self, k: int) -> Truth | None:
        """The exact ranking of the engine's own problem for the last prepared queries, when it is
        neither the float nor our quantized one."""
        return None

    def done_preparing(self) -> None:
        """Every query set is prepared: drop what only preparing needed."""

    def search(self, query, k: int, **params):
        raise NotImplementedError

    def indexes(self, raw) -> list[int]:
        return [int(i) for i in raw]

    def close(self) -> None:
        """Drop the index from memory."""


# ------------------------------------------------------------------ brute force
class ScipyBrute(Engine):
    """Exhaustive: the query row times the term-major CSR (scipy's sparse product), then top-k."""

    name = "scipy"

    def build(self, docs: Docs, work: Path) -> Built:
        start = time.perf_counter()
        self.inverted = docs.csr.T.tocsr()  # [vocab, n_docs]: row t is term t's postings
        return Built(time.perf_counter() - start)

    def size_bytes(self) -> int:
        return _csr_bytes(self.inverted)

    def settings(self) -> list[Setting]:
        return [Setting("exhaustive", {}, True, "float")]

    def prepare(self, queries: SparseBatch) -> list:
        m = queries.to_scipy()
        return [m[i] for i in range(m.shape[0])]

    def search(self, query, k: int, **params):
        r = query @ self.inverted
        return _top_k(r.data, r.indices, k)

    def close(self) -> None:
        self.inverted = None


# ------------------------------------------------------------------ ours
OURS_ALPHAS = (0.99, 0.97, 0.95, 0.9, 0.8)
# ours-approx's query cuts (terms, candidates re-scored), as Seismic sweeps query_cut x heap_factor.
OURS_CUTS = ((5, 50), (10, 50), (10, 100), (20, 100), (20, 200), (30, 300))


class Ours(Engine):
    """The native index (:mod:`indexer.native`) and :class:`plugin.native.NativeSearcher`.

    ``ours-scan``, ``ours-exact`` and ``ours-approx`` share one index per collection (kept under
    ``work``), built with recursive graph bisection and a forward store (for ``approx``'s query cut:
    its size counts in the index's); its internal ids are reordered, so hits go back to rows through
    :attr:`Hit.docid`. ``-2t`` engines search each query on two threads. ``ours-float`` (mode
    ``float``: exact under the float scores) searches its own build of the same documents with the
    float weights kept (``float_weights``).
    """

    def __init__(
        self,
        mode: str,
        alphas: tuple[float, ...] = OURS_ALPHAS,
        block_size: int | None = None,
        threads: int = 1,
    ):
        from indexer.native.build import DEFAULT_BLOCK_SIZE

        self.mode = mode
        self.threads = threads  # on each query: search(..., threads=)
        self.name = f"ours-{mode}" + (f"-{threads}t" if threads > 1 else "")
        self.alphas = alphas
        self.block_size = DEFAULT_BLOCK_SIZE if block_size is None else block_size
        self.searcher = None

    def index_dir(self, docs: Docs, work: Path) -> Path:
        floats = "-float" if self.mode == "float" else ""
        return work / f"native-{docs.name}-{docs.digest}-b{self.block_size}{floats}"

    def build(self, docs: Docs, work: Path) -> Built:
        from indexer.native import build as native_build
        from indexer.native.format import FORMAT_VERSION
        from plugin.native import NativeSearcher

        path = self.index_dir(docs, work)
        key = {
            "engine": "native",
            "format_version": FORMAT_VERSION,
            "docs": docs.digest,
            "block_size": self.block_size,
            "reorder": "bp",
            **({"float_weights": True} if self.mode == "float" else {"forward": True}),
        }
        record = path.with_name(path.name + ".build.json")
        built = _kept(record, key, path)
        if built is None:
            shutil.rmtree(path, ignore_errors=True)
            start = time.perf_counter()
            meta = native_build.build_native_index(
                path,
                batches=native_build.iter_batches(docs.ids, docs.batch),
                vocab=docs.batch.vocab,
                block_size=self.block_size,
                reorder="bp",
                float_weights=self.mode == "float",
                forward=self.mode != "float",
            )
            built = Built(time.perf_counter() - start, extra={"reorder_s": meta.get("reorder_seconds")})
            _record(record, key, built)
        self.searcher = NativeSearcher(path, verify=False)
        self._id_index = docs.id_index
        return built

    def order(self) -> np.ndarray:
        """Row of each internal doc id: the index's doc-id order, for peers to use."""
        ix, rows = self.searcher.index, self._id_index
        return np.array([rows[ix.docid(i)] for i in range(ix.n_docs)], np.int64)

    def size_bytes(self) -> int:
        return self.searcher.index.size_bytes()

    def settings(self) -> list[Setting]:
        if self.mode == "approx":
            return [
                Setting(f"alpha={a}", {"mode": "approx", "alpha": a}, False, "quantized") for a in self.alphas
            ] + [
                Setting(f"cut={c},depth={d}", {"mode": "approx", "cut": c, "depth": d}, False, "quantized")
                for c, d in OURS_CUTS
            ]
        problem = "float" if self.mode == "float" else "quantized"
        return [Setting(self.mode, {"mode": self.mode}, True, problem)]

    def search(self, query, k: int, **params):
        return self.searcher.search(query, k, threads=self.threads, **params)

    def indexes(self, raw) -> list[int]:
        return [self._id_index[h.docid] for h in raw]

    def batch_seconds(self, queries: SparseBatch, k: int, threads: int, params: dict) -> float:
        start = time.perf_counter()
        self.searcher.batch_search(queries, k, threads=threads, **params)
        return time.perf_counter() - start

    def close(self) -> None:
        self.searcher = None


# ------------------------------------------------------------------ splade-index
class SpladeIndex(Engine):
    """splade-index's exhaustive numba scan (term-at-a-time over a term-major CSC, float32 scores)."""

    name = "splade-index"
    modules = ("splade_index",)
    install = "LSR_PEERS=1 bash scripts/setup.sh, or pip install --no-deps splade-index"

    def build(self, docs: Docs, work: Path) -> Built:
        from splade_index.numba.retrieve_utils import _retrieve_numba_functional

        if docs.batch.nnz >= 2**31:
            raise ValueError(
                f"splade-index holds at most 2**31 - 1 postings (int32 indptr), got {docs.batch.nnz}"
            )
        self._fn = _retrieve_numba_functional
        start = time.perf_counter()
        csc = docs.csr.tocsc()
        csc.sort_indices()
        self.scores = {
            "data": csc.data.astype(np.float32, copy=False),
            "indices": csc.indices.astype(np.int32, copy=False),
            "indptr": csc.indptr.astype(np.int32),
            "num_docs": len(docs),
        }
        return Built(time.perf_counter() - start)

    def size_bytes(self) -> int:
        return sum(int(v.nbytes) for v in self.scores.values() if isinstance(v, np.ndarray))

    def settings(self) -> list[Setting]:
        return [Setting("exhaustive", {}, True, "float")]

    def prepare(self, queries: SparseBatch) -> list:
        return [(t.astype(np.int32), w.astype(np.float32)) for t, w in _row_arrays(queries)]

    def search(self, query, k: int, **params):
        terms, weights = query
        if len(terms) == 0:
            return []
        docs, _ = self._fn(
            [terms], [weights], scores=self.scores, k=k, sorted=True, show_progress=False, n_threads=1
        )
        return docs[0]

    def close(self) -> None:
        self.scores = None


# ------------------------------------------------------------------ Seismic
SEISMIC_BUILD = {"n_postings": 3500, "centroid_fraction": 0.1, "summary_energy": 0.4, "doc_cut": 15}
SEISMIC_SWEEP = ((3, 0.5), (5, 0.7), (10, 0.7), (10, 0.9), (20, 0.9), (20, 1.0), (40, 1.0))


class Seismic(Engine):
    """Seismic (pyseismic-lsr): pruned, clustered posting lists with block summaries, forward index."""

    name = "seismic"
    modules = ("seismic",)
    install = "pip install 'lsr[peers]'"

    def __init__(self, build_params: dict | None = None, sweep=SEISMIC_SWEEP):
        self.build_params = dict(build_params or SEISMIC_BUILD)
        self.sweep = sweep

    def build(self, docs: Docs, work: Path) -> Built:
        import seismic

        base = work / f"seismic-{docs.name}-{docs.digest}"
        path = base.with_name(base.name + ".index.seismic")
        key = {
            "engine": "seismic",
            "docs": docs.digest,
            **self.build_params,
            "version": package_version("pyseismic-lsr"),
        }
        record = base.with_name(base.name + ".build.json")
        built = _kept(record, key, path)
        if built is not None:
            self.index = seismic.SeismicIndex.load(str(path))
        else:
            b = docs.batch
            start = time.perf_counter()
            ds = seismic.SeismicDataset(dim=len(b.vocab))
            ds.add_documents_by_id(
                [str(i) for i in range(len(docs))],
                b.term_ids.astype(np.int64),
                b.weights.astype(np.float32, copy=False),
                b.indptr.astype(np.int64),
            )
            self.index = seismic.SeismicIndex.build_from_dataset(ds, num_threads=1, **self.build_params)
            built = Built(time.perf_counter() - start, extra={"build_params": self.build_params})
            del ds
            path.unlink(missing_ok=True)
            self.index.save(str(base))
            _record(record, key, built)
        self._bytes = path.stat().st_size
        self._str = seismic.get_seismic_string()
        self._has = docs.df > 0
        return built

    def size_bytes(self) -> int:
        return self._bytes  # the saved index file

    def settings(self) -> list[Setting]:
        return [
            Setting(f"qcut={q} hf={h}", {"query_cut": q, "heap_factor": h}, False, "float")
            for q, h in self.sweep
        ]

    def prepare(self, queries: SparseBatch) -> list:
        return [
            (str(i), np.array([str(t) for t in terms.tolist()], dtype=self._str), w.astype(np.float32))
            for i, (terms, w) in enumerate(_row_arrays(queries, self._has))
        ]

    def search(self, query, k: int, **params):
        qid, comps, values = query
        if len(comps) == 0:
            return []
        return self.index.search(qid, comps, values, k, params["query_cut"], params["heap_factor"])

    def indexes(self, raw) -> list[int]:
        return [int(d) for _, _, d in raw]

    def close(self) -> None:
        self.index = None


# ------------------------------------------------------------------ BMP
BMP_ALPHAS = (1.0, 0.9, 0.8)
BMP_MAX_IMPACT = 255  # u8 document impacts
BMP_QUERY_MAX = 32  # what bmp.Searcher rescales the heaviest query weight to
U16 = 65_535


class Bmp(Engine):
    """BMP (``bmp``): block-max pruning over a block-level forward index (Mallia, Suel, Tonellotto 2024)."""

    name = "bmp"
    modules = ("bmp",)
    install = "pip install 'lsr[peers]'"

    def __init__(self, alphas: tuple[float, ...] = BMP_ALPHAS, bsize: int = 32):
        self.alphas = alphas
        self.bsize = bsize
        self.panics = 0

    def build(self, docs: Docs, work: Path) -> Built:
        import bmp

        path = work / f"bmp-{docs.name}-{docs.digest}-{docs.order_name}-b{self.bsize}.bmp"
        key = {"engine": "bmp", "docs": docs.digest, "order": docs.order_name, "bsize": self.bsize}
        record = path.with_name(path.name + ".build.json")
        csr = docs.csr
        self.doc_scale = BMP_MAX_IMPACT / float(csr.data.max())
        impacts = np.clip(np.rint(csr.data * self.doc_scale), 1, BMP_MAX_IMPACT).astype(np.int64)
        built = _kept(record, key, path)
        if built is None:
            path.unlink(missing_ok=True)
            start = time.perf_counter()
            ix = bmp.Indexer(str(path), bsize=self.bsize, compress_range=False)
            names = [str(t) for t in range(len(docs.batch.vocab))]
            indptr, terms = csr.indptr, csr.indices
            for r in docs.in_order().tolist():
                s, e = indptr[r], indptr[r + 1]
                ix.add_document(
                    str(r),
                    dict(zip([names[t] for t in terms[s:e].tolist()], impacts[s:e].tolist(), strict=True)),
                )
            ix.finish()
            built = Built(time.perf_counter() - start, extra={"doc_scale": self.doc_scale})
            _record(record, key, built)
        self.searcher = bmp.Searcher(str(path))
        self._path = path
        self._has = docs.df > 0
        # For the u16 check: the documents as BMP stores them, term-major.
        self._inverted = _with_data(csr, impacts.astype(np.float64)).T.tocsr()
        return built

    def size_bytes(self) -> int:
        return self._path.stat().st_size

    def settings(self) -> list[Setting]:
        return [Setting(f"alpha={a}", {"alpha": a}, a == 1.0, "own") for a in self.alphas]

    def prepare(self, queries: SparseBatch) -> list:
        rows = _row_arrays(queries, self._has)
        # Queries as bmp.Searcher scores them (heaviest weight rescaled to 32, rounded up, in float32:
        # float64 rounds a few weights differently), for the exact ranking of BMP's own problem and
        # the u16 check.
        dim, top_q = self._inverted.shape[0], np.float32(BMP_QUERY_MAX)
        self._own = [
            _one_row(t, np.ceil(w.astype(np.float32) * top_q / w.max()).astype(np.float64), dim)
            if len(t)
            else None
            for t, w in rows
        ]
        top = max((float((q @ self._inverted).max()) for q in self._own if q is not None), default=0.0)
        self.max_score = top
        if top > U16:
            log.warning(
                "bmp: exact scores reach %d, beyond its u16 accumulator (%d): rankings wrap", top, U16
            )
        return [
            dict(zip([str(t) for t in terms.tolist()], w.tolist(), strict=True)) if len(terms) else None
            for terms, w in rows
        ]

    def own_truth(self, k: int) -> Truth:
        n = self._inverted.shape[1]
        return Truth.from_scores(
            ((q @ self._inverted).toarray()[0] if q is not None else np.zeros(n) for q in self._own), k
        )

    def search(self, query, k: int, **params):
        if query is None:
            return []
        try:
            docnos, _ = self.searcher.search(query, k=k, alpha=params["alpha"], beta=1.0)
        except BaseException as e:  # pyo3's PanicException derives from BaseException
            if type(e).__name__ != "PanicException":
                raise
            self.panics += 1
            return []
        return docnos

    def done_preparing(self) -> None:
        self._inverted = self._own = None

    def close(self) -> None:
        self.searcher = None
        self._inverted = None


def _with_data(m, data):
    out = m.copy()
    out.data = data
    return out


def _one_row(terms, weights, dim):
    import scipy.sparse as sp

    return sp.csr_matrix((weights, terms, np.array([0, len(terms)])), shape=(1, dim))


# ------------------------------------------------------------------ PISA
PISA_ALGORITHMS = ("maxscore", "block_max_wand")


class Pisa(Engine):
    """PISA (``pyterrier-pisa``) with its ``quantized`` scorer: MaxScore and block-max WAND."""

    name = "pisa"
    modules = ("pyterrier_pisa",)
    install = "pip install 'lsr[peers]'"

    def __init__(self, algorithms: tuple[str, ...] = PISA_ALGORITHMS):
        self.algorithms = algorithms

    def build(self, docs: Docs, work: Path) -> Built:
        from indexer.quantize import IMPACT_SCALE

        path = work / f"pisa-{docs.name}-{docs.digest}-{docs.order_name}"
        key = {
            "engine": "pisa",
            "docs": docs.digest,
            "order": docs.order_name,
            "algorithms": list(self.algorithms),
        }
        record = path.with_name(path.name + ".build.json")
        self.scale = IMPACT_SCALE
        built = _kept(record, key, path)
        start = time.perf_counter()
        if built is None:
            _write_pisa_dir(path, docs, self.scale)
        self._retrievers(path)  # the first one compresses the index and writes block-max (wand) data
        if built is None:
            built = _record(record, key, Built(time.perf_counter() - start))
        self._path = path
        self._has = docs.df > 0
        k = 1000
        self._buf = (
            np.empty(k, np.int32),
            np.empty(k, object),
            np.empty(k, np.int32),
            np.empty(k, np.float32),
        )
        return built

    def _retrievers(self, path: Path) -> None:
        from pyterrier_pisa import PisaIndex, PisaRetrieve

        index = PisaIndex(str(path), stemmer="none", stops="none", threads=1)
        self.retrievers = {
            a: PisaRetrieve(
                index, scorer="quantized", num_results=10, threads=1, query_algorithm=a, stops="none"
            )
            for a in self.algorithms
        }

    def size_bytes(self) -> int:
        # What PISA searches: the compressed index, block-max data and binary lexicons (not the raw
        # binary collection it is compressed from, nor the text lexicons).
        skip = {"inv.docs", "inv.freqs", "inv.sizes", "fwd.documents", "fwd.terms"}
        return sum(f.stat().st_size for f in self._path.iterdir() if f.is_file() and f.name not in skip)

    def settings(self) -> list[Setting]:
        return [Setting(a, {"algorithm": a}, True, "quantized") for a in self.algorithms]

    def prepare(self, queries: SparseBatch) -> list:
        from indexer.quantize import quantize

        out = []
        for terms, w in _row_arrays(queries, self._has):
            q = quantize(w, self.scale)
            keep = q > 0
            out.append(
                {str(t): float(v) for t, v in zip(terms[keep].tolist(), q[keep].tolist(), strict=True)}
            )
        return out

    def search(self, query, k: int, **params):
        from pyterrier_pisa import _pisathon

        if not query:
            return []
        algo = params["algorithm"]
        qidx, docnos, ranks, scores = self._buf
        n = _pisathon.retrieve(
            self.retrievers[algo]._ctxt,
            algo,
            [(0, query)],
            k=k,
            threads=1,
            query_weighted=1,
            pretokenised=True,
            result_qidxs=qidx,
            result_docnos=docnos,
            result_ranks=ranks,
            result_scores=scores,
        )
        return docnos[:n].tolist()

    def close(self) -> None:
        self.retrievers = None


def _write_pisa_dir(path: Path, docs: Docs, scale: float) -> None:
    """PISA's binary collection and lexicons straight from CSR, documents in ``docs.in_order()``.

    Document impacts follow our quantization contract (:func:`indexer.quantize.quantize`); zeros are
    dropped. Doc names are the rows, so hits map back with ``int``.
    """
    from pyterrier_pisa import _pisathon

    from indexer.quantize import quantize

    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    rows = docs.in_order()
    csr = docs.csr[rows]
    csr = _with_data(csr, quantize(csr.data, scale).astype(np.uint32))
    csr.eliminate_zeros()
    csc = csr.tocsc()
    csc.sort_indices()
    n, dim = csr.shape
    df = np.diff(csc.indptr)
    terms = sorted((str(t), t) for t in range(dim) if df[t] > 0)  # the lexicon is sorted as strings
    (path / "fwd.documents").write_text("".join(f"{r}\n" for r in rows.tolist()), encoding="utf-8")
    (path / "fwd.terms").write_text("".join(f"{s}\n" for s, _ in terms), encoding="utf-8")
    with open(path / "inv.docs", "wb") as fd, open(path / "inv.freqs", "wb") as ff:
        fd.write(np.array([1, n], np.uint32).tobytes())
        for _, t in terms:
            s, e = csc.indptr[t], csc.indptr[t + 1]
            fd.write(np.uint32(e - s).tobytes())
            fd.write(csc.indices[s:e].astype(np.uint32).tobytes())
            ff.write(np.uint32(e - s).tobytes())
            ff.write(csc.data[s:e].astype(np.uint32).tobytes())
    lengths = np.asarray(csr.sum(axis=1)).ravel().astype(np.uint32)
    with open(path / "inv.sizes", "wb") as f:
        f.write(np.uint32(n).tobytes())
        f.write(lengths.tobytes())
    _pisathon.build_binlex(str(path / "fwd.documents"), str(path / "fwd.doclex"))
    _pisathon.build_binlex(str(path / "fwd.terms"), str(path / "fwd.termlex"))
    meta = {"type": "sparse_index", "format": "pisa", "package_hint": "pyterrier-pisa", "stemmer": "none"}
    (path / "pt_meta.json").write_text(json.dumps(meta), encoding="utf-8")


# ------------------------------------------------------------------ Lucene
class Lucene(Engine):
    """Our Lucene impact backend: `build_lucene_index` and `plugin.lucene.LuceneSearcher`."""

    name = "lucene"
    modules = ("jnius",)
    install = "pip install 'lsr[lucene]'"
    warmup_passes = 3  # the JVM compiles hot paths over the first few hundred queries

    def __init__(self, threads: int = 2):
        self.threads = threads
        self.searcher = None

    def missing(self) -> str | None:
        reason = super().missing()
        if reason:
            return reason
        try:
            from indexer.java import anserini_jar, find_java

            find_java(), anserini_jar()
        except RuntimeError as e:
            return str(e)
        return None

    def build(self, docs: Docs, work: Path) -> Built:
        from indexer.jsonvector import append_lines, format_lines
        from indexer.lucene import build_lucene_index
        from plugin.lucene import LuceneSearcher

        path = work / f"lucene-{docs.name}-{docs.digest}"
        key = {"engine": "lucene", "docs": docs.digest, "threads": self.threads}
        record = path.with_name(path.name + ".build.json")
        built = _kept(record, key, path)
        if built is None:
            vectors = work / f"vectors-{docs.name}-{docs.digest}.jsonl"
            vectors.unlink(missing_ok=True)
            start = time.perf_counter()
            for s in range(0, len(docs), 20_000):
                rows = np.arange(s, min(s + 20_000, len(docs)))
                append_lines(vectors, format_lines(docs.ids[s : s + 20_000], docs.batch.take(rows)))
            write_s = time.perf_counter() - start
            shutil.rmtree(path, ignore_errors=True)
            start = time.perf_counter()
            build_lucene_index([vectors], path, threads=self.threads)
            built = Built(
                time.perf_counter() - start,
                extra={
                    "vectors_write_s": write_s,
                    "vectors_bytes": vectors.stat().st_size,
                    "threads": self.threads,
                },
            )
            vectors.unlink()
            _record(record, key, built)
        self._path = path
        self.searcher = LuceneSearcher(path)
        self._id_index = docs.id_index
        return built

    def size_bytes(self) -> int:
        return dir_bytes(self._path)

    def settings(self) -> list[Setting]:
        return [Setting("impact", {}, True, "quantized")]

    def search(self, query, k: int, **params):
        return self.searcher.search(query, k)

    def indexes(self, raw) -> list[int]:
        return [self._id_index[h.docid] for h in raw]

    def close(self) -> None:
        if self.searcher is not None:
            self.searcher.close()
        self.searcher = None


# ------------------------------------------------------------------ registry
ENGINES = (
    "scipy",
    "ours-scan",
    "ours-exact",
    "ours-approx",
    "ours-float",
    "ours-exact-2t",
    "ours-approx-2t",
    "splade-index",
    "seismic",
    "bmp",
    "pisa",
    "lucene",
)


def make_engine(
    name: str, alphas: tuple[float, ...] = OURS_ALPHAS, seismic_build: dict | None = None
) -> Engine:
    if name == "scipy":
        return ScipyBrute()
    if name.startswith("ours-"):
        mode, _, threads = name.removeprefix("ours-").partition("-")
        return Ours(mode, alphas, threads=int(threads.removesuffix("t")) if threads else 1)
    if name == "splade-index":
        return SpladeIndex()
    if name == "seismic":
        return Seismic(seismic_build)
    if name == "bmp":
        return Bmp()
    if name == "pisa":
        return Pisa()
    if name == "lucene":
        return Lucene()
    raise ValueError(f"engine must be one of {', '.join(ENGINES)}, got {name!r}")


def peer_versions() -> dict:
    return {
        d: package_version(d)
        for d in ("pyseismic-lsr", "bmp", "pyterrier-pisa", "splade-index", "pyserini", "scipy")
    }
