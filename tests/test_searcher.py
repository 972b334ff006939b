"""``Searcher``: one text -> hits path over native, Lucene and BM25 indexes, Pyserini's shape."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from indexer.native.build import build_native_index
from lsr.runtime import load_encoder
from lsr.sparse import SparseBatch
from plugin.native import NativeSearcher
from plugin.options import InvalidOption
from plugin.searcher import OPTIONS, Searcher
from tests.conftest import needs_java


@pytest.fixture(scope="module")
def searcher(tiny_index):
    return Searcher(tiny_index["index"], encoder=tiny_index["encoder"])


def test_text_dict_and_batch_give_the_same_hits(searcher, tiny_index):
    enc = load_encoder(tiny_index["encoder"], "query", max_length=64)
    for text in tiny_index["texts"]:
        batch = enc.encode([text])
        by_text = searcher.search(text, k=7)
        assert by_text, text
        assert by_text == searcher.search(batch, k=7)
        assert by_text == searcher.search(batch.to_dicts()[0], k=7)
        assert by_text == NativeSearcher(tiny_index["index"]).search(batch, k=7)
    from lsr.runtime import SparseEncoder

    st_shaped = Searcher(tiny_index["index"], encoder=SparseEncoder(tiny_index["encoder"]))
    assert all(st_shaped.search(t, k=7) == searcher.search(t, k=7) for t in tiny_index["texts"])


def test_batch_search_is_keyed_by_qid_and_equals_search(searcher, tiny_index):
    texts = tiny_index["texts"]
    qids = [f"q{i}" for i in reversed(range(len(texts)))]
    for threads in (1, 2):
        runs = searcher.batch_search(texts, qids, k=5, threads=threads)
        assert list(runs) == qids
        assert all(runs[q] == searcher.search(t, k=5) for q, t in zip(qids, texts, strict=True))
    vectors = searcher.encode(texts)
    assert searcher.batch_search(vectors, qids, k=5) == runs
    assert searcher.batch_search(vectors.to_dicts(), qids, k=5) == runs
    assert searcher.batch_search([], [], k=5) == {}


def test_integer_dict_weights_are_impacts_as_given(searcher):
    vocab = searcher.native.index.vocab
    term = vocab[len(vocab) // 2]
    given = searcher.search({term: 3}, k=50)
    floats = searcher.search({term: 0.03}, k=50)  # 0.03 at scale 100 quantizes to the impact 3
    assert given and given == floats
    hundredfold = searcher.search({term: 3.0}, k=50)  # a float 3.0 is a weight: impact 300
    assert [h.docid for h in hundredfold] == [h.docid for h in given]
    assert [h.score for h in hundredfold] == [100 * h.score for h in given]
    with pytest.raises(ValueError, match="integer impact 70000"):
        searcher.search({term: 70000}, k=5)


def test_unknown_tokens_match_nothing(searcher):
    assert searcher.search({"no-such-token": 1.5}, k=5) == []


@pytest.mark.parametrize(
    "options, field",
    [
        ({"mode": "fast"}, "mode"),
        ({"alpha": 0.5}, "alpha"),  # approx's knob without mode="approx"
        ({"mode": "approx", "alpha": 0}, "alpha"),
        ({"mode": "approx", "beta": 1.5}, "beta"),
        ({"candidates": 10}, "candidates"),  # verification's option without a dense encoder
        ({"fusion": "rrf"}, "fusion"),
        ({"verify": True}, "verify"),
        ({"query_max_length": 0}, "query_max_length"),
        ({"encoder_threads": "two"}, "encoder_threads"),
        ({"k1": 1.2}, "k1"),  # a BM25 option on a native index
        ({"scan_below": -1}, "scan_below"),
        ({"check_index": "yes"}, "check_index"),
        ({"modes": "exact"}, "modes"),  # not an option at all
    ],
)
def test_every_bad_option_is_a_value_error_naming_it(tiny_index, options, field):
    with pytest.raises(ValueError, match=rf"^{field}: ") as e:
        Searcher(tiny_index["index"], encoder=tiny_index["encoder"], **options)
    assert isinstance(e.value, InvalidOption) and e.value.field == field
    if field == "modes":
        assert all(name in str(e.value) for name in OPTIONS)


@pytest.mark.parametrize(
    "call, field",
    [
        (lambda s: s.search("heart", k=-1), "k"),
        (lambda s: s.search("heart", k=2.5), "k"),
        (lambda s: s.batch_search(["heart"], ["a", "b"]), "qids"),
        (lambda s: s.batch_search(["heart", "tower"], ["a", "a"]), "qids"),
        (lambda s: s.batch_search(["heart"], ["a"], threads=0), "threads"),
        (lambda s: s.batch_search(["heart", {"tower": 1.0}], ["a", "b"]), "query"),
        (lambda s: s.search({"tower": float("nan")}), "vector"),
        (lambda s: s.search({"tower": -1.0}), "vector"),
        (lambda s: s.search({"tower": "1"}), "vector"),
        (lambda s: s.search(SparseBatch.empty(2, ("tower",))), "query"),
        (lambda s: s.with_options(candidates=5), "candidates"),
        (lambda s: s.with_options(mode="approx", alpha=2.0), "alpha"),
    ],
)
def test_bad_queries_and_calls_name_the_field(searcher, call, field):
    with pytest.raises(InvalidOption, match=rf"^{field}: ") as e:
        call(searcher)
    assert e.value.field == field


def test_text_without_an_encoder_says_what_to_pass(tiny_index):
    s = Searcher(tiny_index["index"])
    with pytest.raises(ValueError, match="encoder=ENCODER_DIR"):
        s.search("heart blood")
    assert s.search({s.native.index.vocab[0]: 1.0}, k=3) is not None


def test_modes_and_with_options(tiny_index):
    exact = Searcher(tiny_index["index"], encoder=tiny_index["encoder"], scan_below=0)  # block-max
    approx = exact.with_options(mode="approx", alpha=0.5, beta=0.5)
    scan = exact.with_options(mode="scan")
    assert approx.options["mode"] == "approx" and exact.options["mode"] == "exact"
    assert scan.with_options(mode="exact").options["alpha"] == 1.0
    for text in tiny_index["texts"]:
        want = exact.search(text, k=5)
        assert scan.search(text, k=5) == want
        got = approx.search(text, k=5)  # recall may drop; every hit is a real one with its true score
        assert {h.docid: h.score for h in want}.keys() >= {h.docid for h in got if h.score > want[-1].score}
    # Scans honour threads too (the same hits).
    qids = [str(i) for i in range(len(tiny_index["texts"]))]
    assert scan.batch_search(tiny_index["texts"], qids, k=5, threads=2) == scan.batch_search(
        tiny_index["texts"], qids, k=5
    )


def test_verification_through_the_searcher_equals_bigranular(tmp_path, tiny_bert_dir, exported, tiny_index):
    from indexer.dense import DenseVectors
    from indexer.jsonvector import load_batch
    from plugin.verify import BiGranularSearcher

    dense_enc = exported(tiny_bert_dir, "dense")
    enc = load_encoder(tiny_index["encoder"], "query", max_length=64)
    ids, docs = load_batch(tiny_index["vectors"], enc.vocab)
    dense = load_encoder(dense_enc, "doc").encode([f"text of {i}" for i in ids])
    build_native_index(tmp_path / "ix", batches=[(ids, docs)], dense=DenseVectors(ids, dense))
    s = Searcher(tmp_path / "ix", encoder=tiny_index["encoder"], dense_encoder=dense_enc, candidates=20)
    ref = BiGranularSearcher(tmp_path / "ix", dense_enc, candidates=20)
    assert s.verifies and not s.with_options(verify=False).verifies
    for text in tiny_index["texts"]:
        timings: dict[str, float] = {}
        assert s.search(text, k=5, timings=timings) == ref.search(enc.encode([text]), text, k=5)
        assert {"sparse_encode", "sparse_search", "dense_encode", "gather", "score", "fuse"} <= set(timings)
        assert s.with_options(verify=False).search(text, k=5) == NativeSearcher(tmp_path / "ix").search(
            enc.encode([text]), k=5
        )
    qids = [f"q{i}" for i in range(len(tiny_index["texts"]))]
    runs = s.batch_search(tiny_index["texts"], qids, k=5, threads=2)
    assert runs == {q: s.search(t, k=5) for q, t in zip(qids, tiny_index["texts"], strict=True)}
    with pytest.raises(InvalidOption, match=r"^verify: needs query text"):
        s.search({enc.vocab[10]: 1.0})


@needs_java
def test_native_equals_lucene_hit_for_hit_through_the_searcher(tmp_path, tiny_index):
    from indexer.lucene import build_lucene_index

    build_lucene_index([tiny_index["vectors"]], tmp_path / "lucene")
    native = Searcher(tiny_index["index"], encoder=tiny_index["encoder"])
    lucene = Searcher(tmp_path / "lucene", encoder=tiny_index["encoder"])
    assert lucene.backend == "lucene" and len(lucene) == len(native)
    qids = [f"q{i}" for i in range(len(tiny_index["texts"]))]
    for k in (1, 5, 60, 100):
        assert lucene.batch_search(tiny_index["texts"], qids, k=k, threads=2) == native.batch_search(
            tiny_index["texts"], qids, k=k
        )
    term = native.native.index.vocab[7]
    assert lucene.search({term: 7}, k=10) == native.search({term: 7}, k=10)
    with pytest.raises(InvalidOption, match=r"^mode: 'approx' needs a native index"):
        Searcher(tmp_path / "lucene", mode="approx")
    lucene.close()


@needs_java
def test_bm25_through_the_searcher(tmp_path):
    import json

    from indexer.lucene import build_bm25_index
    from plugin.lucene import BM25Searcher

    corpus = tmp_path / "corpus.jsonl"
    texts = ["the heart pumps blood", "the tower in paris", "blood cells and the heart", "river water"]
    corpus.write_text("".join(json.dumps({"_id": f"d{i}", "text": t}) + "\n" for i, t in enumerate(texts)))
    build_bm25_index(corpus, tmp_path / "bm25")
    s = Searcher(tmp_path / "bm25", k1=1.2, b=0.75)
    assert s.backend == "bm25" and len(s) == 4
    hits = s.search("heart blood", k=3)
    assert hits == BM25Searcher(tmp_path / "bm25", 1.2, 0.75).search("heart blood", k=3)
    assert {h.docid for h in hits[:2]} == {"d0", "d2"}
    assert s.batch_search(["heart blood", "paris"], ["a", "b"], k=3) == {
        "a": hits,
        "b": s.search("paris", k=3),
    }
    assert s.search("heart", k=0) == []
    with pytest.raises(InvalidOption, match=r"^query: a BM25 index searches query text"):
        s.search({"heart": 1.0})
    with pytest.raises(InvalidOption, match=r"^mode: "):
        Searcher(tmp_path / "bm25", mode="scan")
    with pytest.raises(InvalidOption, match=r"^alpha: "):
        Searcher(tmp_path / "bm25", alpha=0.5)
    s.close()


@needs_java
def test_bm25_scores_every_document_asked_for(tmp_path):
    """`BM25Searcher.score` gives each named document the score a search ranks it by (hit or not),
    0 when it shares no term, and refuses unknown ids and parameters its scorer cannot use."""
    import json

    from indexer.lucene import build_bm25_index
    from plugin.lucene import BM25Searcher

    corpus = tmp_path / "corpus.jsonl"
    texts = ["the heart pumps blood", "the tower in paris", "blood cells and the heart", "river water"]
    texts += [f"heart note {i}" for i in range(30)]
    corpus.write_text("".join(json.dumps({"_id": f"d{i}", "text": t}) + "\n" for i, t in enumerate(texts)))
    build_bm25_index(corpus, tmp_path / "bm25")
    s = BM25Searcher(tmp_path / "bm25")
    ids = [f"d{i}" for i in range(len(texts))]
    scores = dict(zip(ids, s.score("heart blood", ids), strict=True))
    hits = s.search("heart blood", k=5)
    for h in hits:  # the search rounds to 4 decimals and nudges ties by 1e-6 a place
        assert scores[h.docid] == pytest.approx(h.score, abs=1e-4)
    assert scores["d1"] == 0.0 and scores["d3"] == 0.0
    assert all(scores[d] > 0 for d in ids if d not in ("d1", "d3"))
    assert max(scores, key=scores.get) == hits[0].docid
    with pytest.raises(ValueError, match="no document 'nope' to score"):
        s.score("heart", ["d0", "nope"])
    with pytest.raises(ValueError, match=r"needs k1=0\.9, b=0\.4"):
        BM25Searcher(tmp_path / "bm25", 1.2, 0.75).score("heart", ["d0"])
    s.close()


def test_scan_below_and_check_index_reach_the_native_searcher(tiny_index):
    s = Searcher(tiny_index["index"], check_index=False, scan_below=0)
    assert s.native.scan_below == 0
    assert len(s) == len(NativeSearcher(tiny_index["index"])) == 60


@pytest.mark.parametrize("backend", ["native", pytest.param("lucene", marks=needs_java)])
def test_integer_pre_encoded_topics_are_searched_as_impacts(tmp_path, tiny_index, backend):
    """`lsr search --topics` with integer weights: the scores are the integer dot products (Anserini's
    convention), not 100x them; float weights are quantized as before."""
    import json

    from indexer.jsonvector import load_batch
    from indexer.quantize import quantize
    from plugin.cli import main

    enc = load_encoder(tiny_index["encoder"], "query", max_length=64)
    ids, docs = load_batch(tiny_index["vectors"], enc.vocab)
    index = tiny_index["index"]
    if backend == "lucene":
        from indexer.lucene import build_lucene_index

        index = tmp_path / "lucene"
        build_lucene_index([tiny_index["vectors"]], index)
    queries = enc.encode(tiny_index["texts"])
    impacts = [{t: round(w * 100) for t, w in q.items()} for q in queries.to_dicts()]
    for name, rows in (("int", impacts), ("float", queries.to_dicts())):
        (tmp_path / f"{name}.jsonl").write_text(
            "".join(json.dumps({"id": f"q{i}", "vector": v}) + "\n" for i, v in enumerate(rows))
        )
    runs = {}
    for name in ("int", "float"):
        out = tmp_path / f"{name}.trec"
        argv = ["search", str(index), "--topics", str(tmp_path / f"{name}.jsonl"), "--output", str(out)]
        assert main([*argv, "--k", "60"]) == 0
        runs[name] = [line.split() for line in out.read_text().splitlines()]
    assert runs["int"] == runs["float"]  # the same impacts either way
    d_imp = quantize(docs.to_dense(), 100).astype(np.int64)
    q_imp = np.zeros((len(impacts), len(enc.vocab)), np.int64)
    for i, v in enumerate(impacts):
        for t, w in v.items():
            q_imp[i, enc.vocab.index(t)] = w
    truth = q_imp @ d_imp.T
    for qid, _, docid, _, score, _ in runs["int"]:
        assert float(score) == truth[int(qid[1:]), ids.index(docid)]


@needs_java
def test_bm25_ties_keep_anserinis_order(tmp_path):
    """BM25 is the exception to the lower-doc-id tie rule: Anserini's BM25 searcher breaks ties by
    external id itself (adjusting the scores by 1e-6 a place), and the anchor is its run as it is."""
    import json

    from indexer.lucene import build_bm25_index

    ids = [f"d{99 - i}" for i in range(40)]  # indexed against external-id order
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("".join(json.dumps({"_id": d, "text": "heart blood"}) + "\n" for d in ids))
    build_bm25_index(corpus, tmp_path / "bm25")
    s = Searcher(tmp_path / "bm25")
    for k in (1, 3, 40, 50):
        hits = s.search("heart", k=k)
        assert [h.docid for h in hits] == sorted(ids)[: min(k, 40)]
        assert all(a.score > b.score for a, b in itertools.pairwise(hits))  # no exact ties left
        assert s.batch_search(["heart"], ["q"], k=k, threads=2)["q"] == hits
