"""The main job: real SPLADE weights -> ONNX -> document vectors -> indexes -> search -> metrics.

Runs the siamese mode (queries through the model) and the inference-free mode (queries as
IDF-weighted tokens, no model at query time) on a BEIR directory, on the native index (numba
block-max search, exact), on a Lucene impact index, and on the float brute-force reference, with
Lucene BM25 as the anchor; then dense-only (all-MiniLM-L6-v2, exact over the on-disk store) and
bi-granular (sparse top-1000 verified by the dense store, :mod:`plugin.verify`), and prints one table.
Exports, document vectors and indexes are cached under the work folder, so a second run skips them.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np

from indexer.corpus import read_corpus, read_qrels
from indexer.encode import encode_corpus
from indexer.jsonvector import load_batch
from lsr.manifest import Manifest
from lsr.runtime import load_encoder
from plugin.bruteforce import BruteForceSearcher
from plugin.evaluate import evaluate
from plugin.options import DEFAULT_CANDIDATES, QUERY_MAX_LENGTH
from plugin.prepare import Prepared, export_once, prepare
from plugin.searcher import Searcher

log = logging.getLogger(__name__)


def _timed_run(queries, encode, search) -> tuple[dict, list[float], list[float]]:
    for q in queries[:10]:  # warm-up (JIT, caches), not timed
        search(encode(q.text))
    run, enc_ms, search_ms = {}, [], []
    for q in queries:
        t0 = time.perf_counter()
        vector = encode(q.text)
        t1 = time.perf_counter()
        run[q.id] = search(vector)
        t2 = time.perf_counter()
        enc_ms.append((t1 - t0) * 1e3)
        search_ms.append((t2 - t1) * 1e3)
    return run, enc_ms, search_ms


def _timed_verified(queries, searcher) -> tuple[dict, list[float], list[float]]:
    """:func:`_timed_run` of a verifying :class:`Searcher`: encoding is both encoders' time."""
    for q in queries[:10]:
        searcher.search(q.text, k=100)
    run, enc_ms, search_ms = {}, [], []
    for q in queries:
        t: dict[str, float] = {}
        run[q.id] = searcher.search(q.text, k=100, timings=t)
        enc = t.pop("sparse_encode") + t.pop("dense_encode", 0.0)
        enc_ms.append(enc)
        search_ms.append(sum(t.values()))
    return run, enc_ms, search_ms


def _dir_size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def run_demo(
    data: Path | None = None,
    max_docs: int | None = None,
    max_length: int = 256,
    dtype: str = "fp32",
    work: Path | None = None,
    lucene: bool = True,
    dense: bool = True,
    candidates: int = DEFAULT_CANDIDATES,
    model: Path | None = None,
) -> dict[tuple[str, str], dict[str, float]]:
    """The main job; returns ``{(mode, backend): metrics and latencies}`` and prints the table.

    ``model`` (a model directory from ``lsr train``, with its ``idf.json``) adds the ``trained``
    rows: the model exported inference-free, the corpus encoded with it and indexed on every
    backend, searched with its IDF query side (and verified by the dense store).
    """
    t0 = time.perf_counter()
    p = prepare(data, max_docs, max_length, dtype, work, dense=dense)
    vocab = load_encoder(p.splade, "query").vocab
    docids, docs = load_batch(p.vectors, vocab)
    qrels = read_qrels(p.data / "qrels" / "test.tsv")
    queries = [r for r in read_corpus(p.data / "queries.jsonl") if r.id in qrels]

    from indexer.native.build import build_native_index
    from indexer.native.format import is_current, open_index

    native_dir = p.work / f"{p.tag}-native-{p.vectors.stem}"
    if p.dense_vectors is not None:
        native_dir = native_dir.with_name(f"{native_dir.name}-{p.dense_vectors.stem}")
    if not is_current(native_dir):  # absent, or a cache in an older format
        build_native_index(native_dir, vector_files=[p.vectors], dense=[p.dense_vectors] if p.dense else None)
    native_size = open_index(native_dir, verify=False).size_bytes()
    # name: (the float reference searcher, or an index directory for plugin.searcher.Searcher; size)
    backends: dict[str, tuple[object, int]] = {
        "float-exact": (BruteForceSearcher(docids, docs), 0),
        "native": (native_dir, native_size),
    }
    if lucene:
        from indexer.lucene import build_bm25_index, build_lucene_index
        from indexer.lucene import is_current as lucene_is_current

        impact_dir, bm25_dir = p.work / f"{p.tag}-lucene-{p.vectors.stem}", p.work / f"{p.tag}-bm25"
        if not lucene_is_current(impact_dir):
            build_lucene_index([p.vectors], impact_dir, threads=2)
        if not lucene_is_current(bm25_dir):
            build_bm25_index(p.corpus, bm25_dir, threads=2)
        backends["lucene"] = (impact_dir, _dir_size(impact_dir))

    rows: dict[tuple[str, str], dict[str, float]] = {}
    modes = [("siamese", p.splade, backends), ("inference-free", p.free, backends)]
    trained_native = None
    if model is not None:
        trained, trained_backends, trained_native = _trained_backends(
            p, Path(model), dtype, max_length, lucene
        )
        modes.append(("trained", trained, trained_backends))
    for mode, enc_dir, mode_backends in modes:
        q_encoder = load_encoder(enc_dir, "query", max_length=QUERY_MAX_LENGTH)
        for backend, (index, size) in mode_backends.items():
            if isinstance(index, Path):
                s = Searcher(index, q_encoder)
                encode, search = s.encode, lambda v, s=s: s.search(v, k=100)
            else:
                encode, search = (
                    (lambda text, e=q_encoder: e.encode([text])),
                    (lambda v, b=index: b.search(v, k=100)),
                )
            run, enc_ms, search_ms = _timed_run(queries, encode, search)
            rows[(mode, backend)] = _row(evaluate(run, qrels), enc_ms, search_ms, size)
    if p.dense is not None:
        dense_encoder = load_encoder(p.dense, "query")
        verified = [("siamese", p.splade, native_dir), ("inference-free", p.free, native_dir)]
        if trained_native is not None:
            verified.append(("trained", modes[-1][1], trained_native))
        for i, (mode, enc_dir, index) in enumerate(verified):
            q_encoder = load_encoder(enc_dir, "query", max_length=QUERY_MAX_LENGTH)
            s = Searcher(index, q_encoder, dense_encoder, candidates=candidates)
            store_size = s.verifier.store.size_bytes()
            if i == 0:
                v = s.verifier
                run, enc_ms, search_ms = _timed_run(
                    queries, lambda text, v=v: v.encode([text])[0], lambda e, v=v: v.dense_search(e, 100)
                )
                rows[("dense", "dense-store")] = _row(evaluate(run, qrels), enc_ms, search_ms, store_size)
            run, enc_ms, search_ms = _timed_verified(queries, s)
            size = s.native.index.size_bytes() + store_size
            rows[(f"{mode}+dense", "native+store")] = _row(evaluate(run, qrels), enc_ms, search_ms, size)
    if lucene:
        bm25 = Searcher(bm25_dir)
        run, enc_ms, search_ms = _timed_run(queries, lambda text: text, lambda t: bm25.search(t, k=100))
        rows[("bm25", "lucene")] = _row(evaluate(run, qrels), enc_ms, search_ms, _dir_size(bm25_dir))

    print(
        f"\nlsr demo: {p.data} ({len(docids)} docs, {len(queries)} test queries), SPLADE-tiny {dtype}, "
        f"docs at {max_length} tokens, queries at 64"
    )
    if p.encoded:
        print(
            f"encoded {p.encoded} docs in {p.encode_seconds:.1f}s "
            f"({p.encoded / p.encode_seconds:.1f} docs/s); "
            f"mean {docs.row_nnz().mean():.0f} terms/doc"
        )
    else:
        print(f"document vectors from cache: {p.vectors}")
    if p.dense_encoded:
        print(
            f"encoded {p.dense_encoded} docs with all-MiniLM-L6-v2 in {p.dense_encode_seconds:.1f}s "
            f"({p.dense_encoded / p.dense_encode_seconds:.1f} docs/s)"
        )
    if p.dense is not None:
        print(
            f"dense: all-MiniLM-L6-v2 (docs at {min(max_length, 256)} tokens, fp16 store); "
            f"+dense rows verify the top {candidates} sparse hits: dense + 0.3 x min-max-normalised sparse"
        )
    header = (
        f"{'mode':<22}{'backend':<14}{'nDCG@10':>8}{'R@100':>8}{'MRR@10':>8}"
        f"{'q-enc p50':>11}{'search p50':>12}{'p99':>9}{'index':>9}"
    )
    print(header)
    print("-" * len(header))
    for (mode, backend), r in rows.items():
        size = f"{r['index_bytes'] / 2**20:.1f}MB" if r["index_bytes"] else "memory"
        print(
            f"{mode:<22}{backend:<14}{r['ndcg@10']:>8.4f}{r['recall@100']:>8.4f}{r['mrr@10']:>8.4f}"
            f"{r['query_encode_p50_ms']:>9.2f}ms{r['search_p50_ms']:>10.2f}ms{r['search_p99_ms']:>7.2f}ms"
            f"{size:>9}"
        )
    print(f"total {time.perf_counter() - t0:.1f}s")
    return rows


def _trained_backends(p: Prepared, model: Path, dtype: str, max_length: int, lucene: bool):
    """The ``lsr train`` model exported, its corpus vectors and indexes (cached by its weights' hash)."""
    import hashlib

    from indexer.native.build import build_native_index
    from indexer.native.format import is_current, open_index

    digest = hashlib.sha256()
    for name in ("model.safetensors", "idf.json"):
        digest.update((model / name).read_bytes())
    tag = f"trained-{model.name}-{digest.hexdigest()[:10]}-{dtype}"
    enc = export_once(model, p.work / tag, "inference-free", dtype, None)
    max_length = min(max_length, Manifest.load(enc).max_length)  # a trained model may be shorter
    vectors = p.work / f"{p.tag}-{tag}-{max_length}.jsonl.gz"
    encode_corpus(load_encoder(enc, "doc", max_length=max_length), p.corpus, vectors, batch_size=8)
    native_dir = p.work / f"{p.tag}-native-{tag}"
    if p.dense_vectors is not None:
        native_dir = native_dir.with_name(f"{native_dir.name}-{p.dense_vectors.stem}")
    if not is_current(native_dir):
        build_native_index(native_dir, vector_files=[vectors], dense=[p.dense_vectors] if p.dense else None)
    backends: dict[str, tuple[object, int]] = {
        "native": (native_dir, open_index(native_dir, verify=False).size_bytes())
    }
    if lucene:
        from indexer.lucene import build_lucene_index
        from indexer.lucene import is_current as lucene_is_current

        impact_dir = p.work / f"{p.tag}-lucene-{tag}"
        if not lucene_is_current(impact_dir):
            build_lucene_index([vectors], impact_dir, threads=2)
        backends["lucene"] = (impact_dir, _dir_size(impact_dir))
    return enc, backends, native_dir


def _row(metrics: dict, enc_ms: list[float], search_ms: list[float], size: int) -> dict[str, float]:
    return {
        **metrics,
        "query_encode_p50_ms": float(np.percentile(enc_ms, 50)),
        "search_p50_ms": float(np.percentile(search_ms, 50)),
        "search_p99_ms": float(np.percentile(search_ms, 99)),
        "index_bytes": size,
    }
