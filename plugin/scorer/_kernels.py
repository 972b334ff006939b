"""numba query-time kernels; each has a plain-numpy twin in :mod:`plugin.scorer.reference`.

Scores are integers: sum over shared terms of query impact x document impact (the quantization
contract). Rankings put higher scores first and break ties by the lower internal doc id.
No validation here: :class:`plugin.native.NativeSearcher` checks inputs once.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange


@njit(cache=True, nogil=True, inline="always")
def _worse(s1, d1, s2, d2):
    """Is hit (s1, d1) ranked below hit (s2, d2)?"""
    return s1 < s2 or (s1 == s2 and d1 > d2)


@njit(cache=True, nogil=True)
def _heap_push(hs, hd, size, k, s, d):
    """Offer hit (s, d) to a min-heap (worst on top) of at most ``k`` hits; returns the new size."""
    if size < k:
        i = size
        size += 1
    elif _worse(hs[0], hd[0], s, d):
        # Replace the root, sift down.
        i = 0
        while True:
            c = 2 * i + 1
            if c >= size:
                break
            if c + 1 < size and _worse(hs[c + 1], hd[c + 1], hs[c], hd[c]):
                c += 1
            if _worse(hs[c], hd[c], s, d):
                hs[i] = hs[c]
                hd[i] = hd[c]
                i = c
            else:
                break
        hs[i] = s
        hd[i] = d
        return size
    else:
        return size
    # Sift up.
    while i > 0:
        p = (i - 1) // 2
        if _worse(s, d, hs[p], hd[p]):
            hs[i] = hs[p]
            hd[i] = hd[p]
            i = p
        else:
            break
    hs[i] = s
    hd[i] = d
    return size


@njit(cache=True, nogil=True)
def _sift_down(hs, hd, i, size):
    s, d = hs[i], hd[i]
    while True:
        c = 2 * i + 1
        if c >= size:
            break
        if c + 1 < size and _worse(hs[c + 1], hd[c + 1], hs[c], hd[c]):
            c += 1
        if _worse(hs[c], hd[c], s, d):
            hs[i] = hs[c]
            hd[i] = hd[c]
            i = c
        else:
            break
    hs[i] = s
    hd[i] = d


@njit(cache=True, nogil=True)
def _sorted_hits(hs, hd, size):
    """The heap's hits best first (heap sort: the worst goes to the end, repeatedly)."""
    hs = hs[:size].copy()
    hd = hd[:size].copy()
    for end in range(size - 1, 0, -1):
        hs[0], hs[end] = hs[end], hs[0]
        hd[0], hd[end] = hd[end], hd[0]
        _sift_down(hs, hd, 0, end)
    return hs, hd


@njit(cache=True, nogil=True)
def _scan(q_terms, q_weights, post_offsets, post_docs, post_impacts, n_docs, k):
    """Exhaustive term-at-a-time scan with a dense accumulator: the reference baseline."""
    if k <= 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    acc = np.zeros(n_docs, np.int64)
    for i in range(len(q_terms)):
        t = q_terms[i]
        w = q_weights[i]
        for j in range(post_offsets[t], post_offsets[t + 1]):
            acc[post_docs[j]] += w * post_impacts[j]
    hs = np.empty(max(k, 1), np.int64)
    hd = np.empty(max(k, 1), np.int64)
    size = 0
    for d in range(n_docs):
        s = acc[d]
        if s > 0 and (size < k or _worse(hs[0], hd[0], s, d)):
            size = _heap_push(hs, hd, size, k, s, d)
    return _sorted_hits(hs, hd, size)


@njit(cache=True, nogil=True)
def _score_block(b, q_dense, fwd_offsets, fwd_terms, fwd_impacts, block_size, hs, hd, size, k):
    n_docs = len(fwd_offsets) - 1
    for d in range(b * block_size, min((b + 1) * block_size, n_docs)):
        s = 0
        for j in range(fwd_offsets[d], fwd_offsets[d + 1]):
            s += q_dense[fwd_terms[j]] * fwd_impacts[j]
        if s > 0 and (size < k or _worse(hs[0], hd[0], s, d)):
            size = _heap_push(hs, hd, size, k, s, d)
    return size


@njit(cache=True, nogil=True)
def _visit_superblock(
    sb,
    head,
    e_w,
    e_lo,
    e_hi,
    e_next,
    bm_local,
    bm_max,
    lub,
    sb_size,
    n_blocks,
    alpha,
    q_dense,
    fwd_offsets,
    fwd_terms,
    fwd_impacts,
    block_size,
    hs,
    hd,
    size,
    k,
):
    """Bound the blocks of superblock ``sb`` from its chain of term entries, then score, in id order,
    those whose bound (times ``alpha``) reaches the current k-th score. Returns (size, visited)."""
    base = sb * sb_size
    n_local = min(sb_size, n_blocks - base)
    lub[:n_local] = 0
    e = head[sb]
    while e >= 0:
        w = e_w[e]
        for j in range(e_lo[e], e_hi[e]):
            lub[bm_local[j]] += w * bm_max[j]
        e = e_next[e]
    visited = 0
    for i in range(n_local):
        if lub[i] > 0 and (size < k or lub[i] * alpha >= hs[0]):
            size = _score_block(
                base + i, q_dense, fwd_offsets, fwd_terms, fwd_impacts, block_size, hs, hd, size, k
            )
            visited += 1
    return size, visited


@njit(cache=True, nogil=True)
def _block_max(
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
    """Two-level block-max search (superblocks of ``sb_size`` blocks of ``block_size`` docs).

    Superblock bounds come first (cheap: few entries per term); while summing them each
    superblock gets a chain of its terms' block-maxima ranges, so block bounds are computed only
    inside the superblocks visited. The ``seeds`` best superblocks are visited first to get a
    k-th score; the others are sorted only if their bound reaches it, and walked best bound first
    until one falls below the (rising) k-th score. With ``alpha == 1`` and ``bound_terms`` = all
    query terms the result is exact; ``alpha < 1`` or fewer ``bound_terms`` (the query's
    heaviest) trade recall for speed. Returns (scores, docs, blocks scored).
    """
    if k <= 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), 0
    n_docs = len(fwd_offsets) - 1
    n_blocks = (n_docs + block_size - 1) // block_size
    n_sb = (n_blocks + sb_size - 1) // sb_size
    n_entries = 0
    for i in range(bound_terms):
        n_entries += sbm_offsets[q_terms[i] + 1] - sbm_offsets[q_terms[i]]
    sub = np.zeros(n_sb, np.int64)
    head = np.full(n_sb, -1, np.int64)
    e_w = np.empty(n_entries, np.int64)
    e_lo = np.empty(n_entries, np.int64)
    e_hi = np.empty(n_entries, np.int64)
    e_next = np.empty(n_entries, np.int64)
    e = 0
    for i in range(bound_terms):
        t = q_terms[i]
        w = q_weights[i]
        last = sbm_offsets[t + 1]
        pos = bm_offsets[t]  # a term's block maxima follow its superblocks in order
        for j in range(sbm_offsets[t], last):
            sb = sbm_blocks[j]
            sub[sb] += w * sbm_max[j]
            e_w[e] = w
            e_lo[e] = pos
            pos += sbm_count[j]
            e_hi[e] = pos
            e_next[e] = head[sb]
            head[sb] = e
            e += 1
    q_dense = np.zeros(n_terms, np.int64)
    for i in range(len(q_terms)):
        q_dense[q_terms[i]] = q_weights[i]
    hs = np.empty(max(k, 1), np.int64)
    hd = np.empty(max(k, 1), np.int64)
    size = 0
    lub = np.empty(sb_size, np.int64)
    # Seeds: the best-bounded superblocks (ties by lower id), kept in a small heap.
    n_seeds = min(seeds, n_sb)
    ss = np.empty(max(n_seeds, 1), np.int64)
    sbs = np.empty(max(n_seeds, 1), np.int64)
    n_s = 0
    for b in range(n_sb):
        if sub[b] > 0 and (n_s < n_seeds or _worse(ss[0], sbs[0], sub[b], b)):
            n_s = _heap_push(ss, sbs, n_s, n_seeds, sub[b], b)
    ss, sbs = _sorted_hits(ss, sbs, n_s)
    is_seed = np.zeros(n_sb, np.bool_)
    is_seed[sbs[:n_s]] = True
    # Phase 0 visits the seeds unconditionally; phase 1 the superblocks that could still enter
    # the top k, best bound first, until a bound falls below the (rising) k-th score.
    order = sbs[:n_s].copy()
    visited = 0
    for phase in range(2):
        if phase == 1:
            floor = hs[0] if size == k else 1
            cand = np.flatnonzero((sub > 0) & ~is_seed & (sub * alpha >= floor))
            order = cand[np.argsort(-sub[cand], kind="mergesort")]
        for b in order:
            if phase == 1 and size == k and sub[b] * alpha < hs[0]:
                break
            size, v = _visit_superblock(
                b, head, e_w, e_lo, e_hi, e_next, bm_local, bm_max, lub, sb_size, n_blocks, alpha, q_dense,
                fwd_offsets, fwd_terms, fwd_impacts, block_size, hs, hd, size, k,
            )  # fmt: skip
            visited += v
    scores, docs = _sorted_hits(hs, hd, size)
    return scores, docs, visited


@njit(cache=True, nogil=True, parallel=True)
def _batch_block_max(
    q_offsets,
    q_terms,
    q_weights,
    bound_terms,
    sbm_offsets,
    sbm_local,
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
    """:func:`_block_max` over many queries (CSR ``q_offsets``), one query per thread at a time."""
    nq = len(q_offsets) - 1
    out_scores = np.zeros((nq, max(k, 1)), np.int64)
    out_docs = np.full((nq, max(k, 1)), -1, np.int64)
    for q in prange(nq):
        s, e = q_offsets[q], q_offsets[q + 1]
        scores, docs, _ = _block_max(
            q_terms[s:e],
            q_weights[s:e],
            bound_terms[q],
            sbm_offsets,
            sbm_local,
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
        )
        out_scores[q, : len(scores)] = scores
        out_docs[q, : len(docs)] = docs
    return out_scores, out_docs


@njit(cache=True, nogil=True)
def _dense_dot(codes, table, query):
    """Inner products of code rows with ``query``; ``table`` decodes a code (fp16 bits, int8 bits)."""
    n, dim = codes.shape
    out = np.empty(n, np.float32)
    for i in range(n):
        acc = np.float32(0.0)
        for j in range(dim):
            acc += table[codes[i, j]] * query[j]
        out[i] = acc
    return out
