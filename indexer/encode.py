"""Encode a corpus into a JsonVectorCollection, resumably.

The corpus is read in chunks; each chunk is encoded (length-bucketed inside the encoder) and
appended with an fsync. Rerunning on the same output skips the ids already written, after
cutting off a line torn by a crash, so an interrupted encode resumes where it stopped.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from tqdm.auto import tqdm

from indexer.corpus import Record, read_corpus
from indexer.jsonvector import append_lines, format_lines, recover
from indexer.quantize import quantize_batch

log = logging.getLogger(__name__)


@dataclass
class EncodeStats:
    written: int = 0
    skipped: int = 0
    empty: int = 0
    truncated: int = 0
    empty_examples: list[str] = field(default_factory=list)


def encode_corpus(
    encoder,
    corpus: str | Path,
    out: str | Path,
    batch_size: int = 32,
    chunk_size: int = 1024,
    prune: tuple[str, float] | None = None,
    show_progress: bool = True,
    impact_scale: float | None = None,
) -> EncodeStats:
    """Encode every record of ``corpus`` not yet in ``out`` and append it there.

    ``encoder`` is any sparse encoder of :mod:`lsr.runtime` (``encode(texts) -> SparseBatch``).
    Documents longer than the encoder's ``max_length`` are truncated and counted; empty texts
    encode to empty vectors and are counted; both are reported in one warning each. With
    ``impact_scale`` the vectors are written as integer impacts under the quantization contract
    (:mod:`indexer.quantize`), ready for Anserini or Pyserini indexing as they are.
    """
    corpus, out = Path(corpus), Path(out)
    if not hasattr(encoder, "vocab"):
        raise TypeError(
            "encode_corpus needs a sparse encoder (dense encoders do not write JsonVectorCollection)"
        )
    out.parent.mkdir(parents=True, exist_ok=True)
    done = recover(out)
    stats = EncodeStats(skipped=len(done))
    if done:
        log.info("%s: resuming, %d vectors already written", out, len(done))
    bar = tqdm(desc=f"encode {corpus.name}", unit="doc", disable=not show_progress)
    chunk: list[Record] = []

    def flush() -> None:
        if not chunk:
            return
        texts = [r.text for r in chunk]
        batch = encoder.encode(texts, batch_size=batch_size)
        if prune is not None:
            batch = batch.prune(*prune)
        if impact_scale is not None:
            batch = quantize_batch(batch, impact_scale)
        limit = encoder.tokenizer.max_length
        stats.truncated += sum(
            len(e.ids) >= limit and bool(e.overflowing) for e in encoder.tokenizer.encode(texts)
        )
        for r, n in zip(chunk, batch.row_nnz().tolist(), strict=True):
            if n == 0:
                stats.empty += 1
                if len(stats.empty_examples) < 5:
                    stats.empty_examples.append(f"{r.id} ({corpus}:{r.line})")
        append_lines(out, format_lines([r.id for r in chunk], batch, impacts=impact_scale is not None))
        stats.written += len(chunk)
        bar.update(len(chunk))
        chunk.clear()

    for record in read_corpus(corpus):
        if record.id in done:
            continue
        chunk.append(record)
        if len(chunk) >= chunk_size:
            flush()
    flush()
    bar.close()
    if stats.truncated:
        log.warning(
            "%s: %d text(s) truncated to %d tokens", corpus, stats.truncated, encoder.tokenizer.max_length
        )
    if stats.empty:
        log.warning(
            "%s: %d text(s) encoded to empty vectors (empty text or nothing the model weights), e.g. %s",
            corpus,
            stats.empty,
            ", ".join(stats.empty_examples),
        )
    return stats
