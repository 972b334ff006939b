"""Exact search by a sparse matrix product: the reference every faster backend is checked against."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from lsr.sparse import SparseBatch
from plugin._topk import topk
from plugin.hits import Hit


class BruteForceSearcher:
    """Scores every document by the float dot product with the query (scipy CSR x CSC).

    Parameters
    ----------
    docids : external document ids, one per row of ``docs``.
    docs : the document vectors; internal doc id = row number.
    """

    def __init__(self, docids: Sequence[str], docs: SparseBatch):
        if len(docids) != len(docs):
            raise ValueError(f"{len(docids)} document ids for {len(docs)} vectors")
        self.docids = list(docids)
        self.vocab = docs.vocab
        self._doc_t = docs.to_scipy().T.tocsr()  # [vocab, n_docs]: a query row touches its terms' rows

    def __len__(self) -> int:
        return len(self.docids)

    def scores(self, query: SparseBatch) -> np.ndarray:
        """Dense ``[n_queries, n_docs]`` float32 scores."""
        if query.vocab is not self.vocab and query.vocab != self.vocab:
            raise ValueError("query and documents use different vocabularies")
        return np.asarray((query.to_scipy() @ self._doc_t).todense(), np.float32)

    def search(self, query: SparseBatch, k: int = 10) -> list[Hit]:
        """Top-``k`` hits of a one-row query batch (documents scoring 0 are not hits)."""
        if len(query) != 1:
            raise ValueError(f"search takes a one-row query batch, got {len(query)} rows; use batch_search")
        return self.batch_search(query, k)[0]

    def batch_search(self, queries: SparseBatch, k: int = 10) -> list[list[Hit]]:
        out = []
        for row in range(len(queries)):
            s = self.scores(queries.take([row]))[0]
            out.append([Hit(self.docids[i], float(s[i])) for i in topk(s, k)])
        return out
