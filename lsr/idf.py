"""IDF tables for inference-free query sides, in OpenSearch's ``idf.json`` format ``{token: weight}``.

When a model ships no ``idf.json`` we compute one from a corpus with the BM25 IDF

    idf(t) = log(1 + (N - df(t) + 0.5) / (df(t) + 0.5))

where ``N`` is the number of documents and ``df(t)`` the number of documents whose own text
(the tokenizer's output, special tokens excluded, expansion terms not counted) contains ``t``.
Every vocabulary token gets a weight: a token no document contains gets the largest IDF, so a
query term that only matches through document expansion still counts.

On the query side, as in OpenSearch, a token missing from the table weighs 0 and special
tokens always weigh 0.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from lsr.tokenize import Tokenizer


def bm25_idf(df: NDArray[np.int64], n_docs: int) -> NDArray[np.float32]:
    df = np.asarray(df, np.float64)
    return np.log1p((n_docs - df + 0.5) / (df + 0.5)).astype(np.float32)


def document_frequencies(
    texts: Iterable[str], tokenizer: Tokenizer, batch_size: int = 1024
) -> tuple[NDArray[np.int64], int]:
    """Per-token document frequency over ``texts`` and the number of documents."""
    df = np.zeros(len(tokenizer.vocab), np.int64)
    special = np.asarray(tokenizer.special_ids, np.int64)
    n = 0
    batch: list[str] = []

    def flush() -> None:
        if not batch:
            return
        encs = tokenizer.encode(batch)
        uniq = [np.unique(np.asarray(e.ids, np.int64)) for e in encs]
        ids = np.concatenate(uniq) if uniq else np.zeros(0, np.int64)
        df[:] += np.bincount(ids, minlength=len(df))[: len(df)]
        batch.clear()

    for text in texts:
        batch.append(text)
        n += 1
        if len(batch) >= batch_size:
            flush()
    flush()
    df[special] = 0
    return df, n


def compute_idf(texts: Iterable[str], tokenizer: Tokenizer) -> dict[str, float]:
    """An ``idf.json`` table over the whole vocabulary from a corpus (formula in the module doc)."""
    df, n = document_frequencies(texts, tokenizer)
    if n == 0:
        raise ValueError("cannot compute IDF from an empty corpus")
    idf = bm25_idf(df, n)
    special = set(tokenizer.special_ids)
    return {tok: float(idf[i]) for i, tok in enumerate(tokenizer.vocab) if i not in special}


def save_idf(table: dict[str, float], path: str | Path) -> None:
    Path(path).write_text(json.dumps(table, ensure_ascii=False), encoding="utf-8")


def load_idf(path: str | Path, vocab: tuple[str, ...]) -> NDArray[np.float32]:
    """Read an ``idf.json`` into a dense ``[len(vocab)]`` float32 array (missing tokens -> 0)."""
    path = Path(path)
    try:
        table = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(table, dict):
        raise ValueError(f"{path}: expected a JSON object {{token: weight}}, got {type(table).__name__}")
    index = {t: i for i, t in enumerate(vocab)}
    out = np.zeros(len(vocab), np.float32)
    unknown = 0
    for tok, w in table.items():
        if not isinstance(w, int | float) or not math.isfinite(w) or w < 0:
            raise ValueError(f"{path}: token {tok!r} has weight {w!r}; weights must be finite numbers >= 0")
        i = index.get(tok)
        if i is None:
            unknown += 1
        else:
            out[i] = w
    if unknown == len(table) and table:
        raise ValueError(f"{path}: none of its {len(table)} tokens is in the tokenizer's vocabulary")
    return out
