"""What decides how much a top-k search can prune, measured on any (documents, queries) pair.

- terms per document and per query;
- weight skew per vector: the share of its weight mass in its heaviest 10% of terms, and its largest
  weight over its mean one (a dynamic-pruning bound is tight when a few terms carry a row);
- posting-list lengths of the terms queries use, and the postings a query's terms hold in all (what
  an exhaustive scan reads);
- near-ties at the cut-off under exact float scoring (float64 sums of the float32 weights): for each
  query, the documents below rank k that tie with the k-th score or come within 1% / 5% of it (what
  a threshold cannot separate), the k-th score over the best one, and the share of documents a
  query matches at all.

Every figure comes as ``{"mean", "p50", "p99"}`` over rows (documents, queries or query terms).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from numpy.typing import NDArray

from bench._context import print_fixed_table
from lsr.sparse import SparseBatch

TOP_SHARE = 0.1  # the heaviest tenth of a vector's terms
NEAR = (0.01, 0.05)  # relative distances below the k-th score
SKEW_ROWS = 50_000  # documents sampled for the weight statistics (all of them below this)
SCORE_CHUNK = 16  # queries per dense score block


def summary(values: NDArray | Sequence[float]) -> dict[str, float | None]:
    """Mean, median and 99th percentile of ``values`` (None each when empty)."""
    values = np.asarray(values, np.float64)
    if not len(values):
        return {"mean": None, "p50": None, "p99": None}
    return {
        "mean": float(values.mean()),
        "p50": float(np.percentile(values, 50)),
        "p99": float(np.percentile(values, 99)),
    }


def weight_skew(batch: SparseBatch) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Per non-empty row: the share of its weight mass in its heaviest ``ceil(10%)`` terms, and its
    largest weight over its mean weight.

    Parameters
    ----------
    batch : SparseBatch
        The vectors, ``[n, vocab]``.

    Returns
    -------
    (ndarray of float64, ndarray of float64)
        Both of shape ``[non-empty rows]``.
    """
    lengths = batch.row_nnz()
    rows = np.repeat(np.arange(len(batch)), lengths)
    w = batch.weights.astype(np.float64)
    order = np.lexsort((-w, rows))
    w_sorted = w[order]
    rank = np.arange(batch.nnz) - batch.indptr[:-1][rows]
    top_n = np.ceil(lengths * TOP_SHARE)
    top = rank < top_n[rows]
    top_mass = np.bincount(rows[top], w_sorted[top], minlength=len(batch))
    mass = np.bincount(rows, w, minlength=len(batch))
    full = lengths > 0
    heaviest = np.zeros(len(batch))
    heaviest[full] = w_sorted[batch.indptr[:-1][full]]
    return top_mass[full] / mass[full], heaviest[full] / (mass[full] / lengths[full])


def vector_stats(batch: SparseBatch, max_rows: int = SKEW_ROWS, seed: int = 0) -> dict:
    """Terms per row (all rows) and the weight statistics (on at most ``max_rows`` rows, seeded)."""
    sample = batch
    if len(batch) > max_rows:
        sample = batch.take(np.sort(np.random.default_rng(seed).choice(len(batch), max_rows, replace=False)))
    share, peak = weight_skew(sample)
    return {
        "rows": len(batch),
        "terms": summary(batch.row_nnz()),
        "top10_share": summary(share),
        "max_over_mean": summary(peak),
        "weight": summary(sample.weights),
        "weight_max": float(sample.weights.max()) if sample.nnz else None,
    }


def posting_stats(df: NDArray[np.int64], n_docs: int, queries: SparseBatch) -> dict:
    """Posting-list lengths (``df``) of every query term, and per query the postings of all its terms."""
    q_df = df[queries.term_ids]
    rows = np.repeat(np.arange(len(queries)), queries.row_nnz())
    per_query = np.bincount(rows, q_df.astype(np.float64), minlength=len(queries))
    return {
        "df": summary(q_df),
        "df_share": summary(q_df / max(n_docs, 1)),
        "postings_per_query": summary(per_query),
    }


def tie_stats(docs: SparseBatch, queries: SparseBatch, k: int) -> dict:
    """Near-ties at the k-th exact float score, per query with at least ``k`` matching documents.

    Parameters
    ----------
    docs, queries : SparseBatch
        Over one vocabulary.
    k : int
        The cut-off, >= 1.

    Returns
    -------
    dict
        ``tied`` (documents other than the k-th with exactly its score), ``near_1pct`` / ``near_5pct``
        (documents ranked below k scoring at least 99% / 95% of the k-th score), ``kth_over_top``,
        ``matched_share`` (documents with a positive score, over all queries) as summaries, and
        ``short``: the queries matching fewer than ``k`` documents (left out of the others).
    """
    inverted = docs.to_scipy().astype(np.float64).T.tocsr()
    qm = queries.to_scipy().astype(np.float64)
    tied, kth_over_top, matched = [], [], []
    near: dict[float, list[int]] = {r: [] for r in NEAR}
    short = 0
    for s in range(0, qm.shape[0], SCORE_CHUNK):
        for scores in (qm[s : s + SCORE_CHUNK] @ inverted).toarray():
            positive = int((scores > 0).sum())
            matched.append(positive / max(len(scores), 1))
            if positive < k:
                short += 1
                continue
            kth = -np.partition(-scores, k - 1)[k - 1]
            tied.append(int((scores == kth).sum()) - 1)
            for r in NEAR:
                near[r].append(int((scores >= (1 - r) * kth).sum()) - k)
            kth_over_top.append(kth / scores.max())
    out = {"k": k, "queries": int(qm.shape[0]), "short": short, "tied": summary(tied)}
    for r in NEAR:
        out[f"near_{r * 100:.0f}pct"] = summary(near[r])
    out["kth_over_top"] = summary(kth_over_top)
    out["matched_share"] = summary(matched)
    return out


def corpus_stats(docs: SparseBatch, queries: Mapping[str, SparseBatch], k: int = 10, seed: int = 0) -> dict:
    """The pruning-relevant statistics of ``docs`` and of each query set against it.

    Parameters
    ----------
    docs : SparseBatch
        The collection, ``[n_docs, vocab]``.
    queries : mapping of str to SparseBatch
        Query sets by name (all of each is scored: pass a sample).
    k : int
        The cut-off of the tie statistics.
    seed : int
        Seeds the document sample of the weight statistics.

    Returns
    -------
    dict
        ``{"docs": vector stats, "queries": {name: vector stats + posting stats + {"ties": ...}}}``.
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    df = np.bincount(docs.term_ids, minlength=len(docs.vocab))
    out = {"docs": vector_stats(docs, seed=seed), "queries": {}}
    for name, q in queries.items():
        if tuple(q.vocab) != tuple(docs.vocab):
            raise ValueError(f"query set {name!r} is over another vocabulary than the documents")
        out["queries"][name] = {
            **vector_stats(q, seed=seed),
            **posting_stats(df, len(docs), q),
            "ties": tie_stats(docs, q, k),
        }
    return out


# ------------------------------------------------------------------ printing
def _cell(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def _lines(block: dict, rows: Sequence[tuple[str, tuple[str, ...], str]]) -> list[tuple[str, list[str]]]:
    out = []
    for label, path, spec in rows:
        for stat in ("mean", "p50", "p99"):
            cells = []
            for stats in block.values():
                node = stats
                for key in path:
                    node = node[key]
                cells.append(_cell(node[stat], spec))
            out.append((f"{label} {stat}", cells))
    return out


VECTOR_ROWS = (
    ("terms", ("terms",), ".1f"),
    ("top-10% mass share", ("top10_share",), ".3f"),
    ("max/mean weight", ("max_over_mean",), ".2f"),
    ("weight", ("weight",), ".3f"),
)
QUERY_ROWS = (
    ("df of query terms", ("df",), ".0f"),
    ("df / docs", ("df_share",), ".4f"),
    ("postings per query", ("postings_per_query",), ".0f"),
)


def print_stats(stats: Mapping[str, dict], k: int) -> None:
    """Side by side: the document statistics of each corpus, then each (corpus, query set)'s."""
    width = max(12, *(len(c) + 2 for c in stats))
    docs = {name: s["docs"] for name, s in stats.items()}
    spec = "documents<30 | " + " | ".join(f"{name}>{width}" for name in docs)
    print()
    print_fixed_table(
        spec,
        [["docs", *(str(d["rows"]) for d in docs.values())]]
        + [[label, *cells] for label, cells in _lines(docs, VECTOR_ROWS)]
        + [["generate s", *(_cell(s.get("generate_s"), ".1f") for s in stats.values())]],
    )
    queries = {f"{c}/{q}": qs for c, s in stats.items() for q, qs in s["queries"].items()}
    width = max(12, *(len(c) + 2 for c in queries))
    spec = "queries<30 | " + " | ".join(f"{name}>{width}" for name in queries)
    ties = {name: q["ties"] for name, q in queries.items()}
    tie_rows = (
        ("tied at k-th", ("tied",), ".2f"),
        ("below k within 1%", ("near_1pct",), ".1f"),
        ("below k within 5%", ("near_5pct",), ".1f"),
        ("k-th / top score", ("kth_over_top",), ".3f"),
        ("matched docs share", ("matched_share",), ".4f"),
    )
    print()
    print_fixed_table(
        spec,
        [["queries", *(str(q["rows"]) for q in queries.values())]]
        + [[label, *cells] for label, cells in _lines(queries, VECTOR_ROWS + QUERY_ROWS)]
        + [[f"short (< {k} matches)", *(str(t["short"]) for t in ties.values())]]
        + [[f"{label} (k={k})", *cells] for label, cells in _lines(ties, tie_rows)],
    )
