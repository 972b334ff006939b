"""The quantization contract: the one float -> integer impact rule.

    impact = round_half_even(weight * scale), clipped to [0, MAX_IMPACT]; impacts of 0 are dropped

with ``scale = IMPACT_SCALE = 100`` unless an index says otherwise (its metadata records it).
The same rule quantizes documents and queries, for Lucene and for the native index, so a
Lucene impact score is ``sum(q_impact * d_impact)``, about ``scale**2`` times the float dot
product. Query weights are never cast to int (Pyserini's impact searcher turns 1.7 into 1).

A JsonVectorCollection whose weights are all integers is taken as already quantized
(Anserini's convention) and indexed as given.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from lsr.sparse import SparseBatch

IMPACT_SCALE = 100.0
# Impacts must fit the native index's uint16 postings; SPLADE weights stay far below 655.
MAX_IMPACT = 65_535


def check_scale(scale: float) -> float:
    scale = float(scale)
    if not np.isfinite(scale) or scale <= 0:
        raise ValueError(f"quantization scale must be a positive number, got {scale}")
    return scale


def quantize(weights: NDArray[np.floating], scale: float = IMPACT_SCALE) -> NDArray[np.int32]:
    """Integer impacts of float weights (see module doc); same shape, int32."""
    scale = check_scale(scale)
    q = np.rint(np.asarray(weights, np.float64) * scale)
    return np.clip(q, 0, MAX_IMPACT).astype(np.int32)


def to_impacts(weights: NDArray[np.number], scale: float, given: bool) -> NDArray[np.int32]:
    """Impacts of one file's weights: ``given`` integer impacts kept (clipped), floats quantized."""
    if given:
        return np.clip(np.asarray(weights, np.int64), 0, MAX_IMPACT).astype(np.int32)
    return quantize(weights, scale)


def dequantize(impacts: NDArray[np.integer], scale: float = IMPACT_SCALE) -> NDArray[np.float32]:
    """Float weights back from impacts; within ``0.5 / scale`` of the originals below the clip."""
    return (np.asarray(impacts, np.float64) / check_scale(scale)).astype(np.float32)


def is_quantized(batch: SparseBatch) -> bool:
    """True when every weight is already an integer (Anserini's pre-quantized vectors)."""
    w = batch.weights
    return bool(np.all(w == np.rint(w)) and (w.max(initial=0) <= MAX_IMPACT))


def quantize_batch(batch: SparseBatch, scale: float = IMPACT_SCALE) -> SparseBatch:
    """The batch with impacts as (integral float32) weights; terms whose impact is 0 dropped."""
    impacts = quantize(batch.weights, scale)
    keep = impacts > 0
    kept_before = np.concatenate([[0], np.cumsum(keep, dtype=np.int64)])
    return SparseBatch(
        kept_before[batch.indptr], batch.term_ids[keep], impacts[keep].astype(np.float32), batch.vocab
    )
