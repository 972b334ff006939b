"""numba query-time kernels; each has a plain-numpy twin in :mod:`plugin.scorer.reference`.

Scores are integers: sum over shared terms of query impact x document impact (the quantization
contract). Rankings put higher scores first and break ties by the lower tie key: a document's
position in the input (``tie``, the index's ``tie_order``; its internal id where ``tie`` is empty,
an index never reordered), so a reordered index ranks ties as Lucene does. Heaps hold tie keys;
``inv`` (key -> internal id, empty with ``tie``) turns them back.
No validation here: :class:`plugin.native.NativeSearcher` checks inputs once.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from indexer.native.format import GAP_MASK, LOCAL_BITS, MAX_BLOCK_SIZE, SINGLE

# A posting code's place bits (the doc's place in its block).
PLACE = MAX_BLOCK_SIZE - 1


@njit(cache=True, nogil=True, inline="always")
def _worse(s1, d1, s2, d2):
    """Is hit (s1, d1) ranked below hit (s2, d2)?"""
    return s1 < s2 or (s1 == s2 and d1 > d2)


@njit(cache=True, nogil=True, inline="always")
def _key(tie, d):
    """Internal doc ``d``'s tie key."""
    return np.int64(tie[d]) if len(tie) > 0 else np.int64(d)


@njit(cache=True, nogil=True, inline="always")
def _doc(inv, key):
    """The internal doc of tie key ``key``."""
    return np.int64(inv[key]) if len(inv) > 0 else np.int64(key)


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
def _hits(hs, hd, size, inv):
    """:func:`_sorted_hits` of a heap of tie keys, as (scores, internal docs)."""
    scores, keys = _sorted_hits(hs, hd, size)
    if len(inv) > 0:
        for i in range(len(keys)):
            keys[i] = inv[keys[i]]
    return scores, keys


@njit(cache=True, nogil=True)
def _top_positive(values, n, k):
    """The ``k`` best positive ``values[:n]`` as (values, positions), best first, ties by lower position."""
    hs = np.empty(max(k, 1), np.int64)
    hd = np.empty(max(k, 1), np.int64)
    size = 0
    for i in range(n if k > 0 else 0):
        v = values[i]
        if v > 0 and (size < k or _worse(hs[0], hd[0], v, i)):
            size = _heap_push(hs, hd, size, k, v, i)
    return _sorted_hits(hs, hd, size)


@njit(cache=True, nogil=True)
def _top_docs(values, n, k, allow, tie, inv):
    """The ``k`` best positive ``values[:n]`` (one per internal doc) with ``allow[doc] != 0`` (all when
    ``allow`` is empty) as (values, docs), best first, ties by the lower tie key."""
    filtered = len(allow) > 0
    hs = np.empty(max(k, 1), np.int64)
    hd = np.empty(max(k, 1), np.int64)
    size = 0
    for i in range(n if k > 0 else 0):
        v = values[i]
        if v > 0 and (size < k or v >= hs[0]) and (not filtered or allow[i] != 0):
            key = _key(tie, i)
            if size < k or _worse(hs[0], hd[0], v, key):
                size = _heap_push(hs, hd, size, k, v, key)
    return _hits(hs, hd, size, inv)


@njit(cache=True, nogil=True)
def _query(mapping, term_ids, impacts):
    """One query's (index term ids, impacts), heaviest first, ties by lower term id; terms the index
    lacks (mapping -1) and impacts of 0 dropped. The impacts come quantized (indexer.quantize).
    :meth:`NativeSearcher.query_arrays` is its numpy twin."""
    n = len(term_ids)
    terms = np.empty(n, np.int64)
    ws = np.empty(n, np.int64)
    m = 0
    for i in range(n):
        t = mapping[term_ids[i]]
        w = np.int64(impacts[i])
        if t >= 0 and w > 0:
            # Insertion sort as they come: queries hold tens of terms.
            j = m - 1
            while j >= 0 and (ws[j] < w or (ws[j] == w and terms[j] > t)):
                terms[j + 1] = terms[j]
                ws[j + 1] = ws[j]
                j -= 1
            terms[j + 1] = t
            ws[j + 1] = w
            m += 1
    return terms[:m], ws[:m]


# The index arrays every kernel reads (indexer/native/format.py), in this order.
#   term_blocks, block_gap, long_offsets, block_long, head_codes, term_multis, multi_count,
#   term_tails, tail_codes
# A posting code is impact << LOCAL_BITS | the doc's place in its block (format.py's layout); an
# entry's head has its block's highest impact. The entry loops below decode gaps inline: a helper was
# much slower (bench/results/constants.md).
#
# Skips: while the bounds pass reads a query term's entries it records, before every STRIDE-th
# entry, where a reader of the term stands there (the previous entry's block, the term's long gaps
# and multi-posting entries read so far). A round that visits few blocks jumps from skip to skip
# to them instead of reading every entry (the bounds pass has just brought those bytes to cache).
STRIDE = 32


@njit(cache=True, nogil=True)
def _bounds(
    q_terms, q_weights, n_bound, term_blocks, block_gap, long_offsets, block_long, head_codes, term_multis,
    ub, skips, skip_block, skip_long, skip_multi,
):  # fmt: skip
    """Add each of the first ``n_bound`` query terms' weight x its highest impact in a block to the
    block's ``ub`` (one byte and one code per entry, read in order), and record every query term's
    skips (term ``i``'s at ``skips[i]:skips[i + 1]``)."""
    for i in range(len(q_terms)):
        t = q_terms[i]
        w = q_weights[i] if i < n_bound else 0
        b = -1
        li = np.int64(long_offsets[t])
        mi = np.int64(term_multis[t])
        s = np.int64(term_blocks[t])
        n = skips[i]
        for j in range(s, np.int64(term_blocks[t + 1])):
            if (j - s) % STRIDE == 0:
                skip_block[n] = b
                skip_long[n] = li
                skip_multi[n] = mi
                n += 1
            v = np.int64(block_gap[j])
            g = v & GAP_MASK
            if g == 0:
                g = np.int64(block_long[li])
                li += 1
            b += g
            mi += np.int64((v & SINGLE) == 0)
            ub[b] += w * (np.int64(head_codes[j]) >> LOCAL_BITS)


@njit(cache=True, nogil=True, inline="always")
def _add_entry(j, p, n, w, base, head_codes, tail_codes, acc):
    """Add entry ``j``'s postings (its head, then ``n`` tail codes from ``p``) x ``w`` to the block's
    accumulators at ``base``; returns the head's impact."""
    c = np.int64(head_codes[j])
    acc[base + (c & PLACE)] += w * (c >> LOCAL_BITS)
    for x in range(p, p + n):
        d = np.int64(tail_codes[x])
        acc[base + (d & PLACE)] += w * (d >> LOCAL_BITS)
    return c >> LOCAL_BITS


@njit(cache=True, nogil=True)
def _walk(
    t, w, term_blocks, block_gap, long_offsets, block_long, head_codes, term_multis, multi_count, term_tails,
    tail_codes, slot, acc, block_size, rem,
):  # fmt: skip
    """Add term ``t``'s postings x ``w`` in every block ``b`` with ``slot[b] >= 0`` to the block's
    accumulators ``acc[slot[b] * block_size:][:block_size]``, reading every entry of the term. When
    ``rem`` is not empty, ``rem[slot[b]]`` loses the term's bound there (``w`` x head impact)."""
    track = len(rem) > 0
    b = -1
    li = np.int64(long_offsets[t])
    mi = np.int64(term_multis[t])  # the entry's place among the term's multi-posting entries
    pm = mi  # the tail cursor p is up to date with the multi entries before pm
    p = np.int64(term_tails[t])
    for j in range(np.int64(term_blocks[t]), np.int64(term_blocks[t + 1])):
        v = np.int64(block_gap[j])
        g = v & GAP_MASK
        if g == 0:
            g = np.int64(block_long[li])
            li += 1
        b += g
        multi = np.int64((v & SINGLE) == 0)
        s = slot[b]
        if s >= 0:
            # Bring the tail cursor here only now: most entries are in no slot, and a sum over the
            # counts in between is one vectorized loop.
            for y in range(pm, mi):
                p += np.int64(multi_count[y]) - 1
            pm = mi
            # multi_count ends with a 0, so reading this entry's count when it has none stays inside.
            n = (np.int64(multi_count[mi]) - 1) * multi
            top = _add_entry(j, p, n, w, s * block_size, head_codes, tail_codes, acc)
            if track:
                rem[s] -= w * top
        mi += multi


@njit(cache=True, nogil=True)
def _seek(
    t, w, first_skip, end_skip, skip_block, skip_long, skip_multi, term_blocks, block_gap, long_offsets,
    block_long, head_codes, term_multis, multi_count, term_tails, tail_codes, blocks, slot, acc, block_size,
    rem,
):  # fmt: skip
    """:func:`_walk` for the (ascending) ``blocks`` only: jump to the last skip before each block,
    then read entries up to it."""
    track = len(rem) > 0
    s = np.int64(term_blocks[t])
    e = np.int64(term_blocks[t + 1])
    j = s
    b = -1
    li = np.int64(long_offsets[t])
    mi = np.int64(term_multis[t])
    pm = mi
    p = np.int64(term_tails[t])
    k = first_skip
    for x in range(len(blocks)):
        target = blocks[x]
        # Skip k + 1 stands after an entry of block skip_block[k + 1]: below the target, the target's
        # entry (if any) lies past it.
        while k + 1 < end_skip and skip_block[k + 1] < target:
            k += 1
        at = s + (k - first_skip) * STRIDE
        if at > j:
            j = at
            b = skip_block[k]
            li = skip_long[k]
            mi = skip_multi[k]
        v = 0
        nb = b
        while j < e:
            v = np.int64(block_gap[j])
            g = v & GAP_MASK
            if g == 0:
                g = np.int64(block_long[li])
            nb = b + g
            if nb >= target:
                break
            b = nb
            li += np.int64((v & GAP_MASK) == 0)
            mi += np.int64((v & SINGLE) == 0)
            j += 1
        if j == e:
            return
        if nb == target:
            multi = np.int64((v & SINGLE) == 0)
            for y in range(pm, mi):
                p += np.int64(multi_count[y]) - 1
            pm = mi
            n = (np.int64(multi_count[mi]) - 1) * multi
            sl = slot[target]
            top = _add_entry(j, p, n, w, sl * block_size, head_codes, tail_codes, acc)
            if track:
                rem[sl] -= w * top
            b = nb
            li += np.int64((v & GAP_MASK) == 0)
            mi += multi
            j += 1


@njit(cache=True, nogil=True)
def _accumulate(
    q_terms, q_weights, skips, skip_block, skip_long, skip_multi, term_blocks, block_gap, long_offsets,
    block_long, head_codes, term_multis, multi_count, term_tails, tail_codes, blocks, slot, acc, block_size,
    rem, walk_ratio,
):  # fmt: skip
    """Add the query's postings in ``blocks`` (ascending, each with a slot) to their accumulators,
    term after term: a term with at most ``walk_ratio`` entries per block to visit is read entry by
    entry (:func:`_walk`), any other seeks to the blocks (:func:`_seek`)."""
    for i in range(len(q_terms)):
        t = q_terms[i]
        w = q_weights[i]
        if np.int64(term_blocks[t + 1]) - np.int64(term_blocks[t]) <= walk_ratio * len(blocks):
            _walk(
                t, w, term_blocks, block_gap, long_offsets, block_long, head_codes, term_multis, multi_count,
                term_tails, tail_codes, slot, acc, block_size, rem,
            )  # fmt: skip
        else:
            _seek(
                t, w, skips[i], skips[i + 1], skip_block, skip_long, skip_multi, term_blocks, block_gap,
                long_offsets, block_long, head_codes, term_multis, multi_count, term_tails, tail_codes,
                blocks, slot, acc, block_size, rem,
            )  # fmt: skip


@njit(cache=True, nogil=True)
def _drop(live, slot, acc, rem, alpha, theta, block_size):
    """The blocks of ``live`` where a document can still reach ``theta``: best accumulated score plus
    ``rem`` (x ``alpha``). The others lose their slot (-1): they stop accumulating, are never offered."""
    keep = np.empty(len(live), np.int64)
    n = 0
    for i in range(len(live)):
        b = live[i]
        s = slot[b]
        base = s * block_size
        top = acc[base]
        for j in range(base + 1, base + block_size):
            top = max(top, acc[j])
        if (top + rem[s]) * alpha < theta:
            slot[b] = -1
        else:
            keep[n] = b
            n += 1
    return keep[:n]


@njit(cache=True, nogil=True)
def _offer(blocks, slot, acc, ub, alpha, block_size, hs, hd, size, k, allow, tie):
    """Offer the documents of ``blocks`` (accumulated in slots 0, 1, ... in that order) to the heap
    of tie keys; a dropped block (slot -1) and one whose bound (x ``alpha``) is below the k-th score
    by then are passed over, and so is a document with ``allow[doc] == 0`` (none when ``allow`` is
    empty). A block whose bound equals the k-th score is scored: a tie may still enter by its key."""
    filtered = len(allow) > 0
    for i in range(len(blocks)):
        b = blocks[i]
        if slot[b] < 0 or (size == k and ub[b] * alpha < hs[0]):
            continue
        base = i * block_size
        if size == k:
            # Most blocks hold no document that reaches the k-th score: a max over the block (a loop
            # without branches, vectorized) skips them.
            top = acc[base]
            for j in range(base + 1, base + block_size):
                top = max(top, acc[j])
            if top < hs[0]:
                continue
        for j in range(block_size):
            s = acc[base + j]
            d = b * block_size + j
            # The tie key is read only for a score that can enter (most do not).
            if s > 0 and (size < k or s >= hs[0]) and (not filtered or allow[d] != 0):
                key = _key(tie, d)
                if size < k or _worse(hs[0], hd[0], s, key):
                    size = _heap_push(hs, hd, size, k, s, key)
    return size


@njit(cache=True, nogil=True)
def _refine(
    q_terms, q_weights, skips, skip_block, skip_long, skip_multi, term_blocks, block_gap, long_offsets,
    block_long, head_codes, term_multis, multi_count, term_tails, tail_codes, cand, slot, acc, block_size,
    rem, alpha, theta, walk_ratio,
):  # fmt: skip
    """Round two's accumulation of the blocks ``cand`` (ascending, slots 0, 1, ...; ``rem`` their
    bounds). The terms (heaviest first) go in chunks of 4, 4, 8, 8, 16, ...; between chunks a block
    where no document can reach ``theta`` any more (best score so far + the rest of its bound, x
    ``alpha``) is dropped: MaxScore's argument, per block (bench/results/constants.md). The later
    chunks visit few blocks and seek to them."""
    n_terms = len(q_terms)
    live = cand
    lo = 0
    chunk = 4
    n_chunks = 0
    while lo < n_terms and len(live) > 0:
        hi = min(n_terms, lo + chunk)
        _accumulate(
            q_terms[lo:hi], q_weights[lo:hi], skips[lo : hi + 1], skip_block, skip_long, skip_multi,
            term_blocks, block_gap, long_offsets, block_long, head_codes, term_multis, multi_count,
            term_tails, tail_codes, live, slot, acc, block_size, rem, walk_ratio,
        )  # fmt: skip
        lo = hi
        n_chunks += 1
        chunk <<= 1 - n_chunks % 2  # doubles every other chunk
        if lo < n_terms:
            live = _drop(live, slot, acc, rem, alpha, theta, block_size)


@njit(cache=True, nogil=True)
def _scan(
    q_terms, q_weights, term_blocks, block_gap, long_offsets, block_long, head_codes, term_multis,
    multi_count, term_tails, tail_codes, n_docs, block_size, tie, inv, k, allow,
):  # fmt: skip
    """Exhaustive term-at-a-time scan with a dense accumulator: the reference baseline. Only documents
    with ``allow[doc] != 0`` are ranked (every one when ``allow`` is empty)."""
    if k <= 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    n_blocks = (n_docs + block_size - 1) // block_size
    acc = np.zeros(n_blocks * block_size, np.int64)  # every block in its own place: one doc per slot
    slot = np.arange(n_blocks)
    for i in range(len(q_terms)):
        _walk(
            q_terms[i], q_weights[i], term_blocks, block_gap, long_offsets, block_long, head_codes,
            term_multis, multi_count, term_tails, tail_codes, slot, acc, block_size, acc[:0],
        )  # fmt: skip
    return _top_docs(acc, n_docs, k, allow, tie, inv)


@njit(cache=True, nogil=True)
def _skip_arrays(q_terms, term_blocks):
    """Each query term's entry count, and room for the skips the bounds pass records: term ``i``'s
    are ``skips[i]:skips[i + 1]`` of (skip_block, skip_long, skip_multi)."""
    n_terms = len(q_terms)
    entries = np.empty(n_terms, np.int64)
    skips = np.zeros(n_terms + 1, np.int64)
    for i in range(n_terms):
        entries[i] = np.int64(term_blocks[q_terms[i] + 1]) - np.int64(term_blocks[q_terms[i]])
        skips[i + 1] = skips[i] + (entries[i] + STRIDE - 1) // STRIDE
    n = skips[n_terms]
    return entries, skips, np.empty(n, np.int64), np.empty(n, np.int64), np.empty(n, np.int64)


@njit(cache=True, nogil=True)
def _block_max(
    q_terms, q_weights, bound_terms, term_blocks, block_gap, long_offsets, block_long, head_codes,
    term_multis, multi_count, term_tails, tail_codes, n_docs, block_size, tie, inv, k, alpha, first,
    walk_ratio, allow, block_allow,
):  # fmt: skip
    """Block-max search over block-partitioned postings, in two rounds.

    Block bounds (sum of query weight x the term's highest impact in the block: its entry's head)
    come from one pass over the query terms' entries, which also records their skips. Round one
    scores the ``first`` best-bounded blocks (ties by lower id) for a k-th score; round two scores
    every other block whose bound reaches it (a document elsewhere scores below it, and the k-th
    score only rises). Each round adds the query's postings in its blocks to per-block accumulators,
    term after term, reading a term's entries in order or seeking to its blocks (``walk_ratio``:
    :func:`_accumulate`); round two does it in chunks of terms (4, 4, 8, 8, ...) and drops a block
    once its best partial score plus the rest of its bound cannot reach round one's k-th score. Then
    the blocks' documents are offered to the top-k heap, passing over a block whose bound has fallen
    below the k-th score. With ``alpha == 1`` and ``bound_terms`` = all query terms the result is
    exact; ``alpha < 1`` (bounds scaled down) or fewer ``bound_terms`` (the query's heaviest) trade
    recall for speed. A filter (``allow`` per document, ``block_allow`` per block: non-zero where
    the block holds an allowed document; both empty for none) ranks allowed documents only, and a
    block without one gets bound 0: it is never scored.
    Returns (scores, docs, blocks scored).
    """
    if k <= 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), 0
    n_blocks = (n_docs + block_size - 1) // block_size
    _, skips, skip_block, skip_long, skip_multi = _skip_arrays(q_terms, term_blocks)
    ub = np.zeros(n_blocks, np.int64)
    _bounds(
        q_terms, q_weights, bound_terms, term_blocks, block_gap, long_offsets, block_long, head_codes,
        term_multis, ub, skips, skip_block, skip_long, skip_multi,
    )  # fmt: skip
    if len(block_allow) > 0:
        for b in range(n_blocks):
            if block_allow[b] == 0:
                ub[b] = 0
    index = (
        term_blocks, block_gap, long_offsets, block_long, head_codes, term_multis, multi_count, term_tails,
        tail_codes,
    )  # fmt: skip
    hs = np.empty(max(k, 1), np.int64)
    hd = np.empty(max(k, 1), np.int64)
    size = 0
    # Round one: the best-bounded blocks (ties by lower id), best first.
    _, fb = _top_positive(ub, n_blocks, min(first, n_blocks))
    n_f = len(fb)
    slot = np.full(n_blocks, -1, np.int32)
    for i in range(n_f):
        slot[fb[i]] = i
    acc = np.zeros(n_f * block_size, np.int64)
    _accumulate(
        q_terms, q_weights, skips, skip_block, skip_long, skip_multi, *index, np.sort(fb), slot, acc,
        block_size, acc[:0], walk_ratio,
    )  # fmt: skip
    size = _offer(fb, slot, acc, ub, alpha, block_size, hs, hd, size, k, allow, tie)
    # Round two: the other blocks that could still enter the top k.
    floor = hs[0] if size == k else 1
    cand = np.empty(n_blocks, np.int64)
    n_c = 0
    for b in range(n_blocks):
        if ub[b] * alpha >= floor and slot[b] < 0:
            cand[n_c] = b
            n_c += 1
    if n_c > 0:
        cand = cand[:n_c]
        slot[fb] = -1
        slot[cand] = np.arange(n_c, dtype=np.int32)
        acc = np.zeros(n_c * block_size, np.int64)
        rem = ub[cand].copy()
        theta = hs[0] if size == k else 1
        _refine(
            q_terms, q_weights, skips, skip_block, skip_long, skip_multi, *index, cand, slot, acc, block_size,
            rem, alpha, theta, walk_ratio,
        )  # fmt: skip
        size = _offer(cand, slot, acc, ub, alpha, block_size, hs, hd, size, k, allow, tie)
    scores, docs = _hits(hs, hd, size, inv)
    return scores, docs, n_f + n_c


@njit(cache=True, nogil=True)
def _cuts(weights, parts):
    """``parts + 1`` cut points splitting ``len(weights)`` items, in order, into runs of about equal
    total weight (a run may be empty)."""
    total = np.int64(0)
    for w in weights:
        total += np.int64(w)
    cuts = np.zeros(parts + 1, np.int64)
    cuts[parts] = len(weights)
    run = np.int64(0)
    p = 1
    for i in range(len(weights)):
        while p < parts and run * parts >= total * p:
            cuts[p] = i
            p += 1
        run += np.int64(weights[i])
    while p < parts:
        cuts[p] = len(weights)
        p += 1
    return cuts


@njit(cache=True, nogil=True)
def _merge_parts(hs, hd, sizes, k, skip_block, block_size, first_hs, first_hd, first_size, inv):
    """One top-``k`` heap from round one's (``first_*``) and each part's heap (of tie keys); a part's
    hit in a block with ``skip_block[b] != 0`` is a copy of a round-one hit and is passed over (none
    when ``skip_block`` is empty)."""
    ms = np.empty(max(k, 1), np.int64)
    md = np.empty(max(k, 1), np.int64)
    size = 0
    for i in range(first_size):
        size = _heap_push(ms, md, size, k, first_hs[i], first_hd[i])
    skips = len(skip_block) > 0
    for p in range(len(sizes)):
        for i in range(sizes[p]):
            if not skips or skip_block[_doc(inv, hd[p, i]) // block_size] == 0:
                size = _heap_push(ms, md, size, k, hs[p, i], hd[p, i])
    return ms, md, size


# Parallel regions at the prange loops only: numba would make every array expression one more
# fork and join of the threads, and on a one-query path each costs more than it saves.
PRANGE_ONLY = {"prange": True, **dict.fromkeys(("comprehension", "reduction", "inplace_binop"), False)}
PRANGE_ONLY.update(dict.fromkeys(("setitem", "numpy", "stencil", "fusion"), False))


@njit(cache=True, nogil=True, parallel=PRANGE_ONLY)
def _block_max_split(
    q_terms, q_weights, bound_terms, term_blocks, block_gap, long_offsets, block_long, head_codes,
    term_multis, multi_count, term_tails, tail_codes, n_docs, block_size, tie, inv, k, alpha, first,
    walk_ratio, allow, block_allow, parts, min_entries,
):  # fmt: skip
    """:func:`_block_max` for one query on ``parts`` threads: the same hits in exact mode. A query
    whose terms hold fewer than ``min_entries`` entries runs on one (:func:`_block_max` itself).

    Each stage is split ``parts`` ways: the bounds pass by query terms (runs of about equal entries,
    each into its own bound row, summed after), round one's blocks and round two's candidates
    by runs of ascending blocks of equal count, each part with its own slots, accumulators and heap.
    A part seeks to its blocks and never walks a term: a walk reads the whole term in every part.
    Round two's heaps start from round one's, so a part prunes with the k-th score from the start;
    the merge takes each part's own blocks' hits. Returns (scores, docs, blocks scored). Its numpy
    twin is :func:`plugin.scorer.reference.block_max`: the split changes no hit and no bound.
    """
    if k <= 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), 0
    n_blocks = (n_docs + block_size - 1) // block_size
    entries, skips, skip_block, skip_long, skip_multi = _skip_arrays(q_terms, term_blocks)
    if entries.sum() < min_entries:
        return _block_max(
            q_terms, q_weights, bound_terms, term_blocks, block_gap, long_offsets, block_long, head_codes,
            term_multis, multi_count, term_tails, tail_codes, n_docs, block_size, tie, inv, k, alpha, first,
            walk_ratio, allow, block_allow,
        )  # fmt: skip
    tcut = _cuts(entries, parts)
    ubs = np.zeros((parts, n_blocks), np.int64)
    for p in prange(parts):
        lo, hi = tcut[p], tcut[p + 1]
        if hi > lo:
            _bounds(
                q_terms[lo:hi], q_weights[lo:hi], min(max(bound_terms - lo, 0), hi - lo), term_blocks,
                block_gap, long_offsets, block_long, head_codes, term_multis, ubs[p], skips[lo : hi + 1],
                skip_block, skip_long, skip_multi,
            )  # fmt: skip
    ub = ubs[0].copy()
    for p in range(1, parts):
        ub += ubs[p]
    if len(block_allow) > 0:
        for b in range(n_blocks):
            if block_allow[b] == 0:
                ub[b] = 0
    kk = max(k, 1)
    hs = np.empty((parts, kk), np.int64)
    hd = np.empty((parts, kk), np.int64)
    sizes = np.zeros(parts, np.int64)
    slots = np.full((parts, n_blocks), -1, np.int32)
    # Round one: the best-bounded blocks, in runs of ascending ids.
    _, fb = _top_positive(ub, n_blocks, min(first, n_blocks))
    fs = np.sort(fb)
    n_f = len(fs)
    for p in prange(parts):
        blocks = fs[n_f * p // parts : n_f * (p + 1) // parts]
        for j in range(len(blocks)):
            slots[p, blocks[j]] = j
        a = np.zeros(len(blocks) * block_size, np.int64)
        _accumulate(
            q_terms, q_weights, skips, skip_block, skip_long, skip_multi, term_blocks, block_gap,
            long_offsets, block_long, head_codes, term_multis, multi_count, term_tails, tail_codes, blocks,
            slots[p], a, block_size, a[:0], 0,
        )  # fmt: skip
        sizes[p] = _offer(blocks, slots[p], a, ub, alpha, block_size, hs[p], hd[p], 0, k, allow, tie)
        for j in range(len(blocks)):
            slots[p, blocks[j]] = -1
    in_first = np.zeros(n_blocks, np.uint8)
    in_first[fs] = 1
    rs, rd, size = _merge_parts(hs, hd, sizes, k, in_first[:0], block_size, hs[0, :0], hd[0, :0], 0, inv)
    # Round two: the other blocks that could still enter the top k.
    floor = rs[0] if size == k else 1
    cand = np.empty(n_blocks, np.int64)
    n_c = 0
    for b in range(n_blocks):
        if ub[b] * alpha >= floor and in_first[b] == 0:
            cand[n_c] = b
            n_c += 1
    if n_c > 0:
        cand = cand[:n_c]
        for p in prange(parts):
            blocks = cand[n_c * p // parts : n_c * (p + 1) // parts]
            for j in range(len(blocks)):
                slots[p, blocks[j]] = j
            a = np.zeros(len(blocks) * block_size, np.int64)
            rem = ub[blocks]
            _refine(
                q_terms, q_weights, skips, skip_block, skip_long, skip_multi, term_blocks, block_gap,
                long_offsets, block_long, head_codes, term_multis, multi_count, term_tails, tail_codes,
                blocks, slots[p], a, block_size, rem, alpha, floor, 0,
            )  # fmt: skip
            hs[p, :size] = rs[:size]
            hd[p, :size] = rd[:size]
            sizes[p] = _offer(blocks, slots[p], a, ub, alpha, block_size, hs[p], hd[p], size, k, allow, tie)
        rs, rd, size = _merge_parts(hs, hd, sizes, k, in_first, block_size, rs, rd, size, inv)
    scores, docs = _hits(rs, rd, size, inv)
    return scores, docs, n_f + n_c


@njit(cache=True, nogil=True, parallel=True)
def _batch_block_max(
    q_offsets, q_terms, q_weights, bound_terms, term_blocks, block_gap, long_offsets, block_long,
    head_codes, term_multis, multi_count, term_tails, tail_codes, n_docs, block_size, tie, inv, k, alpha,
    first, walk_ratio, allow, block_allow,
):  # fmt: skip
    """:func:`_block_max` over many queries (CSR ``q_offsets``), one query per thread at a time."""
    nq = len(q_offsets) - 1
    out_scores = np.zeros((nq, max(k, 1)), np.int64)
    out_docs = np.full((nq, max(k, 1)), -1, np.int64)
    for q in prange(nq):
        s, e = q_offsets[q], q_offsets[q + 1]
        scores, docs, _ = _block_max(
            q_terms[s:e], q_weights[s:e], bound_terms[q], term_blocks, block_gap, long_offsets,
            block_long, head_codes, term_multis, multi_count, term_tails, tail_codes, n_docs,
            block_size, tie, inv, k, alpha, first, walk_ratio, allow, block_allow,
        )  # fmt: skip
        out_scores[q, : len(scores)] = scores
        out_docs[q, : len(docs)] = docs
    return out_scores, out_docs


@njit(cache=True, nogil=True)
def _score_docs(q_terms, q_weights, docs, fwd_offsets, fwd_terms, fwd_impacts, n_terms, k, tie, inv):
    """Score only ``docs`` (internal ids, ascending) from the forward store, each with all its terms
    against the query's weights (a table over the vocabulary): a selective filter's path. Top-k, ties
    by the lower tie key."""
    if k <= 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    table = np.zeros(n_terms, np.int64)
    for i in range(len(q_terms)):
        table[q_terms[i]] = q_weights[i]
    hs = np.empty(k, np.int64)
    hd = np.empty(k, np.int64)
    size = 0
    for i in range(len(docs)):
        d = docs[i]
        s = np.int64(0)
        for j in range(np.int64(fwd_offsets[d]), np.int64(fwd_offsets[d + 1])):
            s += table[np.int64(fwd_terms[j])] * np.int64(fwd_impacts[j])
        if s > 0 and (size < k or s >= hs[0]):
            key = _key(tie, d)
            if size < k or _worse(hs[0], hd[0], s, key):
                size = _heap_push(hs, hd, size, k, s, key)
    return _hits(hs, hd, size, inv)


@njit(cache=True, nogil=True, parallel=True)
def _batch_score_docs(
    q_offsets, q_terms, q_weights, docs, fwd_offsets, fwd_terms, fwd_impacts, n_terms, k, tie, inv
):
    """:func:`_score_docs` over many queries (CSR ``q_offsets``), one query per thread at a time."""
    nq = len(q_offsets) - 1
    out_scores = np.zeros((nq, max(k, 1)), np.int64)
    out_docs = np.full((nq, max(k, 1)), -1, np.int64)
    for q in prange(nq):
        s, e = q_offsets[q], q_offsets[q + 1]
        scores, hits = _score_docs(
            q_terms[s:e], q_weights[s:e], docs, fwd_offsets, fwd_terms, fwd_impacts, n_terms, k, tie, inv
        )
        out_scores[q, : len(scores)] = scores
        out_docs[q, : len(hits)] = hits
    return out_scores, out_docs


@njit(cache=True, nogil=True)
def _cut_search(
    q_terms, q_weights, cut, depth, term_blocks, block_gap, long_offsets, block_long, head_codes,
    term_multis, multi_count, term_tails, tail_codes, n_docs, block_size, tie, inv, k, alpha, first,
    walk_ratio, allow, block_allow, fwd_offsets, fwd_terms, fwd_impacts, n_terms,
):  # fmt: skip
    """Seismic's query cut on the block-max search: the top ``depth`` documents under the query's
    ``cut`` heaviest terms (:func:`_block_max`, knob ``alpha``) are the candidates, re-scored with
    all its terms from the forward store. Top-k of them, ties by the lower tie key; a hit's score is
    its full score."""
    if k <= 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    c = min(cut, len(q_terms))
    depth = max(depth, k)
    _, cand, _ = _block_max(
        q_terms[:c], q_weights[:c], c, term_blocks, block_gap, long_offsets, block_long, head_codes,
        term_multis, multi_count, term_tails, tail_codes, n_docs, block_size, tie, inv, depth, alpha,
        max(first, depth), walk_ratio, allow, block_allow,
    )  # fmt: skip
    return _score_docs(
        q_terms, q_weights, np.sort(cand), fwd_offsets, fwd_terms, fwd_impacts, n_terms, k, tie, inv
    )


@njit(cache=True, nogil=True, parallel=True)
def _batch_cut_search(
    q_offsets, q_terms, q_weights, cut, depth, term_blocks, block_gap, long_offsets, block_long,
    head_codes, term_multis, multi_count, term_tails, tail_codes, n_docs, block_size, tie, inv, k, alpha,
    first, walk_ratio, allow, block_allow, fwd_offsets, fwd_terms, fwd_impacts, n_terms,
):  # fmt: skip
    """:func:`_cut_search` over many queries (CSR ``q_offsets``), one query per thread at a time."""
    nq = len(q_offsets) - 1
    out_scores = np.zeros((nq, max(k, 1)), np.int64)
    out_docs = np.full((nq, max(k, 1)), -1, np.int64)
    for q in prange(nq):
        s, e = q_offsets[q], q_offsets[q + 1]
        scores, docs = _cut_search(
            q_terms[s:e], q_weights[s:e], cut, depth, term_blocks, block_gap, long_offsets, block_long,
            head_codes, term_multis, multi_count, term_tails, tail_codes, n_docs, block_size, tie, inv, k,
            alpha, first, walk_ratio, allow, block_allow, fwd_offsets, fwd_terms, fwd_impacts, n_terms,
        )  # fmt: skip
        out_scores[q, : len(scores)] = scores
        out_docs[q, : len(docs)] = docs
    return out_scores, out_docs


@njit(cache=True, nogil=True)
def _float_scores(q_terms, q_weights, docs, flt_offsets, flt_terms, flt_weights, n_terms):
    """Float dot products of ``docs`` (internal ids) with the query's float weights (a table over
    the vocabulary), from the float store, accumulated in float64: mode "float"'s re-scoring."""
    table = np.zeros(n_terms, np.float64)
    for i in range(len(q_terms)):
        table[q_terms[i]] = q_weights[i]
    out = np.zeros(len(docs), np.float64)
    for i in range(len(docs)):
        d = docs[i]
        s = 0.0
        for j in range(np.int64(flt_offsets[d]), np.int64(flt_offsets[d + 1])):
            s += table[np.int64(flt_terms[j])] * np.float64(flt_weights[j])
        out[i] = s
    return out


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
