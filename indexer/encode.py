"""Encode a corpus into a JsonVectorCollection, resumably.

The corpus is read in chunks; each chunk is encoded (length-bucketed inside the encoder) and
appended with an fsync. Rerunning on the same output skips the ids already written, after
cutting off a line torn by a crash, so an interrupted encode resumes where it stopped.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from indexer.atomic import locked_file
from indexer.corpus import Record, read_corpus
from indexer.jsonvector import append_lines, format_lines, recover
from indexer.quantize import beyond_range, quantize_batch, range_message

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

    ``encoder`` is any encoder of :mod:`lsr.runtime`: sparse encoders write JsonVectorCollection
    lines, dense encoders ``{"id", "vector": [float, ...]}`` lines (:mod:`indexer.dense`).
    Documents longer than the encoder's ``max_length`` are truncated and counted; empty texts
    encode to empty vectors and are counted; both are reported in one warning each. A corpus
    without any record is a ``ValueError``. With ``impact_scale`` the vectors are written as
    integer impacts under the quantization contract (:mod:`indexer.quantize`), ready for Anserini
    or Pyserini indexing as they are; a weight beyond its range is a ``ValueError`` naming the record.
    """
    corpus, out = Path(corpus), Path(out)
    dense = getattr(getattr(encoder, "manifest", None), "kind", None) == "dense"
    if dense and (prune is not None or impact_scale is not None):
        raise ValueError("pruning and integer impacts apply to sparse encoders, not to a dense one")
    out.parent.mkdir(parents=True, exist_ok=True)
    with _exclusive(out):
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
            before = getattr(encoder, "truncated", None)
            batch = encoder.encode(texts, batch_size=batch_size)
            if before is None:  # an encoder from elsewhere: tokenize again to count
                _count_truncated(encoder, texts, stats)
            else:
                stats.truncated += encoder.truncated - before
            if dense:
                append_lines(out, dense_lines([r.id for r in chunk], batch))
                stats.written += len(chunk)
                bar.update(len(chunk))
                chunk.clear()
                return
            if prune is not None:
                batch = batch.prune(*prune)
            if impact_scale is not None:
                _check_impacts(batch, impact_scale, chunk, corpus)
                batch = quantize_batch(batch, impact_scale)
            for r, n in zip(chunk, batch.row_nnz().tolist(), strict=True):
                if n == 0:
                    stats.empty += 1
                    if len(stats.empty_examples) < 5:
                        stats.empty_examples.append(f"{r.id} ({corpus}:{r.line})")
            append_lines(out, format_lines([r.id for r in chunk], batch, impacts=impact_scale is not None))
            stats.written += len(chunk)
            bar.update(len(chunk))
            chunk.clear()

        records = 0
        try:
            for record in read_corpus(corpus):
                records += 1
                if record.id in done:
                    continue
                chunk.append(record)
                if len(chunk) >= chunk_size:
                    flush()
            flush()
        finally:
            bar.close()  # ends the bar's line, so an error message starts on a line of its own
        if records == 0:
            raise ValueError(f"{corpus}: no records to encode (the file is empty or holds only blank lines)")
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


@contextmanager
def _exclusive(out: Path) -> Iterator[None]:
    """One writer per output file: a second encode of the same file (another process) waits for
    the first, then resumes from what it wrote, instead of appending the same records twice.

    The lock is a hidden file beside ``out`` (``out`` itself may be replaced by :func:`recover`),
    removed by its holder (:func:`indexer.atomic.locked_file`).
    """
    lock = out.with_name(f".{out.name}.lock")

    def busy(_f) -> None:
        log.warning("%s: another process is encoding into it; waiting for it to finish", out)

    with locked_file(lock, busy):
        yield


def _check_impacts(batch, scale: float, chunk: list[Record], corpus: Path) -> None:
    """Refuse a weight whose impact exceeds the quantization range, naming its record and term."""
    bad = np.flatnonzero(beyond_range(batch.weights, scale))
    if len(bad):
        row = int(np.searchsorted(batch.indptr, bad[0], side="right")) - 1
        r, term = chunk[row], batch.vocab[batch.term_ids[bad[0]]]
        raise ValueError(
            f"{corpus}:{r.line}: document {r.id!r}, term {term!r}: "
            + range_message(batch.weights[bad[0]], scale, given=False)
        )


def _count_truncated(encoder, texts: list[str], stats: EncodeStats) -> None:
    limit = encoder.tokenizer.max_length
    stats.truncated += sum(
        len(e.ids) >= limit and bool(e.overflowing) for e in encoder.tokenizer.encode(texts)
    )


def dense_lines(ids: list[str], vectors) -> list[str]:
    """``{"id", "vector"}`` JSON lines; 7 decimals keep float32 precision at half the text."""
    return [
        json.dumps({"id": rid, "vector": row}) + "\n"
        for rid, row in zip(ids, vectors.astype(float).round(7).tolist(), strict=True)
    ]
