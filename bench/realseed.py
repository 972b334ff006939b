"""A real-seeded synthetic learned-sparse collection: variants of real SPLADE document vectors.

The topical generator (:mod:`bench.synthetic`) draws terms from Zipf tables; on it the engine ran 7x
faster than a scan, on real-shaped data 2x. Here every generated document starts from a *real* one:

- seeds: the documents of SciFact, cranfield and med (``../shared/data``) encoded by the real SPLADE
  model the project ships (:func:`plugin.prepare.prepare`, cached under ``~/.cache/lsr/demo``);
- a document copies one seed's terms, each kept with probability ``keep``, each weight's activation
  (``a`` in SPLADE's ``w = log(1 + a)``) times log-normal noise of sigma ``noise``, plus terms the seed
  lacks borrowed from one of its ``neighbours`` nearest seeds (dot product, scipy, cached), so that
  ``borrow`` is their share of the document's terms; ~185 distinct terms per document by default;
- document ``doc{i}`` copies seed ``i mod n_seeds`` (every seed is used equally) and the rows come in a
  random permutation of the ids, so that row order carries no seed order;
- query sets: ``splade``, the seed collections' test queries encoded by the same SPLADE model (query
  side, 64 tokens); ``splade-v3`` / ``splade-pp-ed``, the real MS MARCO dev query vectors of
  :mod:`bench.synthetic`'s data; ``idf``, the same test queries tokenized by the model's tokenizer,
  each distinct token weighted by its BM25 IDF over the generated collection (as
  :class:`lsr.runtime.IdfQueryEncoder` weighs them).

Everything is vectorised and seeded; ``documents(...)`` yields ``(ids, SparseBatch)`` chunks.
``python -m bench.realseed --docs N --stats`` prints :mod:`bench.corpus_stats` side by side for this
generator, the topical one and the real seeds, and appends a JSON line to
``bench/results/corpus-stats.jsonl``.
"""

from __future__ import annotations

import argparse
import collections
import gzip
import hashlib
import json
import logging
import platform
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
from numpy.typing import NDArray

from bench._context import (
    REPO,
    add_output_arguments,
    append_jsonl,
    positive_int,
    record_context,
    setup_logging,
    utc_stamp,
)
from bench.synthetic import generate
from lsr.sparse import SparseBatch, token_index

log = logging.getLogger("bench.realseed")

DATA = REPO.parent / "shared" / "data"
SEED_SETS = ("scifact", "cranfield", "med")
QUERY_SOURCES = ("seed", "splade-v3", "splade-pp-ed")
QUERY_MAX_LENGTH = 64  # as bench.search's SciFact query encoder
NEIGHBOUR_CHUNK = 512  # seed rows per dense similarity block


@dataclass(frozen=True)
class Seeds:
    """The real material a :class:`RealSeededCollection` varies.

    Attributes
    ----------
    docs : SparseBatch
        The real SPLADE document vectors, ``[n_seeds, vocab]`` (:func:`load_seeds` leaves empty ones out).
    queries : SparseBatch
        The seed collections' test queries encoded by the SPLADE query encoder.
    query_tokens : SparseBatch
        The same queries' distinct tokens (special tokens excluded), weight 1: the ``idf`` queries
        before weighting. Rows line up with ``queries``.
    sizes : dict
        Documents and test queries per seed collection, ``{name: (docs, queries)}``.
    cache : Path or None
        Where the nearest-neighbour table is kept between runs; None for none.
    """

    docs: SparseBatch
    queries: SparseBatch
    query_tokens: SparseBatch
    sizes: dict[str, tuple[int, int]]
    cache: Path | None = None

    @property
    def vocab(self) -> tuple[str, ...]:
        return self.docs.vocab


def seeds_missing(names: Sequence[str] = SEED_SETS, data: Path = DATA) -> str | None:
    """Why :func:`load_seeds` cannot run (a BEIR folder or the query vectors absent), or None."""
    for name in names:
        d = data / name
        for f in ("corpus.jsonl", "queries.jsonl", "qrels/test.tsv"):
            if not (d / f).is_file():
                return f"seed collection {name} not found: {d / f} is missing (the shared BEIR data)"
    return None


def load_seeds(names: Sequence[str] = SEED_SETS, data: Path = DATA, work: Path | None = None) -> Seeds:
    """The real SPLADE vectors of the seed collections' documents and test queries (encoded once).

    Parameters
    ----------
    names : sequence of str
        BEIR folders under ``data`` (each with ``corpus.jsonl``, ``queries.jsonl``, ``qrels/test.tsv``).
    data : Path
        The shared data folder.
    work : Path, optional
        The cache folder, as :func:`plugin.prepare.prepare` takes it (``~/.cache/lsr/demo``).

    Returns
    -------
    Seeds
        Documents and queries of all the collections, in ``names`` order.
    """
    from indexer.corpus import read_corpus, read_qrels
    from indexer.encode import encode_corpus
    from indexer.jsonvector import load_batch
    from lsr.runtime import load_encoder
    from lsr.tokenize import Tokenizer
    from plugin.prepare import prepare

    reason = seeds_missing(names, data)
    if reason:
        raise FileNotFoundError(reason)
    docs, queries, texts, sizes = [], [], [], {}
    work_used = None
    tokenizer = None
    for name in names:
        p = prepare(data / name, dense=False, work=work)
        work_used = p.work
        if tokenizer is None:
            tokenizer = Tokenizer(p.splade / "tokenizer.json")
        _, batch = load_batch(p.vectors, tokenizer.vocab)
        empty = batch.row_nnz() == 0
        if empty.any():  # an empty text (cranfield has some) would seed empty documents
            log.info("%s: %d empty document vector(s) left out of the seeds", name, empty.sum())
            batch = batch.take(np.flatnonzero(~empty))
        qrels = read_qrels(data / name / "qrels" / "test.tsv")
        records = [r for r in read_corpus(data / name / "queries.jsonl") if r.id in qrels]
        subset = _write_queries(p.work / f"{p.tag}-test-queries.jsonl", records)
        out = p.work / f"{p.tag}-test-queries-splade-tiny-fp32-{QUERY_MAX_LENGTH}.jsonl.gz"
        encoder = load_encoder(p.splade, "query", max_length=QUERY_MAX_LENGTH)
        encode_corpus(encoder, subset, out, show_progress=False)
        qids, qbatch = load_batch(out, tokenizer.vocab)
        row = {q: i for i, q in enumerate(qids)}
        docs.append(batch)
        queries.append(qbatch.take([row[r.id] for r in records]))
        texts.extend(r.text for r in records)
        sizes[name] = (len(batch), len(records))
    tokens = _token_rows(tokenizer, texts)
    log.info("seeds: %s", ", ".join(f"{n} {d} docs, {q} test queries" for n, (d, q) in sizes.items()))
    return Seeds(SparseBatch.concat(docs), SparseBatch.concat(queries), tokens, sizes, work_used)


def _write_queries(path: Path, records) -> Path:
    if not path.is_file():
        tmp = path.with_suffix(".tmp")
        tmp.write_text("".join(json.dumps({"_id": r.id, "text": r.text}) + "\n" for r in records), "utf-8")
        tmp.rename(path)
    return path


def nearest_neighbours(docs: SparseBatch, k: int, cache: Path | None = None) -> NDArray[np.int64]:
    """Each row's ``k`` nearest other rows by dot product, nearest first.

    Parameters
    ----------
    docs : SparseBatch
        The seed documents, ``[n, vocab]``.
    k : int
        Neighbours per row.
    cache : Path, optional
        A folder where the table is kept, keyed by a hash of ``docs`` and ``k``.

    Returns
    -------
    ndarray of int64, shape ``[n, k]``
        Row indexes; -1 pads rows with fewer than ``k`` others, or other rows sharing no term.
    """
    n = len(docs)
    path = None
    if cache is not None:
        h = hashlib.sha1()
        for a in (docs.indptr, docs.term_ids, docs.weights):
            h.update(np.ascontiguousarray(a).data)
        path = cache / f"realseed-neighbours-{h.hexdigest()[:12]}-{n}-{k}.npy"
        if path.is_file():
            return np.load(path)
    start = time.perf_counter()
    x = docs.to_scipy()
    xt = x.T.tocsr()
    out = np.full((n, k), -1, np.int64)
    m = min(k, n - 1)
    for s in range(0, n, NEIGHBOUR_CHUNK):
        scores = (x[s : s + NEIGHBOUR_CHUNK] @ xt).toarray()
        rows = np.arange(len(scores))
        scores[rows, s + rows] = -np.inf  # a document is not its own neighbour
        if m <= 0:
            continue
        top = np.argpartition(-scores, m - 1, axis=1)[:, :m]
        top_scores = np.take_along_axis(scores, top, 1)
        order = np.argsort(-top_scores, axis=1, kind="stable")
        top, top_scores = np.take_along_axis(top, order, 1), np.take_along_axis(top_scores, order, 1)
        out[s : s + len(scores), :m] = np.where(top_scores > 0, top, -1)
    log.info("nearest neighbours of %d seeds in %.1f s", n, time.perf_counter() - start)
    if path is not None:
        tmp = path.with_suffix(".tmp.npy")
        np.save(tmp, out)
        tmp.rename(path)
    return out


def _gather(
    indptr: NDArray[np.int64], rows: NDArray[np.int64]
) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    """(output row, position) of every entry of the CSR rows ``rows`` (``indptr``), row-major."""
    lengths = indptr[rows + 1] - indptr[rows]
    out_start = np.zeros(len(rows) + 1, np.int64)
    np.cumsum(lengths, out=out_start[1:])
    row = np.repeat(np.arange(len(rows)), lengths)
    pos = np.repeat(indptr[rows] - out_start[:-1], lengths) + np.arange(out_start[-1])
    return row, pos


def _borrowable(docs: SparseBatch, nbrs: NDArray[np.int64]) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    """For each (seed, neighbour slot) pair, row ``seed * k + slot``, the positions in ``docs`` of the
    neighbour's terms the seed lacks (CSR; a -1 neighbour has none); one empty row more at the end."""
    n, k = nbrs.shape
    vocab_size = len(docs.vocab)
    seed_keys = np.repeat(np.arange(n), docs.row_nnz()) * vocab_size + docs.term_ids
    indptr_parts, pos_parts, offset = [np.zeros(1, np.int64)], [], 0
    for s in range(0, n, 1024):  # seeds per block, to bound the temporaries
        pairs = nbrs[s : s + 1024].ravel()
        valid = pairs >= 0
        row, pos = _gather(docs.indptr, np.where(valid, pairs, 0))
        pos = pos[valid[row]]
        row = row[valid[row]]
        keys = (s + row // k) * vocab_size + docs.term_ids[pos]
        at = np.searchsorted(seed_keys, keys).clip(max=max(len(seed_keys) - 1, 0))
        new = seed_keys[at] != keys if len(seed_keys) else np.ones(len(keys), bool)
        counts = np.bincount(row[new], minlength=len(pairs))
        indptr_parts.append(offset + np.cumsum(counts))
        offset += int(counts.sum())
        pos_parts.append(pos[new])
    indptr_parts.append(np.full(1, offset))
    return np.concatenate(indptr_parts), np.concatenate(pos_parts) if pos_parts else np.zeros(0, np.int64)


@dataclass
class RealSeededCollection:
    """The generator's knobs over a :class:`Seeds` set (deterministic from ``seed``).

    Parameters
    ----------
    seeds : Seeds
        The real document and query vectors (:func:`load_seeds`).
    keep : float
        Probability that a seed term is copied, in (0, 1].
    noise : float
        Sigma of the log-normal factor (median 1) on every weight's SPLADE activation ``a``, where
        ``w = log(1 + a)``; >= 0. Weights stay within the seeds' range (clipped at its ends).
    borrow : float
        Share of a document's terms borrowed from a neighbour of its seed, in [0, 1).
    neighbours : int
        Nearest seeds a document may borrow from (one, drawn at random, per document).
    seed : int
        Random seed.
    """

    seeds: Seeds
    # 0.62 x 237 real terms / (1 - 0.2) borrowed share = ~184 terms, the outside measurement's 185.
    keep: float = 0.62
    noise: float = 0.3
    borrow: float = 0.2
    neighbours: int = 10
    seed: int = 0

    def __post_init__(self) -> None:
        if not 0 < self.keep <= 1:
            raise ValueError(f"keep must be in (0, 1], got {self.keep}")
        if not self.noise >= 0:
            raise ValueError(f"noise must be >= 0, got {self.noise}")
        if not 0 <= self.borrow < 1:
            raise ValueError(f"borrow must be in [0, 1), got {self.borrow}")
        if self.neighbours < 1:
            raise ValueError(f"neighbours must be >= 1, got {self.neighbours}")
        docs = self.seeds.docs
        if len(docs) == 0:
            raise ValueError("seeds hold no documents")
        self.vocab = docs.vocab
        self.weight_range = (float(docs.weights.min()), float(docs.weights.max())) if docs.nnz else (1, 1)
        nbrs = nearest_neighbours(docs, self.neighbours, self.seeds.cache)
        self.n_nbrs = (nbrs >= 0).sum(1)
        self.pair_indptr, self.pair_pos = _borrowable(docs, nbrs)

    @property
    def knobs(self) -> dict:
        return {"keep": self.keep, "noise": self.noise, "borrow": self.borrow, "neighbours": self.neighbours}

    def documents(self, n_docs: int, chunk: int = 20_000) -> Iterator[tuple[list[str], SparseBatch]]:
        """``(ids, SparseBatch)`` chunks of the collection: ids ``doc0`` .. ``doc{n_docs-1}`` in a random
        order, float32 weights within the seeds' range."""
        ids = np.random.default_rng((self.seed, 4)).permutation(n_docs)
        for start in range(0, n_docs, chunk):
            rng = np.random.default_rng((self.seed, 1, start))
            part = ids[start : start + chunk]
            yield [f"doc{i}" for i in part.tolist()], self._variants(rng, part % len(self.seeds.docs))

    def _variants(self, rng: np.random.Generator, src: NDArray[np.int64]) -> SparseBatch:
        docs, n, vocab_size = self.seeds.docs, len(src), len(self.vocab)
        row, pos = _gather(docs.indptr, src)
        kept = rng.random(len(row), np.float32) < self.keep
        # A document keeps at least its seed's first term (a very short seed could lose all).
        n_kept = np.bincount(row[kept], minlength=n)
        lost = (n_kept == 0) & (docs.indptr[src + 1] > docs.indptr[src])
        row_start = np.zeros(n, np.int64)
        np.cumsum(np.diff(docs.indptr)[src][:-1], out=row_start[1:])
        kept[row_start[lost]] = True
        n_kept[lost] = 1
        row, pos = row[kept], pos[kept]
        if self.borrow > 0:
            # One neighbour per document; the terms of it its seed lacks are each taken with the
            # probability that makes them ``borrow`` of the document's terms on average.
            pick = (rng.random(n) * self.n_nbrs[src]).astype(np.int64)
            pair = np.where(self.n_nbrs[src] > 0, src * self.neighbours + pick, len(self.pair_indptr) - 2)
            b_row, b_at = _gather(self.pair_indptr, pair)
            n_new = np.diff(self.pair_indptr)[pair]
            want = n_kept * (self.borrow / (1 - self.borrow))
            p = np.divide(want, n_new, out=np.zeros(n), where=n_new > 0).astype(np.float32)
            take = rng.random(len(b_row), np.float32) < p[b_row]
            b_row, b_pos = b_row[take], self.pair_pos[b_at[take]]
            keys = row * vocab_size + docs.term_ids[pos]
            b_keys = b_row * vocab_size + docs.term_ids[b_pos]
            # Merge two sorted key arrays: each borrowed entry lands before the kept ones above it.
            at = np.searchsorted(keys, b_keys) + np.arange(len(b_keys))
            slot = np.ones(len(keys) + len(b_keys), bool)
            slot[at] = False
            merged = np.empty(len(slot), np.int64)
            merged[slot], merged[at] = pos, b_pos
            merged_row = np.empty(len(slot), np.int64)
            merged_row[slot], merged_row[at] = row, b_row
            row, pos = merged_row, merged
        weights = docs.weights[pos]
        if self.noise > 0:
            # On the activation a of SPLADE's w = log(1 + a): small weights get the log-normal factor
            # as they are, saturated ones move less, as the model's own do (plain factors put 1% of the
            # weights above the seeds' largest, against 0.05% here at sigma 0.3).
            factor = np.exp(np.float32(self.noise) * rng.standard_normal(len(pos), np.float32))
            weights = np.log1p(np.expm1(weights) * factor)
        lo, hi = self.weight_range
        np.clip(weights, np.float32(lo), np.float32(hi), out=weights)
        indptr = np.zeros(n + 1, np.int64)
        np.cumsum(np.bincount(row, minlength=n), out=indptr[1:])
        return SparseBatch(indptr, docs.term_ids[pos], weights, self.vocab)

    def _query_order(self, n: int) -> NDArray[np.int64]:
        """The first ``n`` of a seeded shuffle of the test queries (the seed collections mixed)."""
        return np.random.default_rng((self.seed, 2)).permutation(len(self.seeds.queries))[:n]

    def splade_queries(
        self, n: int, source: Literal["seed", "splade-v3", "splade-pp-ed"] = "seed"
    ) -> SparseBatch:
        """Real SPLADE query vectors: ``n`` of the seed test queries as the SPLADE model encodes them
        (``seed``), or of the MS MARCO dev query vectors (``splade-v3``, ``splade-pp-ed``).

        Parameters
        ----------
        n : int
            Queries wanted; fewer when the source holds fewer.
        source : {"seed", "splade-v3", "splade-pp-ed"}
            Which real vectors.

        Returns
        -------
        SparseBatch
            ``[min(n, available), vocab]``, float32 weights.
        """
        if source not in QUERY_SOURCES:
            raise ValueError(f"source must be one of {', '.join(QUERY_SOURCES)}, got {source!r}")
        if source == "seed":
            return self.seeds.queries.take(self._query_order(n))
        return msmarco_queries(n, self.vocab, source, seed=self.seed)

    def idf_queries(self, n: int, df: NDArray[np.int64], n_docs: int) -> SparseBatch:
        """Inference-free queries: the tokens of ``n`` seed test queries (the ``splade`` set's texts, in
        its order), each weighted by its BM25 IDF over the collection; tokens no document holds are left
        out (they match nothing).

        Parameters
        ----------
        n : int
            Queries wanted.
        df : ndarray of int64, shape ``[vocab]``
            Documents per term of the generated collection.
        n_docs : int
            Documents in it.

        Returns
        -------
        SparseBatch
            ``[min(n, available), vocab]``, float32 weights.
        """
        return idf_weighted(self.seeds.query_tokens.take(self._query_order(n)), df, n_docs)

    def idf_msmarco_queries(self, n: int, df: NDArray[np.int64], n_docs: int) -> SparseBatch:
        """Short inference-free queries: ``n`` MS MARCO dev query texts (seeded draw), their distinct
        tokens (the SPLADE model's tokenizer, special tokens left out) weighted as :meth:`idf_queries`
        weighs them: ~8 tokens a query, the shape of web-search queries."""
        from bench.synthetic import QUERY_DATA
        from lsr.models import SPLADE_TINY, fetch
        from lsr.tokenize import Tokenizer

        path = QUERY_DATA / "queries.jsonl"
        if not path.is_file():
            raise FileNotFoundError(f"MS MARCO dev query texts not found at {path} (the shared data)")
        lines = path.read_text(encoding="utf-8").splitlines()
        picked = np.random.default_rng((self.seed, 4)).permutation(len(lines))[:n].tolist()
        texts = [json.loads(lines[i])["text"] for i in picked]
        tokenizer = Tokenizer(fetch(SPLADE_TINY) / "tokenizer.json")
        if tuple(tokenizer.vocab) != self.vocab:
            raise ValueError("the SPLADE tokenizer's vocabulary is not the seeds' vocabulary")
        return idf_weighted(_token_rows(tokenizer, texts), df, n_docs)


def _token_rows(tokenizer, texts: list[str]) -> SparseBatch:
    """Each text's distinct token ids (special tokens left out), weight 1."""
    special = np.asarray(tokenizer.special_ids, np.int64)
    rows = []
    for e in tokenizer.encode(texts):
        ids = np.unique(np.asarray(e.ids, np.int64))
        rows.append(ids[~np.isin(ids, special)])
    indptr = np.zeros(len(rows) + 1, np.int64)
    np.cumsum([len(r) for r in rows], out=indptr[1:])
    terms = np.concatenate(rows).astype(np.int32) if rows else np.zeros(0, np.int32)
    return SparseBatch(indptr, terms, np.ones(len(terms), np.float32), tuple(tokenizer.vocab))


def idf_weighted(tokens: SparseBatch, df: NDArray[np.int64], n_docs: int) -> SparseBatch:
    """``tokens``' rows weighted by BM25 IDF over a collection (``df`` per term, ``n_docs``); tokens no
    document holds are left out (they match nothing)."""
    from lsr.idf import bm25_idf

    present = df[tokens.term_ids] > 0
    rows = np.repeat(np.arange(len(tokens)), tokens.row_nnz())[present]
    indptr = np.zeros(len(tokens) + 1, np.int64)
    np.cumsum(np.bincount(rows, minlength=len(tokens)), out=indptr[1:])
    terms = tokens.term_ids[present]
    return SparseBatch(indptr, terms, bm25_idf(df[terms], n_docs), tokens.vocab)


def msmarco_queries(n: int, vocab: tuple[str, ...], source: str = "splade-v3", seed: int = 0) -> SparseBatch:
    """``n`` of the real MS MARCO dev query vectors (Anserini's pretokenized form, a token repeated
    weight x 100 times), drawn without replacement (seeded); weights / 100."""
    from bench.synthetic import QUERY_DATA, QUERY_FILES

    path = QUERY_DATA / QUERY_FILES[source]
    if not path.is_file():
        raise FileNotFoundError(
            f"real query vectors not found at {path} (the shared msmarco-dev-queries data)"
        )
    with gzip.open(path, "rt", encoding="utf-8") as f:
        lines = f.read().splitlines()
    index = token_index(vocab)
    rows = []
    for i in np.random.default_rng((seed, 3)).permutation(len(lines))[:n].tolist():
        counts = collections.Counter(lines[i].partition("\t")[2].split())
        rows.append({t: c / 100.0 for t, c in counts.items() if t in index})
    return SparseBatch.from_dicts(rows, vocab)


# ------------------------------------------------------------------ command line
def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m bench.realseed",
        description="Generate the real-seeded collection; with --stats, compare its statistics with the "
        "topical generator's and the real seeds'.",
    )
    p.add_argument("--docs", type=positive_int, default=50_000, help="documents (default: %(default)s)")
    p.add_argument("--stats", action="store_true", help="measure and compare the corpus statistics")
    p.add_argument(
        "--queries", type=positive_int, default=100, help="queries per query set (default: %(default)s)"
    )
    p.add_argument(
        "--k", type=positive_int, default=10, help="the k of the tie statistics (default: %(default)s)"
    )
    p.add_argument(
        "--keep", type=float, default=RealSeededCollection.keep, help="seed terms kept (default: %(default)s)"
    )
    p.add_argument(
        "--noise",
        type=float,
        default=RealSeededCollection.noise,
        help="log-normal weight sigma (default: %(default)s)",
    )
    p.add_argument(
        "--borrow",
        type=float,
        default=RealSeededCollection.borrow,
        help="borrowed share of terms (default: %(default)s)",
    )
    p.add_argument(
        "--neighbours",
        type=positive_int,
        default=RealSeededCollection.neighbours,
        help="neighbours to borrow from (default: %(default)s)",
    )
    p.add_argument("--seed", type=int, default=0, help="generator seed (default: %(default)s)")
    p.add_argument("--data", type=Path, default=DATA, help="the shared data folder (default: %(default)s)")
    add_output_arguments(p, "corpus-stats")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    setup_logging(args.verbose)
    reason = seeds_missing(data=args.data)
    if reason:
        log.error("%s", reason)
        return 2
    try:
        start = time.perf_counter()
        seeds = load_seeds(data=args.data)
        load_s = time.perf_counter() - start
        start = time.perf_counter()
        coll = RealSeededCollection(
            seeds,
            keep=args.keep,
            noise=args.noise,
            borrow=args.borrow,
            neighbours=args.neighbours,
            seed=args.seed,
        )
    except ValueError as e:
        log.error("%s", e)
        return 2
    setup_s = time.perf_counter() - start
    _, docs, gen_s = generate(coll, args.docs)
    print(
        f"realseed: {len(docs)} documents from {len(seeds.docs)} seeds in {gen_s:.1f} s "
        f"({docs.nnz / len(docs):.1f} terms/doc; seeds loaded in {load_s:.1f} s, "
        f"neighbours in {setup_s:.1f} s)"
    )
    if not args.stats:
        return 0
    return report(args, seeds, coll, docs, gen_s)


def report(
    args: argparse.Namespace, seeds: Seeds, coll: RealSeededCollection, docs: SparseBatch, gen_s: float
) -> int:
    from bench.corpus_stats import corpus_stats, print_stats
    from bench.synthetic import TopicalCollection

    context = record_context(versions())
    n = args.queries
    df = np.bincount(docs.term_ids, minlength=len(docs.vocab))
    corpora = {}
    corpora["realseed"] = (
        docs,
        {
            "splade": coll.splade_queries(n),
            "splade-v3": coll.splade_queries(n, "splade-v3"),
            "idf": coll.idf_queries(n, df, len(docs)),
        },
        gen_s,
    )
    topical = TopicalCollection(coll.vocab, seed=args.seed)
    _, t_docs, t_s = generate(topical, args.docs)
    t_df = np.bincount(t_docs.term_ids, minlength=len(t_docs.vocab))
    corpora["topical"] = (
        t_docs,
        {"splade": topical.splade_queries(n), "idf": topical.idf_queries(n, t_df, len(t_docs))},
        t_s,
    )
    s_docs = seeds.docs
    s_df = np.bincount(s_docs.term_ids, minlength=len(s_docs.vocab))
    corpora["seeds"] = (
        s_docs,
        {"splade": coll.splade_queries(n), "idf": coll.idf_queries(n, s_df, len(s_docs))},
        None,
    )
    stats = {}
    for name, (d, qs, seconds) in corpora.items():
        start = time.perf_counter()
        stats[name] = corpus_stats(d, qs, k=args.k, seed=args.seed)
        stats[name]["generate_s"] = seconds
        log.info("%s: statistics in %.1f s", name, time.perf_counter() - start)
    print_stats(stats, args.k)
    record = {
        "bench": "corpus-stats",
        "time": utc_stamp(),
        "docs": args.docs,
        "queries": n,
        "k": args.k,
        "seed": args.seed,
        "knobs": coll.knobs,
        "seed_sets": {name: {"docs": d, "queries": q} for name, (d, q) in seeds.sizes.items()},
        "corpora": stats,
        "argv": sys.argv[1:],
        **context,
    }
    append_jsonl(args.out, [record])
    print(f"appended 1 line to {args.out}")
    return 0


def versions() -> dict:
    import scipy

    return {"python": platform.python_version(), "numpy": np.__version__, "scipy": scipy.__version__}


if __name__ == "__main__":
    sys.exit(main())
