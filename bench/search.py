"""Query latency and recall of every search engine on the same data, in one run (issue 4).

What it measures, in one process on one collection and its query sets:

- collection ``topical``: ``--docs`` documents of :class:`bench.synthetic.TopicalCollection`
  over BERT's WordPiece vocabulary (~120 terms per document, weights in (0, 3]); query sets ``splade``
  (term counts and weights resampled from real SPLADE-v3 query vectors, ~26 terms) and ``idf``
  (inference-free, ~8 tokens weighted by BM25 IDF over the collection);
- collection ``realseed`` (default: data shaped like real encoder output): ``--docs`` documents of
  :class:`bench.realseed.RealSeededCollection`, variants of the real SPLADE vectors of SciFact,
  cranfield and med (~185 terms per document, real weights noised); query sets ``splade`` (the seed
  collections' test queries encoded by the real SPLADE query encoder, ~55 terms), ``splade-v3`` (real
  MS MARCO dev SPLADE-v3 query vectors, ~24 terms), ``idf`` (the same test queries' tokens, ~20,
  weighted by BM25 IDF over the collection) and ``idf-msmarco`` (MS MARCO dev query texts' tokens, ~8,
  weighted the same way);
- collection ``scifact``: the 5,183 SciFact documents encoded with the real SPLADE model
  (:func:`plugin.prepare.prepare`, cached), and the first ``--queries`` of its 300 test queries encoded
  with the SPLADE query encoder (``splade``, 64 tokens) and with the inference-free one (``idf``).

Engines (:mod:`bench.peers`; a peer that is not installed is skipped with the reason printed; install
them with ``LSR_PEERS=1 bash scripts/setup.sh``):

- ``scipy``: exhaustive, the query row times the term-major CSR, then top-k;
- ``ours-scan``, ``ours-exact``, ``ours-approx`` (``--alphas``): the native index (block size 128,
  recursive graph bisection) and :class:`plugin.native.NativeSearcher`; ``ours-float``: mode ``float``
  (exact under the float scores) on a build of the same documents that keeps their float weights;
- ``splade-index`` (exhaustive numba scan), ``seismic`` (a sweep of ``query_cut`` x ``heap_factor``),
  ``bmp`` (alpha 1, 0.9, 0.8), ``pisa`` (MaxScore and block-max WAND), each single-threaded;
- ``lucene``: our Lucene impact backend, on the first ``--lucene-docs`` documents (indexing through
  Anserini is slow here); when that is fewer than ``--docs``, ``ours-scan`` and ``ours-exact`` run
  again on the same subset, for its ratio line.

BMP and PISA get the documents in our index's doc-id order (``--peer-order bp``), as their own papers
run them on reordered collections; ``--peer-order input`` gives them the generator's order.

Ground truth is computed exactly with scipy, twice: under the float weights, and under our quantized
integer impacts (:func:`indexer.quantize.quantize_batch` on both sides), which is the problem ours, PISA
and Lucene solve. Each engine's recall@k is reported against both, and against the exact ranking of its
own problem (``own``): float for scipy, splade-index and Seismic, quantized for ours, PISA and Lucene,
and for BMP its own rounding (documents rescaled to u8 impacts, queries rescaled by its searcher so the
heaviest weight is 32, rounded up). recall@k counts a hit as right when its true score reaches the k-th
best true score (ties at the cut-off all count; float scores within a relative 1e-5 of it count too),
over min(k, documents with a positive score).

Timing: each setting's first query runs first and its time is reported as warm-up (JIT compilation,
cache loading); then an untimed pass over all queries (three for Lucene, whose JVM compiles its hot
paths over the first few hundred queries) warms the caches; then every query is timed alone
(``perf_counter`` around the engine's own call; the query is converted to the engine's input form
beforehand, except for ours and Lucene whose search API takes a :class:`lsr.sparse.SparseBatch` row and
quantizes it inside the timing), with the garbage collector off. Reported per engine, setting and query
set: build seconds (an index kept in ``--work`` from an earlier run is reused and its recorded build
time shown, marked ``*``), index size, warm-up, mean / p50 / p99 milliseconds, recall@k against the
three exact rankings, and the peak RSS growth over the engine's start while it was built (or its kept
index loaded) and while it was searched (the process's peak is reset per engine through
``/proc/self/clear_refs``, after glibc's ``malloc_trim``; Lucene's indexer runs as a Java child process,
whose peak is recorded apart). What native code prints to stdout while building goes to stderr.

Then the ratio lines: ours-float p50 over ours-exact's (what float-exact results cost); ours-exact p50
over the fastest exact peer's (ours-scan, splade-index, PISA, BMP
at alpha 1), the fastest ours-approx setting with recall@k >= 0.99 over Seismic's fastest setting with
recall@k >= 0.99 (each against the exact ranking of its own problem: quantized for ours, float for
Seismic; both recalls are shown), and Lucene over ours on its subset; and ours' batch throughput
(``batch_search``, queries/s) at each ``--threads``. One JSON line per engine, setting and query set,
and one summary line with the ratios, the throughput, the machine, the versions and the git state,
are appended to ``--out``. The same rows are drawn as a PNG (``--plot``, by default ``--out`` with
``.png``: ``bench/results/search.png``), as the Seismic and BMP papers draw them: recall@k against the
engine's own exact ranking (the recall the ratio lines use) across, p50 and p99 milliseconds (log
scale) up, one panel per query set (and per collection), one line per engine joining its settings in
recall order (Seismic's ``query_cut`` x ``heap_factor`` sweep, the alphas of ours-approx and BMP; an
exact engine is a single point).

Run from the repository root (quiet machine; nothing else heavy running)::

    .venv/bin/python -m bench.search --docs 200000 --lucene-docs 200000 --work /tmp/lsr-search
    .venv/bin/python -m bench.search --docs 20000 --queries 50 --engines scipy ours-scan ours-exact
    .venv/bin/python -m bench.search --corpus topical --docs 200000
    .venv/bin/python -m bench.search --corpus scifact
    .venv/bin/python -m bench.search --docs 20000 --plot /tmp/search.png   # or --no-plot
"""

from __future__ import annotations

import argparse
import gc
import logging
import os
import platform
import sys
import time
from collections.abc import Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from bench._context import (
    MB,
    add_data_argument,
    add_output_arguments,
    append_jsonl,
    children_peak_rss_bytes,
    peak_rss_bytes,
    positive_int,
    print_fixed_table,
    record_context,
    rss_bytes,
    scifact_missing,
    setup_logging,
    utc_stamp,
    work_dir,
)
from bench.peers import ENGINES, OURS_ALPHAS, Docs, Engine, Ours, Truth, make_engine, peer_versions
from lsr.sparse import SparseBatch

log = logging.getLogger("bench.search")

CORPORA = ("topical", "realseed", "scifact")
EXACT_PEERS = ("ours-scan", "splade-index", "pisa", "bmp")
RECALL_GATE = 0.99
FLOAT_TIE = 1e-5  # relative: float scores this close to the k-th count as tied with it
TRUTH_CHUNK = 16  # queries per dense score block when computing the exact rankings
BATCH_REPEATS = 3


def unit_float(text: str) -> float:
    value = float(text)
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"must be in (0, 1], got {value}")
    return value


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m bench.search",
        description="Query latency and recall of ours, the peer engines and brute force, on the same data.",
    )
    p.add_argument("--corpus", choices=CORPORA, default="realseed", help="collection (default: %(default)s)")
    p.add_argument(
        "--docs",
        type=positive_int,
        default=1_000_000,
        help="generated documents, topical or realseed (default: %(default)s)",
    )
    p.add_argument(
        "--queries", type=positive_int, default=200, help="queries per query set (default: %(default)s)"
    )
    p.add_argument("--k", type=positive_int, default=10, help="hits per query (default: %(default)s)")
    p.add_argument(
        "--engines",
        nargs="+",
        choices=ENGINES,
        default=list(ENGINES),
        metavar="ENGINE",
        help=f"engines to run, of: {' '.join(ENGINES)} (default: all)",
    )
    p.add_argument(
        "--alphas",
        nargs="+",
        type=unit_float,
        default=list(OURS_ALPHAS),
        help="ours-approx alpha values (default: %(default)s)",
    )
    p.add_argument(
        "--threads",
        nargs="+",
        type=positive_int,
        default=[1, 2],
        help="thread counts for ours' batch throughput (default: %(default)s)",
    )
    p.add_argument(
        "--lucene-docs",
        type=positive_int,
        default=200_000,
        help="documents Lucene indexes, the first ones of the collection (default: %(default)s)",
    )
    p.add_argument(
        "--peer-order",
        choices=("bp", "input"),
        default="bp",
        help="doc-id order given to BMP and PISA: our index's, or the input's (default: %(default)s)",
    )
    p.add_argument(
        "--seismic-n-postings",
        type=positive_int,
        default=3500,
        help="Seismic's postings kept per term (default: its own, %(default)s)",
    )
    p.add_argument(
        "--seismic-centroid-fraction",
        type=unit_float,
        default=0.1,
        help="Seismic's fraction of a posting list made centroids (default: its own, %(default)s)",
    )
    p.add_argument("--seed", type=int, default=0, help="generator seed (default: %(default)s)")
    add_data_argument(p)
    add_output_arguments(p, "search", "directory for the indexes, kept and reused between runs")
    plot = p.add_mutually_exclusive_group()
    plot.add_argument(
        "--plot",
        default=None,
        metavar="PATH",
        help="PNG of the recall@k / latency curves (default: --out with .png, so "
        "bench/results/search.png; '': none)",
    )
    plot.add_argument("--no-plot", dest="plot", action="store_const", const="", help="draw no PNG")
    args = p.parse_args(argv)
    # Next to --out by default, so that a run writing its lines elsewhere leaves bench/results/ alone.
    args.plot = args.out.with_suffix(".png") if args.plot is None else Path(args.plot) if args.plot else None
    return args


# ------------------------------------------------------------------ data
def generated(coll, n_docs: int, name: str) -> Docs:
    """The first ``n_docs`` documents of a generator (:func:`bench.synthetic.generate`), one :class:`Docs`."""
    from bench.synthetic import generate

    ids, batch, _ = generate(coll, n_docs)
    return Docs(ids, batch, name=name)


def topical(args: argparse.Namespace) -> tuple[Docs, dict[str, SparseBatch]]:
    from bench.synthetic import TopicalCollection
    from lsr.models import fetch
    from lsr.tokenize import Tokenizer

    vocab = Tokenizer(fetch() / "tokenizer.json").vocab
    start = time.perf_counter()
    coll = TopicalCollection(vocab, seed=args.seed)
    docs = generated(coll, args.docs, f"topical{args.seed}-{args.docs}")
    queries = {
        "splade": coll.splade_queries(args.queries),
        "idf": coll.idf_queries(args.queries, docs.df, len(docs)),
    }
    log.info("generated %d documents and the queries in %.1f s", len(docs), time.perf_counter() - start)
    return docs, queries


def realseed(args: argparse.Namespace) -> tuple[Docs, dict[str, SparseBatch]]:
    from bench.realseed import RealSeededCollection, load_seeds

    start = time.perf_counter()
    coll = RealSeededCollection(load_seeds(), seed=args.seed)
    docs = generated(coll, args.docs, f"realseed{args.seed}-{args.docs}")
    queries = {
        "splade": coll.splade_queries(args.queries),
        "splade-v3": coll.splade_queries(args.queries, "splade-v3"),
        "idf": coll.idf_queries(args.queries, docs.df, len(docs)),
        "idf-msmarco": coll.idf_msmarco_queries(args.queries, docs.df, len(docs)),
    }
    log.info("generated %d documents and the queries in %.1f s", len(docs), time.perf_counter() - start)
    return docs, queries


def scifact(args: argparse.Namespace) -> tuple[Docs, dict[str, SparseBatch]]:
    from indexer.corpus import read_corpus, read_qrels
    from indexer.jsonvector import load_batch
    from lsr.runtime import load_encoder
    from plugin.prepare import prepare

    p = prepare(args.data)
    encoder = load_encoder(p.splade, "query", max_length=64)
    vocab = encoder.vocab
    ids, batch = load_batch(p.vectors, vocab)
    qrels = read_qrels(args.data / "qrels" / "test.tsv")
    texts = [r.text for r in read_corpus(args.data / "queries.jsonl") if r.id in qrels][: args.queries]
    splade = encoder.encode(texts)
    idf = load_encoder(p.free, "query").encode(texts)
    if tuple(idf.vocab) != tuple(vocab):
        idf = SparseBatch.from_dicts(idf.to_dicts(), vocab)
    log.info("SciFact: %d documents from %s, %d test queries", len(ids), p.vectors, len(texts))
    return Docs(ids, batch, name="scifact"), {"splade": splade, "idf": idf}


# ------------------------------------------------------------------ ground truth
def exact_truth(docs: Docs, queries: SparseBatch, k: int, quantized: bool) -> Truth:
    """The exact ranking of every document for every query (scipy, float64 sums)."""
    from indexer.quantize import quantize_batch

    q, d = queries, docs.batch
    if quantized:
        q, d = quantize_batch(q), quantize_batch(d)
    inverted = d.to_scipy().astype(np.float64).T.tocsr()
    qm = q.to_scipy().astype(np.float64)
    blocks = ((qm[s : s + TRUTH_CHUNK] @ inverted).toarray() for s in range(0, qm.shape[0], TRUTH_CHUNK))
    return Truth.from_scores((row for block in blocks for row in block), k, 0.0 if quantized else FLOAT_TIE)


# ------------------------------------------------------------------ memory
def reset_peak_rss() -> bool:
    """Reset the process's peak RSS (Linux: ``clear_refs`` 5); False where that is not possible.

    Freed heap goes back to the system first (glibc ``malloc_trim``), so that what an earlier engine
    left in the allocator does not hide the next one's growth.
    """
    gc.collect()
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as f:
            f.write("5")
        return True
    except OSError:
        return False


@contextmanager
def native_stdout_to_stderr():
    """Send what native code prints to the process's stdout (Seismic's and PISA's progress) to stderr,
    so that stdout holds the results only."""
    sys.stdout.flush()
    try:
        saved = os.dup(1)
    except OSError:  # no file descriptor 1
        yield
        return
    os.dup2(2, 1)
    try:
        yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


# ------------------------------------------------------------------ timing
def time_setting(
    engine: Engine, prepared: list, k: int, params: dict
) -> tuple[float, float, np.ndarray, list]:
    """(first-query seconds, untimed warm-up passes' seconds, per-query seconds, raw results)."""
    start = time.perf_counter()
    engine.search(prepared[0], k, **params)
    first = time.perf_counter() - start
    start = time.perf_counter()
    for _ in range(engine.warmup_passes):
        for query in prepared:
            engine.search(query, k, **params)
    passes = time.perf_counter() - start
    seconds = np.empty(len(prepared), np.float64)
    raws = []
    gc.collect()
    gc.disable()
    try:
        for i, query in enumerate(prepared):
            t0 = time.perf_counter()
            raw = engine.search(query, k, **params)
            seconds[i] = time.perf_counter() - t0
            raws.append(raw)
    finally:
        gc.enable()
    return first, passes, seconds, raws


def run_engine(
    name: str,
    engine: Engine,
    docs: Docs,
    queries: dict[str, SparseBatch],
    truths: dict[str, dict[str, Truth]],
    work: Path,
    args: argparse.Namespace,
    collection: str,
) -> list[dict]:
    """Build, then time every setting on every query set; one figure dict per (setting, query set)."""
    reset = reset_peak_rss()
    base = rss_bytes()
    log.info("%s: building on %d documents", name, len(docs))
    with native_stdout_to_stderr():
        built = engine.build(docs, work)
    build_peak = peak_rss_bytes()
    reset_peak_rss()
    size = engine.size_bytes()
    log.info(
        "%s: built in %.1f s%s, %.1f MB", name, built.seconds, " (kept)" if built.reused else "", size / MB
    )
    # Every query set in the engine's input form (and its own exact ranking) before any timing, so that
    # what the preparation needs is gone by then and the search peak is the search's.
    inputs = {q: (engine.prepare(b), engine.own_truth(args.k)) for q, b in queries.items()}
    engine.done_preparing()
    reset_peak_rss()
    rows = []
    for qname, (prepared, own) in inputs.items():
        wanted = truths[qname]["float"].wanted  # min(k, documents with a positive score), per query
        for setting in engine.settings():
            if hasattr(engine, "panics"):
                engine.panics = 0
            warmup, passes, seconds, raws = time_setting(engine, prepared, args.k, setting.params)
            hits = [engine.indexes(r) for r in raws]
            ms = seconds * 1e3
            row = {
                "engine": name,
                "setting": setting.label,
                "params": setting.params,
                "exact": setting.exact,
                "problem": setting.problem,
                "collection": collection,
                "collection_docs": len(docs),
                "queries": qname,
                "n_queries": len(prepared),
                "build_s": built.seconds,
                "build_reused": built.reused,
                "build_extra": built.extra,
                "index_bytes": size,
                "warmup_ms": warmup * 1e3,
                "warmup_passes": engine.warmup_passes,
                "warmup_passes_s": passes,
                "mean_ms": float(ms.mean()),
                "p50_ms": float(np.percentile(ms, 50)),
                "p99_ms": float(np.percentile(ms, 99)),
                "recall_float": truths[qname]["float"].recall(hits, args.k),
                "recall_quantized": truths[qname]["quantized"].recall(hits, args.k),
                "recall_own": (own or truths[qname][setting.problem]).recall(hits, args.k),
                "mean_hits": float(np.mean([len(h) for h in hits])),
                "short_queries": int(sum(len(h) < n for h, n in zip(hits, wanted.tolist(), strict=True))),
            }
            if hasattr(engine, "panics"):
                # Over the first query, the warm-up passes and the timed pass.
                row["panics"] = engine.panics
            if getattr(engine, "max_score", None) is not None:
                row["own_max_score"] = engine.max_score
            rows.append(row)
            log.info(
                "%s %s %s: p50 %.3f ms, R@%d float %.4f quantized %.4f",
                name,
                setting.label,
                qname,
                row["p50_ms"],
                args.k,
                row["recall_float"],
                row["recall_quantized"],
            )
    if name in ("ours-exact", "ours-approx") and collection == "main":
        throughput(engine, queries, args, rows)
    search_peak = peak_rss_bytes()
    for row in rows:
        row.update(
            rss_before_bytes=base,
            build_peak_rss_bytes=build_peak,
            search_peak_rss_bytes=search_peak,
            build_rss_growth_bytes=max(build_peak - base, 0) if reset else None,
            search_rss_growth_bytes=max(search_peak - base, 0) if reset else None,
            peak_rss_scope="engine" if reset else "process",
        )
        if name == "lucene":
            row["children_peak_rss_bytes"] = children_peak_rss_bytes()
    return rows


def throughput(engine, queries: dict[str, SparseBatch], args: argparse.Namespace, rows: list[dict]) -> None:
    """Ours' ``batch_search`` queries/s at each ``--threads``, best of a few runs, into ``rows``."""
    for row in rows:
        batch = queries[row["queries"]]
        params = dict(row["params"])
        qps = {}
        for threads in args.threads:
            engine.batch_seconds(batch, args.k, threads, params)  # warm-up: the parallel kernel's JIT
            best = min(engine.batch_seconds(batch, args.k, threads, params) for _ in range(BATCH_REPEATS))
            qps[str(threads)] = len(batch) / best
        row["batch_qps"] = qps


# ------------------------------------------------------------------ reporting
def fmt_mb(n: int | None) -> str:
    return "-" if n is None else f"{n / MB:.0f}"


def print_table(rows: list[dict], k: int) -> None:
    table = (
        "engine<14 | setting<18 | build s>9 | MB>8 | warm ms>9 | mean ms>9 | p50 ms>9 | p99 ms>9"
        f" | R@{k} flt>9 | R@{k} qnt>9 | R@{k} own>9 | bld MB+>9 | srch MB+>9"
    )
    for qname in dict.fromkeys(r["queries"] for r in rows):
        print(f"\nqueries: {qname}")
        print_fixed_table(
            table,
            (
                [
                    r["engine"],
                    r["setting"],
                    f"{r['build_s']:.1f}{'*' if r['build_reused'] else ' '}",
                    f"{r['index_bytes'] / MB:.1f}",
                    f"{r['warmup_ms']:.1f}",
                    f"{r['mean_ms']:.3f}",
                    f"{r['p50_ms']:.3f}",
                    f"{r['p99_ms']:.3f}",
                    f"{r['recall_float']:.4f}",
                    f"{r['recall_quantized']:.4f}",
                    f"{r['recall_own']:.4f}",
                    fmt_mb(r["build_rss_growth_bytes"]),
                    fmt_mb(r["search_rss_growth_bytes"]),
                ]
                for r in rows
                if r["queries"] == qname
            ),
            rule=False,
        )


def ratios(rows: list[dict], k: int) -> list[dict]:
    """The ratio lines (printed) and their figures."""
    out = []
    for qname in dict.fromkeys(r["queries"] for r in rows):
        main = [r for r in rows if r["queries"] == qname and r["collection"] == "main"]
        ours = next((r for r in main if r["engine"] == "ours-exact"), None)
        exact = [r for r in main if r["engine"] in EXACT_PEERS and r["exact"]]
        if ours and exact:
            best = min(exact, key=lambda r: r["p50_ms"])
            ratio = ours["p50_ms"] / best["p50_ms"]
            print(
                f"{qname}: ours-exact p50 {ours['p50_ms']:.3f} ms / fastest exact peer {best['engine']} "
                f"{best['setting']} p50 {best['p50_ms']:.3f} ms = {ratio:.2f} "
                f"({'ours faster' if ratio < 1 else 'peer faster'}; exact peers: "
                + ", ".join(f"{r['engine']} {r['setting']} {r['p50_ms']:.3f}" for r in exact)
                + ")"
            )
            out.append(
                {
                    "queries": qname,
                    "ratio": "ours-exact/fastest-exact-peer",
                    "value": ratio,
                    "peer": best["engine"],
                }
            )
        flt = next((r for r in main if r["engine"] == "ours-float"), None)
        if ours and flt:
            ratio = flt["p50_ms"] / ours["p50_ms"]
            print(
                f"{qname}: ours-float p50 {flt['p50_ms']:.3f} ms (R@{k} flt {flt['recall_float']:.4f}) / "
                f"ours-exact p50 {ours['p50_ms']:.3f} ms (R@{k} flt {ours['recall_float']:.4f}) "
                f"= {ratio:.2f}; p99 {flt['p99_ms']:.3f} / {ours['p99_ms']:.3f} ms"
            )
            out.append({"queries": qname, "ratio": "ours-float/ours-exact", "value": ratio})
        for one in (r for r in main if r["engine"] in ("ours-exact", "ours-approx")):
            two = next(
                (r for r in main if r["engine"] == one["engine"] + "-2t" and r["setting"] == one["setting"]),
                None,
            )
            if two:
                ratio = two["p50_ms"] / one["p50_ms"]
                print(
                    f"{qname}: {two['engine']} {two['setting']} p50 {two['p50_ms']:.3f} ms / one thread "
                    f"{one['p50_ms']:.3f} ms = {ratio:.2f}; p99 {two['p99_ms']:.3f} / {one['p99_ms']:.3f} ms"
                )
                out.append(
                    {
                        "queries": qname,
                        "ratio": f"{two['engine']}/{one['engine']}",
                        "setting": one["setting"],
                        "value": ratio,
                    }
                )
        approx = [r for r in main if r["engine"] == "ours-approx" and r["recall_own"] >= RECALL_GATE]
        seismic = [r for r in main if r["engine"] == "seismic" and r["recall_own"] >= RECALL_GATE]
        a = min(approx, key=lambda r: r["p50_ms"]) if approx else None
        s = min(seismic, key=lambda r: r["p50_ms"]) if seismic else None
        if a and s:
            ratio = a["p50_ms"] / s["p50_ms"]
            print(
                f"{qname}: ours-approx {a['setting']} p50 {a['p50_ms']:.3f} ms "
                f"(R@{k} qnt {a['recall_quantized']:.4f}, flt {a['recall_float']:.4f}) / "
                f"seismic {s['setting']} p50 {s['p50_ms']:.3f} ms "
                f"(R@{k} flt {s['recall_float']:.4f}, qnt {s['recall_quantized']:.4f}) = {ratio:.2f}"
            )
            out.append(
                {
                    "queries": qname,
                    "ratio": "ours-approx/seismic@recall>=0.99",
                    "value": ratio,
                    "ours_setting": a["setting"],
                    "seismic_setting": s["setting"],
                }
            )
        elif any(r["engine"] in ("ours-approx", "seismic") for r in main):
            ran = {r["engine"] for r in main}
            state = {
                e: "yes" if best else "no" if e in ran else "not run"
                for e, best in (("ours-approx", a), ("seismic", s))
            }
            print(
                f"{qname}: approx ratio not computed: recall@{k} >= {RECALL_GATE} reached by "
                + ", ".join(f"{e} {v}" for e, v in state.items())
            )
        sub = [r for r in rows if r["queries"] == qname and r["collection"] != "main"]
        luc = next((r for r in rows if r["queries"] == qname and r["engine"] == "lucene"), None)
        if luc:
            pool = sub if luc["collection"] != "main" else main
            for base in (r for r in pool if r["engine"] in ("ours-scan", "ours-exact")):
                ratio = luc["p50_ms"] / base["p50_ms"]
                print(
                    f"{qname}: lucene p50 {luc['p50_ms']:.3f} ms / {base['engine']} "
                    f"p50 {base['p50_ms']:.3f} ms = {ratio:.2f} (on {luc['collection_docs']} docs)"
                )
                out.append({"queries": qname, "ratio": f"lucene/{base['engine']}", "value": ratio})
    return out


def print_throughput(rows: list[dict]) -> list[dict]:
    out = []
    for r in rows:
        if "batch_qps" in r and r["collection"] == "main":
            qps = ", ".join(f"{t} thread(s) {v:.0f} q/s" for t, v in r["batch_qps"].items())
            print(f"{r['queries']}: {r['engine']} {r['setting']} batch_search: {qps}")
            out.append(
                {"queries": r["queries"], "engine": r["engine"], "setting": r["setting"], **r["batch_qps"]}
            )
    return out


# ------------------------------------------------------------------ plot
MARKERS = "os^vDP*Xhp<>"


def line_name(row: dict) -> str:
    """An engine's line; ours-approx draws one per knob (``alpha=``, ``cut=``), each a curve of its own."""
    if row["engine"].startswith("ours-approx"):
        return f"{row['engine']} ({row['setting'].partition('=')[0]})"
    return row["engine"]


def curves(rows: Sequence[dict]) -> dict[tuple, dict[str, list[dict]]]:
    """The engine rows of ``rows`` with a recall, by panel and engine, each engine's in recall order.

    Parameters
    ----------
    rows : sequence of dict
        The records :func:`run` appends to ``--out`` (or those rows alone, without the shared keys);
        the summary record and rows without a ``recall_own`` are left out.

    Returns
    -------
    dict
        ``(corpus, documents, query set) -> engine -> rows``, panels and engines in first-seen order,
        each engine's rows by ascending ``recall_own`` (then ``p50_ms``).

    Raises
    ------
    ValueError
        When no row has a ``recall_own`` and a positive ``p50_ms``.
    """
    panels: dict[tuple, dict[str, list[dict]]] = {}
    for r in rows:
        recall, p50 = r.get("recall_own"), r.get("p50_ms")
        if r.get("kind", "engine") != "engine" or recall is None or not np.isfinite(recall):
            continue
        if p50 is None or not p50 > 0:  # a log axis has no place for it
            continue
        key = (r.get("corpus", "?"), r.get("collection_docs", r.get("docs", 0)), r["queries"])
        panels.setdefault(key, {}).setdefault(line_name(r), []).append(r)
    if not panels:
        raise ValueError("no engine rows with a recall_own and a p50_ms: nothing to plot")
    for engines in panels.values():
        for points in engines.values():
            points.sort(key=lambda r: (r["recall_own"], r["p50_ms"]))
    return panels


def plot_curves(rows: Sequence[dict], path: Path) -> list[str]:
    """Draw recall@k / latency curves of the engine rows to a PNG (matplotlib, Agg).

    One column per query set (and collection), p50 above and p99 below, milliseconds on a log scale;
    one line per engine through its settings in recall order. The title names the corpus, its
    documents and the machine's CPUs.

    Parameters
    ----------
    rows : sequence of dict
        The records :func:`run` appends to ``--out`` (see :func:`curves`).
    path : Path
        The PNG written (its directory is made).

    Returns
    -------
    list of str
        The lines drawn (the legend's labels), in legend order.

    Raises
    ------
    ValueError
        When no row has a recall to plot.
    ImportError
        Without matplotlib.
    """
    panels = curves(rows)
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
        from matplotlib.ticker import FuncFormatter
    except ImportError as e:
        raise ImportError("pip install 'lsr[bench]'") from e

    points = [r for engines in panels.values() for rs in engines.values() for r in rs]
    k = points[0].get("k", 10)
    names = list(dict.fromkeys(line_name(r) for r in points))
    engine_of = {line_name(r): r["engine"] for r in points}
    order = sorted(
        names,
        key=lambda n: (
            ENGINES.index(engine_of[n]) if engine_of[n] in ENGINES else len(ENGINES),
            names.index(n),
        ),
    )
    style = {e: (f"C{i % 10}", MARKERS[i % len(MARKERS)]) for i, e in enumerate(order)}

    fig = Figure(figsize=(1.5 + 3.6 * len(panels), 7.2), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(2, len(panels), squeeze=False, sharex="col")
    for col, ((corpus, n_docs, qname), engines) in enumerate(panels.items()):
        first = next(iter(engines.values()))[0]
        title = f"{qname} queries ({first.get('n_queries', '?')})"
        if len({(c, d) for c, d, _ in panels}) > 1:
            title += f"\n{corpus}, {n_docs:,} docs"
        for row, metric in enumerate(("p50_ms", "p99_ms")):
            ax = axes[row, col]
            for engine in order:
                rs = engines.get(engine)
                if rs:
                    color, marker = style[engine]
                    x = [r["recall_own"] for r in rs]
                    y = [r[metric] for r in rs]
                    ax.plot(x, y, color=color, marker=marker, markersize=5, linewidth=1.2, label=engine)
            ax.axvline(RECALL_GATE, color="0.6", linestyle=":", linewidth=1)
            ax.set_yscale("log")
            # Plain numbers (0.3, not 3x10^-1) on the minor ticks too: a tenfold range is common.
            ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
            ax.yaxis.set_minor_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
            ax.grid(True, which="both", alpha=0.25)
            ax.set_ylabel(f"{metric.removesuffix('_ms')} ms (log)")
            if row == 0:
                ax.set_title(title, fontsize=10)
            else:
                ax.set_xlabel(f"recall@{k} vs the engine's own exact ranking")
    handles = {}
    for ax in axes.flat:
        for h, label in zip(*ax.get_legend_handles_labels(), strict=True):
            handles.setdefault(label, h)
    fig.legend(
        [handles[e] for e in order if e in handles],
        [e for e in order if e in handles],
        loc="outside right center",
        fontsize=8,
        title=f"dotted: recall {RECALL_GATE},\nthe ratio lines' gate",
        title_fontsize=7,
    )
    machine = points[0].get("machine") or {}
    cpus, usable = machine.get("cpu_count"), machine.get("cpus_usable")
    where = f"{machine.get('machine') or 'machine ?'}, {cpus or '?'} CPUs"
    if usable not in (None, cpus):
        where += f" ({usable} usable)"
    collections = ", ".join(dict.fromkeys(f"{c} {d:,} documents" for c, d, _ in panels))
    engines = dict.fromkeys(engine_of[n] for n in order)
    threaded = [e for e in engines if e.rsplit("-", 1)[-1].removesuffix("t").isdigit()]  # ours-exact-2t
    threads = "single-threaded" + (f" but {', '.join(threaded)}" if threaded else "")
    fig.suptitle(f"bench.search: {collections}, k={k}, {threads}; {where}", fontsize=11)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    return [e for e in order if e in handles]


# ------------------------------------------------------------------ context
def versions() -> dict:
    import numba
    import scipy

    return {
        "python": platform.python_version(),
        "numpy": np.__version__,
        "numba": numba.__version__,
        "scipy": scipy.__version__,
        **peer_versions(),
    }


# ------------------------------------------------------------------ main
def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    setup_logging(args.verbose)
    # Rayon (Seismic, BMP) reads this when its pool starts: single-threaded peers, as ours.
    os.environ.setdefault("RAYON_NUM_THREADS", "1")
    # BMP panics on some queries (see bench.peers.Bmp): a Rust backtrace for each would cost more than
    # the search and flood stderr.
    os.environ["RUST_BACKTRACE"] = "0"
    if args.corpus == "scifact" and scifact_missing(args.data, log):
        return 2
    if args.corpus == "realseed":
        from bench.realseed import seeds_missing

        reason = seeds_missing()
        if reason:
            log.error("%s", reason)
            return 2
    if args.plot:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            log.error("--plot needs matplotlib: pip install 'lsr[bench]' (or pass --no-plot)")
            return 2
    args.engines = list(dict.fromkeys(args.engines))
    with work_dir(args.work, "lsr-search-") as work:
        return run(args, work)


def run(args: argparse.Namespace, work: Path) -> int:
    context = record_context(versions())
    start = time.perf_counter()
    docs, queries = {"topical": topical, "realseed": realseed, "scifact": scifact}[args.corpus](args)
    t0 = time.perf_counter()
    truths = {
        q: {"float": exact_truth(docs, b, args.k, False), "quantized": exact_truth(docs, b, args.k, True)}
        for q, b in queries.items()
    }
    truth_s = time.perf_counter() - t0
    log.info("exact rankings in %.1f s", truth_s)

    # Canonical order: ours before BMP and PISA, which take its doc-id order.
    engines = [e for e in ENGINES if e in args.engines and e != "lucene"]
    need_order = args.peer_order == "bp" and bool({"bmp", "pisa"} & set(engines))
    if need_order and not any(e.startswith("ours-") for e in engines):
        ours = make_engine("ours-exact")
        with native_stdout_to_stderr():
            ours.build(docs, work)
        docs.order, docs.order_name = ours.order(), "bp"
        ours.close()

    rows: list[dict] = []
    skipped: dict[str, str] = {}
    failed: dict[str, str] = {}

    def attempt(name: str, engine: Engine, on: Docs, qs, tr, collection: str) -> None:
        reason = engine.missing()
        if reason:
            skipped[name] = reason
            print(f"skipped {name}: {reason}")
            return
        try:
            rows.extend(run_engine(name, engine, on, qs, tr, work, args, collection))
            if need_order and on is docs and docs.order is None and isinstance(engine, Ours):
                docs.order, docs.order_name = engine.order(), "bp"
        except Exception as e:  # one broken peer must not lose the others' figures
            log.exception("%s failed", name)
            failed[name] = f"{type(e).__name__}: {e}"
        finally:
            engine.close()
            gc.collect()

    for name in engines:
        attempt(
            name, make_engine(name, tuple(args.alphas), seismic_build(args)), docs, queries, truths, "main"
        )

    if "lucene" in args.engines:
        if args.lucene_docs >= len(docs):
            attempt("lucene", make_engine("lucene"), docs, queries, truths, "main")
        else:
            m = args.lucene_docs
            sub = Docs(docs.ids[:m], docs.batch.take(np.arange(m)), name=f"{docs.name}-first{m}")
            sub_truths = {
                q: {
                    "float": exact_truth(sub, b, args.k, False),
                    "quantized": exact_truth(sub, b, args.k, True),
                }
                for q, b in queries.items()
            }
            label = f"first{m}"
            for name in ("lucene", "ours-scan", "ours-exact"):
                attempt(name, make_engine(name), sub, queries, sub_truths, label)

    total_s = time.perf_counter() - start
    print(
        f"\nsearch benchmark: {args.corpus} {len(docs)} docs ({docs.batch.nnz / len(docs):.0f} terms/doc), "
        f"{args.queries} queries per set, k={args.k}, single-threaded, peers in {docs.order_name} doc order, "
        f"exact rankings in {truth_s:.1f} s, total {total_s:.0f} s"
    )
    for qname, b in queries.items():
        print(f"query set {qname}: {len(b)} queries, {b.nnz / max(len(b), 1):.1f} terms/query")
    print_table([r for r in rows if r["collection"] == "main"], args.k)
    sub_rows = [r for r in rows if r["collection"] != "main"]
    if sub_rows:
        print(f"\nLucene subset: the first {args.lucene_docs} documents")
        print_table(sub_rows, args.k)
    print(
        "\n(* build kept from an earlier run in --work, loaded; bld MB+ / srch MB+: peak RSS growth over the "
        "engine's start while building (or loading) / while searching)"
    )
    ratio_figures = ratios(rows, args.k)
    throughput_figures = print_throughput(rows)
    for r in rows:
        if r["short_queries"] or r.get("panics"):
            print(
                f"{r['queries']}: {r['engine']} {r['setting']} returned fewer than min(k, matches) hits "
                f"on {r['short_queries']} of {r['n_queries']} queries"
                + (f"; {r['panics']} panic(s) over all passes" if r.get("panics") else "")
            )
    for name, reason in {**skipped, **failed}.items():
        print(f"not measured: {name}: {reason}")

    common = {
        "bench": "search",
        "time": utc_stamp(),
        "corpus": args.corpus,
        "docs": len(docs),
        "k": args.k,
        "peer_order": docs.order_name,
        "seed": args.seed,
    }
    records = [{**common, "kind": "engine", **r, **context} for r in rows]
    summary = {
        **common,
        "kind": "summary",
        "queries": {q: len(b) for q, b in queries.items()},
        "query_terms_mean": {q: b.nnz / max(len(b), 1) for q, b in queries.items()},
        "doc_terms_mean": docs.batch.nnz / len(docs),
        "lucene_docs": min(args.lucene_docs, len(docs)) if "lucene" in args.engines else None,
        "ratios": ratio_figures,
        "batch_qps": throughput_figures,
        "skipped": skipped,
        "failed": failed,
        "truth_s": truth_s,
        "total_s": total_s,
        "argv": sys.argv[1:],
        **context,
    }
    records.append(summary)
    append_jsonl(args.out, records)
    print(f"appended {len(records)} line(s) to {args.out}")
    if args.plot and rows:
        plot_curves(records, args.plot)
        print(f"drew the recall@{args.k} / latency curves to {args.plot}")
    elif args.plot:
        log.warning("no engine was measured: no plot drawn")
    return 1 if failed else 0


def seismic_build(args: argparse.Namespace) -> dict:
    from bench.peers import SEISMIC_BUILD

    return {
        **SEISMIC_BUILD,
        "n_postings": args.seismic_n_postings,
        "centroid_fraction": args.seismic_centroid_fraction,
    }


if __name__ == "__main__":
    sys.exit(main())
