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


def global_blocks(sbm_blocks, sbm_count, bm_local, sb_size):
    """Each block-maxima entry's global block id, from its superblock entry and its local index."""
    return np.repeat(np.asarray(sbm_blocks, np.int64) * sb_size, sbm_count) + bm_local


def block_max(
    q_terms,
    q_weights,
    bound_terms,
    sbm_offsets,
    sbm_blocks,
    sbm_max,
    sbm_count,
    bm_offsets,
    bm_local,
    bm_max,
    fwd_offsets,
    fwd_terms,
    fwd_impacts,
    n_terms,
    block_size,
    sb_size,
    k,
    alpha,
    seeds,
):
    """Same walk as the kernel, with whole-array bounds instead of per-superblock chains."""
    if k <= 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), 0
    n_docs = len(fwd_offsets) - 1
    n_blocks = -(-n_docs // block_size)
    n_sb = -(-n_blocks // sb_size)
    bt, bw = q_terms[:bound_terms], q_weights[:bound_terms]
    bm_blocks = global_blocks(sbm_blocks, sbm_count, bm_local, sb_size)
    ub = block_bounds(bt, bw, bm_offsets, bm_blocks, bm_max, n_blocks)
    sub = block_bounds(bt, bw, sbm_offsets, sbm_blocks, sbm_max, n_sb)
    q_dense = np.zeros(n_terms, np.int64)
    q_dense[q_terms] = q_weights
    doc_of = np.repeat(np.arange(n_docs), np.diff(fwd_offsets))
    contrib = q_dense[fwd_terms] * fwd_impacts.astype(np.int64)
    doc_scores = np.bincount(doc_of, weights=contrib, minlength=n_docs).astype(np.int64)
    top = [np.zeros(0, np.int64), np.zeros(0, np.int64)]
    visited = 0

    def full() -> bool:
        return len(top[0]) == k

    def visit(sb):
        nonlocal visited
        local = np.arange(sb * sb_size, min((sb + 1) * sb_size, n_blocks))
        for b in local:
            if ub[b] == 0 or (full() and ub[b] * alpha < top[0][-1]):
                continue
            block = np.arange(b * block_size, min((b + 1) * block_size, n_docs))
            top[:] = _top(np.concatenate([top[0], doc_scores[block]]), np.concatenate([top[1], block]), k)
            visited += 1

    positive = np.flatnonzero(sub)
    ranked = positive[np.lexsort((positive, -sub[positive]))]
    for sb in ranked[:seeds]:
        visit(sb)
    floor = top[0][-1] if full() else 1
    rest = np.setdiff1d(positive, ranked[:seeds])
    rest = rest[sub[rest] * alpha >= floor]
    for sb in rest[np.lexsort((rest, -sub[rest]))]:
        if full() and sub[sb] * alpha < top[0][-1]:
            break
        visit(sb)
    return top[0], top[1], visited


def _dense_dot(codes, table, query):
    return (table[codes] @ query).astype(np.float32)
