"""Plain-numpy twins of :mod:`indexer.native._kernels` (same signatures); tests hold them equal."""

from __future__ import annotations

import numpy as np


def invert(fwd_offsets, fwd_terms, fwd_impacts, n_terms):
    docs = np.repeat(np.arange(len(fwd_offsets) - 1, dtype=np.int32), np.diff(fwd_offsets))
    order = np.lexsort((docs, fwd_terms))
    counts = np.bincount(fwd_terms, minlength=n_terms)
    post_offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    return post_offsets, docs[order], fwd_impacts[order]


def block_maxima(post_offsets, post_docs, post_impacts, block_size):
    n_terms = len(post_offsets) - 1
    terms = np.repeat(np.arange(n_terms), np.diff(post_offsets))
    blocks = post_docs // block_size
    keys = terms.astype(np.int64) * (int(blocks.max(initial=0)) + 1) + blocks
    uniq, inverse = np.unique(keys, return_inverse=True)
    bm_max = np.zeros(len(uniq), post_impacts.dtype)
    np.maximum.at(bm_max, inverse, post_impacts)
    width = int(blocks.max(initial=0)) + 1
    bm_terms, bm_blocks = uniq // width, (uniq % width).astype(np.int32)
    bm_offsets = np.concatenate([[0], np.cumsum(np.bincount(bm_terms, minlength=n_terms))]).astype(np.int64)
    return bm_offsets, bm_blocks, bm_max


def superblock_maxima(bm_offsets, bm_blocks, bm_max, sb_size):
    n_terms = len(bm_offsets) - 1
    terms = np.repeat(np.arange(n_terms), np.diff(bm_offsets))
    sbs = bm_blocks.astype(np.int64) // sb_size
    width = int(sbs.max(initial=0)) + 1
    keys = terms.astype(np.int64) * width + sbs
    uniq, first, inverse = np.unique(keys, return_index=True, return_inverse=True)
    sbm_max = np.zeros(len(uniq), bm_max.dtype)
    np.maximum.at(sbm_max, inverse, bm_max)
    counts = np.bincount(uniq // width, minlength=n_terms)
    sbm_offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    return sbm_offsets, (uniq % width).astype(np.int32), sbm_max, first.astype(np.int64)


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
