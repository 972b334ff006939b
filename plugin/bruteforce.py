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
        """Dense ``[n_queries, n_docs]`` float32 scores.

        Parameters
        ----------
        query : SparseBatch
            ``[n_queries]`` rows over the documents' vocabulary.

        Returns
        -------
        NDArray[np.float32]
            ``[n_queries, n_docs]`` float dot products (no quantization).

        Raises
        ------
        ValueError
            When ``query`` uses another vocabulary than the documents.
        """
        if query.vocab is not self.vocab and query.vocab != self.vocab:
            raise ValueError("query and documents use different vocabularies")
        return np.asarray((query.to_scipy() @ self._doc_t).todense(), np.float32)

    def search(self, query: SparseBatch, k: int = 10) -> list[Hit]:
        """Top-``k`` hits of a one-row query batch (documents scoring 0 are not hits).

        Parameters
        ----------
        query : SparseBatch
            One row over the documents' vocabulary.
        k : int
            Hits wanted (fewer when fewer documents score above 0; none for ``k <= 0``).

        Returns
        -------
        list of Hit
            Best first; ties by the lower internal doc id (row number).

        Raises
        ------
        ValueError
            When ``query`` has other than one row, or another vocabulary.
        """
        if len(query) != 1:
            raise ValueError(f"search takes a one-row query batch, got {len(query)} rows; use batch_search")
        return self.batch_search(query, k)[0]

    def batch_search(self, queries: SparseBatch, k: int = 10) -> list[list[Hit]]:
        """Top-``k`` hits per query row, as :meth:`search`.

        Parameters
        ----------
        queries : SparseBatch
            ``[n_queries]`` rows over the documents' vocabulary.
        k : int
            Hits per query.

        Returns
        -------
        list of list of Hit
            One list per row, in row order.

        Raises
        ------
        ValueError
            When ``queries`` use another vocabulary than the documents.
        """
        out = []
        for row in range(len(queries)):
            s = self.scores(queries.take([row]))[0]
            out.append([Hit(self.docids[i], float(s[i])) for i in topk(s, k)])
        return out
