"""Lucene impact indexes through the real Anserini jar: exactness, Pyserini parity, bad input."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from indexer.lucene import LuceneIndexInfo, build_lucene_index
from indexer.quantize import quantize_batch
from lsr.sparse import SparseBatch
from plugin._topk import topk
from plugin.cli import main


def _java_or_skip():
    from indexer.java import anserini_jar, find_java

    try:
        find_java()
        anserini_jar()
    except RuntimeError as e:
        pytest.skip(f"Lucene backend unavailable: {e}")


pytestmark = pytest.mark.usefixtures("java")


@pytest.fixture(scope="session")
def java():
    _java_or_skip()


VOCAB = tuple(
    ["paris", "tower", "##el", "café", "Big", "new york", "%", "a\tb"] + [f"w{i}" for i in range(40)]
)


def random_collection(n_docs: int, seed: int = 0) -> SparseBatch:
    rng = np.random.default_rng(seed)
    rows = []
    for _ in range(n_docs):
        ids = rng.choice(len(VOCAB), rng.integers(1, 9), replace=False)
        # Few distinct weights make score ties common, so the tie rule is exercised.
        rows.append({VOCAB[j]: float(rng.choice([0.25, 0.5, 1.0, 1.7, 2.449])) for j in ids})
    return SparseBatch.from_dicts(rows, VOCAB)


def write_vectors(path, ids, rows: list[dict]) -> None:
    path.write_text(
        "".join(
            json.dumps({"id": i, "contents": "", "vector": v}) + "\n" for i, v in zip(ids, rows, strict=True)
        )
    )


@pytest.fixture(scope="module")
def random_index(tmp_path_factory):
    d = tmp_path_factory.mktemp("lucene")
    docs = random_collection(300)
    ids = [f"doc{999 - i:03d}" for i in range(len(docs))]  # id order opposite to doc-id order
    write_vectors(d / "v.jsonl", ids, docs.to_dicts())
    build_lucene_index([d / "v.jsonl"], d / "idx")
    return d / "idx", ids, docs


def test_fractional_query_weights_rank_as_the_quantized_dot_product(random_index):
    from plugin.lucene import LuceneSearcher

    index, ids, docs = random_index
    searcher = LuceneSearcher(index)
    assert len(searcher) == len(docs)
    rng = np.random.default_rng(1)
    queries = SparseBatch.from_dicts(
        [
            {VOCAB[j]: float(rng.random() * 2.5) for j in rng.choice(len(VOCAB), 4, replace=False)}
            for _ in range(25)
        ]
        + [{"paris": 1.7, "tower": 0.4}],
        VOCAB,
    )
    # Reference: quantize both sides by the contract, exact integer dot product, ties by lower doc id.
    scores = (quantize_batch(queries).to_scipy() @ quantize_batch(docs).to_scipy().T).toarray()
    for threads in (1, 2):
        got = searcher.batch_search(queries, k=10, threads=threads)
        for q in range(len(queries)):
            want = topk(scores[q].astype(np.float32), 10)
            assert [h.docid for h in got[q]] == [ids[i] for i in want], q
            assert [h.score for h in got[q]] == [float(scores[q, i]) for i in want]
    # 1.7 is sent as 170 (0.4 as 40): a truncating searcher would score paris 1, tower 0.
    (one,) = searcher.batch_search(queries.take([-1]), k=1)
    best = one[0]
    row = docs.row(ids.index(best.docid))
    d = dict(zip(row[0].tolist(), np.rint(row[1] * 100).tolist(), strict=True))
    assert best.score == 170 * d.get(0, 0) + 40 * d.get(1, 0)
    assert searcher.search(queries.take([-1]), k=1) == one


def test_terms_with_spaces_and_non_ascii_survive(random_index):
    from plugin.lucene import LuceneSearcher

    index, ids, docs = random_index
    searcher = LuceneSearcher(index)
    for term in ("new york", "a\tb", "café", "##el", "%", "Big"):
        q = SparseBatch.from_dicts([{term: 1.0}], VOCAB)
        hits = searcher.search(q, k=1000)
        holders = [ids[i] for i in range(len(docs)) if VOCAB.index(term) in docs.row(i)[0].tolist()]
        assert sorted(h.docid for h in hits) == sorted(holders), term
        assert holders


def test_bad_vectors_are_clear_errors_and_keep_the_old_index(random_index, tmp_path):
    from plugin.lucene import LuceneSearcher

    good = tmp_path / "good.jsonl"
    write_vectors(good, ["a", "b"], [{"paris": 1.0}, {"tower": 2.0}])
    index = tmp_path / "idx"
    build_lucene_index([good], index)
    cases = {
        '{"contents": "", "vector": {"paris": 1}}\n': r"bad\.jsonl:1: missing field 'id'",
        '{"id": "x", "vector": {"paris": -1.0}}\n': r"bad\.jsonl:1: .*'paris': weight -1\.0 must be finite",
        '{"id": "x", "vector": {"paris": NaN}}\n': r"bad\.jsonl:1: .*must be finite",
        '{"id": "x", "vector": {"paris": "high"}}\n': r"bad\.jsonl:1: .*is not a number",
        '{"id": "x", "vector": {"paris": 1.5}}\n{"id": "x", "vector": {"tower": 1.5}}\n': (
            r"bad\.jsonl:2: duplicate id 'x' \(first at .*bad\.jsonl:1\)"
        ),
        '{"id": "x", "vector": {"paris": 1}}\n{"id": "y", "vector": [1]}\n': r"bad\.jsonl:2: field 'vector'",
        '{"id": "x", "vector": {"paris": 1.5}}\nnot json\n': r"bad\.jsonl:2: not valid JSON",
    }
    for text, message in cases.items():
        bad = tmp_path / "bad.jsonl"
        bad.write_text(text)
        with pytest.raises(ValueError, match=message):
            build_lucene_index([bad], index)
        # The previous index is untouched, and no temporary build folder is left behind.
        assert [
            h.docid for h in LuceneSearcher(index).search(SparseBatch.from_dicts([{"tower": 1}], VOCAB))
        ] == ["b"]
        assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


def test_empty_vectors_are_skipped_and_counted(tmp_path, caplog):
    v = tmp_path / "v.jsonl"
    write_vectors(v, ["a", "b", "c"], [{"paris": 1.0}, {}, {"tower": 0.001}])  # c quantizes to nothing
    info = build_lucene_index([v], tmp_path / "idx")
    assert (info.documents, info.skipped_empty) == (1, 2)
    assert "2 document(s) with empty vectors skipped" in caplog.text
    assert LuceneIndexInfo.load(tmp_path / "idx").empty_examples[0].startswith("b (")


def test_integer_vectors_are_indexed_as_given_and_mixing_is_refused(tmp_path):
    from plugin.lucene import LuceneSearcher

    ints, floats = tmp_path / "ints.jsonl", tmp_path / "floats.jsonl"
    write_vectors(ints, ["a", "b"], [{"paris": 3}, {"paris": 7, "tower": 1}])
    write_vectors(floats, ["c"], [{"paris": 0.5}])
    info = build_lucene_index([ints], tmp_path / "idx")
    assert info.quantization == "given" and info.scale is None
    hits = LuceneSearcher(tmp_path / "idx").search(SparseBatch.from_dicts([{"paris": 1.0}], VOCAB))
    assert [(h.docid, h.score) for h in hits] == [("b", 700.0), ("a", 300.0)]
    with pytest.raises(ValueError, match="mixing pre-quantized"):
        build_lucene_index([ints, floats], tmp_path / "idx2")
    assert not (tmp_path / "idx2").exists()


def test_a_failing_anserini_run_leaves_nothing(tmp_path):
    v = tmp_path / "v.jsonl"
    write_vectors(v, ["a"], [{"paris": 1.0}])
    with pytest.raises(RuntimeError, match="Anserini IndexCollection failed"):
        build_lucene_index([v], tmp_path / "idx", heap="1k")  # the JVM refuses to start
    assert sorted(p.name for p in tmp_path.iterdir()) == ["v.jsonl"]


@pytest.fixture(scope="module")
def tiny_pipeline(tiny_bert_dir, exported, tmp_path_factory):
    """A tiny SPLADE and inference-free pair, a 40-doc corpus encoded as impacts, an index."""
    d = tmp_path_factory.mktemp("pipeline")
    words = "the a cell cells gene protein tower paris city river water blood heart brain cancer drug".split()
    rng = np.random.default_rng(3)
    corpus = d / "corpus.jsonl"
    corpus.write_text(
        "".join(
            json.dumps({"_id": f"d{i}", "text": " ".join(rng.choice(words, 12))}) + "\n" for i in range(40)
        )
    )
    splade = exported(tiny_bert_dir, "splade")
    assert main(["encode", str(splade), str(corpus), str(d / "v.jsonl"), "--impacts"]) == 0
    assert main(["index", str(d / "v.jsonl"), str(d / "idx"), "--backend", "lucene"]) == 0
    return d, splade


def test_pyserini_searcher_with_our_encoder_matches_lsr_search(tiny_pipeline):
    from plugin import jvm

    d, splade = tiny_pipeline
    jvm.start()
    from pyserini.search.lucene import LuceneImpactSearcher

    from plugin.pyserini import LsrQueryEncoder
    from plugin.searcher import Searcher

    queries = ["cancer of the blood", "tower in paris", "gene protein cells", "heart brain"]
    ours = Searcher(d / "idx", splade).batch_search(queries, queries, k=10)
    theirs = LuceneImpactSearcher(str(d / "idx"), LsrQueryEncoder(splade), min_idf=-1)
    for q, hits in ours.items():
        assert [(h.docid, h.score) for h in hits] == [(h.docid, h.score) for h in theirs.search(q, k=10)]
        assert hits


def test_plain_pyserini_index_command_indexes_our_output(tiny_pipeline, tmp_path):
    d, _ = tiny_pipeline
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "v.jsonl").write_bytes((d / "v.jsonl").read_bytes())
    cmd = [
        sys.executable,
        "-m",
        "plugin.jvm",
        "pyserini.index.lucene",
        "--collection",
        "JsonVectorCollection",
    ]
    cmd += ["--input", str(tmp_path / "in"), "--index", str(tmp_path / "idx"), "--impact", "--pretokenized"]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "documents indexed" in result.stdout + result.stderr
    assert any(p.name.startswith("segments") for p in (tmp_path / "idx").iterdir())


def _search_argv(index, encoder, topics, output, *extra: str) -> list[str]:
    """``lsr search`` arguments for an impact index queried through ``encoder``."""
    files = ["--encoder", str(encoder), "--topics", str(topics), "--output", str(output)]
    return ["search", str(index), *files, *extra]


def test_bm25_and_impact_cli_round_trip(tiny_pipeline, tmp_path, capsys):
    d, splade = tiny_pipeline
    qrels = tmp_path / "qrels.tsv"
    qrels.write_text("query-id\tcorpus-id\tscore\nq0\td1\t1\n")
    topics = tmp_path / "q.jsonl"
    topics.write_text(json.dumps({"_id": "q0", "text": "blood cancer"}) + "\n")
    assert main(["index", str(d / "corpus.jsonl"), str(tmp_path / "bm25"), "--backend", "bm25"]) == 0
    run = tmp_path / "bm25.trec"
    assert (
        main(["search", str(tmp_path / "bm25"), "--topics", str(topics), "--output", str(run), "--k", "5"])
        == 0
    )
    assert len(run.read_text().splitlines()) == 5
    # An impact index asked to search text, or a BM25 index given vectors: clear errors.
    assert main(["search", str(d / "idx"), "--topics", str(topics), "--output", str(run)]) == 2
    assert "needs query vectors" in capsys.readouterr().err
    out = tmp_path / "impact.trec"
    assert main(_search_argv(d / "idx", splade, topics, out)) == 0
    assert main(["eval", str(out), str(qrels), "--json"]) == 0


def test_a_tie_wider_than_the_page_still_goes_to_the_lowest_doc_ids(tmp_path):
    from plugin.lucene import LuceneSearcher

    v = tmp_path / "v.jsonl"
    ids = [f"z{99 - i:02d}" for i in range(60)]  # Anserini alone would rank z40..z49 first
    write_vectors(v, ids, [{"paris": 1.0}] * 60)
    searcher = LuceneSearcher(build_lucene_index([v], tmp_path / "idx") and tmp_path / "idx")
    q = SparseBatch.from_dicts([{"paris": 1.0}], VOCAB)
    assert [h.docid for h in searcher.search(q, k=10)] == ids[:10]
    assert [h.docid for h in searcher.batch_search(q, k=10, threads=2)[0]] == ids[:10]


@pytest.mark.parametrize("reorder", ["none", "bp"])
def test_native_and_lucene_agree_hit_for_hit(random_index, tmp_path, reorder):
    from indexer.native.build import build_native_index
    from plugin.lucene import LuceneSearcher
    from plugin.native import NativeSearcher

    index, ids, docs = random_index
    vectors = tmp_path / "v.jsonl"
    write_vectors(vectors, ids, docs.to_dicts())
    # Reordered or not, the native index breaks ties by the position in the file, as Lucene does.
    build_native_index(tmp_path / "native", vector_files=[vectors], reorder=reorder, block_size=16)
    rng = np.random.default_rng(5)
    queries = SparseBatch.from_dicts(
        [
            {VOCAB[j]: float(rng.random() * 2) for j in rng.choice(len(VOCAB), 5, replace=False)}
            for _ in range(30)
        ],
        VOCAB,
    )
    lucene = LuceneSearcher(index).batch_search(queries, k=20)
    blocks = NativeSearcher(tmp_path / "native", scan_below=0)  # block-max, not the small-index scan
    assert blocks.index.has_tie_order == (reorder == "bp")
    assert any(len({h.score for h in hits}) < len(hits) for hits in lucene)  # ties are exercised
    assert NativeSearcher(tmp_path / "native").batch_search(queries, k=20) == lucene
    assert blocks.batch_search(queries, k=20) == lucene
    assert [blocks.search(queries.take([q]), k=20, threads=2) for q in range(len(queries))] == lucene


def test_lsr_index_and_search_on_native_backend(tiny_pipeline, tmp_path):
    d, splade = tiny_pipeline
    topics = tmp_path / "q.tsv"
    topics.write_text("q0\tblood cancer\nq1\ttower paris\n")
    assert (
        main(["index", str(d / "v.jsonl"), str(tmp_path / "nat"), "--backend", "native", "--block-size", "4"])
        == 0
    )
    runs = {}
    for name, index, extra in (
        ("native", tmp_path / "nat", []),
        ("approx", tmp_path / "nat", ["--mode", "approx", "--alpha", "0.9"]),
        ("lucene", d / "idx", []),
    ):
        out = tmp_path / f"{name}.trec"
        assert main(_search_argv(index, splade, topics, out, "--k", "10", *extra)) == 0
        runs[name] = [line.split()[0::2][:2] + [line.split()[4]] for line in out.read_text().splitlines()]
    # The same run, ties included (the native index breaks them by input position, as Lucene does).
    assert [r[:2] for r in runs["native"]] == [r[:2] for r in runs["lucene"]]
    assert [float(r[2]) for r in runs["native"]] == [float(r[2]) for r in runs["lucene"]]
    approx = _search_argv(
        d / "idx", splade, topics, tmp_path / "x.trec", "--mode", "approx", "--alpha", "0.5"
    )
    assert main(approx) == 2


def test_document_encoder_in_a_pyserini_encode_pipeline(tiny_pipeline, tmp_path):
    from plugin import jvm

    d, splade = tiny_pipeline
    jvm.start()
    from pyserini.encode import JsonlCollectionIterator, JsonlRepresentationWriter

    from plugin.pyserini import LsrDocumentEncoder
    from plugin.searcher import Searcher

    collection = tmp_path / "collection"
    collection.mkdir()
    lines = (d / "corpus.jsonl").read_text().splitlines()
    (collection / "docs.jsonl").write_text(
        "".join(
            json.dumps({"id": json.loads(x)["_id"], "contents": json.loads(x)["text"]}) + "\n" for x in lines
        )
    )
    encoder = LsrDocumentEncoder(splade)
    writer = JsonlRepresentationWriter(str(tmp_path / "vectors"))
    with writer:
        for batch in JsonlCollectionIterator(str(collection), fields=["text"])(batch_size=16):
            batch["vector"] = encoder.encode(batch["text"])
            assert all(isinstance(w, int) for vec in batch["vector"] for w in vec.values())
            writer.write(batch, ["text"])
    build_lucene_index([tmp_path / "vectors" / "embeddings.jsonl"], tmp_path / "idx")
    queries, qids = ["blood cancer", "tower paris"], ["q0", "q1"]
    # The same documents through `lsr encode --impacts` (the fixture's index) rank the same way.
    assert Searcher(tmp_path / "idx", splade).batch_search(queries, qids, k=10) == Searcher(
        d / "idx", splade
    ).batch_search(queries, qids, k=10)
