"""A topical synthetic learned-sparse collection, calibrated on real SPLADE query vectors.

Documents draw their terms from a mixture of a background Zipf distribution over the whole
vocabulary and one or two *topics* (Zipf distributions over a few hundred terms each), so that
doc-id reordering meets structure as in real text; ~120 distinct terms per document, weights
log-normal in (0, 3] like SPLADE's. Two query sets:

- ``splade``: term counts and weights sampled from the real SPLADE-v3 (or SPLADE++ ED) MS MARCO dev
  query vectors in ``../shared/data/msmarco-dev-queries`` (Anserini's pretokenized form: a token
  repeated weight times, weights scaled by 100), terms drawn from one topic plus background;
- ``idf``: inference-free style, ~8 distinct tokens weighted by BM25 IDF over the collection.

Everything is vectorised and seeded; ``documents(...)`` yields ``(ids, SparseBatch)`` chunks.
"""

from __future__ import annotations

import collections
import gzip
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lsr.sparse import SparseBatch

VOCAB_SIZE = 30522
QUERY_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "msmarco-dev-queries"
QUERY_FILES = {
    "splade-v3": "topics.msmarco-passage.dev-subset.splade-v3.tsv.gz",
    "splade-pp-ed": "topics.msmarco-passage.dev-subset.splade-pp-ed.tsv.gz",
}


def _zipf_cdf(n: int, s: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    p = 1.0 / np.arange(1, n + 1) ** s
    return np.cumsum(p / p.sum()), rng.permutation(n)


@dataclass
class TopicalCollection:
    """The generator's parameters and its topic tables (deterministic from ``seed``)."""

    vocab: tuple[str, ...]
    n_topics: int = 1000
    topic_terms: int = 400
    doc_terms: float = 120.0
    topic_share: float = 0.7
    seed: int = 0

    def __post_init__(self) -> None:
        rng = np.random.default_rng(self.seed)
        # Real terms only: skip [PAD], [unusedN], [UNK], [CLS], [SEP], [MASK] of BERT's vocabulary.
        self.valid = np.array(
            [i for i, t in enumerate(self.vocab) if not (t.startswith("[") and t.endswith("]"))], np.int64
        )
        self.bg_cdf, bg_perm = _zipf_cdf(len(self.valid), 1.0, rng)
        self.bg_terms = self.valid[bg_perm]
        self.topic_cdf, _ = _zipf_cdf(self.topic_terms, 0.8, rng)
        self.topics = np.stack(
            [rng.choice(self.valid, self.topic_terms, replace=False) for _ in range(self.n_topics)]
        )

    def _draw(self, rng, topic_of_draw: np.ndarray) -> np.ndarray:
        """One term per entry: from that entry's topic, or the background when the topic is -1."""
        out = np.empty(len(topic_of_draw), np.int64)
        bg = topic_of_draw < 0
        out[bg] = self.bg_terms[
            np.searchsorted(self.bg_cdf, rng.random(bg.sum()), side="right").clip(max=len(self.bg_cdf) - 1)
        ]
        rank = np.searchsorted(self.topic_cdf, rng.random((~bg).sum()), side="right").clip(
            max=self.topic_terms - 1
        )
        out[~bg] = self.topics[topic_of_draw[~bg], rank]
        return out

    def _rows(self, rng, n: int, lengths: np.ndarray, topics: np.ndarray, share: float):
        """Distinct terms per row; ``topics`` is [n, 2] (second column -1 when one topic)."""
        row = np.repeat(np.arange(n), lengths)
        pick = rng.integers(0, 2, len(row))
        second = topics[row, 1]
        topic = np.where((pick == 1) & (second >= 0), second, topics[row, 0])
        topic = np.where(rng.random(len(row)) < share, topic, -1)
        terms = self._draw(rng, topic)
        key = np.unique(row * VOCAB_SIZE * 2 + terms)
        rows, terms = key // (VOCAB_SIZE * 2), key % (VOCAB_SIZE * 2)
        indptr = np.zeros(n + 1, np.int64)
        np.cumsum(np.bincount(rows, minlength=n), out=indptr[1:])
        return indptr, terms.astype(np.int32)

    def documents(self, n_docs: int, chunk: int = 20_000) -> Iterator[tuple[list[str], SparseBatch]]:
        """``(ids, SparseBatch)`` chunks of the collection (float32 weights in (0, 3])."""
        for start in range(0, n_docs, chunk):
            rng = np.random.default_rng((self.seed, 1, start))
            n = min(chunk, n_docs - start)
            # Draws with replacement; ~1.25x the wanted distinct terms survive deduplication.
            lengths = np.clip(rng.lognormal(np.log(self.doc_terms * 1.25), 0.35, n), 8, 600).astype(np.int64)
            topics = np.stack([rng.integers(0, self.n_topics, n), rng.integers(0, self.n_topics, n)], 1)
            topics[rng.random(n) < 0.6, 1] = -1
            indptr, terms = self._rows(rng, n, lengths, topics, self.topic_share)
            weights = np.clip(rng.lognormal(-0.6, 0.7, len(terms)), 0.01, 3.0).astype(np.float32)
            ids = [f"doc{start + i}" for i in range(n)]
            yield ids, SparseBatch(indptr, terms, weights, self.vocab)

    def splade_queries(self, n: int, source: str = "splade-v3", seed: int = 1) -> SparseBatch:
        """SPLADE-style queries: term counts and weights resampled from real query vectors."""
        counts, weights = real_query_stats(source)
        rng = np.random.default_rng((self.seed, 2, seed))
        lengths = (rng.choice(counts, n) * 1.15).astype(np.int64)
        topics = np.stack([rng.integers(0, self.n_topics, n), np.full(n, -1)], 1)
        indptr, terms = self._rows(rng, n, lengths, topics, 0.8)
        w = (rng.choice(weights, len(terms)) / 100.0).astype(np.float32)
        return SparseBatch(indptr, terms, w, self.vocab)

    def idf_queries(self, n: int, df: np.ndarray, n_docs: int, seed: int = 1) -> SparseBatch:
        """Inference-free queries: ~8 distinct tokens weighted by BM25 IDF over the collection."""
        rng = np.random.default_rng((self.seed, 3, seed))
        lengths = np.clip(rng.poisson(9, n), 2, 30)
        topics = np.stack([rng.integers(0, self.n_topics, n), np.full(n, -1)], 1)
        indptr, terms = self._rows(rng, n, lengths, topics, 0.7)
        idf = np.log1p((n_docs - df[terms] + 0.5) / (df[terms] + 0.5)).astype(np.float32)
        keep = df[terms] > 0
        rows = np.repeat(np.arange(n), np.diff(indptr))[keep]
        new_indptr = np.zeros(n + 1, np.int64)
        np.cumsum(np.bincount(rows, minlength=n), out=new_indptr[1:])
        return SparseBatch(new_indptr, terms[keep], idf[keep], self.vocab)


def real_query_stats(source: str = "splade-v3") -> tuple[np.ndarray, np.ndarray]:
    """Distinct terms per query and term weights (x100 integers) of the real query vectors."""
    path = QUERY_DATA / QUERY_FILES[source]
    if not path.is_file():
        raise FileNotFoundError(
            f"real query vectors not found at {path} (the shared msmarco-dev-queries data)"
        )
    counts, weights = [], []
    with gzip.open(path, "rt", encoding="utf-8") as f:
        for line in f:
            _, _, text = line.rstrip("\n").partition("\t")
            c = collections.Counter(text.split())
            counts.append(len(c))
            weights.extend(c.values())
    return np.array(counts), np.array(weights)


def generate(coll, n_docs: int) -> tuple[list[str], SparseBatch, float]:
    """All of a generator's ``documents(n_docs)`` chunks in one batch (ids, batch), and the seconds
    it took: :class:`TopicalCollection` or :class:`bench.realseed.RealSeededCollection`."""
    start = time.perf_counter()
    ids: list[str] = []
    parts = []
    for chunk_ids, chunk in coll.documents(n_docs):
        ids.extend(chunk_ids)
        parts.append(chunk)
    return ids, SparseBatch.concat(parts), time.perf_counter() - start
