"""Encoders that run an ENCODER_DIR on onnxruntime. This path never imports torch.

- :class:`OnnxSparseEncoder`: SPLADE and decoder (echo) documents and queries, inference-free documents.
- :class:`IdfQueryEncoder`: the inference-free query side, tokenization times an IDF table, no model.
- :class:`OnnxDenseEncoder`: mean-pooled, L2-normalised embeddings.

:func:`load_encoder` picks the right one for an ENCODER_DIR and a side.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import numpy as np
import onnxruntime as ort
from numpy.typing import NDArray
from tqdm.auto import tqdm

from lsr.idf import load_idf
from lsr.manifest import IDF, TOKENIZER, Manifest
from lsr.sparse import SparseBatch
from lsr.tokenize import DecoderLayout, Tokenizer, decoder_inputs

log = logging.getLogger(__name__)

Side = Literal["doc", "query"]
SIDES: tuple[str, ...] = ("doc", "query")
CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"


def create_session(
    onnx_path: str | Path, providers: Sequence[str] | None = None, threads: int | None = None
) -> ort.InferenceSession:
    """An onnxruntime session on CUDA when this onnxruntime has it, else on the CPU.

    The CUDA provider falls back to the CPU silently when CUDA libraries are missing, so the
    providers the session really got are read back and a fallback is logged as a warning.
    """
    available = ort.get_available_providers()
    wanted = list(providers) if providers else ([CUDA, CPU] if CUDA in available else [CPU])
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if threads:
        opts.intra_op_num_threads = threads
    session = ort.InferenceSession(str(onnx_path), sess_options=opts, providers=wanted)
    got = session.get_providers()
    if wanted[0] != got[0]:
        log.warning("asked onnxruntime for %s but the session runs on %s (%s)", wanted[0], got[0], onnx_path)
    else:
        log.info("onnxruntime %s runs %s on %s", ort.__version__, Path(onnx_path).name, got[0])
    return session


def as_texts(texts: str | Sequence[str]) -> list[str]:
    """``texts`` as a list; a bare ``str`` is one text (as sentence-transformers takes it)."""
    if isinstance(texts, str):
        return [texts]
    texts = list(texts)
    bad = next((i for i, t in enumerate(texts) if not isinstance(t, str)), None)
    if bad is not None:
        raise TypeError(f"texts must be strings; item {bad} is {type(texts[bad]).__name__}")
    return texts


def length_batches(lengths: Sequence[int], batch_size: int) -> list[NDArray[np.int64]]:
    """Row indices grouped into batches of similar length (longest first), so padding stays small."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    order = np.argsort(-np.asarray(lengths, np.int64), kind="stable")
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


class _OnnxEncoder:
    def __init__(
        self,
        encoder_dir: str | Path,
        providers: Sequence[str] | None = None,
        threads: int | None = None,
        max_length: int | None = None,
    ):
        self.encoder_dir = Path(encoder_dir)
        self.manifest = Manifest.load(self.encoder_dir)
        if not self.manifest.onnx:
            raise ValueError(f"{self.encoder_dir} has no ONNX graph")
        self.tokenizer = Tokenizer(self.encoder_dir / TOKENIZER, self.manifest.max_length)
        self.tokenizer.extend_vocab(self.manifest.vocab_size)
        m = self.manifest
        self.layout = (
            DecoderLayout.from_template(self.tokenizer, m.bos_token_id, m.echo, m.echo_template)
            if m.kind == "decoder"
            else None
        )
        if max_length is not None:
            self.set_max_length(max_length)
        self.session = create_session(self.encoder_dir / self.manifest.onnx, providers, threads)
        self._inputs = [i.name for i in self.session.get_inputs()]
        # Texts cut at max_length so far: indexer.encode reports it without tokenizing again.
        self.truncated = 0

    @property
    def vocab(self) -> tuple[str, ...]:
        return self.tokenizer.vocab

    @property
    def provider(self) -> str:
        return self.session.get_providers()[0]

    def set_max_length(self, max_length: int) -> None:
        if max_length > self.manifest.max_length:
            raise ValueError(
                f"max_length {max_length} exceeds the model's limit of {self.manifest.max_length} tokens"
            )
        if self.layout is not None:
            self.layout.budget(max_length)  # raises when the prompt leaves no room for text
        self.tokenizer.set_max_length(max_length)

    def _run_batches(self, texts: Sequence[str], batch_size: int, show_progress: bool):
        """Yield (row indices, raw outputs) per length-bucketed batch."""
        decoder = self.manifest.kind == "decoder"
        encodings = self.tokenizer.encode(list(texts), special_tokens=not decoder)
        if decoder:  # decoder_inputs cuts the text to what fits beside BOS and the echo prompt
            budget = self.layout.budget(self.tokenizer.max_length)
            self.truncated += sum(bool(e.overflowing) or len(e.ids) > budget for e in encodings)
        else:
            self.truncated += sum(bool(e.overflowing) for e in encodings)
        batches = length_batches([len(e.ids) for e in encodings], batch_size)
        for rows in tqdm(batches, desc="encode", unit="batch", disable=not show_progress):
            if decoder:
                ids = [encodings[r].ids for r in rows]
                inputs = decoder_inputs(ids, self.layout, self.tokenizer.pad_id, self.tokenizer.max_length)
            else:
                inputs = self.tokenizer.pad([encodings[r] for r in rows])
            yield rows, self.session.run(None, inputs.feed(self._inputs))


class OnnxSparseEncoder(_OnnxEncoder):
    """Texts -> :class:`SparseBatch` through a ``vocab`` or ``anserini`` contract graph."""

    def encode(
        self, texts: str | Sequence[str], batch_size: int = 32, show_progress: bool = False
    ) -> SparseBatch:
        """Encode ``texts`` (a bare ``str`` is one text); row ``i`` of the result is ``texts[i]``.

        Texts longer than ``max_length`` tokens are truncated (keeping ``[SEP]``); an empty or
        whitespace-only text encodes to an empty row.
        """
        texts = as_texts(texts)
        parts: list[SparseBatch] = []
        order: list[NDArray[np.int64]] = []
        for rows, out in self._run_batches(texts, batch_size, show_progress):
            order.append(rows)
            if self.manifest.contract == "vocab":
                parts.append(SparseBatch.from_dense(out[0], self.vocab))
            else:
                named = dict(zip(self.manifest.outputs, out, strict=True))
                parts.append(
                    SparseBatch.from_coo(
                        named["output_batch"],
                        named["output_idx"],
                        named["output_weights"],
                        len(rows),
                        self.vocab,
                    )
                )
        if not parts:
            return SparseBatch.empty(0, self.vocab)
        merged = SparseBatch.concat(parts)
        return merged.take(np.argsort(np.concatenate(order), kind="stable"))


class OnnxDenseEncoder(_OnnxEncoder):
    """Texts -> L2-normalised embeddings ``[n, dim]`` float32."""

    def encode(
        self, texts: str | Sequence[str], batch_size: int = 32, show_progress: bool = False
    ) -> NDArray[np.float32]:
        """Embeddings ``[len(texts), dim]`` (a bare ``str`` is one text: one row)."""
        texts = as_texts(texts)
        out = np.zeros((len(texts), self.manifest.dim or 0), np.float32)
        for rows, (emb,) in self._run_batches(texts, batch_size, show_progress):
            out[rows] = emb
        return out


class IdfQueryEncoder:
    """The inference-free query side: each distinct query token weighs its IDF; no model runs.

    As in OpenSearch, a token appearing twice still weighs its IDF once, special tokens and
    tokens missing from ``idf.json`` weigh 0 (and so are absent from the vector).
    """

    def __init__(self, encoder_dir: str | Path, max_length: int | None = None):
        self.encoder_dir = Path(encoder_dir)
        self.manifest = Manifest.load(self.encoder_dir)
        self.tokenizer = Tokenizer(self.encoder_dir / TOKENIZER, max_length or self.manifest.max_length)
        self.idf = load_idf(self.encoder_dir / IDF, self.tokenizer.vocab)
        self.idf[list(self.tokenizer.special_ids)] = 0.0
        self.truncated = 0  # texts cut at max_length so far (as OnnxSparseEncoder.truncated)

    @property
    def vocab(self) -> tuple[str, ...]:
        return self.tokenizer.vocab

    def encode(
        self, texts: str | Sequence[str], batch_size: int = 1024, show_progress: bool = False
    ) -> SparseBatch:
        """One row per text (a bare ``str`` is one text); ``batch_size`` is unused (no model runs)."""
        texts = as_texts(texts)
        indptr = [0]
        ids_parts: list[NDArray[np.int64]] = []
        for e in self.tokenizer.encode(list(texts)):
            self.truncated += bool(e.overflowing)
            ids = np.unique(np.asarray(e.ids, np.int64))
            ids = ids[self.idf[ids] > 0]
            ids_parts.append(ids)
            indptr.append(indptr[-1] + len(ids))
        term_ids = np.concatenate(ids_parts) if ids_parts else np.zeros(0, np.int64)
        return SparseBatch(
            np.asarray(indptr, np.int64), term_ids.astype(np.int32), self.idf[term_ids], self.vocab
        )


def load_encoder(
    encoder_dir: str | Path,
    side: Side = "doc",
    providers: Sequence[str] | None = None,
    threads: int | None = None,
    max_length: int | None = None,
) -> OnnxSparseEncoder | IdfQueryEncoder | OnnxDenseEncoder:
    """The encoder an ENCODER_DIR defines for ``side`` (``"doc"`` or ``"query"``)."""
    if side not in SIDES:
        raise ValueError(f"side must be one of {', '.join(SIDES)}, got {side!r}")
    manifest = Manifest.load(encoder_dir)
    if manifest.kind == "dense":
        return OnnxDenseEncoder(encoder_dir, providers, threads, max_length)
    if side == "query" and manifest.query == "idf":
        return IdfQueryEncoder(encoder_dir, max_length)
    return OnnxSparseEncoder(encoder_dir, providers, threads, max_length)


class SparseEncoder:
    """Both sides of a sparse ENCODER_DIR, shaped like sentence-transformers' sparse encoders.

    Parameters
    ----------
    encoder_dir : str or Path
        An exported SPLADE, inference-free or decoder ENCODER_DIR.
    query_max_length, doc_max_length : int, optional
        Tokens kept per query (default 64) and per document (default: the model's limit).
    providers, threads
        onnxruntime providers and intra-op threads (see :func:`create_session`).

    Each side loads on first use: an inference-free encoder's queries need no ONNX session.

    Examples
    --------
    >>> enc = SparseEncoder("enc/splade-if")                        # doctest: +SKIP
    >>> q = enc.encode_queries("what causes coral bleaching?")      # doctest: +SKIP
    >>> enc.decode(q, top_k=3)                                      # doctest: +SKIP
    [[('bleaching', 2.41), ('coral', 2.2), ('causes', 1.12)]]
    """

    def __init__(
        self,
        encoder_dir: str | Path,
        query_max_length: int | None = 64,
        doc_max_length: int | None = None,
        providers: Sequence[str] | None = None,
        threads: int | None = None,
    ):
        self.encoder_dir = Path(encoder_dir)
        self.manifest = Manifest.load(self.encoder_dir)
        if self.manifest.kind == "dense":
            raise ValueError(f"{encoder_dir} is a dense encoder; SparseEncoder needs a sparse one")
        limit = self.manifest.max_length
        self._lengths = {
            "query": min(query_max_length or limit, limit),
            "doc": min(doc_max_length or limit, limit),
        }
        self._providers, self._threads = providers, threads
        self._sides: dict[str, OnnxSparseEncoder | IdfQueryEncoder] = {}

    def side(self, side: Side) -> OnnxSparseEncoder | IdfQueryEncoder:
        """The encoder of ``side`` (``"query"`` or ``"doc"``), loaded once."""
        if side not in SIDES:
            raise ValueError(f"side must be one of {', '.join(SIDES)}, got {side!r}")
        if side not in self._sides:
            self._sides[side] = load_encoder(  # type: ignore[assignment]
                self.encoder_dir, side, self._providers, self._threads, self._lengths[side]
            )
        return self._sides[side]

    @property
    def vocab(self) -> tuple[str, ...]:
        return self.side("query").vocab

    def encode_queries(self, queries: str | Sequence[str], batch_size: int = 32) -> SparseBatch:
        """Query vectors, one row per query (a bare ``str`` is one query)."""
        return self.side("query").encode(queries, batch_size=batch_size)

    def encode_documents(
        self, documents: str | Sequence[str], batch_size: int = 8, show_progress: bool = False
    ) -> SparseBatch:
        """Document vectors, one row per document (a bare ``str`` is one document)."""
        return self.side("doc").encode(documents, batch_size=batch_size, show_progress=show_progress)

    def decode(self, batch: SparseBatch, top_k: int | None = None) -> list[list[tuple[str, float]]]:
        """Each row as ``(token, weight)`` pairs, heaviest first (ties by token id), at most ``top_k``."""
        return decode(batch, top_k)


def decode(batch: SparseBatch, top_k: int | None = None) -> list[list[tuple[str, float]]]:
    """Each row of ``batch`` as ``(token, weight)`` pairs, heaviest first, at most ``top_k`` of them."""
    if not isinstance(batch, SparseBatch):
        raise TypeError(f"decode takes a SparseBatch, got {type(batch).__name__}")
    if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 0):
        raise ValueError(f"top_k must be an integer >= 0 or None, got {top_k!r}")
    out = []
    for ids, ws in batch:
        order = np.lexsort((ids, -ws))[:top_k]
        out.append(
            [(batch.vocab[t], float(w)) for t, w in zip(ids[order].tolist(), ws[order].tolist(), strict=True)]
        )
    return out
