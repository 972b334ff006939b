"""The quantization contract: the one float -> integer impact rule.

    impact = round_half_even(weight * scale); impacts of 0 are dropped

with ``scale = IMPACT_SCALE = 100`` unless an index says otherwise (its metadata records it).
An impact above ``MAX_IMPACT`` (a weight above about 655.35 at scale 100) is a ``ValueError``, never
clipped or dropped: a weight that large is a broken vector or a scale too big for it. Readers of
vector files name the file, line and term (:func:`indexer.jsonvector.check_weights`).
The same rule quantizes documents and queries, for Lucene and for the native index, so a
Lucene impact score is ``sum(q_impact * d_impact)``, about ``scale**2`` times the float dot
product. Query weights are never cast to int (Pyserini's impact searcher turns 1.7 into 1).

A JsonVectorCollection whose weights are all integers is taken as already quantized
(Anserini's convention) and indexed as given; there too an impact above ``MAX_IMPACT`` is an error.
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


def beyond_range(weights: NDArray[np.number], scale: float, given: bool = False) -> NDArray[np.bool_]:
    """Where a weight's impact would exceed ``MAX_IMPACT`` (see module doc); same shape, bool."""
    w = np.asarray(weights, np.float64)
    if given:
        return w > MAX_IMPACT
    # round_half_even(x) > MAX_IMPACT exactly when x >= MAX_IMPACT + 0.5 (65535.5 rounds to 65536).
    return w * check_scale(scale) >= MAX_IMPACT + 0.5


def is_beyond_range(weight: float, scale: float, given: bool = False) -> bool:
    """:func:`beyond_range` of one JSON number; exact for integers too large for a float."""
    if given:
        return weight > MAX_IMPACT
    try:
        return float(weight) * scale >= MAX_IMPACT + 0.5
    except OverflowError:  # an integer beyond 1e308
        return True


def range_message(weight: float, scale: float, given: bool = False) -> str:
    """Why ``weight`` is refused, for an error message that names where it was found."""
    if given and isinstance(weight, float) and weight.is_integer():
        weight = int(weight)  # an integer impact read into a float64 array
    shown = str(weight)
    shown = shown if len(shown) <= 24 else f"{shown[:8]}... ({len(shown)} digits)"
    if given:
        return f"integer impact {shown} exceeds {MAX_IMPACT}, the largest impact an index holds"
    return (
        f"weight {shown} is too large: at scale {scale:g} impacts above {MAX_IMPACT} "
        f"(weights of {(MAX_IMPACT + 0.5) / scale:g} or more) cannot be indexed; rescale the vectors "
        "or use a smaller scale"
    )


def quantize(weights: NDArray[np.floating], scale: float = IMPACT_SCALE) -> NDArray[np.int32]:
    """Integer impacts of float weights (see module doc); same shape, int32.

    Raises ``ValueError`` when a weight's impact would exceed ``MAX_IMPACT``.
    """
    scale = check_scale(scale)
    w = np.asarray(weights, np.float64)
    _refuse_beyond(w, np.asarray(weights), scale, given=False)
    return np.maximum(np.rint(w * scale), 0).astype(np.int32)


def to_impacts(weights: NDArray[np.number], scale: float, given: bool) -> NDArray[np.int32]:
    """Impacts of one file's weights: ``given`` integer impacts kept, floats quantized.

    Raises ``ValueError`` when an impact would exceed ``MAX_IMPACT``.
    """
    if given:
        w = np.asarray(weights, np.float64)
        _refuse_beyond(w, w, scale, given=True)
        return np.maximum(w, 0).astype(np.int32)
    return quantize(weights, scale)


def _refuse_beyond(w: NDArray[np.float64], given_as: NDArray, scale: float, given: bool) -> None:
    """``ValueError`` with the count and the first weight beyond the range, shown as ``given_as``
    holds it (float32 1e38, not 9.999999680285692e+37)."""
    bad = np.flatnonzero(beyond_range(w, scale, given))
    if len(bad):
        first = given_as.reshape(-1)[bad[0]]
        raise ValueError(
            f"{len(bad)} weight(s) beyond the impact range, e.g. "
            + range_message(first.item() if given else first, scale, given)
        )


def dequantize(impacts: NDArray[np.integer], scale: float = IMPACT_SCALE) -> NDArray[np.float32]:
    """Float weights back from impacts; within ``0.5 / scale`` of the originals."""
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
