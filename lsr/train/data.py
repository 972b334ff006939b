"""Training data for sparse encoders: judged queries, mined candidates and cached teacher scores.

A :class:`TrainingSet` is plain data: query and document texts, the judgements of a train split,
each query's candidates (hard negatives mined with lsr's own indexes, most similar first) and the
teachers' scores of every (query, candidate or judged document) pair. It is built once
(:mod:`plugin.train` mines with lsr's indexes and scores with lsr's ONNX encoders; this package
may not import those stages) and cached as one JSON file, so a rerun or a resumed run reads it
back instead of encoding again.

Batches are a pure function of ``(seed, step)``: a killed run that resumes at step ``s`` draws
exactly the batches an uninterrupted run draws there.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

FORMAT_VERSION = 1


@dataclass
class TrainingSet:
    """Queries, documents, judgements, mined candidates and teacher scores of one split.

    ``teacher_scores[name][qid][docid]`` covers each query's judged documents and candidates.
    """

    queries: dict[str, str]
    docs: dict[str, str]
    qrels: dict[str, dict[str, int]]
    candidates: dict[str, list[str]]
    teacher_scores: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)
    source: dict = field(default_factory=dict)

    def positives(self, qid: str) -> list[str]:
        return [d for d, rel in self.qrels.get(qid, {}).items() if rel > 0 and d in self.docs]

    def negatives(self, qid: str, depth: int) -> list[str]:
        """The first ``depth`` candidates that are not judged relevant."""
        judged = {d for d, rel in self.qrels.get(qid, {}).items() if rel > 0}
        return [d for d in self.candidates.get(qid, []) if d not in judged][:depth]

    def trainable(self, depth: int, n_negatives: int) -> list[str]:
        """Queries with a positive and at least ``n_negatives`` negatives, in a stable order."""
        return sorted(
            q for q in self.qrels if self.positives(q) and len(self.negatives(q, depth)) >= n_negatives
        )

    def save(self, path: str | Path) -> None:
        path = Path(path)
        data = {"format_version": FORMAT_VERSION, **self.__dict__}
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: str | Path) -> TrainingSet:
        path = Path(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}: not valid JSON ({e})") from None
        version = data.pop("format_version", None)
        if version != FORMAT_VERSION:
            raise ValueError(f"{path}: format_version {version!r} is not {FORMAT_VERSION}")
        return cls(**data)


def split_dev(qids: list[str], n_dev: int, seed: int) -> tuple[list[str], list[str]]:
    """``(train, dev)``: ``n_dev`` queries drawn from ``qids`` by ``seed``, both in stable order."""
    if not 0 <= n_dev < len(qids):
        raise ValueError(f"cannot carve {n_dev} dev queries out of {len(qids)} train queries")
    rng = np.random.default_rng([seed, 1])
    dev = set(rng.choice(sorted(qids), size=n_dev, replace=False).tolist()) if n_dev else set()
    return [q for q in qids if q not in dev], sorted(dev)


@dataclass(frozen=True)
class Group:
    """One query and its documents: the positive first, then the hard negatives."""

    qid: str
    docids: tuple[str, ...]


def sample_groups(
    data: TrainingSet, qids: list[str], n_queries: int, n_negatives: int, depth: int, seed: int, step: int
) -> list[Group]:
    """The groups of micro-batch ``step``: ``n_queries`` distinct queries taken in epoch order (a
    permutation per epoch from ``seed``), a random positive each and ``n_negatives`` negatives
    drawn from their first ``depth`` candidates."""
    n = len(qids)
    if n < n_queries:
        raise ValueError(f"a batch of {n_queries} queries needs that many train queries, got {n}")
    start = step * n_queries
    picked: list[str] = []
    while len(picked) < n_queries:
        epoch, offset = divmod(start + len(picked), n)
        order = np.random.default_rng([seed, 2, epoch]).permutation(n)
        q = qids[order[offset]]
        if q in picked:  # an epoch boundary inside a batch: skip what this batch already holds
            start += 1
            continue
        picked.append(q)
    rng = np.random.default_rng([seed, 3, step])
    groups = []
    for q in picked:
        pos = data.positives(q)
        negs = data.negatives(q, depth)
        chosen = rng.choice(len(negs), size=n_negatives, replace=False)
        groups.append(Group(q, (pos[int(rng.integers(len(pos)))], *[negs[i] for i in sorted(chosen)])))
    return groups


def teacher_matrix(data: TrainingSet, groups: list[Group], teacher: str) -> np.ndarray:
    """``[Q, G]`` float32 scores of one teacher for the groups' (query, document) pairs."""
    table: Mapping[str, Mapping[str, float]] = data.teacher_scores[teacher]
    try:
        return np.asarray([[table[g.qid][d] for d in g.docids] for g in groups], np.float32)
    except KeyError as e:
        raise KeyError(f"teacher {teacher!r} has no score for {e} (rebuild the training data)") from None
