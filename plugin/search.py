"""What ``lsr search`` needs: open the searcher an index calls for, read and encode its topics."""

from __future__ import annotations

import json
from pathlib import Path

from indexer.corpus import parse_json, read_corpus, read_lines, read_qrels
from indexer.jsonvector import iter_vectors
from indexer.lucene import LuceneIndexInfo
from indexer.native.format import META as NATIVE_META
from lsr.sparse import SparseBatch

Topics = SparseBatch | list[str]


def is_pre_encoded(path: str | Path) -> bool:
    """True when ``path`` is a JsonVectorCollection (its first record has a ``vector`` field)."""
    for lineno, line in read_lines(path):
        try:
            first = json.loads(line)
        except json.JSONDecodeError:
            return False  # a TSV topics file
        except (ValueError, RecursionError):  # nested too deeply, or an integer no parser takes: say where
            parse_json(Path(path), lineno, line)
        return isinstance(first, dict) and "vector" in first
    return False


def read_topics(
    path: str | Path,
    encoder_dir: str | Path | None,
    max_length: int | None = 64,
    qrels: str | Path | None = None,
) -> tuple[list[str], Topics]:
    """Query ids and either query vectors (encoded or pre-encoded) or, with no encoder, query texts.

    With ``qrels`` only the judged queries are kept, in file order.
    """
    judged = set(read_qrels(qrels)) if qrels else None
    if is_pre_encoded(path):
        rows = [(rid, vec) for _, rid, vec in iter_vectors(path) if judged is None or rid in judged]
        vocab = tuple(sorted({t for _, vec in rows for t in vec}))
        try:
            return [r for r, _ in rows], SparseBatch.from_dicts([v for _, v in rows], vocab)
        except (KeyError, ValueError) as e:
            raise ValueError(f"{path}: {e.args[0]}") from None
    records = [r for r in read_corpus(path) if judged is None or r.id in judged]
    texts = [r.text for r in records]
    if encoder_dir is None:
        return [r.id for r in records], texts
    from lsr.runtime import load_encoder

    encoder = load_encoder(encoder_dir, side="query", max_length=max_length)
    if not hasattr(encoder, "vocab"):
        raise ValueError(f"{encoder_dir} is a dense encoder; lsr search needs a sparse query encoder")
    return [r.id for r in records], encoder.encode(texts)


class _BM25Topics:
    """BM25 searcher with the same ``batch_search(topics, k, threads)`` as the impact searcher."""

    def __init__(self, index_dir: Path):
        from plugin.lucene import BM25Searcher

        self._searcher = BM25Searcher(index_dir)

    def batch_search(self, topics: Topics, k: int = 10, threads: int = 1, **options):
        if not isinstance(topics, list):
            raise ValueError("a BM25 index searches query text: drop --encoder and pass a text topics file")
        if options:
            raise ValueError(f"{', '.join(options)}: options of the native index only")
        return self._searcher.batch_search(topics, k, threads)


class _ImpactTopics:
    """An impact searcher (Lucene or native) behind the topics check."""

    def __init__(self, searcher, native: bool):
        self._searcher = searcher
        self._native = native

    def batch_search(self, topics: Topics, k: int = 10, threads: int = 1, **options):
        if isinstance(topics, list):
            raise ValueError(
                "an impact index needs query vectors: pass --encoder ENCODER_DIR or pre-encoded topics"
            )
        if options and not self._native:
            raise ValueError(f"{', '.join(options)}: options of the native index only")
        return self._searcher.batch_search(topics, k=k, threads=threads, **options)


def open_searcher(index_dir: str | Path):
    """The searcher for the index at ``index_dir`` (native ``meta.json`` or Lucene ``lsr-index.json``)."""
    index_dir = Path(index_dir)
    if (index_dir / NATIVE_META).is_file():
        from plugin.native import NativeSearcher

        return _ImpactTopics(NativeSearcher(index_dir), native=True)
    info = LuceneIndexInfo.load(index_dir)
    if info.format == "lucene-bm25":
        return _BM25Topics(index_dir)
    if info.format == "lucene-impact":
        from plugin.lucene import LuceneSearcher

        return _ImpactTopics(LuceneSearcher(index_dir), native=False)
    raise ValueError(f"{index_dir}: unknown index format {info.format!r}")
