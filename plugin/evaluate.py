"""Evaluation with ir-measures (pytrec_eval underneath), TREC run files in and out.

Queries that the qrels judge but the run lacks score 0, as ``trec_eval -c`` counts them, so a
searcher cannot gain by returning nothing.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import ir_measures

from plugin.hits import Hit

DEFAULT_METRICS: tuple[str, ...] = ("ndcg@10", "recall@100", "mrr@10")
_NAMES = {"ndcg": "nDCG", "recall": "R", "mrr": "RR", "map": "AP", "p": "P", "precision": "P", "r": "R"}


def parse_metric(name: str):
    """``ndcg@10`` / ``recall@100`` / ``mrr@10`` / ``map`` (any ir-measures name works too).

    Parameters
    ----------
    name : str
        ``NAME`` or ``NAME@CUTOFF``; ``ndcg``, ``recall``/``r``, ``mrr``, ``map``, ``p``/``precision``
        in any case, else an ir-measures measure name.

    Returns
    -------
    ir_measures measure
        The parsed measure (``nDCG@10``, ``R@100``, ``RR@10``, ``AP``, ...).

    Raises
    ------
    ValueError
        When ir-measures cannot parse it.
    """
    base, sep, cutoff = name.partition("@")
    measure = _NAMES.get(base.lower(), base)
    try:
        return ir_measures.parse_measure(f"{measure}{sep}{cutoff}")
    except (ValueError, NameError, SyntaxError):
        raise ValueError(f"unknown metric {name!r}; try ndcg@10, recall@100, mrr@10, map") from None


def evaluate(
    run: Mapping[str, Sequence[Hit]],
    qrels: Mapping[str, Mapping[str, int]],
    metrics: Sequence[str] = DEFAULT_METRICS,
) -> dict[str, float]:
    """Mean of each metric over the judged queries (missing queries count 0).

    Parameters
    ----------
    run : dict
        ``{qid: [Hit, ...]}``; queries the qrels do not judge are ignored.
    qrels : dict
        ``{qid: {docid: relevance}}``.
    metrics : list of str
        Names for :func:`parse_metric`.

    Returns
    -------
    dict
        ``{metric name as given: mean}`` over the qrels' queries (0.0 for each when there are none).

    Raises
    ------
    ValueError
        On an unknown metric name.
    """
    measures = {m: parse_metric(m) for m in metrics}
    scored = {qid: {h.docid: float(h.score) for h in hits} for qid, hits in run.items() if hits}
    judged = [q for q in qrels if q]
    sums = dict.fromkeys(measures, 0.0)
    by_measure = {v: k for k, v in measures.items()}
    for metric in ir_measures.iter_calc(list(measures.values()), qrels, scored):
        if metric.query_id in qrels:
            sums[by_measure[metric.measure]] += metric.value
    return {name: sums[name] / max(len(judged), 1) for name in measures}


def write_run(path: str | Path, run: Mapping[str, Sequence[Hit]], tag: str = "lsr") -> None:
    """TREC run format: ``qid Q0 docid rank score tag``.

    An id or tag a run cannot hold (empty, or with whitespace or control characters: the columns
    are split on whitespace) is a ``ValueError`` raised before anything is written.

    Parameters
    ----------
    path : str or Path
        The run file, overwritten.
    run : dict
        ``{qid: [Hit, ...]}``, each list best first (ranks from 1 in that order).
    tag : str
        The last column.

    Returns
    -------
    None

    Raises
    ------
    ValueError
        On a query id, document id or tag a TREC run cannot hold.
    """
    from indexer.corpus import id_problem

    for what, value in _run_fields(run, tag):
        problem = id_problem(str(value))
        if problem:
            raise ValueError(f"{path}: cannot write {what} {value!r} to a TREC run: it {problem}")
    with open(path, "w", encoding="utf-8") as f:
        for qid, hits in run.items():
            for rank, h in enumerate(hits, start=1):
                f.write(f"{qid} Q0 {h.docid} {rank} {h.score:.6f} {tag}\n")


def _run_fields(run: Mapping[str, Sequence[Hit]], tag: str):
    yield "tag", tag
    for qid, hits in run.items():
        yield "query id", qid
        for h in hits:
            yield "document id", h.docid


def read_run(path: str | Path) -> dict[str, list[Hit]]:
    """A TREC run file (``qid Q0 docid rank score tag``) as ``{qid: [Hit, ...]}``.

    Parameters
    ----------
    path : str or Path
        The run file; blank lines are skipped.

    Returns
    -------
    dict
        ``{qid: [Hit, ...]}``, hits in file order (the rank column is not read).

    Raises
    ------
    FileNotFoundError
        When ``path`` is not a file.
    ValueError
        On a line without six columns or with a score that is not a number (naming file and line).
    """
    from indexer.corpus import read_lines

    run: dict[str, list[Hit]] = {}
    for lineno, line in read_lines(path, "run"):
        cols = line.split()
        if len(cols) != 6:
            raise ValueError(
                f"{path}:{lineno}: expected 'qid Q0 docid rank score tag', got {len(cols)} columns"
            )
        try:
            run.setdefault(cols[0], []).append(Hit(cols[2], float(cols[4])))
        except ValueError:
            raise ValueError(f"{path}:{lineno}: score {cols[4]!r} is not a number") from None
    return run
