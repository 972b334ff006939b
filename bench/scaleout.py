"""Scale-out: distributed encoding, sharded index builds and sharded search, against one process and
one index on the same data, and what the fan-out costs.

Everything runs in one invocation, baseline and candidate on the same data:

1. **Encode** (skipped, and said, when SciFact or :mod:`indexer.ray_encode` is missing): the first
   ``--encode-docs`` SciFact passages with the real SPLADE BERT-tiny encoder exported to ONNX fp32
   (the cached export of :mod:`plugin.prepare`), ``max_length`` 256, batches of 8, one onnxruntime
   thread per worker: single-process (:func:`indexer.encode.encode_corpus`, ``chunk_size`` = the block
   size) against :func:`indexer.ray_encode.encode_corpus_ray` with 1 and 2 workers (blocks of
   ``--block-docs``), each on its own fresh local Ray. Timed from after Ray's start to the end, the
   workers' encoder loading included (the single process's ``load_encoder`` is included alike); Ray's
   start is reported apart, and an end-to-end docs/s with it. Ratio lines: 2 workers over 1, and Ray
   with 1 worker over the single process (what Ray costs). Check: the Ray part files, concatenated, are
   byte for byte the single-process output (same blocks, same batches).
2. **Build**: ``--docs`` documents of the topical generator (:class:`bench.synthetic.TopicalCollection`,
   written once as a float JsonVectorCollection by :func:`bench.index.synthetic_corpus`, reused with
   ``--work``; generation reported apart) built from that file as one native index
   (:func:`indexer.native.build.build_native_index`, BP reordering), as ``--shards`` shards in
   ``--build-threads`` threads (:func:`indexer.shards.build_sharded_index`: the split into per-shard
   files by id hash is part of it) and, with ``--ray-build``, as Ray tasks on a local Ray of
   ``--build-threads`` CPUs (its start reported apart); with ``--exact-check`` also one index without
   reordering, the hit-for-hit reference. Each build runs in a fresh spawned process: wall seconds,
   that process's CPU seconds, its peak RSS (``VmHWM``), and, sampled every 0.2 s over the process
   tree, the largest single process (a Ray shard task) and the tree's sum. Index bytes on disk, per
   shard too. Check: the Ray-built shards equal the thread-built ones (their checksums).
3. **Queries**: ``--queries`` SPLADE-style queries of the same generator, exact top-``--k``: the one
   index, the reference without reordering, the shards in threads (:class:`plugin.sharded.ShardedSearcher`),
   the shards in Ray actors (:class:`plugin.ray_shards.RayShardedSearcher`, one actor per shard, on a
   local Ray of this machine's CPUs) and the largest shard alone (:class:`plugin.native.NativeSearcher`:
   the per-shard figures). Single-query latency: the first query reported as warm-up, an untimed pass,
   then each query timed alone with the garbage collector off: p50, p99, mean. Throughput:
   ``batch_search`` over all queries (``threads`` 1 and 2; Ray: one round trip per shard for the list,
   each shard its own process), median of ``--repeat`` runs, queries/s. Fan-out cost: Ray p50 minus
   threads p50 (per query), and timed no-op round trips: one actor's ``ping``, every actor's at once,
   :meth:`RayShardedSearcher.health`, and a thread pool mapping a no-op over the shards. Checks: the
   shards' scores equal the one index's rank by rank on every query; the threads' and the actors'
   hits are equal hit for hit; with ``--exact-check`` both equal the unreordered index hit for hit.
4. A **capacity** paragraph: the per-shard figures measured here extrapolated to ``--target-docs``
   (shards at the measured shard size, machines like this one, hours to encode and to index, the
   query cost and the fan-out), and where the first bottleneck is. The arithmetic is in
   :func:`capacity`; its assumptions are named constants, printed with it.

Tables and ratio lines are printed, and one JSON record (config, machine, versions, git state, every
figure) is appended to ``--out``.

Run from the repository root (quiet machine)::

    .venv/bin/python -m bench.scaleout                           # 1M documents, 2,000 passages
    .venv/bin/python -m bench.scaleout --docs 200000 --work /tmp/lsr-scaleout
    .venv/bin/python -m bench.scaleout --docs 3000 --encode-docs 50 --queries 20
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import math
import multiprocessing
import os
import platform
import resource
import shutil
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from pathlib import Path

import numpy as np

from bench._context import (
    MB,
    Periodic,
    add_data_argument,
    add_output_arguments,
    append_jsonl,
    dir_bytes,
    package_version,
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
from bench.live import time_queries  # the same timing as the live benchmark

log = logging.getLogger("bench.scaleout")

MAX_LENGTH = 256  # encoder tokens per passage (as bench.encode and plugin.prepare)
ENCODE_BATCH = 8
BLOCKS_PER_RUN = 8  # default --block-docs: the passages in this many blocks, so 2 workers share them
# Seconds a shard actor has per call: generous, as the first query compiles the kernels in every actor at
# once (over 10 s on a busy 2-core machine); a deadline guards against faults, it is not measured here.
RAY_DEADLINE_S = 300.0
# Capacity assumptions (not measured; printed with the estimate).
MEMORY_SHARE = 0.5  # of a machine's memory given to the page cache of its shards' index files
TARGET_DOCS = 100_000_000


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m bench.scaleout",
        description="Ray encoding, sharded builds and sharded search against one process and one index.",
    )
    p.add_argument(
        "--docs", type=positive_int, default=1_000_000, help="topical documents (default: %(default)s)"
    )
    p.add_argument("--shards", type=positive_int, default=4, help="shards (default: %(default)s)")
    p.add_argument(
        "--build-threads", type=positive_int, default=2, help="shards built at once (default: %(default)s)"
    )
    p.add_argument(
        "--ray-build",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also build the shards as Ray tasks (default: on)",
    )
    p.add_argument(
        "--exact-check",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also build one index without reordering, the hit-for-hit reference (default: on)",
    )
    p.add_argument(
        "--queries", type=positive_int, default=300, help="SPLADE-style queries (default: %(default)s)"
    )
    p.add_argument("--k", type=positive_int, default=10, help="hits per query (default: %(default)s)")
    p.add_argument("--repeat", type=positive_int, default=3, help="batch throughput runs, median counts")
    p.add_argument(
        "--pings", type=positive_int, default=300, help="no-op round trips timed (default: %(default)s)"
    )
    p.add_argument("--seed", type=int, default=0, help="generator seed (default: %(default)s)")
    p.add_argument(
        "--encode-docs",
        type=positive_int,
        default=2000,
        help="SciFact passages encoded (default: %(default)s)",
    )
    p.add_argument(
        "--block-docs",
        type=positive_int,
        default=None,
        help=f"passages per Ray block (default: --encode-docs / {BLOCKS_PER_RUN}, rounded up)",
    )
    p.add_argument(
        "--target-docs",
        type=positive_int,
        default=TARGET_DOCS,
        help="collection size the capacity estimate extrapolates to (default: %(default)s)",
    )
    add_data_argument(p)
    add_output_arguments(p, "scaleout", "directory for the vectors and indexes (the vectors are reused)")
    args = p.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    if args.block_docs is None:
        args.block_docs = max(1, math.ceil(args.encode_docs / BLOCKS_PER_RUN))
    return args


def versions() -> dict:
    return {
        "python": platform.python_version(),
        "numpy": np.__version__,
        "numba": package_version("numba"),
        "ray": package_version("ray"),
        "onnxruntime": package_version("onnxruntime"),
    }


# ------------------------------------------------------------------ 1. encode
def first_passages(corpus: Path, n: int, out: Path) -> int:
    """The first ``n`` non-blank lines of ``corpus`` written to ``out``; how many there were."""
    lines = []
    with open(corpus, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                lines.append(line)
                if len(lines) == n:
                    break
    out.write_text("".join(lines), encoding="utf-8")
    return len(lines)


def encode_part(args: argparse.Namespace, work: Path) -> dict:
    """Single process against Ray with 1 and 2 workers on the same passages (module doc, 1)."""
    if not (args.data / "corpus.jsonl").is_file():
        return {"skipped": f"SciFact not found: {args.data} has no corpus.jsonl (pass --data DIR)"}
    try:
        from indexer.ray_encode import encode_corpus_ray, part_files
    except ImportError as e:
        return {"skipped": f"indexer.ray_encode is not importable ({type(e).__name__}: {e})"}
    from indexer.encode import encode_corpus
    from lsr.models import cache_dir, fetch
    from lsr.runtime import load_encoder
    from plugin.prepare import export_once

    encoder_dir = export_once(fetch(), cache_dir() / "demo" / "splade-tiny-fp32", "splade", "fp32", None)
    corpus = work / f"scifact-first{args.encode_docs}.jsonl"
    n = first_passages(args.data / "corpus.jsonl", args.encode_docs, corpus)
    out: dict = {"encoder_dir": str(encoder_dir), "passages": n, "block_docs": args.block_docs, "runs": {}}

    single = work / "encode-single.jsonl"
    single.unlink(missing_ok=True)
    t0 = time.perf_counter()
    encoder = load_encoder(encoder_dir, "doc", threads=1, max_length=MAX_LENGTH)
    load_s = time.perf_counter() - t0
    stats = encode_corpus(
        encoder, corpus, single, batch_size=ENCODE_BATCH, chunk_size=args.block_docs, show_progress=False
    )
    seconds = time.perf_counter() - t0
    del encoder
    out["runs"]["single-process"] = {
        "workers": 1,
        "start_s": load_s,
        "seconds": seconds,
        "docs": stats.written,
        "docs_per_s": stats.written / seconds,
        "docs_per_s_e2e": stats.written / seconds,
        "same_bytes": True,
    }
    log.info("single-process encode: %d passages in %.1f s", stats.written, seconds)
    reference = single.read_bytes()
    for workers in (1, 2):
        name = f"ray-{workers}"
        target = work / f"encode-{name}"
        shutil.rmtree(target, ignore_errors=True)
        try:
            summary = encode_corpus_ray(
                encoder_dir, corpus, target, batch_size=ENCODE_BATCH, max_length=MAX_LENGTH,
                block_docs=args.block_docs, workers=workers, threads_per_worker=1,
            )  # fmt: skip
        except Exception as e:  # the module is new: a failure is reported, the rest still runs
            log.exception("Ray encode with %d workers failed", workers)
            out["runs"][name] = {"workers": workers, "failed": f"{type(e).__name__}: {e}"}
            continue
        steady = summary["seconds"] - summary["ray_start_seconds"]
        same = b"".join(p.read_bytes() for p in part_files(target)) == reference
        out["runs"][name] = {
            "workers": workers,
            "start_s": summary["ray_start_seconds"],
            "seconds": steady,
            "docs": summary["encoded"],
            "docs_per_s": summary["encoded"] / steady,
            "docs_per_s_e2e": summary["docs_per_s"],
            "same_bytes": same,
            "summary": summary,
        }
        log.info(
            "Ray encode, %d workers: %.1f s after a %.1f s start",
            workers,
            steady,
            summary["ray_start_seconds"],
        )
    runs = out["runs"]
    ok = {name: "docs_per_s" in r for name, r in runs.items()}
    out["ratios"] = {}
    if ok.get("ray-1") and ok.get("ray-2"):
        out["ratios"]["ray-2/ray-1"] = runs["ray-2"]["docs_per_s"] / runs["ray-1"]["docs_per_s"]
    if ok.get("ray-1"):
        out["ratios"]["ray-1/single-process"] = (
            runs["ray-1"]["docs_per_s"] / runs["single-process"]["docs_per_s"]
        )
    best = "ray-2" if ok.get("ray-2") else "ray-1" if ok.get("ray-1") else "single-process"
    out["docs_per_s_per_worker"] = runs[best]["docs_per_s"] / runs[best]["workers"]
    out["per_worker_from"] = best
    return out


# ------------------------------------------------------------------ 2. builds
class TreeSampler(Periodic):
    """The resident sets of this process's descendants (the building process and what it starts):
    the largest single process and the largest sum seen."""

    def __init__(self) -> None:
        super().__init__()
        import psutil

        self.me = psutil.Process()
        self.largest = 0
        self.total = 0

    def tick(self) -> bool | None:
        rss = []
        for proc in self.me.children(recursive=True):
            try:
                rss.append(proc.memory_info().rss)
            except Exception:  # gone between the listing and the reading
                pass
        if rss:
            self.largest = max(self.largest, max(rss))
            self.total = max(self.total, sum(rss))
        return None


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def build_in_child(
    kind: str, index_dir: str, vector_file: str, shards: int, threads: int, reorder: str, verbose: bool
) -> dict:
    """Runs in a fresh (spawned) process: one timed build and its figures."""
    setup_logging(verbose)
    from indexer.native.build import build_native_index
    from indexer.shards import build_sharded_index

    ray_start_s = None
    if kind == "ray":
        import ray

        t0 = time.perf_counter()
        ray.init(
            address="local", num_cpus=threads, include_dashboard=False, log_to_driver=False,
            logging_level=logging.WARNING,
        )  # fmt: skip
        ray_start_s = time.perf_counter() - t0
    cpu0, t0 = _cpu_seconds(), time.perf_counter()
    if kind == "single":
        meta = build_native_index(index_dir, vector_files=[vector_file], reorder=reorder)
        shard_entries = None
        reorder_s = meta.get("reorder_seconds")
    else:
        manifest = build_sharded_index(
            index_dir, [vector_file], shards, threads=threads, ray=True if kind == "ray" else None
        )
        shard_entries = manifest["shards"]
        reorder_s = None
    wall = time.perf_counter() - t0
    cpu = _cpu_seconds() - cpu0
    if kind == "ray":
        import ray

        ray.shutdown()
    return {
        "wall_s": wall,
        "cpu_s": cpu,
        "ray_start_s": ray_start_s,
        "reorder_s": reorder_s,
        "peak_rss_bytes": peak_rss_bytes(),
        "shards": shard_entries,
    }


def run_build(name: str, kind: str, index_dir: Path, vector_file: Path, args, reorder: str = "bp") -> dict:
    shutil.rmtree(index_dir, ignore_errors=True)
    spawn = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(1, mp_context=spawn) as pool, TreeSampler() as sampler:
        fig = pool.submit(
            build_in_child, kind, str(index_dir), str(vector_file), args.shards, args.build_threads,
            reorder, args.verbose,
        ).result()  # fmt: skip
    fig.update(
        name=name,
        kind=kind,
        reorder=reorder,
        index_bytes=dir_bytes(index_dir),
        largest_process_rss_bytes=sampler.largest,
        tree_rss_bytes=sampler.total,
        n_shards=1 if kind == "single" else args.shards,
        concurrency=1 if kind == "single" else min(args.build_threads, args.shards),
    )
    if fig["shards"]:
        for s in fig["shards"]:
            s["bytes"] = dir_bytes(index_dir / s["name"]) if s["n_docs"] else 0
            s["content_sha256"] = content_digest(index_dir / s["name"], s) if s["n_docs"] else None
    log.info("build %s: %.1f s wall, %.1f s CPU", name, fig["wall_s"], fig["cpu_s"])
    return fig


def content_digest(shard_dir: Path, entry: dict) -> str:
    """A digest of what a shard holds: its arrays' checksums, its vocabulary's and its ordinals'
    (``meta_sha256`` also covers the build's seconds and source paths, which differ between builds)."""
    meta = json.loads((shard_dir / "meta.json").read_text(encoding="utf-8"))
    held = {"arrays": meta["arrays"], "vocab": meta["vocab_sha256"], "ordinals": entry["ordinals_sha256"]}
    return hashlib.sha256(json.dumps(held, sort_keys=True).encode("utf-8")).hexdigest()


# ------------------------------------------------------------------ 3. queries
def time_calls(call: Callable[[], object], n: int) -> dict:
    """p50 and p99 of ``n`` calls of ``call`` (after one untimed), in ms."""
    call()
    ms = []
    for _ in range(n):
        t0 = time.perf_counter()
        call()
        ms.append((time.perf_counter() - t0) * 1e3)
    return {"calls": n, "p50_ms": percentile(ms, 50), "p99_ms": percentile(ms, 99)}


def throughput(run: Callable[[], object], n: int, repeat: int) -> dict:
    """Queries/s of ``run()`` (all ``n`` queries at once): the median of ``repeat`` timed runs."""
    runs = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        run()
        runs.append(time.perf_counter() - t0)
    return {"qps": n / statistics.median(runs), "runs_s": runs}


def pairs(hits) -> list[tuple[str, float]]:
    return [(h.docid, float(h.score)) for h in hits]


def compare(got: Sequence[list], want: Sequence[list]) -> dict:
    """Queries whose score lists are equal rank by rank, and whose (id, score) lists are equal."""
    scores = sum([s for _, s in g] == [s for _, s in w] for g, w in zip(got, want, strict=True))
    hits = sum(g == w for g, w in zip(got, want, strict=True))
    return {"queries": len(want), "scores_equal": int(scores), "hits_equal": int(hits)}


def query_part(args, builds: dict, work: Path, queries) -> tuple[dict, dict, dict]:
    """(searchers' figures, fan-out figures, checks)."""
    from plugin.native import NativeSearcher
    from plugin.sharded import ShardedSearcher

    k, n = args.k, len(queries)
    rows = [queries.take([i]) for i in range(n)]
    dicts = queries.to_dicts()
    figs: dict[str, dict] = {}
    results: dict[str, list] = {}

    def measure(name: str, one: Callable[[int], list], batch: Callable[[int], object], threads):
        figures, raw = time_queries(one, n)
        results[name] = [pairs(h) for h in raw]
        batch(1)  # warm the batch path (its kernels compile on first use)
        figures["qps"] = {str(t): throughput(lambda t=t: batch(t), n, args.repeat) for t in threads}
        figs[name] = figures
        log.info("%s: p50 %.3f ms, p99 %.3f ms", name, figures["p50_ms"], figures["p99_ms"])

    def native(name: str, path: Path) -> None:
        t0 = time.perf_counter()
        s = NativeSearcher(path, verify=False)
        open_s = time.perf_counter() - t0
        measure(name, lambda i: s.search(rows[i], k), lambda t: s.batch_search(queries, k, t), (1, 2))
        figs[name].update(open_s=open_s, docs=len(s), shards=1)

    native("one index", builds["one index"]["dir"])
    if "one index, reorder none" in builds:
        native("one index, reorder none", builds["one index, reorder none"]["dir"])

    shard_dir = builds["shards, threads"]["dir"]
    t0 = time.perf_counter()
    sharded = ShardedSearcher(shard_dir, verify=False)
    open_s = time.perf_counter() - t0
    name = f"{args.shards} shards, threads"
    measure(name, lambda i: sharded.search(rows[i], k), lambda t: sharded.batch_search(queries, k, t), (1, 2))
    figs[name].update(open_s=open_s, docs=len(sharded), shards=len(sharded.shards))
    sharded.close()

    # The thread fan-out alone: a pool like the searcher's mapping a no-op over the shards.
    fanout: dict = {}
    with ThreadPoolExecutor(args.shards) as pool:
        fanout["thread_pool_noop"] = time_calls(lambda: list(pool.map(_noop, range(args.shards))), args.pings)

    # The largest shard alone: the per-shard figures.
    entries = builds["shards, threads"]["shards"]
    largest = max(entries, key=lambda s: s["n_docs"])
    native("largest shard alone", shard_dir / largest["name"])
    figs["largest shard alone"]["shard"] = largest["name"]

    # Shards in Ray actors, on a local Ray of this machine's CPUs.
    ray_name = f"{args.shards} shards, Ray actors"
    try:
        import ray

        from plugin.ray_shards import RayShardedSearcher
    except ImportError as e:
        fanout["ray"] = {"skipped": f"ray is not importable ({e})"}
    else:
        t0 = time.perf_counter()
        ray.init(
            address="local", num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False,
            logging_level=logging.WARNING,
        )  # fmt: skip
        ray_start_s = time.perf_counter() - t0
        try:
            t0 = time.perf_counter()
            remote = RayShardedSearcher(shard_dir, verify=False, deadline_s=RAY_DEADLINE_S)
            actors_s = time.perf_counter() - t0
            measure(
                ray_name, lambda i: remote.search(dicts[i], k), lambda _t: remote.batch_search(dicts, k), (1,)
            )
            figs[ray_name].update(
                open_s=actors_s, ray_start_s=ray_start_s, docs=len(remote), shards=len(remote.actors)
            )
            actors = remote.actors
            fanout["ray_ping_one"] = time_calls(lambda: ray.get(actors[0].ping.remote()), args.pings)
            fanout["ray_ping_all"] = time_calls(
                lambda: ray.get([a.ping.remote() for a in actors]), args.pings
            )
            fanout["ray_health"] = time_calls(remote.health, args.pings)
            remote.close()
        finally:
            ray.shutdown()
        threads_fig, ray_fig = figs[name], figs[ray_name]
        fanout["ray_over_threads_p50_ms"] = ray_fig["p50_ms"] - threads_fig["p50_ms"]
        fanout["ray_over_threads_p99_ms"] = ray_fig["p99_ms"] - threads_fig["p99_ms"]
        s = len(actors)
        extra = (fanout["ray_ping_all"]["p50_ms"] - fanout["ray_ping_one"]["p50_ms"]) / max(1, s - 1)
        fanout["ray_per_extra_actor_ms"] = max(0.0, extra) if s > 1 else None

    checks = {
        f"{name} vs one index (scores rank by rank)": compare(results[name], results["one index"]),
    }
    if ray_name in results:
        checks[f"{ray_name} vs {name} (hit for hit)"] = compare(results[ray_name], results[name])
    if "one index, reorder none" in results:
        ref = results["one index, reorder none"]
        checks["one index vs reorder none (scores rank by rank)"] = compare(results["one index"], ref)
        checks[f"{name} vs reorder none (hit for hit)"] = compare(results[name], ref)
        if ray_name in results:
            checks[f"{ray_name} vs reorder none (hit for hit)"] = compare(results[ray_name], ref)
    for label, c in checks.items():
        field = "hits_equal" if "hit for hit" in label else "scores_equal"
        c["ok"] = c[field] == c["queries"]
    return figs, fanout, checks


def _noop(_i: int) -> None:
    return None


# ------------------------------------------------------------------ 4. capacity
def capacity(
    builds: dict, figs: dict, fanout: dict, encode: dict, machine: dict, n_shards: int, target: int
) -> dict:
    """The per-shard figures extrapolated to ``target`` documents (module doc, 4)."""
    sharded = builds["shards, threads"]
    shards = [s for s in sharded["shards"] if s["n_docs"]]
    docs = sum(s["n_docs"] for s in shards)
    docs_per_shard = docs / len(shards)
    shard_bytes = sum(s["bytes"] for s in shards) / len(shards)
    bytes_per_doc = sum(s["bytes"] for s in shards) / docs
    # CPU seconds of the sharded build per shard (the split by id hash included: an upper bound).
    shard_build_cpu_s = sharded["cpu_s"] / n_shards
    shard = figs["largest shard alone"]
    shard_qps = shard["qps"]["1"]["qps"]
    memory, cores = machine["memory_bytes"], machine["cpus_usable"]

    shards_t = math.ceil(target / docs_per_shard)
    index_t = bytes_per_doc * target
    machines_mem = math.ceil(index_t / (memory * MEMORY_SHARE))
    machines_cpu = math.ceil(shards_t / cores)  # a core per shard: a query's shards all run at once
    machines = max(machines_mem, machines_cpu)
    per_worker = encode.get("docs_per_s_per_worker")
    encode_core_h = target / per_worker / 3600 if per_worker else None
    build_core_h = shards_t * shard_build_cpu_s / 3600
    cpu_ms_per_query = shards_t * 1e3 / shard_qps  # every shard searches every query
    cluster_qps = machines * cores * 1e3 / cpu_ms_per_query
    one = fanout.get("ray_ping_one", {}).get("p50_ms")
    per_extra = fanout.get("ray_per_extra_actor_ms")
    fanout_ms = one + (shards_t - 1) * per_extra if one is not None and per_extra is not None else None
    out = {
        "target_docs": target,
        "docs_per_shard": docs_per_shard,
        "shard_bytes": shard_bytes,
        "bytes_per_doc": bytes_per_doc,
        "shard_build_cpu_s": shard_build_cpu_s,
        "shard_p50_ms": shard["p50_ms"],
        "shard_p99_ms": shard["p99_ms"],
        "shard_qps_1_thread": shard_qps,
        "encode_docs_per_s_per_worker": per_worker,
        "machine_memory_bytes": memory,
        "machine_cores": cores,
        "memory_share": MEMORY_SHARE,
        "shards": shards_t,
        "index_bytes": index_t,
        "machines_for_memory": machines_mem,
        "machines_for_cores": machines_cpu,
        "machines": machines,
        "encode_core_hours": encode_core_h,
        "encode_hours": encode_core_h / (machines * cores) if encode_core_h else None,
        "build_core_hours": build_core_h,
        "build_hours": build_core_h / (machines * cores),
        "cpu_ms_per_query": cpu_ms_per_query,
        "cluster_qps": cluster_qps,
        "driver_fanout_ms": fanout_ms,
        "driver_qps": 1e3 / fanout_ms if fanout_ms else None,
    }
    # A query waits for its slowest shard and for the driver's calls to every shard.
    out["latency_floor_ms"] = shard["p99_ms"] + fanout_ms if fanout_ms is not None else None
    ingest = "encoding" if encode_core_h is not None and encode_core_h > build_core_h else "index building"
    if fanout_ms is not None and out["driver_qps"] < cluster_qps:
        serving = "the driver's fan-out (one Ray call per shard per query)"
        first = f"serving, {serving}: one driver cannot use the cluster's scoring capacity"
    else:
        serving = "the shards' scoring CPU"
        first = f"ingest: {ingest}" if encode_core_h is not None else f"serving: {serving}"
    out.update(ingest_bottleneck=ingest, serving_bottleneck=serving, first_bottleneck=first)
    return out


def capacity_text(c: dict, n_docs: int, n_shards: int, encode: dict) -> str:
    t = c["target_docs"]
    enc = (
        f"encoding {t / 1e6:g}M documents at the measured {c['encode_docs_per_s_per_worker']:.1f} docs/s per "
        f"worker ({encode['per_worker_from']}, one CPU each; SciFact passages, longer than MS MARCO's) takes "
        f"{c['encode_core_hours']:,.0f} core-hours, {c['encode_hours']:,.1f} h on those machines"
        if c["encode_docs_per_s_per_worker"]
        else "encoding: not measured in this run"
    )
    fan = (
        f"one driver fanning a query out to {c['shards']} actors spends ~{c['driver_fanout_ms']:.1f} ms "
        f"on the calls alone (one ping plus {c['shards'] - 1} times the measured per-extra-actor cost), so "
        f"~{c['driver_qps']:.1f} queries/s per driver process, and a query waits at least "
        f"~{c['latency_floor_ms']:.1f} ms (that plus the per-shard p99)"
        if c["driver_fanout_ms"] is not None
        else "the Ray fan-out was not measured"
    )
    return (
        f"capacity: measured here, a shard of {c['docs_per_shard']:,.0f} topical documents ({n_docs:,} in "
        f"{n_shards}) is {c['shard_bytes'] / MB:.0f} MB on disk ({c['bytes_per_doc']:.0f} bytes/doc), "
        f"builds in {c['shard_build_cpu_s']:.1f} CPU-s (the split by id hash included), and answers exact "
        f"top-k in p50 {c['shard_p50_ms']:.2f} ms / p99 {c['shard_p99_ms']:.2f} ms, "
        f"{c['shard_qps_1_thread']:.0f} queries/s on one thread. At {t / 1e6:g}M documents that is "
        f"{c['shards']:,} shards of that size, "
        f"{c['index_bytes'] / 1e9:.1f} GB of index: {c['machines']} machines like this one "
        f"({c['machine_cores']} cores, {c['machine_memory_bytes'] / 1e9:.0f} GB; {c['machines_for_memory']} "
        f"for memory at {c['memory_share']:.0%} of RAM as page cache, {c['machines_for_cores']} for one core "
        f"per shard). On them {enc}; building the shards takes {c['build_core_hours']:,.1f} core-hours, "
        f"{c['build_hours']:,.2f} h. Every query costs {c['cpu_ms_per_query']:,.0f} CPU-ms summed over the "
        f"shards, so the cluster scores ~{c['cluster_qps']:,.0f} queries/s at most; {fan}. First bottleneck: "
        f"{c['first_bottleneck']} (ingest: {c['ingest_bottleneck']}; serving: {c['serving_bottleneck']})."
    )


# ------------------------------------------------------------------ main
def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    setup_logging(args.verbose)
    from bench.synthetic import QUERY_DATA, QUERY_FILES

    if not (QUERY_DATA / QUERY_FILES["splade-v3"]).is_file():
        log.error("real query vectors not found at %s (the shared msmarco-dev-queries data)", QUERY_DATA)
        return 2
    try:
        import psutil  # noqa: F401
    except ImportError:
        log.error("bench.scaleout needs psutil: pip install 'lsr[bench]'")
        return 2
    with work_dir(args.work, "lsr-scaleout-") as work:
        return run(args, work.resolve())


def run(args: argparse.Namespace, work: Path) -> int:
    from bench.index import synthetic_corpus
    from bench.synthetic import TopicalCollection
    from lsr.models import fetch
    from lsr.tokenize import Tokenizer

    context = record_context(versions())
    started = time.perf_counter()

    # ---------------------------------------------------------------- 1. encode
    encode = encode_part(args, work)
    if "skipped" in encode:
        log.warning("encode part skipped: %s", encode["skipped"])

    # ---------------------------------------------------------------- data
    vocab = Tokenizer(fetch() / "tokenizer.json").vocab
    vf = synthetic_corpus(work, args.docs, args.seed, vocab)
    coll = TopicalCollection(vocab, seed=args.seed)
    queries = coll.splade_queries(args.queries)

    # ---------------------------------------------------------------- 2. builds
    builds: dict[str, dict] = {}
    plan = [("one index", "single", "bp"), ("shards, threads", "threads", "bp")]
    if args.ray_build:
        plan.append(("shards, Ray tasks", "ray", "bp"))
    if args.exact_check:
        plan.append(("one index, reorder none", "single", "none"))
    for name, kind, reorder in plan:
        index_dir = work / f"index-{name.replace(', ', '-').replace(' ', '-')}"
        builds[name] = run_build(name, kind, index_dir, vf.path, args, reorder)
        builds[name]["dir"] = index_dir
    build_checks = {}
    if args.ray_build:
        keys = ("name", "n_docs", "content_sha256")
        a, b = builds["shards, threads"]["shards"], builds["shards, Ray tasks"]["shards"]
        same = [all(x[key] == y[key] for key in keys) for x, y in zip(a, b, strict=True)]
        build_checks["Ray-built shards equal the thread-built ones"] = {
            "equal": sum(same),
            "shards": len(same),
        }
        shutil.rmtree(builds["shards, Ray tasks"]["dir"], ignore_errors=True)  # the same files: not searched

    # ---------------------------------------------------------------- 3. queries
    figs, fanout, checks = query_part(args, builds, work, queries)
    machine = context["machine"]
    cap = capacity(builds, figs, fanout, encode, machine, args.shards, args.target_docs)
    total_s = time.perf_counter() - started

    # ---------------------------------------------------------------- report
    print(
        f"scaleout benchmark: build and search figures come from the topical generator "
        f"(bench.synthetic.TopicalCollection, seed {args.seed}): {vf.docs:,} documents "
        f"({vf.nnz / vf.docs:.0f} terms/doc, one float JsonVectorCollection of "
        f"{vf.uncompressed_bytes / MB:.0f} MB, "
        + ("reused" if vf.reused else f"generated and written in {vf.seconds:.1f} s")
        + f"), {len(queries)} SPLADE-style queries ({queries.nnz / len(queries):.1f} terms/query), exact "
        f"k={args.k}; {machine['cpus_usable']} CPUs, load average at start "
        f"{', '.join(f'{x:.2f}' for x in machine['load_avg_start'])}; total {total_s:.0f} s"
    )
    print()
    if "skipped" in encode:
        print(f"encode: skipped ({encode['skipped']})")
    else:
        print(
            f"encode: the first {encode['passages']} SciFact passages, real SPLADE-tiny encoder (ONNX fp32, "
            f"max_length {MAX_LENGTH}, batch {ENCODE_BATCH}, 1 onnxruntime thread per worker), Ray blocks of "
            f"{encode['block_docs']}; seconds from after the start to the end (encoder loading included); "
            "start: the single process's encoder load, Ray's start (its workers' loading is in the seconds)"
        )
        print_fixed_table(
            "run<16 | workers>8 | start s>8 | seconds>9 | docs/s>8 | docs/s e2e>11 | same bytes>11",
            (
                [name, r["workers"], "-", "-", "-", "-", f"failed: {r['failed']}"]
                if "failed" in r
                else [
                    name,
                    r["workers"],
                    f"{r['start_s']:.2f}",
                    f"{r['seconds']:.2f}",
                    f"{r['docs_per_s']:.1f}",
                    f"{r['docs_per_s_e2e']:.1f}",
                    "yes" if r["same_bytes"] else "NO",
                ]
                for name, r in encode["runs"].items()
            ),
        )
        ratios = encode["ratios"]
        if "ray-2/ray-1" in ratios:
            print(ratio_text("ray 2 workers docs/s", "ray 1 worker docs/s", ratios["ray-2/ray-1"]))
        if "ray-1/single-process" in ratios:
            print(
                ratio_text("ray 1 worker docs/s", "single-process docs/s", ratios["ray-1/single-process"])
                + " (below 1: what Ray costs one worker)"
            )
    print()
    one = builds["one index"]
    print(
        f"build of the {vf.docs:,} documents from the one JSON file, each in a fresh process; shards split "
        f"by blake2b(id) mod {args.shards} (the split pass is in the sharded seconds), built "
        f"{args.build_threads} at once; BP reordering unless 'reorder none'; RSS: the building process's "
        "peak, the largest single process (a Ray task) and the process tree's sum, sampled every 0.2 s; "
        "CPU s: the building process's (a Ray build's is in its workers, not counted)"
    )
    print_fixed_table(
        "build<24 | shards>7 | at once>8 | wall s>8 | CPU s>8 | docs/s>9 | index MB>9 | MB/shard>9"
        " | peak RSS MB>12 | largest MB>11 | tree MB>8",
        (
            [
                name,
                b["n_shards"],
                b["concurrency"],
                f"{b['wall_s']:.1f}",
                "-" if b["kind"] == "ray" else f"{b['cpu_s']:.1f}",
                f"{vf.docs / b['wall_s']:,.0f}",
                f"{b['index_bytes'] / MB:.0f}",
                f"{b['index_bytes'] / MB / b['n_shards']:.0f}",
                f"{b['peak_rss_bytes'] / MB:.0f}",
                f"{b['largest_process_rss_bytes'] / MB:.0f}",
                f"{b['tree_rss_bytes'] / MB:.0f}",
            ]
            for name, b in builds.items()
        ),
    )
    for name in ("shards, threads", "shards, Ray tasks"):
        if name in builds:
            print(
                ratio_text(
                    f"{args.shards} {name} wall", "one index wall", builds[name]["wall_s"] / one["wall_s"]
                )
            )
    if "shards, Ray tasks" in builds:
        rb = builds["shards, Ray tasks"]
        print(
            ratio_text("Ray tasks wall", "threads wall", rb["wall_s"] / builds["shards, threads"]["wall_s"])
            + f" (Ray's start, {rb['ray_start_s']:.1f} s, not in it)"
        )
    if one["reorder_s"] is not None:
        print(f"one index: BP reordering {one['reorder_s']:.1f} s of its {one['wall_s']:.1f} s")
    per_shard = [
        f"{s['name']} {s['n_docs']:,} docs {s['bytes'] / MB:.0f} MB"
        for s in builds["shards, threads"]["shards"]
    ]
    print("per shard (thread build): " + ", ".join(per_shard))
    for label, c in build_checks.items():
        print(f"check {label}: {c['equal']}/{c['shards']}")
    print()
    print(
        f"queries: single-query latency (first query apart as warm-up, an untimed pass, then each alone), "
        f"throughput with batch_search over the {len(queries)} queries (median of {args.repeat}; threads = "
        "numba threads per index or shard; Ray: one round trip per shard for the list, each actor its own "
        "process)"
    )
    print_fixed_table(
        "searcher<30 | docs>10 | open s>7 | warm ms>8 | p50 ms>8 | p99 ms>8 | mean ms>8 | QPS t=1>8"
        " | QPS t=2>8",
        (
            [
                name,
                f"{f['docs']:,}",
                f"{f['open_s']:.2f}",
                f"{f['warmup_ms']:.1f}",
                f"{f['p50_ms']:.3f}",
                f"{f['p99_ms']:.3f}",
                f"{f['mean_ms']:.3f}",
                f"{f['qps']['1']['qps']:.0f}",
                f"{f['qps']['2']['qps']:.0f}" if "2" in f["qps"] else "-",
            ]
            for name, f in figs.items()
        ),
    )
    base = figs["one index"]
    threads_name, ray_name = f"{args.shards} shards, threads", f"{args.shards} shards, Ray actors"
    for name in (threads_name, ray_name):
        if name in figs:
            f = figs[name]
            qps = f["qps"]["1"]["qps"] / base["qps"]["1"]["qps"]
            print(
                ratio_text(f"{name} p50", "one index p50", f["p50_ms"] / base["p50_ms"])
                + f"; p99 {f['p99_ms'] / base['p99_ms']:.2f}x; QPS t=1 {qps:.2f}x"
            )
    if ray_name in figs:
        rf, tf = figs[ray_name], figs[threads_name]
        print(ratio_text("Ray actors p50", "threads p50", rf["p50_ms"] / tf["p50_ms"]))
        print(
            f"fan-out cost: Ray per query = Ray p50 - threads p50 = {fanout['ray_over_threads_p50_ms']:.3f} "
            f"ms (p99: {fanout['ray_over_threads_p99_ms']:+.3f} ms); no-op round trips (p50 / p99 ms): one "
            f"actor's ping {fanout['ray_ping_one']['p50_ms']:.3f} / {fanout['ray_ping_one']['p99_ms']:.3f}, "
            "all "
            f"{rf['shards']} actors' pings at once {fanout['ray_ping_all']['p50_ms']:.3f} / "
            f"{fanout['ray_ping_all']['p99_ms']:.3f}, health() {fanout['ray_health']['p50_ms']:.3f} / "
            f"{fanout['ray_health']['p99_ms']:.3f}; each actor past the first adds "
            f"{fanout['ray_per_extra_actor_ms']:.3f} ms; Ray start {rf['ray_start_s']:.1f} s and the actors' "
            f"start {rf['open_s']:.1f} s apart"
        )
    else:
        print(f"Ray actors: skipped ({fanout.get('ray', {}).get('skipped')})")
    tp = fanout["thread_pool_noop"]
    print(
        f"thread fan-out: a no-op mapped over {args.shards} pool threads, p50 {tp['p50_ms']:.3f} ms / "
        f"p99 {tp['p99_ms']:.3f} ms"
    )
    for label, c in checks.items():
        print(
            f"check {label}: scores equal on {c['scores_equal']}/{c['queries']} queries, hits equal on "
            f"{c['hits_equal']}/{c['queries']}"
        )
    print()
    print(capacity_text(cap, vf.docs, args.shards, encode))

    ok = all(c["ok"] for c in checks.values())
    ok = ok and all(c["equal"] == c["shards"] for c in build_checks.values())
    if "skipped" not in encode:
        ok = ok and all(r.get("same_bytes", True) for r in encode["runs"].values())
    for b in builds.values():
        b["dir"] = str(b["dir"])
    record = {
        "bench": "scaleout",
        "time": utc_stamp(),
        "corpus": "topical",
        "config": {
            "docs": vf.docs,
            "shards": args.shards,
            "build_threads": args.build_threads,
            "ray_build": args.ray_build,
            "exact_check": args.exact_check,
            "queries": len(queries),
            "query_set": "splade (splade-v3 statistics)",
            "k": args.k,
            "repeat": args.repeat,
            "pings": args.pings,
            "seed": args.seed,
            "encode_docs": args.encode_docs,
            "block_docs": args.block_docs,
            "max_length": MAX_LENGTH,
            "encode_batch": ENCODE_BATCH,
            "target_docs": args.target_docs,
            "mode": "exact",
        },
        "data": {
            "path": str(vf.path),
            "docs": vf.docs,
            "nnz": vf.nnz,
            "bytes": vf.uncompressed_bytes,
            "seconds": vf.seconds,
            "reused": vf.reused,
            "query_nnz": queries.nnz,
        },
        "encode": encode,
        "builds": builds,
        "build_checks": build_checks,
        "searchers": figs,
        "fanout": fanout,
        "checks": checks,
        "capacity": cap,
        "ok": ok,
        "total_s": total_s,
        "peak_rss_bytes": peak_rss_bytes(),
        "load_avg_end": os.getloadavg(),
        "argv": args.argv,
        **context,
    }
    append_jsonl(args.out, [record])
    print(f"peak RSS of this process {record['peak_rss_bytes'] / MB:.0f} MB; appended 1 line to {args.out}")
    if not ok:
        log.error("a check failed: see the check lines above")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
