"""Searchers over Lucene indexes through Anserini's Java classes (via :mod:`plugin.jvm`).

- :class:`LuceneSearcher`: impact search (score = sum of query impact x document impact) with
  query weights quantized by the index's own rule (:mod:`indexer.quantize`), never truncated.
- :class:`BM25Searcher`: Anserini's BM25 over a text index, the classic anchor.

Both check the index's files against the sizes and sha256 checksums in ``lsr-index.json`` when they
open it (``verify=True``, the default; see :func:`indexer.lucene.verify_index`), so a damaged index
is a clear ``IndexCorruptError`` naming the file rather than a Java exception or wrong scores.

Ties: Anserini orders equal scores by the external id string; we re-order them by the lower
Lucene doc id (DESIGN.md's rule), fetching more hits when a tie straddles the cut-off.
"""

from __future__ import annotations

import logging
from pathlib import Path

from indexer.lucene import META, LuceneIndexInfo, impact_vectors, verify_index
from indexer.quantize import IMPACT_SCALE
from lsr.sparse import SparseBatch
from plugin import jvm
from plugin.hits import Hit
from plugin.options import BM25_B, BM25_K1

log = logging.getLogger(__name__)


def _sorted_hits(scored) -> list[tuple[float, int, str]]:
    return sorted(
        ((float(d.score), int(d.lucene_docid), str(d.docid)) for d in scored), key=lambda h: (-h[0], h[1])
    )


def _tie_safe(fetch_hits, k: int) -> list[Hit]:
    """The top-``k`` of ``fetch_hits(n)`` (Anserini's top-n), ties by the lower Lucene doc id: fetches
    more while a tie straddles the cut-off."""
    fetch = k + 16
    while True:
        hits = _sorted_hits(fetch_hits(fetch))
        if not _needs_more(hits, k, fetch):
            return [Hit(docid, score) for score, _, docid in hits[:k]]
        fetch *= 4


def _needs_more(hits: list, k: int, fetched: int) -> bool:
    # A full page whose last score equals the k-th: a tied doc with a lower id may lie beyond it.
    return len(hits) >= fetched and len(hits) >= k and hits[k - 1][0] == hits[-1][0]


class LuceneSearcher:
    """Impact search over an index built by ``lsr index --backend lucene``.

    ``verify`` compares the sha256 checksums of the index files when opening; their presence and
    sizes are always checked.

    Parameters
    ----------
    index_dir : str or Path
        The index (with its ``lsr-index.json``).
    verify : bool
        Compare the files' checksums too (``IndexCorruptError`` naming a damaged file).
    """

    def __init__(self, index_dir: str | Path, verify: bool = True):
        self.index_dir = Path(index_dir)
        self.info = LuceneIndexInfo.load(self.index_dir)
        verify_index(self.index_dir, self.info, checksums=verify)
        self.scale = self.info.scale or IMPACT_SCALE
        self._searcher = jvm.autoclass("io.anserini.search.SimpleImpactSearcher")(str(self.index_dir))
        self._JHashMap = jvm.autoclass("java.util.HashMap")
        self._JInt = jvm.autoclass("java.lang.Integer")
        self._JArrayList = jvm.autoclass("java.util.ArrayList")

    def __len__(self) -> int:
        return int(self._searcher.get_total_num_docs())

    def query_impacts(self, queries: SparseBatch) -> list[dict[str, int]]:
        """Each query row as ``{escaped term: integer impact}``, quantized like the documents.

        Parameters
        ----------
        queries : SparseBatch
            ``[n_queries]`` rows; weights are quantized by the index's scale.

        Returns
        -------
        list of dict
            ``[n_queries]`` ``{escaped term: impact}`` dicts, impacts of 0 dropped.
        """
        return impact_vectors(queries, self.scale)

    def _jmap(self, impacts: dict[str, int]):
        m = self._JHashMap()
        for term, q in impacts.items():
            m.put(term, self._JInt(q))
        return m

    def _search_one(self, impacts: dict[str, int], k: int) -> list[Hit]:
        if k <= 0 or not impacts:
            return []
        return _tie_safe(lambda fetch: self._searcher.search(self._jmap(impacts), fetch), k)

    def search(self, query: SparseBatch, k: int = 10) -> list[Hit]:
        """Top-``k`` hits of a one-row query batch.

        Parameters
        ----------
        query : SparseBatch
            One row.
        k : int
            Hits wanted (fewer when fewer documents match; none for ``k <= 0`` or an empty query).

        Returns
        -------
        list of Hit
            Best first; scores are integer impact dot products, ties by the lower Lucene doc id.

        Raises
        ------
        ValueError
            When ``query`` has other than one row.
        """
        if len(query) != 1:
            raise ValueError(f"search takes a one-row query batch, got {len(query)} rows; use batch_search")
        return self._search_one(self.query_impacts(query)[0], k)

    def batch_search(self, queries: SparseBatch, k: int = 10, threads: int = 1) -> list[list[Hit]]:
        """Top-``k`` hits per query row, searched by ``threads`` Java threads.

        Parameters
        ----------
        queries : SparseBatch
            ``[n_queries]`` rows, each searched as :meth:`search` searches its one.
        k, threads : int
            Hits per query, and Java threads searching at once.

        Returns
        -------
        list of list of Hit
            ``[n_queries]`` lists, each as :meth:`search` returns it (a row whose tie runs past the
            page fetched is searched again on its own).

        Raises
        ------
        ValueError
            When ``threads < 1``.
        """
        if threads < 1:
            raise ValueError(f"threads must be >= 1, got {threads}")
        impacts = self.query_impacts(queries)
        if k <= 0 or not impacts:
            return [[] for _ in impacts]
        fetch = k + 16
        jqueries, jqids = self._JArrayList(), self._JArrayList()
        for i, q in enumerate(impacts):
            jqueries.add(self._jmap(q))
            jqids.add(str(i))
        results = self._searcher.batch_search(jqueries, jqids, fetch, threads)
        out: list[list[Hit]] = []
        for i, q in enumerate(impacts):
            hits = _sorted_hits(results.get(str(i)) or []) if q else []
            if _needs_more(hits, k, fetch):
                out.append(self._search_one(q, k))
            else:
                out.append([Hit(docid, score) for score, _, docid in hits[:k]])
        return out

    def close(self) -> None:
        self._searcher.close()


class BM25Searcher:
    """Anserini's BM25 (k1=0.9, b=0.4 by default, its BEIR setting) over a Lucene text index.

    Any Anserini index opens; one built by lsr (with ``lsr-index.json``) is verified first.

    Parameters
    ----------
    index_dir : str or Path
        A Lucene index of document text.
    k1, b : float
        BM25's parameters.
    verify : bool
        For an lsr-built index, compare the files' checksums too (sizes are always checked).
    """

    def __init__(self, index_dir: str | Path, k1: float = BM25_K1, b: float = BM25_B, verify: bool = True):
        if (Path(index_dir) / META).is_file():
            verify_index(index_dir, LuceneIndexInfo.load(index_dir), checksums=verify)
        self._searcher = jvm.autoclass("io.anserini.search.SimpleSearcher")(str(index_dir))
        self._searcher.set_bm25(float(k1), float(b))
        self._index_dir, self._k1, self._b = str(index_dir), float(k1), float(b)
        self._reader = None

    def __len__(self) -> int:
        return int(self._searcher.get_total_num_docs())

    def search(self, text: str, k: int = 10) -> list[Hit]:
        """Top-``k`` BM25 hits of query text, through Anserini's analyzer.

        Parameters
        ----------
        text : str
            The query.
        k : int
            Hits wanted (fewer when fewer documents match; none for ``k <= 0``).

        Returns
        -------
        list of Hit
            Best first, in Anserini's order: its BM25 searcher rounds scores to 4 decimals and
            breaks ties by external id, lowering each tied score by 1e-6 per place, so the
            scores hold no ties for lsr's rule to reorder (the anchor stays Anserini's own run).
        """
        if k <= 0:
            return []
        hits = _sorted_hits(self._searcher.search(text, int(k)))
        return [Hit(docid, score) for score, _, docid in hits]

    def batch_search(self, texts: list[str], k: int = 10, threads: int = 1) -> list[list[Hit]]:
        """Top-``k`` BM25 hits per query text, searched by ``threads`` Java threads.

        Parameters
        ----------
        texts : list of str
            The queries, each searched as :meth:`search` searches its ``text``.
        k, threads : int
            As in :meth:`LuceneSearcher.batch_search`.

        Returns
        -------
        list of list of Hit
            One list per text, in order, as :meth:`search` returns it.
        """
        if k <= 0:
            return [[] for _ in texts]
        JArrayList = jvm.autoclass("java.util.ArrayList")
        jtexts, jqids = JArrayList(), JArrayList()
        for i, t in enumerate(texts):
            jtexts.add(t)
            jqids.add(str(i))
        results = self._searcher.batch_search(jtexts, jqids, int(k), int(threads))
        return [
            [Hit(docid, score) for score, _, docid in _sorted_hits(results.get(str(i)) or [])]
            for i in range(len(texts))
        ]

    def score(self, text: str, docids: list[str]) -> list[float]:
        """BM25 scores of query text against the given documents, hit or not.

        Parameters
        ----------
        text : str
            The query, analysed as :meth:`search` analyses it.
        docids : list of str
            External ids of indexed documents.

        Returns
        -------
        list of float
            One score per id, in order; 0 for a document sharing no term with the query. These are
            the scores :meth:`search` ranks by, before its 4-decimal rounding.

        Raises
        ------
        ValueError
            When the searcher's ``k1``/``b`` are not Anserini's defaults (its per-document scorer
            knows only those), or an id is not in the index.
        """
        if (self._k1, self._b) != (BM25_K1, BM25_B):
            raise ValueError(
                f"BM25Searcher.score needs k1={BM25_K1}, b={BM25_B} (this searcher: {self._k1}, {self._b})"
            )
        utils = jvm.autoclass("io.anserini.index.IndexReaderUtils")
        if self._reader is None:
            self._reader = utils.getReader(self._index_dir)
        out = []
        for d in docids:
            # The scorer gives an unknown id 0, which would pass for "no shared term".
            if utils.convertDocidToLuceneDocid(self._reader, d) < 0:
                raise ValueError(f"{self._index_dir}: no document {d!r} to score")
            out.append(float(utils.computeQueryDocumentScore(self._reader, d, text)))
        return out

    def close(self) -> None:
        if self._reader is not None:
            self._reader.close()
            self._reader = None
        self._searcher.close()
