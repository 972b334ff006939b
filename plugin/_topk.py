"""Top-k selection with the ties rule of DESIGN.md: higher score first, then lower internal doc id."""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray


def topk(scores: NDArray[np.float32], k: int) -> NDArray[np.int64]:
    """Ids of the ``k`` best positive scores, best first, ties broken by lower id.

    Parameters
    ----------
    scores : NDArray[np.float32]
        ``[n]`` scores; the position is the id.
    k : int
        Ids wanted; ``k <= 0`` gives none.

    Returns
    -------
    NDArray[np.int64]
        ``[min(k, number of positive scores)]`` ids; scores ``<= 0`` are never returned.
    """
    if k <= 0:
        return np.zeros(0, np.int64)
    positive = np.flatnonzero(scores > 0)
    if len(positive) > k:
        # Everything strictly above the k-th value is in; the k-th value's ties are filled by id.
        kth = np.partition(scores[positive], len(positive) - k)[len(positive) - k]
        above = positive[scores[positive] > kth]
        tied = positive[scores[positive] == kth][: k - len(above)]
        positive = np.concatenate([above, tied])
    return positive[np.lexsort((positive, -scores[positive]))]
