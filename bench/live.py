"""Live native index (:mod:`indexer.live`, :class:`plugin.live.LiveSearcher`): what a change costs
against a full rebuild, what segments and deletions cost a query, and filtered search against
scoring only the allowed documents.

Data: ``--docs`` documents of the topical generator (:class:`bench.synthetic.TopicalCollection`,
~120 terms per document, weights in (0, 3]) plus ``2 x --changes`` more, and ``--queries``
SPLADE-style queries of the same generator (term counts and weights resampled from the real
SPLADE-v3 MS MARCO dev query vectors). Generation is timed apart. Everything runs in one process,
single-threaded, in this order:

1. **Full build**: :func:`indexer.native.build.build_native_index` of the first ``--docs`` documents
   from in-memory chunks (``batches=``; the fastest rebuild there is, no JSON to parse), timed: the
   rebuild baseline. The live document set at the end has ``--docs`` documents too (``+ changes -
   changes``); its rebuild is not run again, step 1's time stands for it (the merge below is the
   same work from impacts, and is timed).
2. **Changes**, each one call timed, on a live copy of that index (its files hard-linked): first the
   conversion to a live index (``delete`` of no ids: hard links, checksums, the id table), a one-time
   cost reported apart; then ``append`` of ``--changes`` new documents as a new segment (from a
   JsonVectorCollection file written beforehand; the time to parse that file alone is reported
   beside it), ``delete`` of ``--changes`` random existing documents, and an upsert (``append(...,
   upsert=True)``) of ``--changes`` other existing documents with new vectors. Ratio lines: each
   change over the full build.
3. **Query latency** (exact, ``--k``): the static index (:class:`plugin.native.NativeSearcher`), the
   live index after the append and the delete (2 segments + deletions), after the upsert (3
   segments), and after ``merge`` to one segment (timed), all through :meth:`LiveSearcher.search`;
   then the merged segment alone through ``NativeSearcher.search``: the difference is what the live
   layer (its batch path and the merge of per-segment hits) costs a query. Per searcher: the first
   query's time is reported as warm-up (JIT compilation or cache loading), an untimed pass over all
   queries warms the caches, then every query is timed alone (``perf_counter``, garbage collector
   off); p50, p99 and mean. Checks, hit for hit: the 3-segment search against the merged one over
   every query (the same top-k scores, and the same ids but for ties at the cut-off), the 2-segment
   search against direct scoring of its live documents on ``--check-queries`` queries, and the
   merged one against direct scoring of all live documents (the 100% row below).
3b. **Segments sweep**: the final live documents as ``--segments`` (1, 4, 16) segments, each count a
   live index of its own (:func:`build_live`): the documents' rows split in that many contiguous
   parts, each built by ``build_native_from_impacts`` from the impacts in memory (exactly the merged
   index's, so scores compare exactly; no JSON to write or parse) with BP per part, as an append
   reorders its segment. The first part is built as a plain index and converted to live, each next
   one built in the live directory and published as an appended segment (as ``append`` publishes
   the segment it builds). Build time per count (the sum of its parts; BP per part costs much less
   than one BP over all), then query latency through :meth:`LiveSearcher.search` as in 3, against
   the merged segment: ratio lines, and the scores must equal the merged index's on every query.
   The 1-segment count is a fresh build of the merged segment's documents: what a build path alone
   changes (the noise floor of the comparison).
3c. **Forward store** (when :func:`indexer.native.build.build_native_index` and
   ``build_native_from_impacts`` take ``forward=``; else skipped, and said): the merged segment's
   documents in its own internal order rebuilt without reordering (the same ids, blocks and
   postings) with ``forward=True``, converted to live: the filter rows of 4 run on it as well, so
   the two differ only by the forward store. Checked: the same internal order, the forward store in
   its meta, the unfiltered scores equal the merged index's.
4. **Filters**: allow-lists of ``--selectivities`` of the live documents (random ids) as one
   :class:`plugin.live.Filter` each, on the merged index. Its per-segment compile (the first one
   also builds the segment's id table, timed apart with a one-id filter) is reported apart from
   the search. Each filtered exact search is timed as in 3 and against a **direct-scoring
   baseline**: the allowed documents' quantized vectors held in memory as a forward CSR, each one
   scored against the query by a numba kernel (:func:`_direct_topk`, with a numpy twin checked
   against it on a few queries) that keeps the top-k as it goes. The baseline's query is quantized
   beforehand and it is warmed up by its first query only (no untimed pass: its data is in memory
   and a pass over half the collection costs as much as the timing). Ratio lines: filtered over
   direct p50, and filtered over unfiltered p50, per selectivity. The filtered hits must equal the
   direct top-k (scores equal, ids equal but for ties). With the forward store (3c): the same
   filters (compiled apart; its id table built first, timed apart) on its index, each timed right
   after the same filter without it and checked the same way (unfiltered: both timed again, back to
   back); ratio lines with over without, and over direct. **Post-filtering** baseline, per
   selectivity: the merged index's unfiltered exact top-K (:meth:`LiveSearcher.merged`, K = k and
   K = ceil(k / selectivity) capped at ``--post-filter-cap``), the first k allowed kept
   (:func:`post_filter`), timed as in 3: p50, p99, the hits it keeps and its recall@k against the
   exact filtered top-k (not a check: it loses hits by design).

A compact table of each part and the ratio lines are printed, and one JSON record per run (config,
machine, versions, git state, every figure) is appended to ``--out``.

Run from the repository root (quiet machine)::

    .venv/bin/python -m bench.live                             # 1M documents, 10k changes
    .venv/bin/python -m bench.live --segments 4 16             # no fresh 1-segment build (saves a BP)
    .venv/bin/python -m bench.live --docs 20000 --changes 1000 --queries 50
"""

from __future__ import annotations

import argparse
import gc
import inspect
import logging
import math
import os
import platform
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numba import njit

from bench._context import (
    MB,
    add_output_arguments,
    append_jsonl,
    peak_rss_bytes,
    percentile,
    positive_int,
    print_fixed_table,
    ratio_text,
    record_context,
    setup_logging,
    utc_stamp,
    work_dir,
)
from lsr.sparse import SparseBatch

log = logging.getLogger("bench.live")

SELECTIVITIES = (0.001, 0.01, 0.1, 0.5)
TWIN_QUERIES = 5  # queries on which the direct kernel and its numpy twin must agree
TWIN_DOCS = 20_000  # on that many random live documents (the twin's temporaries grow with them)
SEGMENT_COUNTS = (1, 4, 16)
POST_FILTER_CAP = 10_000  # the deepest unfiltered top-K that post-filtering searches


def fraction(text: str) -> float:
    value = float(text)
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"must be in (0, 1], got {value}")
    return value


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m bench.live",
        description="Live native index: changes vs a full rebuild, segments and filters vs direct scoring.",
    )
    p.add_argument(
        "--docs",
        type=positive_int,
        default=1_000_000,
        help="documents of the full build (default: %(default)s)",
    )
    p.add_argument(
        "--changes",
        type=positive_int,
        default=10_000,
        help="documents appended, deleted and upserted, each (default: %(default)s)",
    )
    p.add_argument("--queries", type=positive_int, default=300, help="queries timed (default: %(default)s)")
    p.add_argument("--k", type=positive_int, default=10, help="hits per query (default: %(default)s)")
    p.add_argument(
        "--check-queries",
        type=positive_int,
        default=30,
        help="queries the 2-segment index is checked on against direct scoring (default: %(default)s)",
    )
    p.add_argument(
        "--selectivities",
        nargs="+",
        type=fraction,
        default=list(SELECTIVITIES),
        help="allow-list sizes, fractions of the live documents (default: %(default)s)",
    )
    p.add_argument(
        "--segments",
        nargs="+",
        type=positive_int,
        default=list(SEGMENT_COUNTS),
        help="segment counts of the segments sweep, each a live index of the final live documents "
        "built in that many parts (default: %(default)s)",
    )
    p.add_argument(
        "--post-filter-cap",
        type=positive_int,
        default=POST_FILTER_CAP,
        help="post-filtering searches the unfiltered top-k and top-ceil(k / selectivity), the latter "
        "at most this deep (default: %(default)s)",
    )
    p.add_argument("--seed", type=int, default=0, help="generator and sampling seed (default: %(default)s)")
    add_output_arguments(p, "live", "directory for the indexes and vector files (rewritten each run)")
    args = p.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    if 3 * args.changes > args.docs:
        p.error(f"--changes {args.changes}: deletes and upserts need at least 3x that many --docs")
    if max(args.segments) > args.docs:
        p.error(f"--segments {max(args.segments)}: more segments than --docs")
    return args


# ------------------------------------------------------------------ the direct-scoring baseline
@njit(cache=True, nogil=True)
def _direct_topk(indptr, terms, impacts, q_terms, q_impacts, n_terms, k):
    """Top-``k`` rows of a forward CSR by their dot product with one query, ties by the lower row.

    ``indptr`` int64 ``[n_rows + 1]``, ``terms`` int32 and ``impacts`` uint16 ``[nnz]``; ``q_terms``,
    ``q_impacts`` int64 ``[q_nnz]`` with ``q_terms < n_terms``. Returns (scores int64, rows int64),
    best first, only scores > 0.
    """
    q = np.zeros(n_terms, np.int64)
    for i in range(len(q_terms)):
        q[q_terms[i]] = q_impacts[i]
    kk = max(k, 0)
    top_s = np.zeros(kk, np.int64)
    top_r = np.zeros(kk, np.int64)
    n = 0
    for r in range(len(indptr) - 1):
        s = 0
        for p in range(indptr[r], indptr[r + 1]):
            s += q[terms[p]] * np.int64(impacts[p])
        if s <= 0 or kk == 0 or (n == kk and s <= top_s[kk - 1]):
            continue
        j = n if n < kk else kk - 1
        while j > 0 and top_s[j - 1] < s:  # equal scores stay ahead: rows arrive ascending
            top_s[j] = top_s[j - 1]
            top_r[j] = top_r[j - 1]
            j -= 1
        top_s[j] = s
        top_r[j] = r
        if n < kk:
            n += 1
    return top_s[:n], top_r[:n]


def _direct_topk_numpy(indptr, terms, impacts, q_terms, q_impacts, n_terms, k):
    """:func:`_direct_topk`'s numpy twin: the same signature and results."""
    q = np.zeros(n_terms, np.int64)
    q[q_terms] = q_impacts
    n_rows = len(indptr) - 1
    rows = np.repeat(np.arange(n_rows), np.diff(indptr))
    scores = np.zeros(n_rows, np.int64)
    np.add.at(scores, rows, q[terms] * impacts.astype(np.int64))
    cand = np.flatnonzero(scores > 0)
    order = np.lexsort((cand, -scores[cand]))[: max(k, 0)]
    return scores[cand][order], cand[order].astype(np.int64)


@dataclass
class Forward:
    """Quantized document vectors, one CSR row per document: vocabulary term ids and impacts."""

    indptr: np.ndarray  # int64 [n_rows + 1]
    terms: np.ndarray  # int32 [nnz]
    impacts: np.ndarray  # uint16 [nnz]

    @classmethod
    def concat(cls, parts: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray]]) -> Forward:
        """From ``(row lengths, terms, impacts)`` parts, in order."""
        lengths = np.concatenate([p[0] for p in parts]).astype(np.int64)
        indptr = np.zeros(len(lengths) + 1, np.int64)
        np.cumsum(lengths, out=indptr[1:])
        terms = np.concatenate([p[1] for p in parts]).astype(np.int32)
        impacts = np.concatenate([p[2] for p in parts]).astype(np.uint16)
        return cls(indptr, terms, impacts)

    def take(self, rows: np.ndarray) -> Forward:
        """The CSR of ``rows`` (int64, in the given order)."""
        lengths = np.diff(self.indptr)[rows]
        indptr = np.zeros(len(rows) + 1, np.int64)
        np.cumsum(lengths, out=indptr[1:])
        gather = np.repeat(self.indptr[:-1][rows] - indptr[:-1], lengths) + np.arange(indptr[-1])
        return Forward(indptr, self.terms[gather], self.impacts[gather])

    @property
    def nnz(self) -> int:
        return int(self.indptr[-1])


def batch_part(batch: SparseBatch, scale: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(row lengths, terms, impacts)`` of a generated chunk, quantized as a build from batches does."""
    from indexer.quantize import quantize

    impacts = quantize(batch.weights, scale)
    keep = impacts > 0
    rows = np.repeat(np.arange(len(batch)), batch.row_nnz())[keep]
    return np.bincount(rows, minlength=len(batch)), batch.term_ids[keep], impacts[keep]


def file_part(path: Path, vocab: tuple[str, ...], scale: float) -> tuple[list[str], tuple]:
    """Ids and ``(row lengths, terms, impacts)`` of a JsonVectorCollection file, quantized as
    :func:`indexer.live.append` reads it (float64 weights parsed from the JSON text)."""
    from indexer.jsonvector import iter_vectors
    from indexer.quantize import to_impacts

    index = {t: i for i, t in enumerate(vocab)}
    ids, lengths, terms, impacts = [], [], [], []
    for _, rid, vector in iter_vectors(path):
        t = np.array([index[tok] for tok in vector], np.int64)
        w = to_impacts(np.array(list(vector.values()), np.float64), scale, given=False)
        order = np.argsort(t, kind="stable")
        keep = w[order] > 0
        ids.append(rid)
        lengths.append(int(keep.sum()))
        terms.append(t[order][keep])
        impacts.append(w[order][keep])
    return ids, (np.array(lengths), np.concatenate(terms), np.concatenate(impacts))


class Direct:
    """The direct-scoring baseline over a set of rows of a :class:`Forward`."""

    def __init__(self, forward: Forward, rows: np.ndarray, ids: np.ndarray, n_terms: int):
        start = time.perf_counter()
        self.rows = np.asarray(rows, np.int64)
        self.csr = forward.take(self.rows)
        self.ids = ids[self.rows]
        self.n_terms = n_terms
        self.prepare_s = time.perf_counter() - start

    def search(self, query: tuple[np.ndarray, np.ndarray], k: int):
        c = self.csr
        return _direct_topk(c.indptr, c.terms, c.impacts, query[0], query[1], self.n_terms, k)

    def twin(self, query: tuple[np.ndarray, np.ndarray], k: int):
        c = self.csr
        return _direct_topk_numpy(c.indptr, c.terms, c.impacts, query[0], query[1], self.n_terms, k)

    def hits(self, result) -> list[tuple[str, float]]:
        scores, rows = result
        return list(zip(self.ids[rows].tolist(), scores.astype(np.float64).tolist(), strict=True))


def check_twin(
    forward: Forward, rows: np.ndarray, ids: np.ndarray, n_terms: int, queries: list, k: int
) -> dict:
    """:func:`_direct_topk` against its numpy twin, scores and rows exactly: on ``rows``, and on five
    of them with ``k`` (more than they hold) and with ``k=0``."""
    sample, tiny = Direct(forward, rows, ids, n_terms), Direct(forward, rows[:5], ids, n_terms)
    cases = equal = 0
    for q in queries:
        for direct, kk in ((sample, k), (tiny, k), (tiny, 0)):
            (s1, r1), (s2, r2) = direct.search(q, kk), direct.twin(q, kk)
            cases += 1
            equal += bool(np.array_equal(s1, s2) and np.array_equal(r1, r2))
    return {"cases": cases, "equal": equal, "queries": len(queries), "docs": len(rows)}


# ------------------------------------------------------------------ timing and checks
def time_queries(search: Callable[[int], object], n: int, warm_pass: bool = True) -> tuple[dict, list]:
    """Time ``search(i)`` for queries ``0..n-1``: the first call apart (warm-up), then (with
    ``warm_pass``) an untimed pass, then each query alone with the garbage collector off."""
    start = time.perf_counter()
    search(0)
    warmup = time.perf_counter() - start
    if warm_pass:
        for i in range(n):
            search(i)
    seconds = np.empty(n, np.float64)
    results = []
    gc.collect()
    gc.disable()
    try:
        for i in range(n):
            t0 = time.perf_counter()
            results.append(search(i))
            seconds[i] = time.perf_counter() - t0
    finally:
        gc.enable()
    ms = (seconds * 1e3).tolist()
    figures = {
        "warmup_ms": warmup * 1e3,
        "warm_pass": warm_pass,
        "queries": n,
        "p50_ms": percentile(ms, 50),
        "p99_ms": percentile(ms, 99),
        "mean_ms": float(np.mean(ms)),
    }
    return figures, results


def as_pairs(hits) -> list[tuple[str, float]]:
    return [(h.docid, float(h.score)) for h in hits]


def agreement(results: Sequence[list], truths: Sequence[list], k: int) -> dict:
    """How ``results`` match ``truths`` (lists of ``(id, score)``, best first), query for query:
    equal score lists, equal id lists, and recall@k where a hit tied with the k-th true score counts."""
    scores_equal = ids_equal = 0
    recalls = []
    for got, want in zip(results, truths, strict=True):
        scores_equal += [s for _, s in got] == [s for _, s in want]
        ids_equal += [i for i, _ in got] == [i for i, _ in want]
        if not want:
            recalls.append(1.0 if not got else 0.0)
            continue
        true_ids, kth = {i for i, _ in want}, want[-1][1]
        right = sum(1 for i, s in got[: len(want)] if i in true_ids or (s == kth and len(want) == k))
        recalls.append(right / len(want))
    n = len(truths)
    return {
        "queries": n,
        "scores_equal": int(scores_equal),
        "ids_equal": int(ids_equal),
        "recall": float(np.mean(recalls)) if recalls else 1.0,
        "ok": scores_equal == n,
    }


def hard_link_copy(src: Path, dst: Path) -> None:
    """``dst`` holding hard links to the files of ``src`` (a flat index directory)."""
    dst.mkdir()
    for f in src.iterdir():
        if f.is_file():
            os.link(f, dst / f.name)
        else:
            shutil.copytree(f, dst / f.name)


# ------------------------------------------------------------------ built live indexes, post-filtering
def forward_support() -> str | None:
    """Why the builds cannot store a forward index (``forward=``), or None when they can."""
    from indexer.native.build import build_native_from_impacts, build_native_index

    missing = [
        f.__name__
        for f in (build_native_index, build_native_from_impacts)
        if "forward" not in inspect.signature(f).parameters
    ]
    return f"{' and '.join(missing)} take no forward= argument" if missing else None


def dir_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def build_live(
    root: Path,
    vectors: Forward,
    ids: np.ndarray,
    parts: Sequence[np.ndarray],
    vocab: Sequence[str],
    quantization: str,
    scale: float | None,
    **options,
) -> dict:
    """A live index at ``root`` whose segments are ``parts`` (rows of ``vectors``), oldest first.

    Each part is built by :func:`indexer.native.build.build_native_from_impacts` from its quantized
    rows (exactly the impacts every other index here holds, so scores compare exactly), reordered as
    ``options`` say (BP by default, per part, as an append reorders its segment). The first part is
    built as a plain native index and converted to a live one (``delete`` of no ids, as a first
    append converts); each next one is built inside the live directory under the next segment name
    and published as a new generation with that segment appended, as :func:`indexer.live.append`
    publishes the segment it builds from JSON files.
    """
    from indexer.live import Segment, _publish, current, delete
    from indexer.native.build import build_native_from_impacts

    seconds, reorder_s = [], 0.0
    for p, rows in enumerate(parts):
        csr = vectors.take(rows)
        t0 = time.perf_counter()
        gen = current(root) if p else None
        name = f"seg-{gen.next_segment}" if gen else ""
        meta = build_native_from_impacts(
            root / name if gen else root, ids[rows].tolist(), csr.indptr, csr.terms, csr.impacts, vocab,
            quantization, scale, **options,
        )  # fmt: skip
        if gen is None:
            delete(root, [])
        else:
            segment = Segment(name, meta["n_docs"], meta["meta_sha256"])
            _publish(gen, [*gen.segments, segment], gen.next_segment + 1, gen.quantization, gen.scale)
        seconds.append(time.perf_counter() - t0)
        reorder_s += meta["reorder_seconds"]
        del csr
    return {
        "parts": len(parts),
        "part_docs": [len(r) for r in parts],
        "build_s": sum(seconds),
        "largest_part_s": max(seconds),
        "reorder_s": reorder_s,
        "bytes": dir_bytes(root),
    }


def post_filter(searcher, flt, query: SparseBatch, k: int, depth: int) -> list[tuple[str, float]]:
    """Post-filtering: the unfiltered exact top-``depth`` of ``query`` (:meth:`LiveSearcher.merged`,
    internal ids, no hit built), then the first ``k`` of them that ``flt`` allows, as ``(id, score)``."""
    allowed = []
    for seg in searcher.segments:
        m = flt.mask(seg)  # compiled once per segment, then cached in the filter
        allowed.append(None if m is None else m.docs)
    out = []
    for neg, s, doc, seg in searcher.merged(query, depth)[0]:
        a = allowed[s]
        if a is None or a[doc]:
            out.append((seg.index.docid(doc), float(-neg)))
            if len(out) == k:
                break
    return out


def post_filter_depths(k: int, share: float, cap: int) -> list[int]:
    """The unfiltered depths post-filtering searches: ``k``, and ``ceil(k / share)`` at most ``cap``."""
    return sorted({k, max(k, min(cap, math.ceil(k / share - 1e-9)))})


# ------------------------------------------------------------------ context
def versions() -> dict:
    import numba

    return {"python": platform.python_version(), "numpy": np.__version__, "numba": numba.__version__}


# ------------------------------------------------------------------ main
def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    setup_logging(args.verbose)
    from bench.synthetic import QUERY_DATA, QUERY_FILES

    if not (QUERY_DATA / QUERY_FILES["splade-v3"]).is_file():
        log.error("real query vectors not found at %s (the shared msmarco-dev-queries data)", QUERY_DATA)
        return 2
    with work_dir(args.work, "lsr-live-") as work:
        return run(args, work)


def run(args: argparse.Namespace, work: Path) -> int:
    from bench.synthetic import TopicalCollection
    from indexer.jsonvector import append_lines, format_lines, iter_vectors
    from indexer.live import append, delete, merge
    from indexer.native.build import build_native_index
    from indexer.quantize import IMPACT_SCALE, quantize
    from lsr.models import fetch
    from lsr.tokenize import Tokenizer
    from plugin.live import Filter, LiveSearcher, internal_order
    from plugin.native import NativeSearcher

    context = record_context(versions())
    started = time.perf_counter()
    n, c, k = args.docs, args.changes, args.k
    rng = np.random.default_rng((args.seed, 7))
    fig: dict = {}

    # ---------------------------------------------------------------- data
    vocab = Tokenizer(fetch() / "tokenizer.json").vocab
    t0 = time.perf_counter()
    coll = TopicalCollection(vocab, seed=args.seed)
    static_chunks: list[tuple[list[str], SparseBatch]] = []
    extra_ids: list[str] = []
    extra_parts: list[SparseBatch] = []
    parts = []
    at = 0
    for ids, batch in coll.documents(n + 2 * c):
        cut = max(0, min(len(ids), n - at))
        if cut:
            head = batch if cut == len(ids) else batch.take(np.arange(cut))
            static_chunks.append((ids[:cut], head))
            parts.append(batch_part(head, IMPACT_SCALE))
        if cut < len(ids):
            extra_ids.extend(ids[cut:])
            extra_parts.append(batch.take(np.arange(cut, len(ids))))
        at += len(ids)
    extra = SparseBatch.concat(extra_parts)
    del extra_parts
    queries = coll.splade_queries(args.queries)
    fig["generate_s"] = time.perf_counter() - t0
    static_nnz = sum(b.nnz for _, b in static_chunks)
    log.info(
        "generated %d + %d documents and %d queries in %.1f s", n, 2 * c, len(queries), fig["generate_s"]
    )

    static_ids = np.array([i for ids, _ in static_chunks for i in ids], dtype=object)
    deleted_rows = np.sort(rng.choice(n, c, replace=False))
    rest = np.setdiff1d(np.arange(n), deleted_rows)
    upserted_rows = np.sort(rng.choice(rest, c, replace=False))
    append_ids = extra_ids[:c]
    upsert_ids = static_ids[upserted_rows].tolist()

    # The changes' vector files: written before anything is timed.
    t0 = time.perf_counter()
    append_file, upsert_file = work / "append.jsonl", work / "upsert.jsonl"
    for f in (append_file, upsert_file):
        f.unlink(missing_ok=True)
    append_lines(append_file, format_lines(append_ids, extra.take(np.arange(c))))
    append_lines(upsert_file, format_lines(upsert_ids, extra.take(np.arange(c, 2 * c))))
    fig["write_change_files_s"] = time.perf_counter() - t0
    del extra

    # Every document version in memory, quantized: rows 0..n-1 the static ones, then the appended,
    # then the upserts' new vectors (read back from the files, as append parses them).
    a_ids, a_part = file_part(append_file, vocab, IMPACT_SCALE)
    u_ids, u_part = file_part(upsert_file, vocab, IMPACT_SCALE)
    forward = Forward.concat([*parts, a_part, u_part])
    del parts, a_part, u_part
    all_ids = np.concatenate([static_ids, np.array(a_ids + u_ids, dtype=object)])
    n_terms = len(vocab)
    static_live = np.ones(n, bool)
    static_live[deleted_rows] = False
    rows_two = np.concatenate([np.flatnonzero(static_live), np.arange(n, n + c)])
    static_live[upserted_rows] = False
    rows_final = np.concatenate([np.flatnonzero(static_live), np.arange(n, n + 2 * c)])
    q_rows = [queries.take([i]) for i in range(len(queries))]
    q_direct = [
        (r.term_ids.astype(np.int64), quantize(r.weights, IMPACT_SCALE).astype(np.int64)) for r in q_rows
    ]
    q_direct = [(t[w > 0], w[w > 0]) for t, w in q_direct]

    # ---------------------------------------------------------------- 1. full build
    static_dir, live_dir = work / "static", work / "live"
    for d in (static_dir, live_dir):
        shutil.rmtree(d, ignore_errors=True)
    t0 = time.perf_counter()
    meta = build_native_index(static_dir, batches=iter(static_chunks))
    fig["build_s"] = rebuild_s = time.perf_counter() - t0
    fig["build_reorder_s"] = meta["reorder_seconds"]
    fig["index_bytes"] = sum(f.stat().st_size for f in static_dir.iterdir() if f.is_file())
    del static_chunks
    gc.collect()
    log.info("full build of %d documents: %.1f s", n, rebuild_s)

    searchers: dict[str, dict] = {}
    t0 = time.perf_counter()
    static = NativeSearcher(static_dir, verify=False)
    open_s = time.perf_counter() - t0
    figures, _ = time_queries(lambda i: static.search(q_rows[i], k), len(q_rows))
    searchers["static"] = {"segments": 1, "docs": len(static), "deleted": 0, "open_s": open_s, **figures}

    # ---------------------------------------------------------------- 2. changes
    changes: dict[str, dict] = {}

    def change(name: str, docs: int, call: Callable[[], object]) -> None:
        t0 = time.perf_counter()
        result = call()
        seconds = time.perf_counter() - t0
        changes[name] = {"docs": docs, "seconds": seconds, "vs_rebuild": seconds / rebuild_s, **vars(result)}
        log.info("%s: %.2f s", name, seconds)

    hard_link_copy(static_dir, live_dir)
    change("convert to live", 0, lambda: delete(live_dir, []))
    change("append", c, lambda: append(live_dir, [append_file]))
    t0 = time.perf_counter()
    sum(1 for _ in iter_vectors(append_file))
    changes["append"]["parse_json_s"] = time.perf_counter() - t0
    change("delete", c, lambda: delete(live_dir, static_ids[deleted_rows].tolist()))

    def live_figures(searcher: LiveSearcher, open_s: float) -> tuple[dict, list]:
        figures, results = time_queries(lambda i: searcher.search(q_rows[i], k), len(q_rows))
        row = {
            "segments": len(searcher.segments),
            "docs": len(searcher),
            "deleted": sum(s.n_deleted for s in searcher.generation.segments),
            "open_s": open_s,
            **figures,
        }
        return row, [as_pairs(h) for h in results]

    t0 = time.perf_counter()
    live = LiveSearcher(live_dir, verify=False)
    searchers["live: 2 seg + deletions"], two_results = live_figures(live, time.perf_counter() - t0)

    change("upsert", c, lambda: append(live_dir, [upsert_file], upsert=True))
    t0 = time.perf_counter()
    live.refresh()
    searchers["live: 3 seg (after upsert)"], three_results = live_figures(live, time.perf_counter() - t0)

    change("merge to 1 segment", len(rows_final), lambda: merge(live_dir, max_segments=1))
    t0 = time.perf_counter()
    live.refresh()
    searchers["merged"], merged_results = live_figures(live, time.perf_counter() - t0)
    # The same segment through NativeSearcher.search: what LiveSearcher's own layer costs a query.
    (segment,) = live.segments
    figures, _ = time_queries(lambda i: segment.search(q_rows[i], k), len(q_rows))
    searchers["merged, NativeSearcher"] = {
        "segments": 1,
        "docs": len(segment),
        "deleted": 0,
        "open_s": 0.0,
        **figures,
    }

    # ---------------------------------------------------------------- 3b. segments sweep
    # The final live documents as 1, 4, 16 ... segments (contiguous parts of their rows, built from
    # their impacts, BP per part), each searched through LiveSearcher against the merged segment.
    quantization, scale = live.generation.quantization, live.generation.scale
    sweep: dict[str, dict] = {}
    sweep_results: dict[str, list] = {}
    merge_s = changes["merge to 1 segment"]["seconds"]
    merged_built = {
        "part_docs": [len(segment)],
        "build_s": merge_s,
        "largest_part_s": merge_s,
        "reorder_s": segment.index.meta["reorder_seconds"],
    }
    for count in sorted(set(args.segments)):
        sweep_dir = work / f"sweep-{count}"
        shutil.rmtree(sweep_dir, ignore_errors=True)
        built = build_live(
            sweep_dir, forward, all_ids, np.array_split(rows_final, count), vocab, quantization, scale
        )
        t0 = time.perf_counter()
        searcher = LiveSearcher(sweep_dir, verify=False)
        row, sweep_results[str(count)] = live_figures(searcher, time.perf_counter() - t0)
        sweep[str(count)] = {**built, **row}
        log.info("%d segment(s): built in %.1f s, p50 %.3f ms", count, built["build_s"], row["p50_ms"])
        del searcher
        gc.collect()
        shutil.rmtree(sweep_dir, ignore_errors=True)

    # ---------------------------------------------------------------- 3c. the forward-store index
    # The merged segment's documents in its own internal order (no reordering: the same doc ids,
    # blocks and postings) built again with forward=True: the filter rows run on both.
    no_forward = forward_support()
    fwd_live, forward_fig = None, {"available": no_forward is None, "why_not": no_forward}
    merged_order = internal_order(live)
    if no_forward is None:
        fwd_dir = work / "merged-forward"
        shutil.rmtree(fwd_dir, ignore_errors=True)
        row_of = dict(zip(all_ids[rows_final].tolist(), rows_final.tolist(), strict=True))
        merged_rows = np.array([row_of[i] for i in merged_order.tolist()], np.int64)
        del row_of
        built = build_live(
            fwd_dir, forward, all_ids, [merged_rows], vocab, quantization, scale, reorder="none",
            block_size=segment.index.meta["block_size"], forward=True,
        )  # fmt: skip
        t0 = time.perf_counter()
        fwd_live = LiveSearcher(fwd_dir, verify=False)
        open_s = time.perf_counter() - t0
        forward_fig.update(built, merged_bytes=dir_bytes(Path(segment.index.path)))
        forward_fig["has_forward"] = all(s.index.meta.get("forward") is True for s in fwd_live.segments)
        forward_fig["same_order"] = bool(np.array_equal(internal_order(fwd_live), merged_order))
        one = Filter([str(merged_order[0])])
        t0 = time.perf_counter()
        for seg in fwd_live.segments:  # its id table, built once (as for the merged index below)
            one.mask(seg)
        forward_fig["id_table_s"] = time.perf_counter() - t0
        figures, fwd_unfiltered = time_queries(lambda i: fwd_live.search(q_rows[i], k), len(q_rows))
        forward_fig["unfiltered"] = {"open_s": open_s, **figures}
        fwd_unfiltered = [as_pairs(h) for h in fwd_unfiltered]
        log.info("forward-store copy of the merged segment: built in %.1f s", built["build_s"])
    else:
        log.warning("no forward store: %s; its filter column is skipped", no_forward)

    # ---------------------------------------------------------------- 3. checks
    checks: dict[str, dict] = {}
    checks["live 3 seg vs merged"] = agreement(three_results, merged_results, k)
    for count, results in sweep_results.items():
        checks[f"sweep {count} seg vs merged"] = agreement(results, merged_results, k)
    if fwd_live is not None:
        checks["merged + forward store vs merged"] = agreement(fwd_unfiltered, merged_results, k)
    two = Direct(forward, rows_two, all_ids, n_terms)
    m = min(args.check_queries, len(q_rows))
    checks["live 2 seg vs direct"] = agreement(
        two_results[:m], [two.hits(two.search(q, k)) for q in q_direct[:m]], k
    )
    del two

    # ---------------------------------------------------------------- 4. filters
    live_ids = all_ids[rows_final]
    filters: list[dict] = []
    compiled = Filter([str(live_ids[0])])
    t0 = time.perf_counter()
    for seg in live.segments:
        compiled.mask(seg)
    id_table_s = time.perf_counter() - t0
    sample = rng.choice(rows_final, min(len(rows_final), TWIN_DOCS), replace=False)
    twin = check_twin(forward, np.sort(sample), all_ids, n_terms, q_direct[:TWIN_QUERIES], k)
    for share in [*sorted(set(args.selectivities)), None]:
        entry: dict = {"share": share}
        pick = np.arange(len(rows_final))
        flt, compile_s, build_s = None, 0.0, 0.0
        if share is None:  # unfiltered: the merged index against scoring every live document
            index_fig, index_results = searchers["merged"], merged_results
        else:
            pick = np.sort(rng.choice(len(rows_final), max(1, round(share * len(rows_final))), replace=False))
            t0 = time.perf_counter()
            flt = Filter(live_ids[pick].tolist())
            build_s = time.perf_counter() - t0
            t0 = time.perf_counter()
            for seg in live.segments:
                flt.mask(seg)
            compile_s = time.perf_counter() - t0
            index_fig, raw = time_queries(lambda i, f=flt: live.search(q_rows[i], k, filter=f), len(q_rows))
            index_results = [as_pairs(h) for h in raw]
        # The same filter on the merged segment's forward-store copy, timed right after it (unfiltered:
        # both timed again, back to back, the without figure being from step 3).
        fwd = None
        if fwd_live is not None:
            without = index_fig
            if flt is None:
                without, _ = time_queries(lambda i: live.search(q_rows[i], k), len(q_rows))
                f_fig, raw = time_queries(lambda i: fwd_live.search(q_rows[i], k), len(q_rows))
                f_compile = 0.0
            else:
                f_flt = Filter(live_ids[pick].tolist())
                t0 = time.perf_counter()
                for seg in fwd_live.segments:
                    f_flt.mask(seg)
                f_compile = time.perf_counter() - t0
                f_fig, raw = time_queries(
                    lambda i, f=f_flt: fwd_live.search(q_rows[i], k, filter=f), len(q_rows)
                )
            fwd = {
                "compile_s": f_compile,
                "index": f_fig,
                "without": without,
                "over_without_p50": f_fig["p50_ms"] / without["p50_ms"],
                "over_without_p99": f_fig["p99_ms"] / without["p99_ms"],
            }
            f_results = [as_pairs(h) for h in raw]
        direct = Direct(forward, rows_final[pick], all_ids, n_terms)
        direct_fig, raw = time_queries(lambda i, d=direct: d.search(q_direct[i], k), len(q_rows), False)
        direct_results = [direct.hits(r) for r in raw]
        entry.update(
            docs=len(pick),
            filter_build_s=build_s,
            compile_s=compile_s,
            direct_prepare_s=direct.prepare_s,
            direct_nnz=direct.csr.nnz,
            index=index_fig,
            direct=direct_fig,
            filtered_over_direct_p50=index_fig["p50_ms"] / direct_fig["p50_ms"],
            filtered_over_unfiltered_p50=index_fig["p50_ms"] / searchers["merged"]["p50_ms"],
            check=agreement(index_results, direct_results, k),
        )
        del direct
        if fwd is not None:
            fwd["over_direct_p50"] = fwd["index"]["p50_ms"] / direct_fig["p50_ms"]
            fwd["check"] = agreement(f_results, direct_results, k)
        entry["forward"] = fwd
        # Post-filtering: the unfiltered top-K of the merged index, the allowed ones kept.
        entry["post_filter"] = []
        for depth in [] if flt is None else post_filter_depths(k, share, args.post_filter_cap):
            figures, raw = time_queries(
                lambda i, f=flt, d=depth: post_filter(live, f, q_rows[i], k, d), len(q_rows)
            )
            entry["post_filter"].append(
                {
                    "depth": depth,
                    **figures,
                    "mean_hits": float(np.mean([len(r) for r in raw])),
                    "over_filtered_p50": figures["p50_ms"] / index_fig["p50_ms"],
                    "check": agreement(raw, direct_results, k),
                }
            )
        filters.append(entry)
        log.info(
            "filter %s: index p50 %.3f ms%s, direct p50 %.3f ms%s",
            share,
            index_fig["p50_ms"],
            "" if entry["forward"] is None else f" (forward store {entry['forward']['index']['p50_ms']:.3f})",
            direct_fig["p50_ms"],
            "".join(f", post-filter top-{p['depth']} {p['p50_ms']:.3f}" for p in entry["post_filter"]),
        )
    total_s = time.perf_counter() - started

    # ---------------------------------------------------------------- report
    print(
        f"live benchmark: topical generator (bench.synthetic.TopicalCollection, seed {args.seed}), "
        f"{n} documents ({static_nnz / n:.0f} terms/doc), changes of {c} documents each, "
        f"{len(queries)} SPLADE-style queries ({queries.nnz / max(len(queries), 1):.1f} terms/query), "
        f"exact k={k}, single-threaded; generated in {fig['generate_s']:.1f} s, total {total_s:.0f} s"
    )
    print()
    print_fixed_table(
        "operation<30 | docs>9 | seconds>9 | / rebuild>10",
        [
            ["full build (rebuild baseline)", n, f"{rebuild_s:.2f}", "1.000"],
            *(
                [name, ch["docs"], f"{ch['seconds']:.2f}", f"{ch['vs_rebuild']:.3f}"]
                for name, ch in changes.items()
            ),
        ],
    )
    ap = changes["append"]
    print(
        f"(rebuild of the final live set, {len(rows_final)} documents: step 1's build time reused, same "
        f"size; append reads JSON: parsing its file alone takes {ap['parse_json_s']:.2f} s; the build reads "
        "in-memory chunks)"
    )
    for name in ("append", "delete", "upsert", "merge to 1 segment"):
        print(ratio_text(name, "full rebuild", changes[name]["vs_rebuild"]))
    print()
    base = searchers["static"]
    print_fixed_table(
        "index<28 | segs>5 | docs>9 | deleted>8 | open s>7 | warm ms>8 | p50 ms>8 | p99 ms>8 | mean ms>8",
        (
            [
                name,
                s["segments"],
                s["docs"],
                s["deleted"],
                f"{s['open_s']:.2f}",
                f"{s['warmup_ms']:.1f}",
                f"{s['p50_ms']:.3f}",
                f"{s['p99_ms']:.3f}",
                f"{s['mean_ms']:.3f}",
            ]
            for name, s in searchers.items()
        ),
    )
    for name in list(searchers)[1:]:
        s = searchers[name]
        print(
            ratio_text(f"{name} p50", "static p50", s["p50_ms"] / base["p50_ms"])
            + f"; p99 {s['p99_ms'] / base['p99_ms']:.2f}x"
        )
    print()
    merged_fig = searchers["merged"]
    print(
        f"segments sweep: the {len(rows_final)} final live documents as N segments, each a live index "
        "built from their impacts (exactly the merged index's) in N contiguous parts, BP-reordered per "
        "part as append reorders its segment; part 1 built as a plain index and converted to live, the "
        "others built in the live directory and published as appended segments; searched like the "
        "merged segment (LiveSearcher, same queries)"
    )
    print_fixed_table(
        "segments<9 | docs/part>10 | build s>8 | largest s>10 | BP s>8 | warm ms>8 | p50 ms>8 | p99 ms>8"
        " | mean ms>8",
        (
            [
                name,
                max(w["part_docs"]),
                f"{w['build_s']:.1f}",
                f"{w['largest_part_s']:.1f}",
                f"{w['reorder_s']:.1f}",
                f"{w['warmup_ms']:.1f}",
                f"{w['p50_ms']:.3f}",
                f"{w['p99_ms']:.3f}",
                f"{w['mean_ms']:.3f}",
            ]
            for name, w in [*sweep.items(), ("merged", {**merged_fig, **merged_built})]
        ),
    )
    for name, w in sweep.items():
        print(
            ratio_text(f"{name} seg p50", "merged p50", w["p50_ms"] / merged_fig["p50_ms"])
            + f"; p99 {w['p99_ms'] / merged_fig['p99_ms']:.2f}x"
        )
    print()
    for name, ch in checks.items():
        print(
            f"check {name}: scores equal on {ch['scores_equal']}/{ch['queries']} queries, ids equal on "
            f"{ch['ids_equal']}, recall@{k} {ch['recall']:.4f}"
        )
    print()
    print(
        f"filters on the merged index ({len(rows_final)} live documents); compile: per segment, the "
        f"segment's id table first built once ({id_table_s * 1e3:.0f} ms); direct: numba scoring of the "
        "allowed documents' in-memory forward CSR"
    )
    print_fixed_table(
        "allowed<8 | docs>9 | compile ms>11 | p50 ms>8 | p99 ms>8 | direct p50>11 | direct p99>11"
        " | filt/direct>12 | filt/unfilt>12 | scores eq>10 | R@k>7",
        (
            [
                "none" if f["share"] is None else f"{f['share']:.1%}",
                f["docs"],
                f"{f['compile_s'] * 1e3:.1f}",
                f"{f['index']['p50_ms']:.3f}",
                f"{f['index']['p99_ms']:.3f}",
                f"{f['direct']['p50_ms']:.3f}",
                f"{f['direct']['p99_ms']:.3f}",
                f"{f['filtered_over_direct_p50']:.3f}",
                f"{f['filtered_over_unfiltered_p50']:.2f}",
                f"{f['check']['scores_equal']}/{f['check']['queries']}",
                f"{f['check']['recall']:.4f}",
            ]
            for f in filters
        ),
    )
    for f in filters:
        label = "unfiltered" if f["share"] is None else f"filtered {f['share']:.1%}"
        print(ratio_text(f"{label} p50", "direct p50", f["filtered_over_direct_p50"]))
    print()
    if fwd_live is None:
        print(f"forward store: skipped ({no_forward}); the filter rows above are without it")
    else:
        ff = forward_fig
        print(
            f"forward store: the merged segment's documents in its own order (no reordering: the same ids, "
            f"blocks and postings) built again with forward=True in {ff['build_s']:.1f} s, "
            f"{ff['bytes'] / MB:.0f} MB against {ff['merged_bytes'] / MB:.0f} MB (same internal order: "
            f"{ff['same_order']}, forward store in its meta: {ff['has_forward']}); the same filters, each "
            f"timed right after its row above (its id table first built once: {ff['id_table_s'] * 1e3:.0f} "
            "ms); unfiltered: both timed again, back to back"
        )
        print_fixed_table(
            "allowed<8 | compile ms>11 | p50 ms>8 | p99 ms>8 | without p50>12 | fwd/without p50>16 | p99>6"
            " | fwd/direct>11 | scores eq>10 | R@k>7",
            (
                [
                    "none" if f["share"] is None else f"{f['share']:.1%}",
                    f"{f['forward']['compile_s'] * 1e3:.1f}",
                    f"{f['forward']['index']['p50_ms']:.3f}",
                    f"{f['forward']['index']['p99_ms']:.3f}",
                    f"{f['forward']['without']['p50_ms']:.3f}",
                    f"{f['forward']['over_without_p50']:.3f}",
                    f"{f['forward']['over_without_p99']:.2f}",
                    f"{f['forward']['over_direct_p50']:.3f}",
                    f"{f['forward']['check']['scores_equal']}/{f['forward']['check']['queries']}",
                    f"{f['forward']['check']['recall']:.4f}",
                ]
                for f in filters
            ),
        )
        for f in filters:
            label = "unfiltered" if f["share"] is None else f"filtered {f['share']:.1%}"
            print(
                ratio_text(f"{label} p50 with forward store", "without", f["forward"]["over_without_p50"])
                + f"; / direct p50 {f['forward']['over_direct_p50']:.2f}x"
            )
    print()
    print(
        "post-filtering: the merged index's unfiltered exact top-K (K = k, and ceil(k / selectivity) "
        f"at most {args.post_filter_cap}), then the first k allowed; recall against the exact filtered top-k"
    )
    print_fixed_table(
        "allowed<8 | K>7 | p50 ms>8 | p99 ms>8 | post/filtered p50>18 | hits kept>10 | scores eq>10 | R@k>7",
        (
            [
                f"{f['share']:.1%}",
                pf["depth"],
                f"{pf['p50_ms']:.3f}",
                f"{pf['p99_ms']:.3f}",
                f"{pf['over_filtered_p50']:.3f}",
                f"{pf['mean_hits']:.2f}",
                f"{pf['check']['scores_equal']}/{pf['check']['queries']}",
                f"{pf['check']['recall']:.4f}",
            ]
            for f in filters
            for pf in f["post_filter"]
        ),
    )
    for f in filters:
        for pf in f["post_filter"]:
            print(
                ratio_text(
                    f"filtered {f['share']:.1%} p50",
                    f"post-filter top-{pf['depth']} p50",
                    1 / pf["over_filtered_p50"],
                )
                + f" (post-filter recall@{k} {pf['check']['recall']:.4f})"
            )
    print(
        f"direct kernel vs its numpy twin: equal on {twin['equal']}/{twin['cases']} cases "
        f"({twin['queries']} queries on {twin['docs']} random live documents, and on 5 with k={k} and k=0)"
    )

    ok = all(ch["ok"] for ch in checks.values()) and all(f["check"]["ok"] for f in filters)
    ok = ok and twin["equal"] == twin["cases"]
    if fwd_live is not None:
        ok = ok and all(f["forward"]["check"]["ok"] for f in filters)
        ok = ok and forward_fig["has_forward"] and forward_fig["same_order"]
    fig.update(
        docs=n,
        static_nnz=static_nnz,
        final_live_docs=len(rows_final),
        rebuild_note="the final live set's rebuild is not run: step 1's build (same size) stands for it",
        changes=changes,
        searchers=searchers,
        checks=checks,
        id_table_s=id_table_s,
        segments_sweep=sweep,
        forward_store=forward_fig,
        filters=filters,
        twin=twin,
        ok=ok,
        total_s=total_s,
        peak_rss_bytes=peak_rss_bytes(),
        load_avg_end=os.getloadavg(),
    )
    record = {
        "bench": "live",
        "time": utc_stamp(),
        "corpus": "topical",
        "config": {
            "docs": n,
            "changes": c,
            "queries": len(queries),
            "query_set": "splade (splade-v3 statistics)",
            "k": k,
            "check_queries": args.check_queries,
            "selectivities": sorted(set(args.selectivities)),
            "segments": sorted(set(args.segments)),
            "post_filter_cap": args.post_filter_cap,
            "seed": args.seed,
            "threads": 1,
            "mode": "exact",
        },
        "figures": fig,
        "argv": args.argv,
        **context,
    }
    append_jsonl(args.out, [record])
    print(f"peak RSS {fig['peak_rss_bytes'] / MB:.0f} MB; appended 1 line to {args.out}")
    if not ok:
        log.error("a check failed: see the check lines above")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
