"""The onnxruntime path: providers, truncation, batching, the IDF query side, no torch."""

from __future__ import annotations

import logging
import subprocess
import sys

import numpy as np
import onnxruntime as ort
import pytest

from lsr import runtime
from lsr.idf import bm25_idf, compute_idf, load_idf
from lsr.runtime import IdfQueryEncoder, create_session, length_batches, load_encoder
from lsr.tokenize import Tokenizer
from tests.conftest import TINY_VOCAB, write_tiny_tokenizer


def test_truncation_keeps_the_closing_sep(tmp_path):
    tok = Tokenizer(write_tiny_tokenizer(tmp_path), max_length=16)
    (enc,) = tok.encode(["the cell " * 50])
    sep = TINY_VOCAB.index("[SEP]")
    assert len(enc.ids) == 16
    assert enc.ids[0] == TINY_VOCAB.index("[CLS]") and enc.ids[-1] == sep


def test_missing_tokenizer_file_names_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="tokenizer file not found"):
        Tokenizer(tmp_path / "tokenizer.json")


def test_length_batches_cover_every_row_once_longest_first():
    lengths = [3, 50, 7, 7, 1, 20, 9]
    batches = length_batches(lengths, 3)
    flat = np.concatenate(batches)
    assert sorted(flat.tolist()) == list(range(len(lengths)))
    assert [lengths[i] for i in flat] == sorted(lengths, reverse=True)
    with pytest.raises(ValueError, match="batch_size"):
        length_batches(lengths, 0)


def test_rows_come_back_in_input_order(tiny_bert_dir, exported):
    enc = load_encoder(exported(tiny_bert_dir, "splade"))
    texts = ["blood", "the tower in paris " * 9, "", "a cell", "risk of cancer in the study"]
    together = enc.encode(texts, batch_size=2)
    for i, text in enumerate(texts):
        ids, ws = enc.encode([text]).row(0)
        np.testing.assert_array_equal(together.row(i)[0], ids)
        np.testing.assert_allclose(together.row(i)[1], ws, atol=1e-5)


def test_empty_whitespace_and_huge_texts(tiny_bert_dir, exported):
    enc = load_encoder(exported(tiny_bert_dir, "splade"))
    huge = ("the heart of a mouse " * 5000)[:100_000]
    batch = enc.encode(["", "   \n\t ", huge])
    (enc_huge,) = enc.tokenizer.encode([huge])
    assert len(enc_huge.ids) == 64  # truncated to the model's limit
    assert batch.row_nnz()[:2].tolist() == [0, 0]
    assert batch.row_nnz()[2] > 0
    # A bare str is one text, as sentence-transformers takes it; a non-str item is a TypeError.
    one = enc.encode("the heart of a mouse")
    assert len(one) == 1 and one.to_dicts() == enc.encode(["the heart of a mouse"]).to_dicts()
    with pytest.raises(TypeError, match="item 1 is int"):
        enc.encode(["heart", 3])


def test_sparse_encoder_has_the_sentence_transformers_shape(tiny_bert_dir, exported, tmp_path):
    from lsr.runtime import IdfQueryEncoder, SparseEncoder, decode

    splade = SparseEncoder(exported(tiny_bert_dir, "splade"))
    texts = ["heart blood of the mouse", "tower in paris"]
    assert splade.encode_queries(texts[0]).to_dicts() == splade.encode_queries(texts).take([0]).to_dicts()
    docs = splade.encode_documents(texts)
    assert docs.to_dicts() == load_encoder(exported(tiny_bert_dir, "splade"), "doc").encode(texts).to_dicts()
    decoded = splade.decode(docs, top_k=3)
    assert [len(row) for row in decoded] == [3, 3]
    for row, full in zip(decoded, docs.to_dicts(), strict=True):
        ranked = sorted(full.items(), key=lambda tw: -tw[1])
        assert [w for _, w in row] == [w for _, w in ranked[:3]] and all(full[t] == w for t, w in row)
    assert [len(r) for r in decode(docs)] == docs.row_nnz().tolist()
    with pytest.raises(ValueError, match="top_k must be"):
        decode(docs, top_k=-1)
    free = SparseEncoder(exported(tiny_bert_dir, "inference-free", idf={"heart": 2.0, "tower": 1.5}))
    assert isinstance(free.side("query"), IdfQueryEncoder) and "doc" not in free._sides  # no ONNX for queries
    assert free.decode(free.encode_queries("the heart tower")) == [[("heart", 2.0), ("tower", 1.5)]]
    with pytest.raises(ValueError, match="dense encoder"):
        SparseEncoder(exported(tiny_bert_dir, "dense"))


def test_max_length_beyond_the_model_is_refused(tiny_bert_dir, exported):
    with pytest.raises(ValueError, match="exceeds the model's limit of 64"):
        load_encoder(exported(tiny_bert_dir, "splade"), max_length=65)


def test_cuda_request_falls_back_to_cpu_with_a_warning(tiny_bert_dir, exported, monkeypatch, caplog):
    # No GPU here: pretend this onnxruntime offers CUDA and check the fallback is seen and logged.
    monkeypatch.setattr(runtime.ort, "get_available_providers", lambda: [runtime.CUDA, runtime.CPU])
    d = exported(tiny_bert_dir, "splade")
    with caplog.at_level(logging.WARNING, logger="lsr.runtime"), pytest.warns(UserWarning):
        session = create_session(d / "model.onnx")
    assert session.get_providers() == [runtime.CPU]
    assert "CUDAExecutionProvider" in caplog.text and "CPUExecutionProvider" in caplog.text


def test_cpu_session_logs_its_provider(tiny_bert_dir, exported, caplog):
    with caplog.at_level(logging.INFO, logger="lsr.runtime"):
        enc = load_encoder(exported(tiny_bert_dir, "splade"))
    assert enc.provider == "CPUExecutionProvider" in ort.get_available_providers()
    assert "runs model.onnx on CPUExecutionProvider" in caplog.text


def test_idf_formula_on_a_hand_counted_corpus(tmp_path):
    tok = Tokenizer(write_tiny_tokenizer(tmp_path))
    docs = ["the cell", "the cell cell", "the tower", "blood"]
    table = compute_idf(docs, tok)
    n = 4
    for word, df in {"the": 3, "cell": 2, "tower": 1, "blood": 1, "paris": 0}.items():
        expected = np.log(1 + (n - df + 0.5) / (df + 0.5))
        assert table[word] == pytest.approx(expected, rel=1e-6), word
    assert "[CLS]" not in table and "[SEP]" not in table
    np.testing.assert_allclose(bm25_idf(np.array([0, 4]), 4), np.log1p([4.5 / 0.5, 0.5 / 4.5]), rtol=1e-6)


def test_idf_query_encoder_weights_each_distinct_token_once(tiny_bert_dir, exported):
    idf = {"cell": 2.0, "tower": 0.5, "the": 0.1, "[CLS]": 9.0}
    enc = load_encoder(exported(tiny_bert_dir, "inference-free", idf=idf), side="query")
    assert isinstance(enc, IdfQueryEncoder)
    vecs = enc.encode(["the cell cell tower", "paris", ""]).to_dicts()
    assert vecs[0] == pytest.approx({"the": 0.1, "cell": 2.0, "tower": 0.5})
    assert vecs[1] == {} and vecs[2] == {}  # paris is not in the table; [CLS] never counts
    doc_side = load_encoder(exported(tiny_bert_dir, "inference-free", idf=idf), side="doc")
    assert not isinstance(doc_side, IdfQueryEncoder)


def test_load_idf_rejects_bad_tables(tmp_path):
    vocab = ("a", "b")
    bad = tmp_path / "idf.json"
    bad.write_text('{"a": -1}')
    with pytest.raises(ValueError, match="weights must be finite"):
        load_idf(bad, vocab)
    bad.write_text("[1, 2]")
    with pytest.raises(ValueError, match="expected a JSON object"):
        load_idf(bad, vocab)
    bad.write_text('{"zzz": 1.0}')
    with pytest.raises(ValueError, match="none of its 1 tokens"):
        load_idf(bad, vocab)


def test_encode_path_never_imports_torch(tiny_bert_dir, exported, tmp_path):
    d = exported(tiny_bert_dir, "splade")
    corpus = tmp_path / "c.tsv"
    corpus.write_text("d1\tthe cell\nd2\tblood of the heart\n")
    code = (
        "import sys\n"
        "from plugin.cli import main\n"
        f"rc = main(['encode', {str(d)!r}, {str(corpus)!r}, {str(tmp_path / 'v.jsonl')!r}])\n"
        "assert rc == 0, rc\n"
        "bad = sorted(m for m in sys.modules if m == 'torch' or m.startswith(('torch.', 'transformers')))\n"
        "print('IMPORTED', bad)\n"
        "sys.exit(1 if bad else 0)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "IMPORTED []" in result.stdout
