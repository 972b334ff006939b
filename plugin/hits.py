"""The hit type every searcher returns, shaped like Pyserini's (``.docid``, ``.score``)."""

from __future__ import annotations

from typing import NamedTuple


class Hit(NamedTuple):
    docid: str
    score: float
