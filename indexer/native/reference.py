"""Plain-numpy twins of :mod:`indexer.native._kernels` (same signatures); tests hold them equal."""

from __future__ import annotations

import numpy as np


def invert(fwd_offsets, fwd_terms, fwd_impacts, n_terms):
    docs = np.repeat(np.arange(len(fwd_offsets) - 1, dtype=np.int32), np.diff(fwd_offsets))
    order = np.lexsort((docs, fwd_terms))
    counts = np.bincount(fwd_terms, minlength=n_terms)
    post_offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    return post_offsets, docs[order], fwd_impacts[order]


def rows(post_offsets, post_docs, post_impacts, term_order, term_ids, new_doc, n_rows):
    terms = np.repeat(np.arange(len(post_offsets) - 1), np.diff(np.asarray(post_offsets, np.int64)))
    docs = new_doc[post_docs]
    keep = (docs >= 0) & np.isin(terms, term_order)
    docs, ids, impacts = docs[keep], np.asarray(term_ids)[terms[keep]], post_impacts[keep]
    order = np.lexsort((ids, docs))
    indptr = np.concatenate([[0], np.cumsum(np.bincount(docs, minlength=n_rows))]).astype(np.int64)
    return indptr, ids[order].astype(np.int32), impacts[order]


def groups(offsets, keys, width):
    n_lists = len(offsets) - 1
    lists = np.repeat(np.arange(n_lists), np.diff(offsets))
    keyed = np.asarray(keys, np.int64) // width
    span = int(keyed.max(initial=0)) + 1
    uniq, first = np.unique(lists.astype(np.int64) * span + keyed, return_index=True)
    g_offsets = np.concatenate([[0], np.cumsum(np.bincount(uniq // span, minlength=n_lists))]).astype(
        np.int64
    )
    return g_offsets, (uniq % span).astype(np.int32), first.astype(np.int64)


def order_entries(first, counts, codes):
    entry = np.repeat(np.arange(len(first)), counts)
    codes[:] = codes[np.lexsort((codes & 127, -(codes.astype(np.int64) >> 7), entry))]


def move_gains(docs, fwd_offsets, fwd_terms, mid, left_deg, right_deg, log2_table):
    n_l, n_r = mid, len(docs) - mid

    def cost(l_deg, r_deg):
        return l_deg * (log2_table[n_l] - log2_table[l_deg + 1]) + r_deg * (
            log2_table[n_r] - log2_table[r_deg + 1]
        )

    gains = np.empty(len(docs))
    for i, d in enumerate(docs):
        t = fwd_terms[fwd_offsets[d] : fwd_offsets[d + 1]]
        step = -1 if i < mid else 1
        before = cost(left_deg[t], right_deg[t])
        after = cost(left_deg[t] + step, right_deg[t] - step)
        gains[i] = float(np.sum(before - after))
    return gains
