"""Bi-granular verification benchmark: sparse candidates + dense vectors on disk vs dense brute force.

Two corpora:

- ``topical`` (default): ``--docs`` documents of :class:`bench.synthetic.TopicalCollection` with
  ``--dim``-d fp16 dense vectors on disk. A dense vector is a random projection of the document's
  sparse vector plus noise (``--noise``), normalised: documents that share terms get similar
  embeddings, as with a real model, but dense and sparse rankings disagree as they do in practice.
  Queries (SPLADE-style and inference-free) get their embeddings the same way. Per candidate depth
  ``--candidates``: p50/p99 latency with its stage breakdown, recall@10 against the exact top-10 of
  the same fused score over all documents (sparse min/max taken from the exact top-N, as the
  verifier does), recall@10 against the exact dense top-10, and the ratio against dense brute
  force over the memory-mapped matrix, measured in the same run. Resident memory is read from
  /proc before and after the bi-granular queries: the dense matrix must not be loaded whole.
- ``scifact``: the real models (SPLADE-tiny + all-MiniLM-L6-v2) on SciFact test: NDCG@10 and R@100
  for sparse-only (siamese and inference-free), dense-only (exact) and bi-granular at each depth.

    python -m bench.verify --docs 1000000 --work /tmp/lsr-verify-1M
    python -m bench.verify --corpus scifact

Results are appended as JSON lines to ``--out`` (default bench/results/verify.jsonl).
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from bench._context import (
    add_data_argument,
    add_output_arguments,
    append_jsonl,
    git_state,
    machine_info,
    positive_int,
    print_fixed_table,
    setup_logging,
    table_header,
    table_line,
    work_dir,
)
from indexer.native.format import is_current

log = logging.getLogger("bench.verify")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--corpus", default="topical", choices=["topical", "scifact"])
    p.add_argument("--docs", type=positive_int, default=1_000_000, help="topical: documents")
    p.add_argument("--dim", type=positive_int, default=384, help="topical: dense dimension")
    p.add_argument("--noise", type=float, default=0.7, help="topical: dense noise (0 = pure projection)")
    p.add_argument("--queries", type=positive_int, default=200, help="topical: queries per query set")
    p.add_argument("--brute-queries", type=positive_int, default=20, help="queries timed by brute force")
    p.add_argument("--candidates", type=positive_int, nargs="+", default=[100, 1000])
    p.add_argument(
        "--alphas", type=float, nargs="+", default=[1.0, 0.8], help="candidate search: 1 exact, < 1 approx"
    )
    p.add_argument("--weight", type=float, default=0.3, help="linear fusion weight")
    p.add_argument("--k", type=positive_int, default=10)
    p.add_argument("--seed", type=int, default=0)
    add_data_argument(p)
    add_output_arguments(p, "verify", "cache folder for the corpus, its index and dense store")
    return p.parse_args(argv)


def memory(dense_file: Path | None = None) -> dict[str, int]:
    """Resident set in bytes: total, anonymous (heap) and file-backed pages, and with ``dense_file``
    the pages of that file mapped in this process (from /proc/self/smaps)."""
    out = {}
    with open("/proc/self/status", encoding="ascii") as f:
        for line in f:
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "RssAnon", "RssFile"):
                out[key] = int(rest.split()[0]) * 1024
    if dense_file is not None:
        out["dense_store_rss"] = 0
        inside = False
        target = str(Path(dense_file).resolve())
        with open("/proc/self/smaps", encoding="utf-8", errors="replace") as f:
            for line in f:
                head = line.split()
                if head and "-" in head[0] and len(head) >= 5:  # a mapping's header line
                    inside = len(head) >= 6 and head[-1] == target
                elif inside and head and head[0] == "Rss:":
                    out["dense_store_rss"] += int(head[1]) * 1024
    return out


# ----------------------------------------------------------------- topical
def _project(batch, r: np.ndarray, noise: float, rng: np.random.Generator) -> np.ndarray:
    x = batch.to_scipy() @ r
    x /= np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-9)
    x += noise * rng.standard_normal(x.shape, np.float32) / np.sqrt(r.shape[1])
    x /= np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-9)
    return x.astype(np.float32)


def topical_index(args: argparse.Namespace, work: Path):
    """Build (once) the native index with its dense store; returns the index dir and the queries."""
    from bench.synthetic import TopicalCollection
    from indexer.dense import DenseVectors
    from indexer.native.build import build_native_index, iter_batches
    from lsr.models import fetch
    from lsr.tokenize import Tokenizer

    vocab = Tokenizer(fetch() / "tokenizer.json").vocab
    coll = TopicalCollection(vocab, seed=args.seed)
    r = np.random.default_rng((args.seed, 7)).standard_normal((len(vocab), args.dim), np.float32)
    r /= np.sqrt(args.dim)
    name = f"topical{args.seed}-{args.docs}-d{args.dim}-n{args.noise:g}"
    index = work / f"native-{name}"
    if not is_current(index):
        t0 = time.perf_counter()
        # Kept after the build: the float32 matrix is the fp32 brute-force baseline.
        spool = work / f"dense-{name}.f32.npy"
        dense = np.lib.format.open_memmap(spool, "w+", np.float32, (args.docs, args.dim))
        ids, chunks = [], []
        rng = np.random.default_rng((args.seed, 8))
        for chunk_ids, chunk in coll.documents(args.docs):
            dense[len(ids) : len(ids) + len(chunk_ids)] = _project(chunk, r, args.noise, rng)
            ids.extend(chunk_ids)
            chunks.append(chunk)
        dense.flush()
        log.info(
            "generated %d documents and their dense vectors in %.1f s", len(ids), time.perf_counter() - t0
        )
        from lsr.sparse import SparseBatch

        docs = SparseBatch.concat(chunks)
        del chunks
        build_native_index(index, batches=iter_batches(ids, docs), dense=DenseVectors(ids, dense))
        del docs, dense
    meta = json.loads((index / "meta.json").read_text())
    from indexer.native.format import open_index

    ix = open_index(index, verify=False)
    df = ix.document_frequencies()
    index_vocab = ix.vocab
    # Queries in BERT's vocabulary; df per BERT term id for the IDF weights.
    position = {t: i for i, t in enumerate(vocab)}
    df_bert = np.zeros(len(vocab), np.int64)
    df_bert[[position[t] for t in index_vocab]] = df
    queries = {
        "splade": coll.splade_queries(args.queries),
        "idf": coll.idf_queries(args.queries, df_bert, meta["n_docs"]),
    }
    rng = np.random.default_rng((args.seed, 9))
    dense_q = {name: _project(q, r, args.noise, rng) for name, q in queries.items()}
    fp32 = np.load(work / f"dense-{name}.f32.npy", mmap_mode="r")
    return index, meta, queries, dense_q, fp32


def exact_sparse_scores(ix, q_terms: np.ndarray, q_weights: np.ndarray) -> np.ndarray:
    """Integer impact scores of every document for one query (postings, numpy)."""
    post_offsets, post_docs, post_impacts = ix.postings()
    acc = np.zeros(ix.n_docs, np.int64)
    for t, w in zip(q_terms.tolist(), q_weights.tolist(), strict=True):
        a, b = post_offsets[t], post_offsets[t + 1]
        acc[post_docs[a:b]] += w * post_impacts[a:b].astype(np.int64)
    return acc


def evict(path: Path, store=None) -> bool:
    """Drop ``path``'s pages from the page cache (no root needed): first unmap them from ``store``'s
    memory map (mapped pages are not evicted), then ask the kernel to drop the clean cached pages.
    False where unsupported."""
    import mmap
    import os

    if not hasattr(os, "posix_fadvise"):
        return False
    mapping = getattr(getattr(store, "vectors", None), "_mmap", None)
    if mapping is not None and hasattr(mmap, "MADV_DONTNEED"):
        mapping.madvise(mmap.MADV_DONTNEED)
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)
    return True


def dense_all(store, queries: np.ndarray, block: int = 131_072) -> np.ndarray:
    """Exact dense scores ``[n_queries, n_docs]`` in one sequential pass over the store."""
    out = np.empty((len(queries), store.n_docs), np.float32)
    for s in range(0, store.n_docs, block):
        out[:, s : s + block] = (store.block(s, s + block) @ queries.T).T
    return out


def run_topical(args: argparse.Namespace, work: Path, context: dict) -> list[dict]:
    from plugin.verify import BiGranularSearcher, exact_dense, fuse, top_k

    index, meta, queries, dense_q, fp32 = topical_index(args, work)
    dense_file = index / "dense" / "vectors.npy"
    t0 = time.perf_counter()
    first = BiGranularSearcher(index, candidates=args.candidates[0], verify=False)
    searchers = {
        (n, a): BiGranularSearcher(
            index,
            candidates=n,
            weight=args.weight,
            mode="exact" if a == 1 else "approx",
            alpha=a,
            sparse=first.sparse,  # one sparse index in memory
        )
        for n in args.candidates
        for a in args.alphas
    }
    for s in searchers.values():
        s.store = first.store  # one mapping of the dense store
    open_s = time.perf_counter() - t0
    mem_open0 = memory(dense_file)
    # Cold: the store evicted from the page cache before each query (kernel fault-around maps up to 16
    # neighbouring pages per fault when they are cached; MADV_RANDOM, set by the store, stops
    # readahead from disk): about one 4 KB page read per candidate, never the matrix.
    probe = searchers[(max(args.candidates), 1.0)] if 1.0 in args.alphas else first
    q0 = next(iter(queries.values()))
    q0_dense = next(iter(dense_q.values()))
    n_probe = min(10, len(q0))
    store = first.store
    cold_ms, evicted = [], False
    for i in range(n_probe):
        evicted = evict(dense_file, store)
        t1 = time.perf_counter()
        probe.search_ids(q0.take([i]), q0_dense[i], args.k)
        cold_ms.append((time.perf_counter() - t1) * 1e3)
    mem_probe = memory(dense_file)  # the last cold query's pages (evict unmaps the earlier ones)
    cold_brute = []
    for i in range(min(3, n_probe)):
        evict(dense_file, store)
        t1 = time.perf_counter()
        exact_dense(store, q0_dense[i], args.k)
        cold_brute.append((time.perf_counter() - t1) * 1e3)
    # Warm from here on: the brute force above left the whole store in the page cache.
    store = first.store
    ix = first.sparse.index
    log.info("opened in %.2f s; dense store %.0f MB", open_s, store.size_bytes() / 2**20)
    rows = []
    for qname, qbatch in queries.items():
        dq = dense_q[qname]
        n_q = len(qbatch)
        # Warm-up: JIT and the first page faults of the sparse arrays, not timed.
        for s in searchers.values():
            for i in range(min(5, n_q)):
                s.search_ids(qbatch.take([i]), dq[i], args.k)
        mem_before = memory(dense_file)
        results: dict[tuple, list] = {}
        for key, s in searchers.items():
            times, stages = [], []
            got = []
            for i in range(n_q):
                t = {}
                t1 = time.perf_counter()
                _, docs = s.search_ids(qbatch.take([i]), dq[i], args.k, timings=t)
                times.append((time.perf_counter() - t1) * 1e3)
                stages.append(t)
                got.append(docs)
            results[key] = [times, stages, got]
        mem_after = memory(dense_file)
        # Dense brute force over the memory map, timed on a subset (it reads the whole matrix).
        brute = []
        for i in range(min(args.brute_queries, n_q)):
            t1 = time.perf_counter()
            exact_dense(store, dq[i], args.k)
            brute.append((time.perf_counter() - t1) * 1e3)
        # The same over the float32 matrix (twice the bytes, no conversion), rows in input order.
        brute32 = []
        for i in range(min(args.brute_queries, n_q)):
            t1 = time.perf_counter()
            scores = np.concatenate([fp32[s : s + 131_072] @ dq[i] for s in range(0, len(fp32), 131_072)])
            top_k(scores, np.arange(len(scores)), args.k)
            brute32.append((time.perf_counter() - t1) * 1e3)
        # Exact references for recall.
        t1 = time.perf_counter()
        full_dense = dense_all(store, dq)
        offsets, terms, weights, _ = first.sparse.query_arrays(qbatch)
        dense_truth = [np.lexsort((np.arange(ix.n_docs), -full_dense[i]))[: args.k] for i in range(n_q)]
        log.info("%s: exact references in %.1f s", qname, time.perf_counter() - t1)
        for (n, alpha), (times, stages, got) in results.items():
            rec_fused, rec_dense = [], []
            for i in range(n_q):
                sparse = exact_sparse_scores(
                    ix, terms[offsets[i] : offsets[i + 1]], weights[offsets[i] : offsets[i + 1]]
                )
                pos = np.flatnonzero(sparse > 0)
                cand = pos[np.lexsort((pos, -sparse[pos]))][:n]
                if len(cand):
                    lo, hi = sparse[cand].min(), sparse[cand].max()
                    norm = (sparse - lo) / (hi - lo) if hi > lo else np.zeros(ix.n_docs)
                    fused = full_dense[i] + args.weight * norm
                else:
                    fused = full_dense[i].astype(np.float64)
                # Over all documents, the fused score of the same query (as fuse() computes it).
                assert np.allclose(
                    fuse(sparse[cand], full_dense[i][cand], "linear", args.weight), fused[cand]
                )
                _, truth = top_k(fused, np.arange(ix.n_docs), args.k)
                rec_fused.append(len(set(got[i].tolist()) & set(truth.tolist())) / args.k)
                rec_dense.append(len(set(got[i].tolist()) & set(dense_truth[i].tolist())) / args.k)
            stage_p50 = {st: float(np.percentile([t.get(st, 0.0) for t in stages], 50)) for st in stages[0]}
            row = {
                "bench": "verify",
                "corpus": f"topical-{args.docs}",
                "queries": qname,
                "n_queries": n_q,
                "candidates": n,
                "alpha": alpha,
                "dim": store.dim,
                "dense_dtype": store.meta["dtype"],
                "noise": args.noise,
                "weight": args.weight,
                "p50_ms": float(np.percentile(times, 50)),
                "p99_ms": float(np.percentile(times, 99)),
                "mean_ms": float(np.mean(times)),
                "stage_p50_ms": stage_p50,
                "recall_fused": float(np.mean(rec_fused)),
                "recall_dense": float(np.mean(rec_dense)),
                "brute_p50_ms": float(np.percentile(brute, 50)),
                "brute_queries": len(brute),
                "brute_fp32_p50_ms": float(np.percentile(brute32, 50)),
                "speedup_vs_brute_fp32": float(np.percentile(brute32, 50) / np.percentile(times, 50)),
                "speedup_vs_brute": float(np.percentile(brute, 50) / np.percentile(times, 50)),
                "rss_before": mem_before,
                "rss_after": mem_after,
                "rss_after_open": mem_open0,
                "rss_after_probe": mem_probe,
                "probe_queries": n_probe,
                "probe_evicted": evicted,
                "cold_p50_ms": float(np.percentile(cold_ms, 50)),
                "cold_brute_p50_ms": float(np.percentile(cold_brute, 50)),
                "cold_speedup": float(np.percentile(cold_brute, 50) / np.percentile(cold_ms, 50)),
                "dense_store_bytes": store.size_bytes(),
                "sparse_index_bytes": ix.size_bytes(),
                "n_docs": ix.n_docs,
                **context,
            }
            rows.append(row)
    print(
        f"\nbi-granular on {meta['n_docs']:,} topical docs, {store.dim}-d {store.meta['dtype']} dense store "
        f"({store.size_bytes() / 2**20:.0f} MB on disk), k={args.k}, weight {args.weight}"
    )
    print_fixed_table(
        (
            "queries<8 | N>6 | alpha>6 | p50 ms>9 | p99 ms>9 | R@10 fused>12 | R@10 dense>12 | brute16 p50>13"
            " | speedup>9 | brute32 p50>13 | speedup>9"
        ),
        (
            [
                r["queries"],
                r["candidates"],
                f"{r['alpha']:.2f}",
                f"{r['p50_ms']:.3f}",
                f"{r['p99_ms']:.3f}",
                f"{r['recall_fused']:.3f}",
                f"{r['recall_dense']:.3f}",
                f"{r['brute_p50_ms']:.1f}ms",
                f"{r['speedup_vs_brute']:.1f}x",
                f"{r['brute_fp32_p50_ms']:.1f}ms",
                f"{r['speedup_vs_brute_fp32']:.1f}x",
            ]
            for r in rows
        ),
    )
    print(
        "stage p50 ms: "
        + "; ".join(
            f"{r['queries']} N={r['candidates']} a={r['alpha']:g}: "
            + ", ".join(f"{k} {v:.3f}" for k, v in r["stage_p50_ms"].items())
            for r in rows
        )
    )
    last = memory(dense_file)
    mb = 2**20
    for r in rows[:: len(searchers)]:
        b, a = r["rss_before"], r["rss_after"]
        print(
            f"{r['queries']}: RSS {b['VmRSS'] / mb:.0f} -> {a['VmRSS'] / mb:.0f} MB over the bi-granular "
            f"queries (anonymous {b['RssAnon'] / mb:.0f} -> {a['RssAnon'] / mb:.0f} MB); dense store pages "
            f"mapped {b['dense_store_rss'] / mb:.1f} -> {a['dense_store_rss'] / mb:.1f} MB "
            f"of {store.size_bytes() / mb:.0f} MB"
        )
    print(
        f"after opening: RSS {mem_open0['VmRSS'] / mb:.0f} MB, dense store mapped "
        f"{mem_open0['dense_store_rss'] / mb:.1f} MB; after a query at N={probe.candidates} "
        f"{'with the store evicted from the page cache' if evicted else '(store possibly cached)'}: "
        f"{mem_probe['dense_store_rss'] / mb:.1f} MB (RSS {mem_probe['VmRSS'] / mb:.0f} MB); "
        f"after the brute-force scans: {last['dense_store_rss'] / mb:.0f} MB"
    )
    q0name = next(iter(queries))
    print(
        f"cold store (evicted before each query), {q0name} queries: bi-granular N={probe.candidates} p50 "
        f"{np.percentile(cold_ms, 50):.1f} ms vs dense brute force p50 "
        f"{np.percentile(cold_brute, 50):.1f} ms "
        f"({np.percentile(cold_brute, 50) / np.percentile(cold_ms, 50):.1f}x)"
    )
    for n in args.candidates:
        ok = [r for r in rows if r["candidates"] == n and r["alpha"] == 1]
        print(
            "ratio dense brute force (fp16 store / fp32 matrix) / bi-granular (exact candidates) "
            f"p50 at N={n}: "
            + ", ".join(
                f"{r['queries']} {r['speedup_vs_brute']:.1f}x / {r['speedup_vs_brute_fp32']:.1f}x" for r in ok
            )
            + (" (target >= 10x at N=1000)" if n == 1000 else "")
        )
    return rows


# ----------------------------------------------------------------- scifact
def run_scifact(args: argparse.Namespace, work: Path, context: dict) -> list[dict]:
    from indexer.corpus import read_corpus, read_qrels
    from indexer.native.build import build_native_index
    from lsr.runtime import load_encoder
    from plugin.evaluate import evaluate
    from plugin.native import NativeSearcher
    from plugin.prepare import prepare
    from plugin.verify import BiGranularSearcher

    p = prepare(args.data)
    index = work / f"{p.tag}-native-dense-{p.vectors.stem}"
    if not is_current(index):
        build_native_index(index, vector_files=[p.vectors], dense=[p.dense_vectors])
    qrels = read_qrels(args.data / "qrels" / "test.tsv")
    queries = [r for r in read_corpus(args.data / "queries.jsonl") if r.id in qrels]
    texts = [q.text for q in queries]
    sparse = NativeSearcher(index)
    dense_q = load_encoder(p.dense, "query").encode(texts)
    runs = {}
    first = BiGranularSearcher(index, sparse=sparse)
    runs[("dense", "exact")] = {q.id: first.dense_search(dense_q[i], 100) for i, q in enumerate(queries)}
    for mode, enc_dir in (("siamese", p.splade), ("inference-free", p.free)):
        sq = load_encoder(enc_dir, "query", max_length=64).encode(texts)
        runs[(mode, "sparse")] = dict(
            zip([q.id for q in queries], sparse.batch_search(sq, k=100), strict=True)
        )
        for fusion in ("linear", "rrf"):
            for n in args.candidates:
                s = BiGranularSearcher(index, candidates=n, fusion=fusion, weight=args.weight, sparse=sparse)
                hits = s.batch_search(sq, dense_q, k=100)
                runs[(mode, f"bi-granular {fusion} N={n}")] = dict(
                    zip([q.id for q in queries], hits, strict=True)
                )
    rows = []
    print(
        f"\nSciFact test ({len(queries)} queries): SPLADE-tiny + all-MiniLM-L6-v2, "
        f"fusion weight {args.weight}"
    )
    table = "mode<16 | run<28 | nDCG@10>9 | R@100>9"
    print(table_header(table))
    for (mode, name), run in runs.items():
        m = evaluate(run, qrels, ["ndcg@10", "recall@100"])
        print(table_line(table, [mode, name, f"{m['ndcg@10']:.4f}", f"{m['recall@100']:.4f}"]))
        rows.append({"bench": "verify", "corpus": "scifact", "mode": mode, "run": name, **m, **context})
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    setup_logging(args.verbose)
    context = {"git": git_state(), "machine": machine_info(), "time": time.strftime("%Y-%m-%dT%H:%M:%S")}
    with work_dir(args.work, "lsr-verify-") as work:
        rows = (run_scifact if args.corpus == "scifact" else run_topical)(args, work, context)
    append_jsonl(args.out, rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
