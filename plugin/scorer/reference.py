"""Plain-numpy twins of :mod:`plugin.scorer._kernels`, same signatures; tests hold them equal."""

from __future__ import annotations

import numpy as np

from indexer.native.format import block_ids, decode_postings, entry_counts


def _top(scores: np.ndarray, docs: np.ndarray, k: int, tie: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` best positive scores, ties by the lower tie key (``tie[doc]``; ``doc`` when empty)."""
    keep = scores > 0
    scores, docs = scores[keep], docs[keep]
    keys = np.asarray(tie)[docs] if len(tie) else docs
    order = np.lexsort((keys, -scores))[: max(k, 0)]
    return scores[order].astype(np.int64), docs[order].astype(np.int64)


def _decoded(term_blocks, block_gap, block_long, head_codes, multi_count, tail_codes, block_size):
    """Postings (docs, impacts, each term's offsets there), block ids and counts per entry (numpy)."""
    offsets, docs, impacts = decode_postings(
        block_gap, block_long, multi_count, term_blocks, head_codes, tail_codes, block_size
    )
    return (
        docs,
        impacts,
        offsets,
        block_ids(block_gap, block_long, term_blocks),
        entry_counts(block_gap, multi_count),
    )


def _doc_scores(q_terms, q_weights, offsets, docs, impacts, n_docs):
    """Every document's score: the query's postings summed."""
    scores = np.zeros(n_docs, np.int64)
    for t, w in zip(q_terms, q_weights, strict=True):
        s, e = offsets[t], offsets[t + 1]
        np.add.at(scores, docs[s:e], int(w) * impacts[s:e].astype(np.int64))
    return scores


def scan(
    q_terms, q_weights, term_blocks, block_gap, long_offsets, block_long, head_codes, term_multis,
    multi_count, term_tails, tail_codes, n_docs, block_size, tie, inv, k, allow,
):  # fmt: skip
    """Exhaustive scan (twin of :func:`plugin.scorer._kernels._scan`): every document's score, top-k.

    Parameters
    ----------
    q_terms, q_weights : NDArray[np.int64]
        ``[n_terms]`` index term ids and query impacts.
    term_blocks, ..., tail_codes : NDArray
        The native index arrays, in the kernels' order.
    n_docs, block_size : int
        The index's document count and block size.
    tie, inv : NDArray[np.int64]
        ``[n_docs]`` each internal doc's tie key (its position in the input) and its inverse, or both
        empty: ties by internal id.
    k : int
        Hits wanted (none for ``k <= 0``).
    allow : NDArray[np.uint8]
        ``[n_blocks x block_size]`` non-zero for the documents that may be ranked, or empty: all.

    Returns
    -------
    scores : NDArray[np.int64]
        ``[n_hits]`` positive impact dot products, best first, ties by the lower tie key; ``n_hits <= k``.
    docs : NDArray[np.int64]
        ``[n_hits]`` internal doc ids.
    """
    docs, impacts, offsets, _, _ = _decoded(
        term_blocks, block_gap, block_long, head_codes, multi_count, tail_codes, block_size
    )
    scores = _allowed(_doc_scores(q_terms, q_weights, offsets, docs, impacts, n_docs), allow)
    return _top(scores, np.arange(n_docs), k, tie)


def _allowed(scores: np.ndarray, allow: np.ndarray) -> np.ndarray:
    """``scores`` with the documents a filter leaves out at 0 (never ranked)."""
    if len(allow):
        scores = np.where(np.asarray(allow[: len(scores)]) != 0, scores, 0)
    return scores


def block_bounds(q_terms, q_weights, term_blocks, blocks, entry_max, n_blocks):
    """Per block: sum of query weight x the term's highest impact there (``entry_max`` per entry).

    Parameters
    ----------
    q_terms, q_weights : NDArray[np.int64]
        ``[n_terms]`` index term ids and query impacts.
    term_blocks : NDArray[np.int64]
        ``[n_index_terms + 1]`` each term's entries are ``term_blocks[t]:term_blocks[t + 1]``.
    blocks : NDArray[np.int64]
        ``[n_entries]`` the block of each entry.
    entry_max : NDArray[np.int64]
        ``[n_entries]`` the highest impact of each entry.
    n_blocks : int
        Blocks in the index.

    Returns
    -------
    NDArray[np.int64]
        ``[n_blocks]`` block bounds.
    """
    ub = np.zeros(n_blocks, np.int64)
    for t, w in zip(q_terms, q_weights, strict=True):
        s, e = term_blocks[t], term_blocks[t + 1]
        np.add.at(ub, blocks[s:e], int(w) * entry_max[s:e])
    return ub


def block_max(
    q_terms, q_weights, bound_terms, term_blocks, block_gap, long_offsets, block_long, head_codes,
    term_multis, multi_count, term_tails, tail_codes, n_docs, block_size, tie, inv, k, alpha, first,
    walk_ratio, allow, block_allow,
):  # fmt: skip
    """Same two rounds as the kernel, on decoded whole arrays; a block is offered with its documents'
    full scores (computed up front) unless round two dropped it. ``walk_ratio`` (how the kernel
    reaches a term's entries in a block) changes no result.

    Parameters
    ----------
    q_terms, q_weights : NDArray[np.int64]
        As in :func:`scan`, heaviest first.
    bound_terms : int
        How many of the first terms bound the blocks.
    term_blocks, ..., tail_codes, n_docs, block_size, tie, inv, k
        As in :func:`scan`.
    alpha : float
        Bound scale in (0, 1]; 1 with all ``bound_terms`` is exact.
    first : int
        Best-bounded blocks scored in round one.
    walk_ratio : int
        Unused here (see above).
    allow : NDArray[np.uint8]
        As in :func:`scan`.
    block_allow : NDArray[np.uint8]
        ``[n_blocks]`` non-zero where a block holds an allowed document (empty with ``allow``): the
        other blocks get bound 0.

    Returns
    -------
    scores, docs : NDArray[np.int64]
        As :func:`scan` returns them.
    blocks_scored : int
        Blocks of round one plus round two's candidates (the kernel's third value).
    """
    if k <= 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), 0
    n_blocks = -(-n_docs // block_size)
    docs, impacts, offsets, blocks, counts = _decoded(
        term_blocks, block_gap, block_long, head_codes, multi_count, tail_codes, block_size
    )
    entry_of = np.repeat(np.arange(len(counts)), counts)
    entry_max = np.zeros(len(counts), np.int64)
    np.maximum.at(entry_max, entry_of, impacts)
    bt, bw = q_terms[:bound_terms], q_weights[:bound_terms]
    ub = block_bounds(bt, bw, np.asarray(term_blocks, np.int64), blocks, entry_max, n_blocks)
    if len(block_allow):
        ub[np.asarray(block_allow) == 0] = 0
    doc_scores = _allowed(_doc_scores(q_terms, q_weights, offsets, docs, impacts, n_docs), allow)
    top = [np.zeros(0, np.int64), np.zeros(0, np.int64)]

    def offer(blocks):
        for b in blocks:
            if len(top[0]) == k and ub[b] * alpha < top[0][-1]:
                continue
            block = np.arange(b * block_size, min((b + 1) * block_size, n_docs))
            top[:] = _top(
                np.concatenate([top[0], doc_scores[block]]), np.concatenate([top[1], block]), k, tie
            )

    positive = np.flatnonzero(ub)
    seeds = positive[np.lexsort((positive, -ub[positive]))][:first]
    offer(seeds)
    floor = top[0][-1] if len(top[0]) == k else 1
    rest = np.setdiff1d(positive, seeds)
    rest = rest[ub[rest] * alpha >= floor]
    # Round two's drops: terms in chunks of 4, 4, 8, 8, 16, ...; after each chunk but the last, a block
    # whose best partial score + the rest of its bound (x alpha) is below round one's k-th is dropped.
    alive = np.ones(len(rest), bool)
    partial = np.zeros(n_docs, np.int64)
    rem = ub[rest].copy()
    doc_block = np.repeat(np.arange(n_blocks), block_size)[:n_docs]
    in_rest = np.full(n_blocks, -1)
    in_rest[rest] = np.arange(len(rest))
    lo, chunk, n_chunks = 0, 4, 0
    while len(rest) and lo < len(q_terms):
        hi = min(len(q_terms), lo + chunk)
        for t, w in zip(q_terms[lo:hi], q_weights[lo:hi], strict=True):
            s, e = offsets[t], offsets[t + 1]
            d = docs[s:e]
            i = in_rest[doc_block[d]]
            live = (i >= 0) & alive[np.maximum(i, 0)]
            np.add.at(partial, d[live], int(w) * impacts[s:e][live].astype(np.int64))
            tb = np.arange(term_blocks[t], term_blocks[t + 1])
            j = in_rest[blocks[tb]]
            hit = (j >= 0) & alive[np.maximum(j, 0)]
            rem[j[hit]] -= int(w) * entry_max[tb[hit]]
        lo, n_chunks = hi, n_chunks + 1
        chunk *= 2 if n_chunks % 2 == 0 else 1
        if lo < len(q_terms):
            for i in np.flatnonzero(alive):
                b = rest[i]
                best = partial[b * block_size : min((b + 1) * block_size, n_docs)].max()
                if (best + rem[i]) * alpha < floor:
                    alive[i] = False
    offer(rest[alive])
    return top[0], top[1], len(seeds) + len(rest)


def score_docs(q_terms, q_weights, docs, fwd_offsets, fwd_terms, fwd_impacts, n_terms, k, tie, inv):
    """Twin of :func:`plugin.scorer._kernels._score_docs`: ``docs``' scores from the forward store, top-k.

    Parameters
    ----------
    q_terms, q_weights : NDArray[np.int64]
        ``[n_terms]`` index term ids and query impacts.
    docs : NDArray[np.int64]
        ``[n]`` internal doc ids, ascending: the only documents scored.
    fwd_offsets, fwd_terms, fwd_impacts : NDArray
        The forward store (each document's terms and impacts).
    n_terms : int
        The index's vocabulary size.
    k : int
        Hits wanted.
    tie, inv : NDArray[np.int64]
        As in :func:`scan`.

    Returns
    -------
    scores, docs : NDArray[np.int64]
        As :func:`scan` returns them.
    """
    table = np.zeros(n_terms, np.int64)
    table[np.asarray(q_terms, np.int64)] = q_weights
    offsets = np.asarray(fwd_offsets, np.int64)
    docs = np.asarray(docs, np.int64)
    lengths = offsets[docs + 1] - offsets[docs]
    rows = (
        np.concatenate([np.arange(offsets[d], offsets[d + 1]) for d in docs])
        if len(docs)
        else np.zeros(0, int)
    )
    products = table[np.asarray(fwd_terms)[rows].astype(np.int64)] * np.asarray(fwd_impacts)[rows].astype(
        np.int64
    )
    scores = np.bincount(np.repeat(np.arange(len(docs)), lengths), weights=products, minlength=len(docs))
    return _top(scores.astype(np.int64), docs, k, tie)


def cut_search(
    q_terms, q_weights, cut, depth, term_blocks, block_gap, long_offsets, block_long, head_codes,
    term_multis, multi_count, term_tails, tail_codes, n_docs, block_size, tie, inv, k, alpha, first,
    walk_ratio, allow, block_allow, fwd_offsets, fwd_terms, fwd_impacts, n_terms,
):  # fmt: skip
    """Twin of :func:`plugin.scorer._kernels._cut_search`: :func:`block_max`'s top ``max(depth, k)``
    under the ``cut`` heaviest query terms, re-scored with all of them by :func:`score_docs`."""
    if k <= 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    c = min(cut, len(q_terms))
    depth = max(depth, k)
    _, cand, _ = block_max(
        q_terms[:c], q_weights[:c], c, term_blocks, block_gap, long_offsets, block_long, head_codes,
        term_multis, multi_count, term_tails, tail_codes, n_docs, block_size, tie, inv, depth, alpha,
        max(first, depth), walk_ratio, allow, block_allow,
    )  # fmt: skip
    return score_docs(
        q_terms, q_weights, np.sort(cand), fwd_offsets, fwd_terms, fwd_impacts, n_terms, k, tie, inv
    )


def float_scores(q_terms, q_weights, docs, flt_offsets, flt_terms, flt_weights, n_terms):
    """Twin of :func:`plugin.scorer._kernels._float_scores`: ``docs``' float scores from the float store.

    Parameters
    ----------
    q_terms : NDArray[np.int64]
        ``[n]`` index term ids of the query, distinct.
    q_weights : NDArray[np.float64]
        ``[n]`` their float weights.
    docs : NDArray[np.int64]
        ``[m]`` internal doc ids to score.
    flt_offsets, flt_terms, flt_weights : NDArray
        The float store (each document's terms and float weights).
    n_terms : int
        The index's vocabulary size.

    Returns
    -------
    NDArray[np.float64]
        ``[m]`` dot products, in ``docs``' order.
    """
    table = np.zeros(n_terms, np.float64)
    table[np.asarray(q_terms, np.int64)] = q_weights
    offsets = np.asarray(flt_offsets, np.int64)
    out = np.zeros(len(docs), np.float64)
    for i, d in enumerate(np.asarray(docs, np.int64).tolist()):
        s, e = offsets[d], offsets[d + 1]
        out[i] = table[np.asarray(flt_terms[s:e], np.int64)] @ np.asarray(flt_weights[s:e], np.float64)
    return out


def _dense_dot(codes, table, query):
    return (table[codes] @ query).astype(np.float32)
