"""What ``lsr search`` reads: topics files, as text or pre-encoded vectors."""

from __future__ import annotations

import json
from pathlib import Path

from indexer.corpus import parse_json, read_corpus, read_lines, read_qrels
from indexer.jsonvector import check_weights, impact_mode, iter_vectors


def is_pre_encoded(path: str | Path) -> bool:
    """True when ``path`` is a JsonVectorCollection (its first record has a ``vector`` field).

    Parameters
    ----------
    path : str or Path
        A topics file; only its first non-blank line is read.

    Returns
    -------
    bool
        False for a TSV file (the first line is not JSON), an empty file, or a JSON line without
        ``vector``.

    Raises
    ------
    FileNotFoundError
        When ``path`` is not a file.
    ValueError
        When the first line is JSON no parser can read (too deeply nested, a huge integer).
    """
    for lineno, line in read_lines(path):
        try:
            first = json.loads(line)
        except json.JSONDecodeError:
            return False  # a TSV topics file
        except (ValueError, RecursionError):  # nested too deeply, or an integer no parser takes: say where
            parse_json(Path(path), lineno, line)
        return isinstance(first, dict) and "vector" in first
    return False


def read_topics(
    path: str | Path, qrels: str | Path | None = None
) -> tuple[list[str], list[str] | list[dict[str, float]]]:
    """Query ids and their texts, or for a pre-encoded JsonVectorCollection their ``{token: weight}``
    vectors as written (integers stay ``int``: :class:`plugin.searcher.Searcher` searches a topics
    file of integer weights as impacts, Anserini's convention). Such a file holds escaped terms
    (``lsr encode --side query --impacts``): they come back raw, as the searchers take them.

    With ``qrels`` only the judged queries are kept, in file order.

    Parameters
    ----------
    path : str or Path
        A BEIR ``queries.jsonl``, an ``id<TAB>text`` TSV, or a JsonVectorCollection of query vectors.
    qrels : str or Path, optional
        A qrels file (BEIR TSV or TREC); queries it does not judge are dropped.

    Returns
    -------
    ids : list of str
        Query ids, in file order.
    queries : list of str or list of dict
        The texts, or ``{token: weight}`` vectors, one per id.

    Raises
    ------
    FileNotFoundError
        When ``path`` (or ``qrels``) is not a file.
    ValueError
        On a malformed line or weight, naming file and line (or query id).
    """
    judged = set(read_qrels(qrels)) if qrels else None
    if is_pre_encoded(path):
        escaped = impact_mode([Path(path)]) == "given"
        rows = [(rid, vec) for _, rid, vec in iter_vectors(path, escaped) if judged is None or rid in judged]
        for rid, vec in rows:
            check_weights(str(path), rid, vec)
        return [r for r, _ in rows], [v for _, v in rows]
    records = [r for r in read_corpus(path) if judged is None or r.id in judged]
    return [r.id for r in records], [r.text for r in records]
