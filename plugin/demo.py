"""The main job: real SPLADE weights -> ONNX -> document vectors -> exact search -> metrics.

Runs the siamese mode (queries through the model) and the inference-free mode (queries as
IDF-weighted tokens, no model at query time) on a BEIR directory and prints one summary table.
Exports and document vectors are cached under the work folder, so a second run skips encoding.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np

from indexer.corpus import read_corpus, read_qrels
from indexer.encode import encode_corpus
from indexer.jsonvector import load_batch
from lsr.manifest import MANIFEST
from lsr.models import cache_dir, fetch
from lsr.runtime import load_encoder
from plugin.bruteforce import BruteForceSearcher
from plugin.evaluate import evaluate

log = logging.getLogger(__name__)

DEFAULT_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "scifact"


def _export_once(model_dir: Path, out: Path, kind: str, dtype: str, idf_corpus: Path | None) -> Path:
    if (out / MANIFEST).is_file():
        return out
    try:
        from lsr.export import export
    except ImportError as e:
        raise ImportError("the demo exports the model and needs lsr[export]: run scripts/setup.sh") from e
    idf = None
    if idf_corpus is not None:
        from lsr.idf import compute_idf
        from lsr.tokenize import Tokenizer

        idf = compute_idf((r.text for r in read_corpus(idf_corpus)), Tokenizer(model_dir / "tokenizer.json"))
    export(model_dir, out, kind, "vocab", dtype, idf=idf)
    return out


def _subset(corpus: Path, max_docs: int | None, work: Path) -> Path:
    if max_docs is None:
        return corpus
    out = work / f"{corpus.parent.name}-first{max_docs}.jsonl"
    if not out.is_file():
        lines = []
        with open(corpus, encoding="utf-8") as f:
            for line in f:
                if line.strip():
                    lines.append(line)
                if len(lines) == max_docs:
                    break
        tmp = out.with_suffix(".tmp")
        tmp.write_text("".join(lines), encoding="utf-8")
        tmp.rename(out)
    return out


def run_demo(
    data: Path | None = None,
    max_docs: int | None = None,
    max_length: int = 256,
    dtype: str = "fp32",
    work: Path | None = None,
) -> dict[str, dict[str, float]]:
    data = Path(data or DEFAULT_DATA)
    if not (data / "corpus.jsonl").is_file():
        raise FileNotFoundError(
            f"{data} is not a BEIR directory (corpus.jsonl, queries.jsonl, qrels/test.tsv)"
        )
    work = Path(work or cache_dir() / "demo")
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()

    model_dir = fetch()
    corpus = _subset(data / "corpus.jsonl", max_docs, work)
    tag = f"{data.name}{'' if max_docs is None else f'-first{max_docs}'}"
    splade = _export_once(model_dir, work / f"splade-tiny-{dtype}", "splade", dtype, None)
    free = _export_once(model_dir, work / f"splade-tiny-if-{dtype}-{tag}", "inference-free", dtype, corpus)

    vectors = work / f"{tag}-splade-tiny-{dtype}-{max_length}.jsonl.gz"
    doc_encoder = load_encoder(splade, "doc", max_length=max_length)
    t_enc = time.perf_counter()
    stats = encode_corpus(doc_encoder, corpus, vectors, batch_size=8)
    enc_s = time.perf_counter() - t_enc
    docids, docs = load_batch(vectors, doc_encoder.vocab)
    searcher = BruteForceSearcher(docids, docs)

    qrels = read_qrels(data / "qrels" / "test.tsv")
    queries = [r for r in read_corpus(data / "queries.jsonl") if r.id in qrels]
    rows = {}
    for mode, enc_dir in (("siamese", splade), ("inference-free", free)):
        q_encoder = load_encoder(enc_dir, "query", max_length=64)
        enc_ms, search_ms, run = [], [], {}
        for q in queries:
            t = time.perf_counter()
            qv = q_encoder.encode([q.text])
            t1 = time.perf_counter()
            run[q.id] = searcher.search(qv, k=100)
            t2 = time.perf_counter()
            enc_ms.append((t1 - t) * 1e3)
            search_ms.append((t2 - t1) * 1e3)
        metrics = evaluate(run, qrels)
        rows[mode] = {
            **metrics,
            "query_encode_p50_ms": float(np.percentile(enc_ms, 50)),
            "search_p50_ms": float(np.percentile(search_ms, 50)),
            "search_p99_ms": float(np.percentile(search_ms, 99)),
        }

    print(
        f"\nlsr demo: {data} ({len(docids)} docs, {len(queries)} test queries), SPLADE-tiny {dtype}, "
        f"docs at {max_length} tokens, exact brute-force search"
    )
    if stats.written:
        print(
            f"encoded {stats.written} docs in {enc_s:.1f}s ({stats.written / enc_s:.1f} docs/s); "
            f"mean {docs.row_nnz().mean():.0f} terms/doc"
        )
    else:
        print(f"document vectors from cache: {vectors}")
    header = (
        f"{'mode':<16}{'nDCG@10':>9}{'R@100':>8}{'MRR@10':>8}{'q-enc p50':>11}{'search p50':>12}{'p99':>8}"
    )
    print(header)
    print("-" * len(header))
    for mode, r in rows.items():
        print(
            f"{mode:<16}{r['ndcg@10']:>9.4f}{r['recall@100']:>8.4f}{r['mrr@10']:>8.4f}"
            f"{r['query_encode_p50_ms']:>9.2f}ms{r['search_p50_ms']:>10.2f}ms{r['search_p99_ms']:>6.2f}ms"
        )
    print(f"total {time.perf_counter() - t0:.1f}s")
    return rows
