"""numba kernels that build the native index; each has a numpy twin in :mod:`indexer.native.reference`.

No validation, logging or Python objects here: the builder validates, kernels trust their inputs.
"""

from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True, nogil=True)
def _invert(fwd_offsets, fwd_terms, fwd_impacts, n_terms):
    """Forward index (docs -> terms) to postings (terms -> docs, ascending); a counting sort."""
    counts = np.zeros(n_terms + 1, np.int64)
    for t in fwd_terms:
        counts[t + 1] += 1
    post_offsets = np.cumsum(counts)
    cursor = post_offsets[:-1].copy()
    post_docs = np.empty(len(fwd_terms), np.int32)
    post_impacts = np.empty(len(fwd_terms), fwd_impacts.dtype)
    for d in range(len(fwd_offsets) - 1):
        for j in range(fwd_offsets[d], fwd_offsets[d + 1]):
            t = fwd_terms[j]
            c = cursor[t]
            post_docs[c] = d
            post_impacts[c] = fwd_impacts[j]
            cursor[t] = c + 1
    return post_offsets, post_docs, post_impacts


@njit(cache=True, nogil=True)
def _rows(post_offsets, post_docs, post_impacts, term_order, term_ids, new_doc, n_rows):
    """Postings back to rows (docs -> terms), for merging segments: the postings of the terms in
    ``term_order`` (ascending ``term_ids[t]``, the id a term gets in the rows) go to row
    ``new_doc[doc]``, skipping docs mapped to -1, so each row's term ids ascend; a counting sort."""
    counts = np.zeros(n_rows + 1, np.int64)
    for j in range(len(post_docs)):
        d = new_doc[post_docs[j]]
        if d >= 0:
            counts[d + 1] += 1
    indptr = np.cumsum(counts)
    cursor = indptr[:-1].copy()
    terms = np.empty(indptr[-1], np.int32)
    impacts = np.empty(indptr[-1], post_impacts.dtype)
    for t in term_order:
        for j in range(np.int64(post_offsets[t]), np.int64(post_offsets[t + 1])):
            d = new_doc[post_docs[j]]
            if d >= 0:
                c = cursor[d]
                terms[c] = term_ids[t]
                impacts[c] = post_impacts[j]
                cursor[d] = c + 1
    return indptr, terms, impacts


@njit(cache=True, nogil=True)
def _groups(offsets, keys, width):
    """Per list (a term's postings, docs ascending), the groups ``key // width`` (its blocks) it meets,
    in order, and the position where each group starts in the list: (group offsets per list, group
    ids, group starts)."""
    n_lists = len(offsets) - 1
    counts = np.zeros(n_lists + 1, np.int64)
    for t in range(n_lists):
        last = -1
        for j in range(offsets[t], offsets[t + 1]):
            g = keys[j] // width
            if g != last:
                counts[t + 1] += 1
                last = g
    g_offsets = np.cumsum(counts)
    g_ids = np.empty(g_offsets[-1], np.int32)
    g_first = np.empty(g_offsets[-1], np.int64)
    for t in range(n_lists):
        c = g_offsets[t] - 1
        last = -1
        for j in range(offsets[t], offsets[t + 1]):
            g = keys[j] // width
            if g != last:
                c += 1
                g_ids[c] = g
                g_first[c] = j
                last = g
    return g_offsets, g_ids, g_first


@njit(cache=True, nogil=True)
def _order_entries(first, counts, codes):
    """Sort each entry's posting codes (``counts[e]`` from ``first[e]``) in place, highest impact
    first, ties by lower place: ``impact << 7 | place`` ordered by (-impact, place). Insertion sort:
    entries hold at most 128 postings, most one or two."""
    for e in range(len(first)):
        lo = first[e]
        hi = lo + counts[e]
        for i in range(lo + 1, hi):
            c = codes[i]
            j = i - 1
            while j >= lo and (
                (codes[j] >> 7) < (c >> 7) or ((codes[j] >> 7) == (c >> 7) and (codes[j] & 127) > (c & 127))
            ):
                codes[j + 1] = codes[j]
                j -= 1
            codes[j + 1] = c


@njit(cache=True, nogil=True)
def _move_gains(docs, fwd_offsets, fwd_terms, mid, left_deg, right_deg, log2_table):
    """Recursive graph bisection: the log-gap cost saved by moving each doc to the other half.

    ``docs[:mid]`` is the left half, ``docs[mid:]`` the right; ``left_deg``/``right_deg`` count,
    per term, the docs of each half holding it. The cost of a term with degrees (l, r) is
    ``l * log2(n_l / (l + 1)) + r * log2(n_r / (r + 1))`` (Dhulipala et al., KDD 2016).
    """
    n_l = mid
    n_r = len(docs) - mid
    log_nl = log2_table[n_l]
    log_nr = log2_table[n_r]
    gains = np.empty(len(docs), np.float64)
    for i in range(len(docs)):
        d = docs[i]
        g = 0.0
        for j in range(fwd_offsets[d], fwd_offsets[d + 1]):
            t = fwd_terms[j]
            l_deg = left_deg[t]
            r_deg = right_deg[t]
            before = l_deg * (log_nl - log2_table[l_deg + 1]) + r_deg * (log_nr - log2_table[r_deg + 1])
            if i < mid:
                l_deg -= 1
                r_deg += 1
            else:
                l_deg += 1
                r_deg -= 1
            after = l_deg * (log_nl - log2_table[l_deg + 1]) + r_deg * (log_nr - log2_table[r_deg + 1])
            g += before - after
        gains[i] = g
    return gains


@njit(cache=True, nogil=True)
def _count_degrees(docs, lo, hi, fwd_offsets, fwd_terms, deg):
    for i in range(lo, hi):
        d = docs[i]
        for j in range(fwd_offsets[d], fwd_offsets[d + 1]):
            deg[fwd_terms[j]] += 1


@njit(cache=True, nogil=True)
def _clear_degrees(docs, fwd_offsets, fwd_terms, left_deg, right_deg):
    for i in range(len(docs)):
        d = docs[i]
        for j in range(fwd_offsets[d], fwd_offsets[d + 1]):
            left_deg[fwd_terms[j]] = 0
            right_deg[fwd_terms[j]] = 0


@njit(cache=True, nogil=True)
def _bisect_segment(docs, fwd_offsets, fwd_terms, left_deg, right_deg, log2_table, iterations):
    """Improve one split of ``docs`` (in place): swap the best-gaining pairs across the halves."""
    mid = len(docs) // 2
    for _ in range(iterations):
        _count_degrees(docs, 0, mid, fwd_offsets, fwd_terms, left_deg)
        _count_degrees(docs, mid, len(docs), fwd_offsets, fwd_terms, right_deg)
        gains = _move_gains(docs, fwd_offsets, fwd_terms, mid, left_deg, right_deg, log2_table)
        _clear_degrees(docs, fwd_offsets, fwd_terms, left_deg, right_deg)
        left_order = np.argsort(-gains[:mid], kind="mergesort")
        right_order = np.argsort(-gains[mid:], kind="mergesort")
        left = docs[:mid].copy()
        right = docs[mid:].copy()
        swapped = 0
        for p in range(min(mid, len(docs) - mid)):
            li = left_order[p]
            ri = right_order[p]
            if gains[li] + gains[mid + ri] <= 0.0:
                break
            left[li], right[ri] = right[ri], left[li]
            swapped += 1
        docs[:mid] = left
        docs[mid:] = right
        if swapped == 0:
            break


@njit(cache=True, nogil=True)
def _graph_bisection(n_docs, fwd_offsets, fwd_terms, n_terms, leaf_size, iterations):
    """A doc order (new position -> old doc id) by recursive graph bisection down to ``leaf_size``."""
    order = np.arange(n_docs).astype(np.int64)
    left_deg = np.zeros(n_terms, np.int64)
    right_deg = np.zeros(n_terms, np.int64)
    log2_table = np.log2(np.arange(n_docs + 2).astype(np.float64) + 1e-300)
    log2_table[0] = 0.0
    # Segments of one level are independent; walk them level by level with an explicit stack.
    stack_lo = [0]
    stack_hi = [n_docs]
    while len(stack_lo) > 0:
        lo = stack_lo.pop()
        hi = stack_hi.pop()
        if hi - lo <= leaf_size:
            continue
        _bisect_segment(order[lo:hi], fwd_offsets, fwd_terms, left_deg, right_deg, log2_table, iterations)
        mid = lo + (hi - lo) // 2
        stack_lo.append(mid)
        stack_hi.append(hi)
        stack_lo.append(lo)
        stack_hi.append(mid)
    return order
