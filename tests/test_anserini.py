"""Anserini's own Java SPLADE encoders running lsr's exported graph (plugin/anserini.py).

The Java side is Anserini 1.7.1's ``SpladePlusPlusEnsembleDistilEncoder`` (through the JVM bridge)
and ``SearchCollection -impact -pretokenized -encoder`` (a subprocess), reading the files that
:func:`plugin.anserini.install` put in a temporary ``user.home``. Anserini quantizes query weights
as ``Math.round(w / 5 * 256)``; lsr's side is compared after :func:`plugin.anserini.quantize`, the
same rule, and its Lucene index is built at that scale (51.2), so both sides score the same integers.
"""

from __future__ import annotations

import argparse
import json
import shutil
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
from numpy.typing import NDArray

from indexer.jsonvector import escape_term
from lsr.sparse import SparseBatch
from plugin.anserini import (
    DEFAULT_NAME,
    ENCODERS,
    MAX_QUERY_TOKENS,
    QUANT_RANGE,
    SCALE,
    WEIGHT_RANGE,
    add_parser,
    cache_for_home,
    install,
    run,
)
from tests.conftest import SENTENCES, needs_java

# Varied queries that both tokenizers split alike: case, accents, punctuation, digits, hyphens,
# unknown words and one longer than Anserini's 511 tokens (both cut it at 509 text tokens).
QUERIES = [
    "what is the capital of France?",
    "Does VITAMIN D supplementation reduce the risk of fractures in elderly women?",
    "café au lait spots & neurofibromatosis type-1 (NF1)",
    "Naïve Bayes vs. résumé screening: déjà vu",
    "IL-6 and TNF-α levels after 12 weeks of treatment",
    "p53 mutations in 50% of human cancers",
    "xylophonequuxzz blorptastic",
    "  leading and trailing   spaces\tand\ttabs\n",
    "co-morbidity; non-small-cell lung cancer — a review",
    "the the the the",
    "Smoking causes lung cancer. " * 100,
]
# Where DJL's BertFullTokenizer and the tokenizers library disagree: DJL neither splits CJK
# characters into words nor removes format characters (zero-width space, soft hyphen).
DIFFERENT = ["東京 tower", "zero\u200bwidth space", "soft\u00adhyphen"]


# Anserini's query rounding, modelled here as the oracle the Java side is checked against (lsr's own
# rule stays the one in indexer.quantize).
def quantize(weights: NDArray[np.floating]) -> NDArray[np.int32]:
    """Anserini's query impacts of float weights: ``Math.round(w / 5 * 256)`` in float32.

    Round half up, as Java's ``Math.round(float)``; lsr's own rule (:mod:`indexer.quantize`)
    rounds half to even in float64, so the two can differ by 1 where ``w * 51.2`` lies within
    float32 rounding of a half.

    Parameters
    ----------
    weights : NDArray[np.floating]
        Float weights, any shape.

    Returns
    -------
    NDArray[np.int32]
        Impacts of the same shape; zeros are kept (Anserini's map keeps them, its query drops them).
    """
    w = np.asarray(weights, np.float32)
    scaled = (w / np.float32(WEIGHT_RANGE)).astype(np.float32) * np.float32(QUANT_RANGE)
    # float32 + 0.5 is exact in float64, so this is Java's floor(x + 0.5) without its double rounding.
    return np.floor(scaled.astype(np.float64) + 0.5).astype(np.int32)


def query_impacts(batch: SparseBatch) -> list[dict[str, int]]:
    """The queries Anserini's encoder would build from these float vectors, zeros dropped.

    Parameters
    ----------
    batch : SparseBatch
        Float query vectors (e.g. ``lsr.runtime.load_encoder(dir, side="query").encode(texts)``).

    Returns
    -------
    list[dict[str, int]]
        One ``{escaped term: impact}`` per row, the form :class:`plugin.lucene.LuceneSearcher` sends.
    """
    impacts = quantize(batch.weights)
    out = []
    for i in range(len(batch)):
        s, e = batch.indptr[i], batch.indptr[i + 1]
        terms = batch.term_ids[s:e].tolist()
        row = zip(terms, impacts[s:e].tolist(), strict=True)
        out.append({escape_term(batch.vocab[t]): q for t, q in row if q > 0})
    return out


# --- install: files, names and validation (tiny random BERT, no Java) ---------------------------


@pytest.fixture(scope="module")
def tiny_anserini(tiny_bert_dir, exported) -> Path:
    return exported(tiny_bert_dir, "splade", "anserini")


def test_install_writes_the_graph_and_vocab_under_anserinis_names(tiny_anserini, tmp_path):
    from lsr.tokenize import Tokenizer

    cache = tmp_path / "home" / ".cache" / "pyserini" / "encoders"
    info = install(tiny_anserini, name="SpladeV3", cache=cache)
    assert info["class"] == "io.anserini.encoder.sparse.SpladeV3Encoder"
    assert Path(info["onnx"]) == cache / "splade-v3-optimized.onnx"
    assert Path(info["vocab"]) == cache / "splade-v3-vocab.txt"
    assert Path(info["onnx"]).read_bytes() == (tiny_anserini / "model.onnx").read_bytes()
    vocab = Path(info["vocab"]).read_text(encoding="utf-8").split("\n")
    assert vocab[:-1] == list(Tokenizer(tiny_anserini / "tokenizer.json").vocab) and vocab[-1] == ""
    assert info["search_args"] == ["-impact", "-pretokenized", "-encoder", "SpladeV3"]
    assert info["scale"] == 51.2
    # The tiny vocabulary has words at BERT's [CLS]/[SEP] ids, which Anserini drops from queries.
    assert info["dropped_terms"] == ["day", "small"]
    assert sorted(p.name for p in cache.iterdir()) == ["splade-v3-optimized.onnx", "splade-v3-vocab.txt"]
    assert install(tiny_anserini, name="SpladeV3", cache=cache) == info  # same files: idempotent


def test_install_refuses_to_replace_a_different_model_unless_forced(tiny_anserini, tmp_path):
    cache = tmp_path / "encoders"
    cache.mkdir()
    theirs = cache / ENCODERS[DEFAULT_NAME][0]
    theirs.write_bytes(b"Anserini's own SPLADE++ ED")
    with pytest.raises(FileExistsError, match="--force"):
        install(tiny_anserini, cache=cache)
    assert theirs.read_bytes() == b"Anserini's own SPLADE++ ED"
    assert not (cache / ENCODERS[DEFAULT_NAME][1]).exists()
    assert [p.name for p in cache.iterdir()] == [theirs.name]  # no staged files left behind
    install(tiny_anserini, cache=cache, force=True)
    assert theirs.read_bytes() == (tiny_anserini / "model.onnx").read_bytes()


def test_install_rejects_what_anserini_cannot_run(tiny_bert_dir, tiny_anserini, exported, tmp_path):
    vocab_contract = exported(tiny_bert_dir, "splade")
    with pytest.raises(ValueError, match=r"lsr export .* --contract anserini"):
        install(vocab_contract, cache=tmp_path)
    with pytest.raises(FileNotFoundError, match="not an encoder directory"):
        install(tmp_path, cache=tmp_path)
    with pytest.raises(ValueError, match="SpladePlusPlusEnsembleDistil, SpladePlusPlusSelfDistil, SpladeV3"):
        install(tiny_anserini, name="UniCoil", cache=tmp_path)
    cased = tmp_path / "cased"
    shutil.copytree(tiny_anserini, cased)
    tok = json.loads((cased / "tokenizer.json").read_text(encoding="utf-8"))
    tok["normalizer"]["lowercase"] = False
    (cased / "tokenizer.json").write_text(json.dumps(tok), encoding="utf-8")
    with pytest.raises(ValueError, match="lowercase"):
        install(cased, cache=tmp_path / "c")
    tok["normalizer"]["lowercase"] = True
    tok["model"]["vocab"]["bad token "] = len(tok["model"]["vocab"])
    (cased / "tokenizer.json").write_text(json.dumps(tok), encoding="utf-8")
    with pytest.raises(ValueError, match=r"cannot be a line of vocab\.txt"):
        install(cased, cache=tmp_path / "c")
    assert not (tmp_path / "c").exists() or not any((tmp_path / "c").iterdir())


def test_cli_pair_installs_and_prints_the_search_flags(tiny_anserini, tmp_path, capsys):
    parser = argparse.ArgumentParser(prog="lsr")
    add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["anserini", "install", str(tiny_anserini), "--cache", str(tmp_path)])
    assert run(args) == 0
    out = capsys.readouterr().out
    assert "-impact -pretokenized -encoder SpladePlusPlusEnsembleDistil" in out
    assert (tmp_path / "splade-pp-ed-vocab.txt").is_file()
    with pytest.raises(SystemExit):
        parser.parse_args(["anserini", "install", str(tiny_anserini), "--name", "Bogus"])


def test_quantize_is_javas_round_half_up_in_float32():
    # 25/512 * 51.2 is exactly 2.5: Java's Math.round gives 3 where lsr's half-even rule gives 2.
    w = np.array([0.0, 0.5, 25 / 512, 0.0097, 1.0, 2.449, 4.99], np.float32)
    assert quantize(w).tolist() == [0, 26, 3, 0, 51, 125, 255]
    assert np.rint(np.float64(25 / 512) * SCALE) == 2


# --- the real SPLADE through Anserini's own classes ---------------------------------------------


@pytest.fixture(scope="module")
def real_anserini(real_model_dir, exported, tmp_path_factory):
    """(ENCODER_DIR, user.home, install info) of the real SPLADE, installed as SPLADE++ ED."""
    encoder = exported(real_model_dir, "splade", "anserini")
    home = tmp_path_factory.mktemp("anserini-home")
    return encoder, home, install(encoder, cache=cache_for_home(home))


@pytest.fixture(scope="module")
def java_encoder(real_anserini):
    """Anserini's ``SpladePlusPlusEnsembleDistilEncoder`` reading our files, in this process's JVM."""
    from plugin import jvm

    _, home, info = real_anserini
    jvm.start()
    system = jvm.autoclass("java.lang.System")
    old = system.getProperty("user.home")
    # OnnxEncoder fixes its cache folder from user.home once, when the class initialises.
    system.setProperty("user.home", str(home))
    try:
        onnx_encoder = jvm.autoclass("java.lang.Class").forName("io.anserini.encoder.OnnxEncoder")
    finally:
        system.setProperty("user.home", old)
    del onnx_encoder
    encoder = jvm.autoclass(info["class"])()
    if Path(encoder.getCacheDir()) != Path(info["cache"]):
        pytest.skip(f"OnnxEncoder was initialised earlier in this JVM, with cache {encoder.getCacheDir()}")
    return encoder


def _java_ids(encoder, text: str) -> list[int]:
    # SpladeEncoder.computeFloatWeights: ([CLS] + tokens)[:510] + [SEP] (tokenizeToIds does not cut).
    full = list(encoder.tokenizeToIds(text))
    return full[:-1][: MAX_QUERY_TOKENS - 1] + full[-1:]


def _java_vector(encoder, text: str) -> dict[str, int]:
    m = encoder.encode(text)
    weights = {str(k): int(m.get(k)) for k in m.keySet().toArray()}
    return {t: q for t, q in weights.items() if q > 0}  # zeros stay in the map, not in the query


def compare(encoder_dir: Path, java, texts: list[str]) -> dict:
    """Per text: tokenized alike or not, and for those alike whether the integer vectors agree."""
    from lsr.runtime import load_encoder

    ours = load_encoder(encoder_dir, side="query", max_length=MAX_QUERY_TOKENS)
    ids = [e.ids for e in ours.tokenizer.encode(texts)]
    vectors = query_impacts(ours.encode(texts))
    out = {"same_tokens": [], "different_tokens": [], "vector_mismatch": []}
    for i, text in enumerate(texts):
        if _java_ids(java, text) != ids[i]:
            out["different_tokens"].append(i)
            continue
        out["same_tokens"].append(i)
        theirs = _java_vector(java, text)
        if theirs != vectors[i]:
            diff = {t: (theirs.get(t), vectors[i].get(t)) for t in set(theirs) | set(vectors[i])}
            out["vector_mismatch"].append((i, {t: v for t, v in diff.items() if v[0] != v[1]}))
    return out


@needs_java
def test_anserinis_quantizer_is_ours(java_encoder):
    from plugin import jvm

    jmap, jfloat = jvm.autoclass("java.util.HashMap")(), jvm.autoclass("java.lang.Float")
    rng = np.random.default_rng(0)
    w = np.concatenate([rng.random(2000) * 4, np.arange(1, 200) / SCALE + 0.5 / SCALE]).astype(np.float32)
    for i, x in enumerate(w.tolist()):
        jmap.put(f"t{i}", jfloat(x))
    got = java_encoder.quantizeFloatWeights(jmap)
    assert [int(got.get(f"t{i}")) for i in range(len(w))] == quantize(w).tolist()


@needs_java
def test_anserini_encoder_gives_lsrs_query_vectors(real_anserini, java_encoder):
    encoder, _, _ = real_anserini
    got = compare(encoder, java_encoder, QUERIES)
    assert got["different_tokens"] == [] and got["vector_mismatch"] == []
    assert len(_java_vector(java_encoder, QUERIES[0])) > 5
    # The known tokenizer gaps: Anserini's own tokens differ, so its vectors do too.
    known = compare(encoder, java_encoder, DIFFERENT)
    print("tokenized differently by Anserini:", [DIFFERENT[i] for i in known["different_tokens"]])
    assert known["different_tokens"] == list(range(len(DIFFERENT)))


def _search_collection(
    index: Path,
    home: Path | None,
    topics: dict[str, str],
    out: Path,
    hits: int,
    threads=1,
    encoder=DEFAULT_NAME,
):
    """Anserini's ``SearchCollection -impact -pretokenized`` over TSV topics, with ``-encoder`` (reading
    ``home``'s cache) or, with ``encoder=None``, on topics already in Anserini's pretokenized form."""
    from indexer.java import java_command, run_java

    tsv = out.with_suffix(".tsv")
    # A TSV line holds no tab or line break; WordPiece splits on any whitespace alike.
    tsv.write_text("".join(f"{q}\t{' '.join(t.split())}\n" for q, t in topics.items()), encoding="utf-8")
    cmd = java_command(
        "io.anserini.search.SearchCollection",
        *("-index", str(index), "-topics", str(tsv), "-topicReader", "TsvString", "-output", str(out)),
        *("-impact", "-pretokenized", "-hits", str(hits), "-threads", str(threads)),
        *(("-encoder", encoder) if encoder else ()),
    )
    if home is not None:
        cmd.insert(1, f"-Duser.home={home}")
    result = run_java(cmd, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    run_: dict[str, list[tuple[str, float]]] = defaultdict(list)
    for line in out.read_text(encoding="utf-8").splitlines():
        qid, _, docid, _, score, _ = line.split()
        run_[qid].append((docid, float(score)))
    return run_


def assert_same_ranking(theirs: list[tuple[str, float]], ours: list, k: int, qid: str) -> None:
    """Same scores rank by rank, same documents; ties may be cut differently at the last score.

    Anserini orders equal scores by external id, lsr by Lucene doc id (DESIGN.md's tie rule).
    """
    assert [s for _, s in theirs] == [h.score for h in ours[: len(theirs)]], qid
    assert len(theirs) == min(k, len(ours)), qid
    last = theirs[-1][1] if theirs else None
    tied = {h.docid for h in ours if h.score == last}
    if last is not None:
        assert ours[-1].score < last or len(ours) < k + 1, f"{qid}: fetch more lsr hits to see the tie"
    for docid, score in theirs:
        if score == last:
            assert docid in tied, qid
    assert {d for d, s in theirs if s != last} == {h.docid for h in ours[:k] if h.score != last}, qid


def _lsr_search(index: Path, topics: Path, out: Path, k: int, *flags: str) -> dict[str, list]:
    """``lsr search INDEX --topics TOPICS ...`` through the CLI; its run as ``{qid: [Hit, ...]}``."""
    from plugin.cli import main
    from plugin.evaluate import read_run

    assert (
        main(["search", str(index), "--topics", str(topics), "--output", str(out), "--k", str(k), *flags])
        == 0
    )
    return read_run(out)


def _lsr_runs(index: Path, encoder: Path, texts: list[str], k: int, threads: int = 1) -> list[list]:
    """``lsr search INDEX --encoder ENCODER --max-length 511`` on a Lucene index at Anserini's scale:
    the query batch and each text's hits."""
    from indexer.lucene import LuceneIndexInfo
    from lsr.runtime import load_encoder

    assert LuceneIndexInfo.load(index).scale == SCALE
    queries = load_encoder(encoder, side="query", max_length=MAX_QUERY_TOKENS).encode(texts)
    topics = index.parent / f"{index.name}-topics.tsv"
    topics.write_text(
        "".join(f"q{i}\t{' '.join(t.split())}\n" for i, t in enumerate(texts)), encoding="utf-8"
    )
    flags = ("--encoder", str(encoder), "--max-length", str(MAX_QUERY_TOKENS), "--threads", str(threads))
    run_ = _lsr_search(index, topics, index.parent / f"{index.name}-lsr.trec", k, *flags)
    return queries, [run_.get(f"q{i}", []) for i in range(len(texts))]


def _search_collection_impacts(
    index: Path, topics: dict[str, dict[str, int]], out: Path, hits: int, threads=1
):
    """Anserini's ``SearchCollection -impact -pretokenized`` on integer pre-encoded topics, in its
    pretokenized form (each token repeated weight times), no encoder."""
    pretokenized = {q: " ".join(t for t, w in v.items() for _ in range(w)) for q, v in topics.items()}
    return _search_collection(index, None, pretokenized, out, hits, threads, encoder=None)


def check_integer_topics(index: Path, impacts: dict[str, dict[str, int]], tmp: Path, k: int = 10) -> int:
    """``lsr search`` and ``SearchCollection`` on the same integer topics: equal scores rank by rank
    (not 100x: integer topics are impacts as given), the same documents up to ties at the last score.
    Returns the number of queries with hits."""
    topics = tmp / "int-topics.jsonl"
    topics.write_text("".join(json.dumps({"id": q, "vector": v}) + "\n" for q, v in impacts.items()))
    ours = _lsr_search(index, topics, tmp / "int-lsr.trec", k + 20, "--threads", "2")
    theirs = _search_collection_impacts(index, impacts, tmp / "int-anserini.trec", k, threads=2)
    for qid in impacts:
        assert_same_ranking(theirs.get(qid, []), ours.get(qid, []), k, qid)
    return sum(bool(theirs.get(q)) for q in impacts)


def _sentence_vectors(encoder: Path, tmp_path: Path) -> Path:
    """SENTENCES as a corpus, encoded by ``encoder`` (128 tokens): the vectors file."""
    from indexer.encode import encode_corpus
    from lsr.runtime import load_encoder

    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text(
        "".join(json.dumps({"_id": f"d{i:02d}", "text": t}) + "\n" for i, t in enumerate(SENTENCES)),
        encoding="utf-8",
    )
    vectors = tmp_path / "v.jsonl"
    encode_corpus(load_encoder(encoder, "doc", max_length=128), corpus, vectors, show_progress=False)
    return vectors


@needs_java
def test_search_collection_with_lsrs_encoder_gives_lsrs_run(real_anserini, java_encoder, tmp_path):
    from indexer.lucene import build_lucene_index

    encoder, home, _ = real_anserini
    build_lucene_index([_sentence_vectors(encoder, tmp_path)], tmp_path / "idx", scale=SCALE)
    texts = QUERIES + ["vitamin D and fractures", "lung cancer smoking", "Paris tower"]
    batch, ours = _lsr_runs(tmp_path / "idx", encoder, texts, k=len(SENTENCES))
    theirs = _search_collection(
        tmp_path / "idx", home, {f"q{i}": t for i, t in enumerate(texts)}, tmp_path / "run.txt", 10
    )
    # lsr's searcher quantizes half to even; where that differs from Anserini's half up, skip.
    rounding = [i for i, q in enumerate(query_impacts(batch)) if q != _lsr_impacts(batch, i)]
    print(f"{len(rounding)} of {len(texts)} queries round differently at scale 51.2")
    checked = 0
    for i in range(len(texts)):
        if i not in rounding:
            assert_same_ranking(theirs[f"q{i}"], ours[i], 10, f"q{i}")
            checked += 1
    empty = [texts[i] for i in range(len(texts)) if not theirs[f"q{i}"]]
    print("queries without hits:", empty)
    assert checked >= len(texts) - 2 and len(empty) <= 1


@needs_java
def test_integer_topics_give_anserinis_scores(real_anserini, tmp_path):
    from indexer.lucene import build_lucene_index, impact_vectors
    from lsr.runtime import load_encoder

    encoder, _, _ = real_anserini
    build_lucene_index([_sentence_vectors(encoder, tmp_path)], tmp_path / "idx")  # lsr's own scale, 100
    texts = QUERIES[:8] + ["vitamin D and fractures", "lung cancer smoking", "Paris tower"]
    batch = load_encoder(encoder, "query", max_length=64).encode(texts)
    impacts = {f"q{i}": v for i, v in enumerate(impact_vectors(batch, 100)) if v}
    assert check_integer_topics(tmp_path / "idx", impacts, tmp_path) >= len(impacts) - 1


def _lsr_impacts(batch, i: int) -> dict[str, int]:
    from indexer.lucene import impact_vectors

    return impact_vectors(batch.take([i]), SCALE)[0]


# --- SciFact: 300 test queries through Anserini's encoder and SearchCollection ------------------


@pytest.mark.slow
@needs_java
def test_scifact_queries_and_runs_match(scifact, real_anserini, java_encoder, tmp_path):
    from indexer.corpus import read_corpus, read_qrels
    from indexer.encode import encode_corpus
    from indexer.lucene import build_lucene_index
    from lsr.models import cache_dir
    from lsr.runtime import load_encoder
    from plugin.evaluate import evaluate
    from plugin.hits import Hit

    encoder, home, _ = real_anserini
    qrels = read_qrels(scifact / "qrels" / "test.tsv")
    queries = [r for r in read_corpus(scifact / "queries.jsonl") if r.id in qrels]
    texts = [q.text for q in queries]
    got = compare(encoder, java_encoder, texts)
    print(
        f"SciFact test queries: {len(texts)}, tokenized differently by Anserini: "
        f"{len(got['different_tokens'])} {[queries[i].id for i in got['different_tokens']]}, "
        "vector mismatches among the rest: "
        f"{len(got['vector_mismatch'])}"
    )
    assert len(texts) == 300 and got["vector_mismatch"] == []
    assert len(got["different_tokens"]) <= 3

    # Documents encoded once (the anserini-contract graph, 256 tokens) and cached.
    vectors = cache_dir() / "anserini" / f"{scifact.name}-splade-tiny-anserini-fp32-256.jsonl.gz"
    encode_corpus(
        load_encoder(encoder, "doc", max_length=256), scifact / "corpus.jsonl", vectors, batch_size=8
    )
    build_lucene_index([vectors], tmp_path / "idx", threads=2, scale=SCALE)
    batch, ours = _lsr_runs(tmp_path / "idx", encoder, texts, k=30, threads=2)
    theirs = _search_collection(
        tmp_path / "idx",
        home,
        {q.id: q.text for q in queries},
        tmp_path / "run.txt",
        10,
        threads=2,
    )
    rounding = {i for i, q in enumerate(query_impacts(batch)) if q != _lsr_impacts(batch, i)}
    skipped = rounding | set(got["different_tokens"])
    print(f"queries rounding differently at scale 51.2: {len(rounding)}; compared: {300 - len(skipped)}")
    for i, q in enumerate(queries):
        if i not in skipped:
            assert_same_ranking(theirs[q.id], ours[i], 10, q.id)
    assert len(skipped) <= 10
    ndcg = {
        "anserini": evaluate({q: [Hit(d, s) for d, s in h] for q, h in theirs.items()}, qrels, ["ndcg@10"]),
        "lsr": evaluate({q.id: ours[i][:10] for i, q in enumerate(queries)}, qrels, ["ndcg@10"]),
    }
    print("NDCG@10", ndcg)
    assert ndcg["anserini"]["ndcg@10"] == pytest.approx(ndcg["lsr"]["ndcg@10"], abs=2e-3)
    # Integer pre-encoded topics (lsr's query impacts at the index's scale): every query, equal scores.
    impacts = {q.id: v for q, v in zip(queries, _all_impacts(batch), strict=True) if v}
    assert check_integer_topics(tmp_path / "idx", impacts, tmp_path) >= 295


def _all_impacts(batch) -> list[dict[str, int]]:
    from indexer.lucene import impact_vectors

    return impact_vectors(batch, SCALE)
