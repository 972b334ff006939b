"""A real decoder (SmolLM2-135M, fetched from its PyPI package) through the echo export, and
decoder vocabularies (byte-level BPE, sentencepiece) through JsonVectorCollection and both indexes."""

from __future__ import annotations

import json

import numpy as np
import pytest

from indexer.jsonvector import escape_term, format_lines, load_batch, read_vectors
from indexer.native.build import build_native_index
from indexer.native.format import open_index
from indexer.quantize import quantize, quantize_batch
from lsr.sparse import SparseBatch
from lsr.tokenize import ECHO_TEMPLATE, Tokenizer
from plugin.native import NativeSearcher
from tests.conftest import EIFFEL, SENTENCES, fetch_or_skip, java_available
from tests.test_export import decoder_reference

SMOLLM2_VOCAB = 49_152
# Texts of varied lengths: empty, one piece, whitespace only (byte-level BPE keeps it: "ĠĠ"),
# punctuation and non-ASCII, and one past max_length.
TEXTS = [
    EIFFEL,
    "",
    "short",
    "  ",
    "50% of #hashtags use \"quotes\" and 'single' ones — café, 日本, 🙂\n\tend",
    "Cells divide by mitosis; the spindle pulls the chromosomes apart. " * 20,
    "What causes high blood pressure in older patients?",
]
MAX_LENGTH = 96  # echo: [BOS], the prompt's prefix and cue, and two copies of the text


@pytest.fixture(scope="module")
def smollm2_dir():
    from lsr.models import SMOLLM2

    return fetch_or_skip(SMOLLM2, "SmolLM2-135M")


@pytest.mark.slow
def test_smollm2_fetch_is_a_float32_llama_with_its_bpe_vocabulary(smollm2_dir):
    from safetensors import safe_open

    config = json.loads((smollm2_dir / "config.json").read_text(encoding="utf-8"))
    assert config["architectures"] == ["LlamaForCausalLM"] and "quantization_config" not in config
    assert (config["vocab_size"], config["bos_token_id"], config["tie_word_embeddings"]) == (49152, 1, True)
    with safe_open(smollm2_dir / "model.safetensors", "pt") as f:
        tensors = [f.get_slice(k) for k in f.keys()]
        assert {t.get_dtype() for t in tensors} == {"F32"}
        assert sum(int(np.prod(t.get_shape())) for t in tensors) == 134_515_008
    tok = Tokenizer(smollm2_dir / "tokenizer.json")
    assert len(tok.vocab) == SMOLLM2_VOCAB and tok.special_ids == tuple(range(17))
    assert tok.encode(["Hello world"], special_tokens=False)[0].tokens == ["Hello", "Ġworld"]


@pytest.mark.slow
def test_smollm2_echo_onnx_matches_torch(smollm2_dir, tmp_path_factory):
    """ONNX (batched, padded, length-bucketed) == torch on each text alone, echo on."""
    from lsr.export import export
    from lsr.runtime import load_encoder

    out = tmp_path_factory.mktemp("smollm2") / "enc"
    m = export(smollm2_dir, out, "decoder", echo=True)
    assert (m.echo, m.bos_token_id, m.vocab_size, m.max_length) == (True, 1, SMOLLM2_VOCAB, 8192)
    enc = load_encoder(out, max_length=MAX_LENGTH)
    got = enc.encode(TEXTS, batch_size=3).to_dense()
    assert m.echo_template == ECHO_TEMPLATE
    ref = decoder_reference(smollm2_dir, TEXTS, echo=True, max_length=MAX_LENGTH, template=m.echo_template)
    assert got.shape == ref.shape == (len(TEXTS), SMOLLM2_VOCAB)
    assert np.abs(got - ref).max() <= 1e-4
    assert enc.truncated == 1  # the long text
    assert not got[1].any() and not got[:, :17].any()  # the empty text; special tokens
    # Untrained: log(1 + relu(logits)) max-pooled is positive on (almost) every term.
    assert (got[0] > 0).mean() > 0.99


@pytest.mark.slow
def test_smollm2_lora_adapter_merged_onnx_matches_the_peft_model(smollm2_dir, tmp_path):
    """A LoRA adapter (r=16) on the real SmolLM2, merged at export: ONNX == the PEFT model in torch."""
    from lsr.export import export
    from lsr.runtime import load_encoder
    from lsr.tokenize import DecoderLayout
    from tests.test_export import lm_reference, make_lora_adapter

    peft_model = make_lora_adapter(smollm2_dir, tmp_path / "adapter", scale=0.02)
    export(tmp_path / "adapter", tmp_path / "enc", "decoder", echo=True)
    texts = TEXTS[:3] + TEXTS[4:5]
    got = load_encoder(tmp_path / "enc", max_length=MAX_LENGTH).encode(texts, batch_size=4).to_dense()
    tok = Tokenizer(smollm2_dir / "tokenizer.json")
    ref = lm_reference(
        peft_model, tok, DecoderLayout.from_template(tok, 1, True, ECHO_TEMPLATE), texts, MAX_LENGTH
    )
    assert np.abs(got - ref).max() <= 1e-4
    base = decoder_reference(smollm2_dir, texts, echo=True, max_length=MAX_LENGTH, template=ECHO_TEMPLATE)
    assert np.abs(base - got).max() > 1e-2  # the adapter is in the graph


@pytest.mark.slow
def test_smollm2_inference_free_queries_search_its_byte_level_vocabulary(smollm2_dir, tmp_path):
    """SmolLM2 with an IDF query side: queries are Ġ-pieces weighted by IDF, documents its pruned echo
    vectors; the native index answers them with the exact dot products."""
    from indexer.encode import encode_corpus
    from lsr.export import export
    from lsr.idf import compute_idf
    from lsr.runtime import load_encoder
    from plugin.bruteforce import BruteForceSearcher

    docs = [EIFFEL, *SENTENCES]
    tok = Tokenizer(smollm2_dir / "tokenizer.json")
    idf = compute_idf(docs, tok)
    export(smollm2_dir, tmp_path / "enc", "decoder", echo=True, idf=idf)
    q = load_encoder(tmp_path / "enc", side="query").encode(["Where is the Eiffel tower?"])
    got = {q.vocab[t]: w for t, w in zip(q.term_ids, q.weights.tolist(), strict=True)}
    assert "Ġtower" in got and got == pytest.approx({t: idf[t] for t in got})
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("".join(json.dumps({"_id": f"d{i}", "text": t}) + "\n" for i, t in enumerate(docs)))
    vectors = tmp_path / "vectors.jsonl"
    enc = load_encoder(tmp_path / "enc", max_length=MAX_LENGTH)
    encode_corpus(enc, corpus, vectors, batch_size=4, prune=("top_k", 64), show_progress=False)
    build_native_index(tmp_path / "native", vector_files=[vectors])
    ids, batch = load_batch(vectors, enc.vocab)
    want = BruteForceSearcher(ids, quantize_batch(batch)).search(quantize_batch(q), k=3)
    got = NativeSearcher(tmp_path / "native").search(q, k=3)
    assert [(h.docid, h.score) for h in got] == [(h.docid, h.score) for h in want] and got


# ------------------------------------------------------------------ vocabularies in the index
def one_term_per_posting(vocab: tuple[str, ...], per_doc: int = 128) -> SparseBatch:
    """Every term of ``vocab`` in exactly one document, ``per_doc`` consecutive terms a document."""
    n = len(vocab)
    return SparseBatch(
        np.r_[np.arange(0, n, per_doc), n].astype(np.int64),
        np.arange(n, dtype=np.int32),
        (0.25 * (1 + np.arange(n) % 40)).astype(np.float32),  # impacts 25..1000
        vocab,
    )


def single_term_queries(vocab: tuple[str, ...]) -> SparseBatch:
    n = len(vocab)
    return SparseBatch(
        np.arange(n + 1, dtype=np.int64), np.arange(n, dtype=np.int32), np.ones(n, np.float32), vocab
    )


def assert_vocabulary_round_trips(vocab: tuple[str, ...], tmp_path, lucene: bool) -> None:
    """Each term survives a JsonVectorCollection file (floats, and escaped integer impacts), a native
    index and (with ``lucene``) a Lucene one: a query for it finds its one document, scored exactly."""
    docs = one_term_per_posting(vocab)
    ids = [f"d{j}" for j in range(len(docs))]
    holder = np.repeat(np.arange(len(docs)), docs.row_nnz())
    floats, impacts = tmp_path / "floats.jsonl", tmp_path / "impacts.jsonl"
    floats.write_text("".join(format_lines(ids, docs)), encoding="utf-8")
    impacts.write_text("".join(format_lines(ids, quantize_batch(docs), impacts=True)), encoding="utf-8")

    got_ids, back = load_batch(floats, vocab)
    assert got_ids == ids
    for name in ("indptr", "term_ids", "weights"):
        np.testing.assert_array_equal(getattr(back, name), getattr(docs, name))
    escaped = [escape_term(t) for t in vocab]
    assert len(set(escaped)) == len(vocab)  # no two terms share an escaped form
    assert [t for _, v in read_vectors(impacts) for t in v] == escaped

    queries = single_term_queries(vocab)
    expected = quantize(np.ones(1, np.float32))[0] * quantize(docs.weights)
    want = [[(ids[holder[t]], float(expected[t]))] for t in range(len(vocab))]
    build_native_index(tmp_path / "native", vector_files=[floats])
    assert set(open_index(tmp_path / "native").vocab) == set(vocab)
    native = NativeSearcher(tmp_path / "native").batch_search(queries, k=2)
    assert [[(h.docid, h.score) for h in hits] for hits in native] == want
    if lucene:
        from indexer.lucene import build_lucene_index
        from plugin.lucene import LuceneSearcher

        build_lucene_index([floats], tmp_path / "lucene")
        hits = LuceneSearcher(tmp_path / "lucene").batch_search(queries, k=2, threads=2)
        assert [[(h.docid, h.score) for h in row] for row in hits] == want


@pytest.mark.slow
def test_smollm2_vocabulary_round_trips_through_both_indexes(smollm2_dir, tmp_path):
    vocab = Tokenizer(smollm2_dir / "tokenizer.json").vocab
    assert len(vocab) == SMOLLM2_VOCAB
    # What the vocabulary holds: Ġ-words, byte pieces, %, #, quotes, Ġ runs; no raw whitespace.
    for piece in ("Ġthe", "Ċ", "ĉ", "ĠĠ", "%", "Ġ%", "%%", "#", "##", "Ġ#", '"', "'", 'Ġ"', "'s", "Ã©"):
        assert piece in vocab, piece
    assert [escape_term(t) for t in vocab] == list(vocab)  # so the escaped impact file is the same
    assert_vocabulary_round_trips(vocab, tmp_path, lucene=java_available())


def sentencepiece_tokenizer(directory, whitespace_pieces: tuple[str, ...] = ()):
    """A Llama/Mistral-style tokenizer.json: ``▁`` word starts, byte fallback ``<0x00>``..``<0xFF>``,
    ``<unk>``, ``<s>``, ``</s>``; plus ``whitespace_pieces`` added as tokens (Gemma's vocabulary has
    raw ``\\n``, ``\\t`` and space runs)."""
    from tokenizers import Tokenizer as HFTokenizer
    from tokenizers import models, pre_tokenizers, trainers

    tok = HFTokenizer(models.BPE(unk_token="<unk>", byte_fallback=True))
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first")
    specials = ["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)]
    trainer = trainers.BpeTrainer(vocab_size=1200, special_tokens=specials, show_progress=False)
    extra = ["50% of #tags use \"quotes\", 'single' ones and ## headers", "café, naïve, 日本語, 🙂 ∑ x²"]
    tok.train_from_iterator(SENTENCES + extra, trainer)
    tok.add_tokens(list(whitespace_pieces))
    path = directory / "tokenizer.json"
    tok.save(str(path))
    return Tokenizer(path)


def test_sentencepiece_vocabulary_round_trips_through_both_indexes(tmp_path):
    vocab = sentencepiece_tokenizer(tmp_path).vocab
    for piece in ("▁", "▁the", "<0x0A>", "<0x25>", "<s>", "%", "#", '"', "'", "é", "🙂"):
        assert piece in vocab, piece
    assert [escape_term(t) for t in vocab] == list(vocab)
    assert_vocabulary_round_trips(vocab, tmp_path, lucene=java_available())


def test_raw_whitespace_pieces_round_trip_through_float_vector_files(tmp_path):
    """Gemma-style raw whitespace pieces: float files keep them as they are, Lucene sees them escaped."""
    vocab = sentencepiece_tokenizer(tmp_path, ("\n", "\t", "  ", "\u3000")).vocab
    assert {"\n", "\t", "  ", "\u3000"} <= set(vocab)
    assert_vocabulary_round_trips(vocab, tmp_path, lucene=java_available())


def test_raw_whitespace_pieces_survive_an_impact_file_in_the_native_index(tmp_path):
    vocab = ("▁the", "\n", "  ")
    docs = SparseBatch.from_dicts([{"▁the": 1.0, "\n": 1.0}, {"  ": 2.0}], vocab)
    path = tmp_path / "impacts.jsonl"
    path.write_text("".join(format_lines(["a", "b"], quantize_batch(docs), impacts=True)), encoding="utf-8")
    build_native_index(tmp_path / "native", vector_files=[path])
    searcher = NativeSearcher(tmp_path / "native")
    assert [h.docid for h in searcher.search(SparseBatch.from_dicts([{"\n": 1.0}], vocab))] == ["a"]


def test_escaped_terms_stay_distinct():
    assert escape_term("\n") != escape_term("%0A")


# "%" pieces (BERT, byte-level BPE), one that spells an escape, and the whitespace it spells.
PERCENT_VOCAB = ("%", "%0A", "\n", "%25", "##%", "  ", "\u3000", "%u3000")


def percent_impact_file(tmp_path):
    """``PERCENT_VOCAB`` one term a document (ids ``d0``...), as ``lsr encode --impacts`` writes it."""
    docs = one_term_per_posting(PERCENT_VOCAB, per_doc=1)
    ids = [f"d{j}" for j in range(len(docs))]
    path = tmp_path / "impacts.jsonl"
    path.write_text("".join(format_lines(ids, quantize_batch(docs), impacts=True)), encoding="utf-8")
    want = [
        [(ids[t], float(quantize(np.ones(1, np.float32))[0] * quantize(docs.weights)[t]))]
        for t in range(len(ids))
    ]
    return path, want


def test_percent_and_whitespace_pieces_stay_distinct_in_a_native_index_from_an_impact_file(tmp_path):
    path, want = percent_impact_file(tmp_path)
    build_native_index(tmp_path / "native", vector_files=[path])
    assert sorted(open_index(tmp_path / "native").vocab) == sorted(PERCENT_VOCAB)
    hits = NativeSearcher(tmp_path / "native").batch_search(single_term_queries(PERCENT_VOCAB), k=2)
    assert [[(h.docid, h.score) for h in row] for row in hits] == want


def test_percent_and_whitespace_pieces_stay_distinct_in_a_sharded_index_from_an_impact_file(tmp_path):
    from indexer.shards import build_sharded_index
    from plugin.sharded import ShardedSearcher

    path, want = percent_impact_file(tmp_path)
    build_sharded_index(tmp_path / "sharded", [path], 3)
    searcher = ShardedSearcher(tmp_path / "sharded")
    queries = single_term_queries(PERCENT_VOCAB)
    got = [
        [(h.docid, h.score) for h in searcher.search(queries.take(np.array([t])), 2)]
        for t in range(len(want))
    ]
    assert got == want


@pytest.mark.skipif(not java_available(), reason="Lucene backend unavailable (no Java 21+ or Anserini jar)")
def test_percent_and_whitespace_pieces_stay_distinct_in_lucene_from_an_impact_file(tmp_path):
    """Each term escaped once on the way in (from the impact file's escaped form) and once per query."""
    from indexer.lucene import build_lucene_index
    from plugin.lucene import LuceneSearcher

    path, want = percent_impact_file(tmp_path)
    build_lucene_index([path], tmp_path / "lucene")
    hits = LuceneSearcher(tmp_path / "lucene").batch_search(single_term_queries(PERCENT_VOCAB), k=2)
    assert [[(h.docid, h.score) for h in row] for row in hits] == want  # "%" finds the "%" document


def test_integer_topics_come_back_raw_and_go_to_pyserini_escaped_once(tmp_path):
    from plugin.pyserini import write_pyserini_topics
    from plugin.search import read_topics

    vocab = ("%", "%0A", "\n")
    queries = SparseBatch.from_dicts([{"%": 0.01, "%0A": 0.02, "\n": 0.01}], vocab)
    path = tmp_path / "q.jsonl"
    path.write_text("".join(format_lines(["q1"], quantize_batch(queries), impacts=True)), encoding="utf-8")
    assert read_topics(path) == (["q1"], [{"%": 1, "%0A": 2, "\n": 1}])
    write_pyserini_topics(path, tmp_path / "q.tsv")
    # Raw terms in sorted order ("\n" first), each escaped once and repeated its impact times.
    assert (tmp_path / "q.tsv").read_text(encoding="utf-8") == "q1\t%0A % %250A %250A\n"


def test_fetching_a_gguf_model_without_the_decoder_extra_names_it(tmp_path, monkeypatch):
    import sys

    from lsr.models import SMOLLM2, fetch

    monkeypatch.setenv("LSR_CACHE", str(tmp_path))
    monkeypatch.setitem(sys.modules, "gguf", None)  # import gguf raises ImportError
    with pytest.raises(ImportError, match=r"pip install 'lsr\[decoder\]'"):
        fetch(SMOLLM2)
    assert not list(tmp_path.iterdir())  # refused before any download
