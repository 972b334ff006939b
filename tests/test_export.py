"""Export parity (ONNX vs torch), output contracts, dtypes, and the real model's sanity."""

from __future__ import annotations

import json

import numpy as np
import onnxruntime as ort
import pytest
import torch

from lsr.export import INPUTS, build_module, export
from lsr.manifest import Manifest
from lsr.runtime import load_encoder
from tests.conftest import EIFFEL, fetch_or_skip

TEXTS = [
    EIFFEL,
    "",
    "   ",
    "short",
    "Cells divide by mitosis; the spindle pulls the chromosomes apart. " * 40,  # past max_length
    "What causes high blood pressure in older patients?",
]


def torch_weights(model_dir, kind, texts, max_length=128):
    module, tok = build_module(model_dir, kind, "vocab")
    tok.set_max_length(max_length)
    inputs = tok.pad(tok.encode(texts))
    with torch.no_grad():
        return module(*(torch.from_numpy(getattr(inputs, n)) for n in INPUTS)).numpy()


def top_terms(batch, k=20):
    out = []
    for ids, ws in batch:
        order = np.lexsort((ids, -ws))[:k]
        out.append(set(ids[order].tolist()))
    return out


@pytest.mark.parametrize("contract", ["vocab", "anserini"])
def test_real_model_onnx_matches_torch(real_model_dir, exported, contract):
    ref = torch_weights(real_model_dir, "splade", TEXTS)
    enc = load_encoder(exported(real_model_dir, "splade", contract), max_length=128)
    got = enc.encode(TEXTS, batch_size=4).to_dense()
    assert got.shape == ref.shape == (len(TEXTS), 30522)
    assert np.abs(got - ref).max() <= 1e-4
    assert ((got > 0) == (ref > 0)).mean() > 0.9999


def test_real_model_int8_agrees_on_top_terms(real_model_dir, exported):
    fp32 = load_encoder(exported(real_model_dir, "splade"), max_length=128).encode(TEXTS)
    int8 = load_encoder(exported(real_model_dir, "splade", dtype="int8"), max_length=128).encode(TEXTS)
    overlaps = [
        len(a & b) / max(min(len(a), 20), 1)
        for a, b in zip(top_terms(fp32), top_terms(int8), strict=True)
        if a
    ]
    print(f"int8 top-20 overlap: mean {np.mean(overlaps):.3f} min {np.min(overlaps):.3f}")
    assert np.mean(overlaps) >= 0.8


def test_fp16_export_runs_on_cpu_close_to_fp32(real_model_dir, exported):
    fp32 = load_encoder(exported(real_model_dir, "splade"), max_length=128).encode(TEXTS).to_dense()
    fp16 = load_encoder(exported(real_model_dir, "splade", dtype="fp16"), max_length=128).encode(TEXTS)
    assert fp16.weights.dtype == np.float32  # fp32 in and out, fp16 inside
    assert np.abs(fp16.to_dense() - fp32).max() < 0.05


def test_eiffel_tower_expands_beyond_its_words(real_model_dir, exported):
    enc = load_encoder(exported(real_model_dir, "splade"))
    (vec,) = enc.encode([EIFFEL]).to_dicts()
    own = {enc.vocab[i] for i in enc.tokenizer.token_ids(EIFFEL)}
    top30 = sorted(vec, key=vec.get, reverse=True)[:30]
    assert vec.get("paris", 0) > 1.0
    assert "paris" in top30[:10]
    expansions = [t for t in top30 if t not in own]
    assert {"france", "french"} & set(vec), f"no france/french in {top30}"
    assert len(expansions) >= 5, expansions
    assert not {"[CLS]", "[SEP]", "[PAD]"} & set(vec)


def test_anserini_contract_names_and_single_query_outputs(real_model_dir, exported):
    d = exported(real_model_dir, "splade", "anserini")
    manifest = Manifest.load(d)
    session = ort.InferenceSession(str(d / manifest.onnx), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["input_ids", "token_type_ids", "attention_mask"]
    assert [o.name for o in session.get_outputs()][:2] == ["output_idx", "output_weights"]
    # Anserini's Java encoder feeds one query and reads the outputs as long[] and float[].
    enc = load_encoder(d)
    inputs = enc.tokenizer.pad(enc.tokenizer.encode(["where is the eiffel tower"]))
    idx, weights, rows = session.run(None, inputs.feed(INPUTS))
    assert idx.dtype == np.int64 and idx.ndim == 1
    assert weights.dtype == np.float32 and weights.shape == idx.shape
    assert (rows == 0).all() and (np.diff(idx) > 0).all() and (weights > 0).all()
    ref = load_encoder(exported(real_model_dir, "splade", "vocab")).encode(["where is the eiffel tower"])
    np.testing.assert_array_equal(ref.term_ids, idx)
    np.testing.assert_allclose(ref.weights, weights, atol=1e-5)


def test_manifest_describes_the_graph(tiny_bert_dir, exported):
    d = exported(tiny_bert_dir, "splade", "anserini", "int8")
    m = json.loads((d / "manifest.json").read_text())
    assert m["kind"] == "splade" and m["contract"] == "anserini" and m["dtype"] == "int8"
    assert m["outputs"] == ["output_idx", "output_weights", "output_batch"]
    assert m["pooling"] == "max-log1p-relu" and m["max_length"] == 64
    assert set(m["special_token_ids"]) == {0, 1, 2, 3, 4}
    assert (d / "tokenizer.json").is_file() and (d / m["onnx"]).is_file()


@pytest.mark.parametrize("contract", ["vocab", "anserini"])
def test_tiny_bert_parity_and_dynamic_shapes(tiny_bert_dir, exported, contract):
    texts = ["the cell", "", "a tower in paris is high " * 20, "blood"] * 3
    ref = torch_weights(tiny_bert_dir, "splade", texts, max_length=64)
    enc = load_encoder(exported(tiny_bert_dir, "splade", contract))
    for batch_size in (1, 3, 12):
        got = enc.encode(texts, batch_size=batch_size).to_dense()
        assert np.abs(got - ref).max() <= 1e-4
    assert (ref[1] == 0).all()  # [CLS] [SEP] only: nothing is pooled
    assert (ref[:, :5] == 0).all()  # special-token dimensions are zeroed


def test_dense_export_matches_torch_and_is_normalised(tiny_bert_dir, exported):
    texts = ["the cell", "blood pressure of the heart " * 10, "x"]
    module, tok = build_module(tiny_bert_dir, "dense")
    inputs = tok.pad(tok.encode(texts))
    with torch.no_grad():
        ref = module(*(torch.from_numpy(getattr(inputs, n)) for n in INPUTS)).numpy()
    enc = load_encoder(exported(tiny_bert_dir, "dense"))
    got = enc.encode(texts, batch_size=2)
    assert got.shape == (3, 32) and got.dtype == np.float32
    np.testing.assert_allclose(got, ref, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, rtol=1e-5)


def test_model_dir_without_tokenizer_is_a_clear_error(tiny_bert_dir, tmp_path):
    broken = tmp_path / "no-tokenizer"
    broken.mkdir()
    for f in tiny_bert_dir.iterdir():
        if f.name != "tokenizer.json":
            (broken / f.name).write_bytes(f.read_bytes())
    with pytest.raises(FileNotFoundError, match=r"lacks tokenizer\.json"):
        export(broken, tmp_path / "out", "splade")
    assert not (tmp_path / "out").exists()


def test_encoder_dir_without_tokenizer_is_a_clear_error(tiny_bert_dir, exported, tmp_path):
    d = tmp_path / "enc"
    d.mkdir()
    for f in exported(tiny_bert_dir, "splade").iterdir():
        if f.name != "tokenizer.json":
            (d / f.name).write_bytes(f.read_bytes())
    with pytest.raises(FileNotFoundError, match=r"lacks tokenizer\.json"):
        load_encoder(d)


def test_inference_free_needs_an_idf_table(tiny_bert_dir, tmp_path):
    with pytest.raises(FileNotFoundError, match="--idf"):
        export(tiny_bert_dir, tmp_path / "if", "inference-free")
    assert not (tmp_path / "if").exists()


def test_export_replaces_an_existing_dir_atomically(tiny_bert_dir, tmp_path):
    out = tmp_path / "enc"
    export(tiny_bert_dir, out, "splade")
    before = Manifest.load(out)
    export(tiny_bert_dir, out, "splade", "anserini")
    assert before.contract == "vocab" and Manifest.load(out).contract == "anserini"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["enc"]  # no temp or old dirs left


def decoder_reference(model_dir, texts, echo, max_length=40):
    """Max pooling written out by hand over the causal LM's logits."""
    from transformers import AutoModelForCausalLM

    from lsr.tokenize import Tokenizer

    lm = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    tok = Tokenizer(model_dir / "tokenizer.json")
    bos = lm.config.bos_token_id
    budget = (max_length - 1) // (2 if echo else 1)
    out = np.zeros((len(texts), lm.config.vocab_size), np.float32)
    for r, text in enumerate(texts):
        ids = tok.token_ids(text)[:budget]
        if not ids:
            continue
        seq = [bos] + ids + (ids if echo else [])
        with torch.no_grad():
            logits = lm(input_ids=torch.tensor([seq])).logits[0].numpy()
        pooled = logits[len(seq) - len(ids) :]  # the (second) copy of the text
        out[r] = np.log1p(np.maximum(pooled.max(0), 0))
    out[:, list(tok.special_ids)] = 0
    return out


@pytest.mark.parametrize("echo", [True, False])
def test_decoder_pools_the_echoed_copy(tiny_mistral_dir, exported, tmp_path, echo):
    from lsr.export import export

    texts = ["the cell of a mouse", "", "blood", "a tower in paris is high " * 10]
    out = tmp_path / "dec"
    export(tiny_mistral_dir, out, "decoder", echo=echo)
    m = Manifest.load(out)
    assert m.echo is echo and m.inputs == ["input_ids", "attention_mask", "pool_mask"]
    enc = load_encoder(out, max_length=40)
    got = enc.encode(texts, batch_size=3).to_dense()
    ref = decoder_reference(tiny_mistral_dir, texts, echo)
    assert (ref > 0).sum() > 20
    np.testing.assert_allclose(got, ref, atol=1e-4)


def test_decoder_and_echo_option_checks(tiny_mistral_dir, tiny_bert_dir, tmp_path):
    with pytest.raises(ValueError, match="vocab contract only"):
        export(tiny_mistral_dir, tmp_path / "a", "decoder", "anserini")
    with pytest.raises(ValueError, match="echo applies to decoder"):
        export(tiny_bert_dir, tmp_path / "b", "splade", echo=True)


@pytest.fixture(scope="session")
def minilm_dir():
    from lsr.models import MINILM

    return fetch_or_skip(MINILM, "all-MiniLM-L6-v2")


@pytest.mark.slow
def test_real_minilm_matches_transformers_mean_pooling(minilm_dir, exported):
    """The shipped all-MiniLM-L6-v2: ONNX embeddings == transformers + mean pooling + L2, per text."""
    import torch
    import transformers

    from lsr.tokenize import Tokenizer

    enc = load_encoder(exported(minilm_dir, "dense"))
    assert enc.manifest.dim == 384 and enc.manifest.max_length == 256  # sentence-transformers' limit
    texts = ["How tall is the Eiffel Tower?", EIFFEL, "Blood pressure drugs lower the risk of stroke.", ""]
    got = enc.encode(texts, batch_size=4)
    model = transformers.AutoModel.from_pretrained(minilm_dir).eval()
    tok = Tokenizer(minilm_dir / "tokenizer.json", 256)
    for text, row in zip(texts, got, strict=True):
        ids = tok.encode([text])[0].ids  # one text alone: no padding at all
        with torch.no_grad():
            hidden = model(input_ids=torch.tensor([ids])).last_hidden_state[0]
        want = torch.nn.functional.normalize(hidden.mean(0), dim=0).numpy()
        np.testing.assert_allclose(row, want, atol=1e-5)
    # Padding is per batch (the shipped tokenizer.json pads every text to 128; the export turns it off).
    np.testing.assert_allclose(enc.encode(texts[:1])[0], got[0], atol=1e-5)
    assert got[0] @ got[1] > 0.5 > got[0] @ got[2]
