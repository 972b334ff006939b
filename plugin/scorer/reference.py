"""Plain-numpy twins of :mod:`plugin.scorer._kernels`, same signatures; tests hold them equal."""

from __future__ import annotations

import numpy as np


def _top(scores: np.ndarray, docs: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    keep = scores > 0
    scores, docs = scores[keep], docs[keep]
    order = np.lexsort((docs, -scores))[: max(k, 0)]
    return scores[order].astype(np.int64), docs[order].astype(np.int64)


def scan(q_terms, q_weights, post_offsets, post_docs, post_impacts, n_docs, k):
    acc = np.zeros(n_docs, np.int64)
    for t, w in zip(q_terms, q_weights, strict=True):
        s, e = post_offsets[t], post_offsets[t + 1]
        np.add.at(acc, post_docs[s:e], int(w) * post_impacts[s:e].astype(np.int64))
    return _top(acc, np.arange(n_docs), k)


def block_bounds(q_terms, q_weights, bm_offsets, bm_blocks, bm_max, n_blocks):
    ub = np.zeros(n_blocks, np.int64)
    for t, w in zip(q_terms, q_weights, strict=True):
        s, e = bm_offsets[t], bm_offsets[t + 1]
        np.add.at(ub, bm_blocks[s:e], int(w) * bm_max[s:e].astype(np.int64))
    return ub


def block_max(
    q_terms,
    q_weights,
    bound_terms,
    bm_offsets,
    bm_blocks,
    bm_max,
    fwd_offsets,
    fwd_terms,
    fwd_impacts,
    n_terms,
    block_size,
    k,
    alpha,
    seeds,
):
    if k <= 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), 0
    n_docs = len(fwd_offsets) - 1
    n_blocks = -(-n_docs // block_size)
    ub = block_bounds(q_terms[:bound_terms], q_weights[:bound_terms], bm_offsets, bm_blocks, bm_max, n_blocks)
    q_dense = np.zeros(n_terms, np.int64)
    q_dense[q_terms] = q_weights
    doc_of = np.repeat(np.arange(n_docs), np.diff(fwd_offsets))
    contrib = q_dense[fwd_terms] * fwd_impacts.astype(np.int64)
    doc_scores = np.bincount(doc_of, weights=contrib, minlength=n_docs).astype(np.int64)
    scores, docs = np.zeros(0, np.int64), np.zeros(0, np.int64)

    def visit(b):
        block = np.arange(b * block_size, min((b + 1) * block_size, n_docs))
        return _top(np.concatenate([scores, doc_scores[block]]), np.concatenate([docs, block]), k)

    positive = np.flatnonzero(ub)
    ranked = positive[np.lexsort((positive, -ub[positive]))]
    seeds_ = ranked[:seeds]
    for b in seeds_:
        scores, docs = visit(b)
    visited = len(seeds_)
    floor = scores[-1] if len(scores) == k else 1
    rest = np.setdiff1d(positive, seeds_)
    rest = rest[ub[rest] * alpha >= floor]
    for b in rest[np.lexsort((rest, -ub[rest]))]:
        if len(scores) == k and ub[b] * alpha < scores[-1]:
            break
        scores, docs = visit(b)
        visited += 1
    return scores, docs, visited
