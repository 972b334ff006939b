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
from lsr.tokenize import Tokenizer
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


def decoder_reference(model_dir, texts, echo, max_length=40, template=None):
    """Max pooling written out by hand over the causal LM's logits, each text alone: ``[BOS] text`` or
    ``[BOS] prefix text cue text`` for ``template`` ``prefix{text}cue{text}`` (None: the bare repeat)."""
    from transformers import AutoModelForCausalLM

    from lsr.tokenize import Tokenizer

    lm = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    tok = Tokenizer(model_dir / "tokenizer.json")
    bos = lm.config.bos_token_id
    prefix, cue, _ = (template or "{text}{text}").split("{text}")
    prefix_ids, cue_ids = (tok.token_ids(p) if p else [] for p in (prefix, cue))
    budget = (max_length - 1 - (len(prefix_ids) + len(cue_ids) if echo else 0)) // (2 if echo else 1)
    out = np.zeros((len(texts), lm.config.vocab_size), np.float32)
    for r, text in enumerate(texts):
        ids = tok.token_ids(text)[:budget]
        if not ids:
            continue
        seq = [bos] + (prefix_ids + ids + cue_ids + ids if echo else ids)
        with torch.no_grad():
            logits = lm(input_ids=torch.tensor([seq])).logits[0].numpy()
        pooled = logits[len(seq) - len(ids) :]  # the (second) copy of the text
        out[r] = np.log1p(np.maximum(pooled.max(0), 0))
    out[:, list(tok.special_ids)] = 0
    return out


DECODER_TEXTS = ["the cell of a mouse", "", "blood", "a tower in paris is high " * 10]


@pytest.mark.parametrize(
    "echo, template",
    [(False, None), (True, None), (True, "{text}{text}"), (True, "query: {text} again, the query: {text}")],
)
def test_decoder_pools_the_echoed_copy(tiny_mistral_dir, tmp_path, echo, template):
    """Batched ONNX == each text alone in torch, pooled over the last copy only; the manifest keeps
    the template (default: echo embeddings' prompt)."""
    from lsr.export import export
    from lsr.tokenize import ECHO_TEMPLATE

    out = tmp_path / "dec"
    export(tiny_mistral_dir, out, "decoder", echo=echo, echo_template=template)
    m = Manifest.load(out)
    assert m.echo is echo and m.inputs == ["input_ids", "attention_mask", "pool_mask"]
    assert m.echo_template == (None if not echo else template or ECHO_TEMPLATE)
    enc = load_encoder(out, max_length=40)
    got = enc.encode(DECODER_TEXTS, batch_size=3).to_dense()
    ref = decoder_reference(tiny_mistral_dir, DECODER_TEXTS, echo, template=m.echo_template)
    assert (ref > 0).sum() > 20
    np.testing.assert_allclose(got, ref, atol=1e-4)
    assert enc.truncated == 1  # the long text


@pytest.mark.parametrize("model", ["tiny_mistral_dir", "tiny_gpt2_dir"])
def test_echo_padding_side_never_changes_a_weight(model, request, tmp_path):
    """Left and right padding, in a batch or alone, torch and ONNX: the same weights (GPT-2's absolute
    positions count from the attention mask)."""
    import onnxruntime as ort
    import torch

    from lsr.export import build_module, export
    from lsr.tokenize import ECHO_TEMPLATE, DecoderLayout, decoder_inputs

    model_dir = request.getfixturevalue(model)
    module, tok = build_module(model_dir, "decoder")
    layout = DecoderLayout.from_template(tok, module.lm.config.bos_token_id, True, ECHO_TEMPLATE)
    ids = [tok.token_ids(t) for t in DECODER_TEXTS]
    export(model_dir, tmp_path / "dec", "decoder", echo=True)
    session = ort.InferenceSession(str(tmp_path / "dec" / "model.onnx"))

    def run(rows, side, how):
        x = decoder_inputs(rows, layout, tok.pad_id, 40, padding_side=side)
        if how == "onnx":
            return session.run(None, x.feed(["input_ids", "attention_mask", "pool_mask"]))[0]
        with torch.no_grad():
            args = [torch.from_numpy(getattr(x, n)) for n in ("input_ids", "attention_mask", "pool_mask")]
            return module(*args).numpy()

    alone = np.concatenate([run([i], "right", "torch") for i in ids])
    assert (alone > 0).sum() > 20
    for side in ("right", "left"):
        x = decoder_inputs(ids, layout, tok.pad_id, 40, padding_side=side)
        assert (x.attention_mask[:, 0 if side == "left" else -1] == 0).any()  # some row is padded
        for how in ("torch", "onnx"):
            np.testing.assert_allclose(run(ids, side, how), alone, atol=1e-5, err_msg=f"{side} {how}")
    with pytest.raises(ValueError, match="padding_side"):
        decoder_inputs(ids, layout, tok.pad_id, 40, padding_side="middle")


def test_echo_pools_only_the_second_copy(tiny_mistral_dir):
    """The first copy reaches the output only through attention: it changes the weights, yet the
    weights are the max over the second copy's logits alone."""
    import torch

    from lsr.export import build_module
    from lsr.tokenize import DecoderLayout, decoder_inputs

    module, tok = build_module(tiny_mistral_dir, "decoder")
    layout = DecoderLayout.from_template(tok, module.lm.config.bos_token_id, True, "q: {text} again: {text}")
    ids = tok.token_ids("the cell of a mouse")
    x = decoder_inputs([ids], layout, tok.pad_id, 40)
    n = len(ids)
    assert x.pool_mask[0].tolist() == [0] * (x.pool_mask.shape[1] - n) + [1] * n
    seq = torch.from_numpy(x.input_ids)
    with torch.no_grad():
        got = module(seq, torch.from_numpy(x.attention_mask), torch.from_numpy(x.pool_mask))[0].numpy()
        logits = module.lm(input_ids=seq).logits[0, -n:].numpy()
        other = seq.clone()
        other[0, 1 + len(layout.prefix_ids) : 1 + len(layout.prefix_ids) + n] = tok.token_ids("blood")[0]
        changed = module(other, torch.from_numpy(x.attention_mask), torch.from_numpy(x.pool_mask))[0].numpy()
    ref = np.log1p(np.maximum(logits.max(0), 0))
    ref[list(tok.special_ids)] = 0
    np.testing.assert_allclose(got, ref, atol=1e-5)
    assert np.abs(changed - got).max() > 1e-3  # the first copy is read, through attention


def test_decoder_layout_masks_special_tokens_and_checks_templates(tiny_mistral_dir):
    from lsr.tokenize import DecoderLayout, Tokenizer, echo_parts

    tok = Tokenizer(tiny_mistral_dir / "tokenizer.json")
    sep = tok.special_ids[-1]
    layout = DecoderLayout(
        bos_id=2, echo=True, prefix_ids=(7,), cue_ids=(8, 9), special_ids=frozenset(tok.special_ids)
    )
    seq, pooled = layout.sequence([10, sep, 11])
    assert seq == [2, 7, 10, sep, 11, 8, 9, 10, sep, 11]
    assert pooled == [0, 0, 0, 0, 0, 0, 0, 1, 0, 1]  # a special token the text spells is never pooled
    assert layout.budget(16) == 6 and DecoderLayout(bos_id=None).budget(16) == 16
    with pytest.raises(ValueError, match="no room for text"):
        layout.budget(5)
    assert echo_parts("a {text} b {text}") == ("a ", " b ")
    for bad in ("{text}", "{text} {text} after", "no slot"):
        with pytest.raises(ValueError, match="twice"):
            echo_parts(bad)


def lm_reference(lm, tok, layout, texts, max_length):
    """Max pooling by hand over ``lm``'s logits (any causal LM, a PEFT one too), each text alone."""
    from lsr.tokenize import decoder_inputs

    out = np.zeros((len(texts), lm.config.vocab_size), np.float32)
    for r, text in enumerate(texts):
        x = decoder_inputs([tok.token_ids(text)], layout, tok.pad_id, max_length)
        with torch.no_grad():
            logits = lm(input_ids=torch.from_numpy(x.input_ids)).logits[0].numpy()
        pooled = logits[x.pool_mask[0].astype(bool)]
        if len(pooled):
            out[r] = np.log1p(np.maximum(pooled.max(0), 0))
    out[:, list(tok.special_ids)] = 0
    return out


def make_lora_adapter(base_dir, out_dir, seed=1, scale=0.5):
    """A peft LoRA adapter (the paper's r=16, alpha 8) on ``base_dir``'s attention and MLP projections
    with random B matrices (peft starts B at zero, which would merge to the base itself)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    lm = AutoModelForCausalLM.from_pretrained(base_dir)
    config = LoraConfig(
        r=16, lora_alpha=8, lora_dropout=0.1, target_modules=["q_proj", "v_proj", "down_proj"]
    )
    model = get_peft_model(lm, config)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, scale)
    model.save_pretrained(out_dir)
    return model.eval()


def test_lora_adapter_merges_into_an_onnx_graph_equal_to_the_peft_model(tiny_mistral_dir, tmp_path):
    """``lsr export ADAPTER_DIR`` merges the adapter into its base: ONNX == the unmerged PEFT model in
    torch (batched and padded vs each text alone), and != the base model."""

    from lsr.export import ADAPTER_CONFIG, export
    from lsr.tokenize import ECHO_TEMPLATE, DecoderLayout

    peft_model = make_lora_adapter(tiny_mistral_dir, tmp_path / "adapter")
    assert (tmp_path / "adapter" / ADAPTER_CONFIG).is_file() and not (
        tmp_path / "adapter" / "config.json"
    ).exists()
    m = export(tmp_path / "adapter", tmp_path / "dec", "decoder", echo=True)
    assert m.source["adapter_merged_into"] == str(tiny_mistral_dir.resolve())
    got = load_encoder(tmp_path / "dec", max_length=40).encode(DECODER_TEXTS, batch_size=3).to_dense()

    tok = Tokenizer(tiny_mistral_dir / "tokenizer.json")
    layout = DecoderLayout.from_template(tok, peft_model.config.bos_token_id, True, ECHO_TEMPLATE)
    np.testing.assert_allclose(got, lm_reference(peft_model, tok, layout, DECODER_TEXTS, 40), atol=1e-4)
    base = decoder_reference(tiny_mistral_dir, DECODER_TEXTS, True, template=ECHO_TEMPLATE)
    assert np.abs(base - got).max() > 0.1  # the adapter changed the model


def test_lora_adapter_base_errors_name_the_field(tiny_mistral_dir, tmp_path):
    from lsr.export import ADAPTER_CONFIG, export

    make_lora_adapter(tiny_mistral_dir, tmp_path / "adapter")
    cfg = tmp_path / "adapter" / ADAPTER_CONFIG
    data = json.loads(cfg.read_text())
    cfg.write_text(json.dumps({**data, "base_model_name_or_path": "org/remote-model"}))
    with pytest.raises(FileNotFoundError, match=r"base_model_name_or_path 'org/remote-model' is not a local"):
        export(tmp_path / "adapter", tmp_path / "a", "decoder")
    m = export(tmp_path / "adapter", tmp_path / "b", "decoder", base=tiny_mistral_dir)  # --base overrides
    assert m.source["adapter_merged_into"] == str(tiny_mistral_dir.resolve())
    with pytest.raises(FileNotFoundError, match="--base"):
        export(tmp_path / "adapter", tmp_path / "c", "decoder", base=tmp_path / "nowhere")
    (tmp_path / "adapter" / "adapter_model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match=r"lacks adapter_model\.safetensors"):
        export(tmp_path / "adapter", tmp_path / "d", "decoder", base=tiny_mistral_dir)
    assert not any((tmp_path / n).exists() for n in "acd")


@pytest.mark.parametrize("dtype", ["fp32", "fp16", "int8"])
def test_weights_past_the_limit_go_to_one_external_data_file(tiny_mistral_dir, tmp_path, monkeypatch, dtype):
    """With the limit lowered to 1 KB the tiny decoder takes the large-model path (bench/export_large.py
    runs a real 2.33 GB one): one data file beside the graph, named in the manifest, same weights."""
    import lsr.export

    inline = tmp_path / "inline"
    export(tiny_mistral_dir, inline, "decoder", dtype=dtype)
    assert Manifest.load(inline).external_data is None
    monkeypatch.setattr(lsr.export, "EXTERNAL_DATA_BYTES", 1024)
    out = tmp_path / "ext"
    m = export(tiny_mistral_dir, out, "decoder", dtype=dtype)
    assert m.external_data == "model.onnx.data"
    names = sorted(f.name for f in out.iterdir())
    assert names == ["manifest.json", "model.onnx", "model.onnx.data", "tokenizer.json"]
    # The weights moved out (tensors under 1 KB stay inline, onnx's default threshold).
    assert (out / "model.onnx").stat().st_size < (inline / "model.onnx").stat().st_size
    assert (out / "model.onnx.data").stat().st_size > 10_000
    a = load_encoder(inline).encode(DECODER_TEXTS).to_dense()
    b = load_encoder(out).encode(DECODER_TEXTS).to_dense()
    assert (a > 0).sum() > 20
    np.testing.assert_array_equal(a, b)
    (out / "model.onnx.data").unlink()
    with pytest.raises(FileNotFoundError, match=r"lacks model\.onnx\.data"):
        load_encoder(out)


def test_a_decoder_with_an_idf_table_is_inference_free(tiny_mistral_dir, tiny_bert_dir, tmp_path):
    """Documents through the decoder graph, queries their distinct tokens weighted by the table."""
    from lsr.idf import compute_idf
    from lsr.runtime import IdfQueryEncoder

    tok = Tokenizer(tiny_mistral_dir / "tokenizer.json")
    idf = compute_idf(["the cell of a mouse", "blood", "a tower in paris"], tok)
    m = export(tiny_mistral_dir, tmp_path / "dec", "decoder", echo=True, idf=idf)
    assert m.query == "idf" and (tmp_path / "dec" / "idf.json").is_file()
    q = load_encoder(tmp_path / "dec", side="query")
    assert isinstance(q, IdfQueryEncoder)
    vec = q.encode(["blood blood cell"])
    got = dict(zip((q.vocab[t] for t in vec.term_ids), vec.weights.tolist(), strict=True))
    assert got == pytest.approx({"blood": idf["blood"], "cell": idf["cell"]})  # distinct tokens, IDF once
    docs = load_encoder(tmp_path / "dec").encode(["the cell of a mouse"])
    assert docs.vocab == vec.vocab and docs.row_nnz()[0] > 0
    assert export(tiny_mistral_dir, tmp_path / "plain", "decoder").query == "model"
    with pytest.raises(ValueError, match="IDF query table is for inference-free and decoder"):
        export(tiny_bert_dir, tmp_path / "s", "splade", idf=idf)


def test_decoder_and_echo_option_checks(tiny_mistral_dir, tiny_bert_dir, tmp_path):
    with pytest.raises(ValueError, match="vocab contract only"):
        export(tiny_mistral_dir, tmp_path / "a", "decoder", "anserini")
    with pytest.raises(ValueError, match="echo applies to decoder"):
        export(tiny_bert_dir, tmp_path / "b", "splade", echo=True)
    with pytest.raises(ValueError, match="needs echo"):
        export(tiny_mistral_dir, tmp_path / "c", "decoder", echo_template="{text} {text}")
    with pytest.raises(ValueError, match="twice"):
        export(tiny_mistral_dir, tmp_path / "d", "decoder", echo=True, echo_template="{text} then")
    assert not any((tmp_path / n).exists() for n in "abcd")


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
