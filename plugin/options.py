"""Search defaults and choices, written once: the CLI's ``choices=`` / ``default=``, the service and
the searchers read them here (no heavy imports, so the CLI's parser stays fast)."""

from __future__ import annotations

from typing import Literal, get_args

Mode = Literal["exact", "approx", "scan", "float"]
Fusion = Literal["linear", "rrf"]
MODES: tuple[str, ...] = get_args(Mode)
FUSIONS: tuple[str, ...] = get_args(Fusion)
# Sparse hits verified per query (BiDR's figure) and the weight of the min-max-normalised sparse score.
DEFAULT_CANDIDATES = 1000
DEFAULT_FUSION_WEIGHT = 0.3
QUERY_MAX_LENGTH = 64
# Anserini's BM25 setting for BEIR.
BM25_K1 = 0.9
BM25_B = 0.4


class InvalidOption(ValueError):
    """A bad option or query field; ``field`` names it (the service's 422/400 reads it from here)."""

    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message
