"""A BEIR set made ready to search: the real models fetched and exported, its documents encoded.

:func:`prepare` is what ``lsr demo`` and the benchmarks start from; exports and document vectors are
cached under the work folder, so a second call reuses them.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from indexer.corpus import read_corpus
from indexer.encode import encode_corpus
from lsr.manifest import MANIFEST
from lsr.models import MINILM, cache_dir, fetch
from lsr.runtime import load_encoder

DEFAULT_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "scifact"


def export_once(
    model_dir: Path, out: Path, kind: str, dtype: str, idf_corpus: Path | None, echo: bool = False
) -> Path:
    """Export ``model_dir`` to ``out`` unless ``out`` is already an ENCODER_DIR (a cache).

    Parameters
    ----------
    model_dir : Path
        The model to export.
    out : Path
        The ENCODER_DIR to write; returned as it is when it holds a manifest already.
    kind, dtype : str
        As :func:`lsr.export.export` takes them.
    idf_corpus : Path or None
        A corpus whose IDF weights the query side (inference-free); None for none.
    echo : bool
        A decoder's echo input (:func:`lsr.export.export`).

    Returns
    -------
    Path
        ``out``.
    """
    if (out / MANIFEST).is_file():
        return out
    try:
        from lsr.export import export
    except ImportError as e:
        raise ImportError("exporting a model needs lsr[export]: run scripts/setup.sh") from e
    idf = None
    if idf_corpus is not None:
        from lsr.idf import compute_idf
        from lsr.tokenize import Tokenizer

        idf = compute_idf((r.text for r in read_corpus(idf_corpus)), Tokenizer(model_dir / "tokenizer.json"))
    export(model_dir, out, kind, "vocab", dtype, idf=idf, echo=echo)
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


@dataclass
class Prepared:
    """A BEIR set with its encoders exported and its documents encoded (all cached under ``work``)."""

    data: Path
    work: Path
    corpus: Path
    splade: Path
    free: Path
    vectors: Path
    encoded: int
    encode_seconds: float
    tag: str
    dense: Path | None = None
    dense_vectors: Path | None = None
    dense_encoded: int = 0
    dense_encode_seconds: float = 0.0


def prepare(
    data: Path | None = None,
    max_docs: int | None = None,
    max_length: int = 256,
    dtype: str = "fp32",
    work: Path | None = None,
    dense: bool = True,
) -> Prepared:
    """Fetch the real models, export the SPLADE, inference-free and (with ``dense``) all-MiniLM
    encoders, encode the corpus with SPLADE and all-MiniLM (once; cached under ``work``).

    Parameters
    ----------
    data : Path, optional
        A BEIR directory (``corpus.jsonl``, ``queries.jsonl``, ``qrels/test.tsv``); SciFact by default.
    max_docs : int, optional
        Only the first ``max_docs`` documents of the corpus.
    max_length : int
        Document tokens at encoding (all-MiniLM: at most 256).
    dtype : str
        The exported encoders' dtype.
    work : Path, optional
        The cache folder; ``demo`` in the models' cache by default.
    dense : bool
        Also export all-MiniLM-L6-v2 and encode the corpus with it.

    Returns
    -------
    Prepared
        The paths, and what this call encoded (0 documents when the vectors were cached).
    """
    data = Path(data or DEFAULT_DATA)
    if not (data / "corpus.jsonl").is_file():
        raise FileNotFoundError(
            f"{data} is not a BEIR directory (corpus.jsonl, queries.jsonl, qrels/test.tsv)"
        )
    work = Path(work or cache_dir() / "demo")
    work.mkdir(parents=True, exist_ok=True)
    model_dir = fetch()
    corpus = _subset(data / "corpus.jsonl", max_docs, work)
    tag = f"{data.name}{'' if max_docs is None else f'-first{max_docs}'}"
    splade = export_once(model_dir, work / f"splade-tiny-{dtype}", "splade", dtype, None)
    free = export_once(model_dir, work / f"splade-tiny-if-{dtype}-{tag}", "inference-free", dtype, corpus)
    vectors = work / f"{tag}-splade-tiny-{dtype}-{max_length}.jsonl.gz"
    start = time.perf_counter()
    stats = encode_corpus(load_encoder(splade, "doc", max_length=max_length), corpus, vectors, batch_size=8)
    p = Prepared(data, work, corpus, splade, free, vectors, stats.written, time.perf_counter() - start, tag)
    if dense:
        # all-MiniLM-L6-v2 was trained to 256 tokens, its own (and sentence-transformers') limit.
        p.dense = export_once(fetch(MINILM), work / f"{MINILM}-{dtype}", "dense", dtype, None)
        p.dense_vectors = work / f"{tag}-{MINILM}-{dtype}-{min(max_length, 256)}.jsonl.gz"
        start = time.perf_counter()
        encoder = load_encoder(p.dense, "doc", max_length=min(max_length, 256))
        p.dense_encoded = encode_corpus(encoder, corpus, p.dense_vectors, batch_size=16).written
        p.dense_encode_seconds = time.perf_counter() - start
    return p
