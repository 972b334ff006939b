"""torch -> ONNX export with the pooling inside the graph. Needs the ``export`` extra.

Pooling, per kind:

- ``splade`` / ``inference-free`` (document side): ``w = log(1 + relu(max_t logits[t]))`` over the
  tokens that are neither padding nor special tokens, computed max-then-activate (the same
  output: ``log1p . relu`` is monotone). Weights of special-token vocabulary entries are zeroed.
- ``decoder`` (Mistral-SPLADE style, a causal LM): the same max pooling over the positions the
  ``pool_mask`` input marks; with echo the runtime feeds ``[BOS] prefix text cue text`` (the
  manifest's ``echo_template``) and marks only the second copy, never a special token (see
  :class:`lsr.tokenize.DecoderLayout`). Positions count from the attention mask, so left and right
  padding give the same weights. Vocab contract only.
- ``dense``: mean over non-padding tokens, then L2 normalisation.

Output contracts (names in :data:`lsr.manifest.OUTPUTS`):

- ``vocab``: ``weights`` ``[batch, vocab]`` float32.
- ``anserini``: ``output_idx`` int64 ``[nnz]`` (vocabulary ids), ``output_weights`` float32
  ``[nnz]``, plus ``output_batch`` int64 ``[nnz]`` (the row of each entry; Anserini's Java encoders
  read the first two by name and run one query at a time, so they ignore it). Entries come
  row-major, ids ascending within a row.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
import warnings
from pathlib import Path

import torch

from lsr.manifest import IDF, OUTPUTS, TOKENIZER, Manifest
from lsr.tokenize import ECHO_TEMPLATE, DecoderLayout, Tokenizer, decoder_inputs, echo_parts

log = logging.getLogger(__name__)

OPSET = 17
INPUTS = ["input_ids", "token_type_ids", "attention_mask"]
DECODER_INPUTS = ["input_ids", "attention_mask", "pool_mask"]


def _max_pool(logits, pooled, vocab_keep):
    # A position outside the pool contributes 0 to the max: exact, since relu follows.
    logits = logits * pooled.unsqueeze(-1).to(logits.dtype)
    return torch.log1p(torch.relu(logits.max(dim=1).values)) * vocab_keep


def _vocab_keep(special_ids: list[int], vocab_size: int) -> torch.Tensor:
    keep = torch.ones(vocab_size)
    keep[[i for i in special_ids if i < vocab_size]] = 0.0
    return keep


class SpladePooling(torch.nn.Module):
    """An MLM model plus SPLADE max pooling; returns ``[batch, vocab]`` or the Anserini triple."""

    def __init__(self, mlm: torch.nn.Module, special_ids: list[int], vocab_size: int, contract: str):
        super().__init__()
        self.mlm = mlm
        self.contract = contract
        self.register_buffer("special", torch.tensor(special_ids or [-1], dtype=torch.long))
        self.register_buffer("vocab_keep", _vocab_keep(special_ids, vocab_size))

    def forward(self, input_ids, token_type_ids, attention_mask):
        logits = self.mlm(
            input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
        ).logits
        is_special = (input_ids.unsqueeze(-1) == self.special).any(-1)
        weights = _max_pool(logits, attention_mask.bool() & ~is_special, self.vocab_keep)
        if self.contract == "vocab":
            return weights
        nz = torch.nonzero(weights)
        return nz[:, 1], weights[nz[:, 0], nz[:, 1]], nz[:, 0]


class DecoderPooling(torch.nn.Module):
    """A causal LM plus max pooling over the positions ``pool_mask`` marks; ``[batch, vocab]``."""

    def __init__(self, lm: torch.nn.Module, special_ids: list[int], vocab_size: int):
        super().__init__()
        self.lm = lm
        self.register_buffer("vocab_keep", _vocab_keep(special_ids, vocab_size))

    def forward(self, input_ids, attention_mask, pool_mask):
        # From the mask, not arange: a left-padded text starts at position 0 as a right-padded one does.
        positions = (attention_mask.cumsum(dim=1) - 1).clamp(min=0)
        logits = self.lm(input_ids=input_ids, attention_mask=attention_mask, position_ids=positions).logits
        return _max_pool(logits, pool_mask.bool(), self.vocab_keep)


class MeanPooling(torch.nn.Module):
    """A transformer encoder plus mean pooling and L2 normalisation."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, input_ids, token_type_ids, attention_mask):
        hidden = self.model(
            input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
        ).last_hidden_state
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        mean = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
        return torch.nn.functional.normalize(mean, p=2.0, dim=-1)


# ------------------------------------------------------------------ LoRA adapters (peft)
ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = ("adapter_model.safetensors", "adapter_model.bin")


def is_adapter_dir(path: str | Path) -> bool:
    """Whether ``path`` is a peft adapter directory (``adapter_config.json``), not a whole model."""
    return (Path(path) / ADAPTER_CONFIG).is_file()


def adapter_base(adapter_dir: Path, base: str | Path | None = None) -> Path:
    """The base model directory of a peft adapter: ``base``, else the adapter's
    ``base_model_name_or_path`` (a local directory: lsr reads no model hub)."""
    path = adapter_dir / ADAPTER_CONFIG
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON ({e})") from None
    if not any((adapter_dir / n).is_file() for n in ADAPTER_WEIGHTS):
        raise FileNotFoundError(f"adapter directory {adapter_dir} lacks {ADAPTER_WEIGHTS[0]}")
    named = base if base is not None else config.get("base_model_name_or_path")
    if not named:
        raise ValueError(f"{path}: no base_model_name_or_path; name the base model directory (--base DIR)")
    base_dir = Path(named)
    if not base_dir.is_dir():
        field = "--base" if base is not None else f"{path}: base_model_name_or_path"
        raise FileNotFoundError(f"{field} {str(named)!r} is not a local model directory (pass --base DIR)")
    check_model_dir(base_dir)
    return base_dir


def load_model(auto_class, model_dir: Path, base: str | Path | None = None):
    """``auto_class.from_pretrained(model_dir)``; a peft adapter directory is loaded onto its base and
    merged (``merge_and_unload``), so the graph is the adapted model with no adapter ops left."""
    if not is_adapter_dir(model_dir):
        return auto_class.from_pretrained(model_dir)
    from peft import PeftModel

    model = auto_class.from_pretrained(adapter_base(model_dir, base))
    return PeftModel.from_pretrained(model, model_dir).merge_and_unload()


def model_sources(model_dir: Path, base: str | Path | None) -> tuple[Path, Path]:
    """``(config dir, tokenizer dir)``: an adapter takes its base's config, and its own tokenizer
    when it ships one."""
    if not is_adapter_dir(model_dir):
        check_model_dir(model_dir)
        return model_dir, model_dir
    base_dir = adapter_base(model_dir, base)
    return base_dir, model_dir if (model_dir / TOKENIZER).is_file() else base_dir


def check_model_dir(model_dir: Path) -> None:
    """Fail early, naming the files a Hugging Face model directory lacks."""
    if not model_dir.is_dir():
        raise FileNotFoundError(f"model directory not found: {model_dir}")
    missing = [n for n in ("config.json", TOKENIZER) if not (model_dir / n).is_file()]
    if not any((model_dir / n).is_file() for n in ("model.safetensors", "pytorch_model.bin")):
        missing.append("model.safetensors")
    if missing:
        raise FileNotFoundError(f"model directory {model_dir} lacks {', '.join(missing)}")


def build_module(
    model_dir: str | Path, kind: str, contract: str = "vocab", base: str | Path | None = None
) -> tuple[torch.nn.Module, Tokenizer]:
    """The eval-mode torch module that the exported graph computes, and the model's tokenizer.

    ``model_dir`` may be a peft adapter directory: it is merged into its base (``base``, else the
    adapter's ``base_model_name_or_path``), see :func:`load_model`.
    """
    import transformers

    model_dir = Path(model_dir)
    _, tok_dir = model_sources(model_dir, base)
    tokenizer = Tokenizer(tok_dir / TOKENIZER)
    if kind == "dense":
        module: torch.nn.Module = MeanPooling(load_model(transformers.AutoModel, model_dir, base))
    elif kind in ("splade", "inference-free"):
        mlm = load_model(transformers.AutoModelForMaskedLM, model_dir, base)
        module = SpladePooling(mlm, list(tokenizer.special_ids), mlm.config.vocab_size, contract)
    elif kind == "decoder":
        lm = load_model(transformers.AutoModelForCausalLM, model_dir, base)
        module = DecoderPooling(lm, list(tokenizer.special_ids), lm.config.vocab_size)
    else:
        raise ValueError(f"kind must be one of splade, inference-free, decoder, dense; got {kind!r}")
    return module.eval(), tokenizer


def export(
    model_dir: str | Path,
    out_dir: str | Path,
    kind: str,
    contract: str = "vocab",
    dtype: str = "fp32",
    idf: dict[str, float] | None = None,
    echo: bool = False,
    echo_template: str | None = None,
    base: str | Path | None = None,
) -> Manifest:
    """Export ``model_dir`` to the ENCODER_DIR ``out_dir`` (replaced atomically if it exists).

    ``model_dir`` is a Hugging Face model directory or a peft (LoRA) adapter directory, merged into
    its base model (``base``, else the adapter's ``base_model_name_or_path``) before export.

    ``idf`` is the inference-free query table; when omitted the model directory's own
    ``idf.json`` is used, and its absence is an error for ``kind="inference-free"``. A decoder
    given ``idf`` is inference-free too: its documents go through the graph, its queries are their
    tokens weighted by the table (manifest ``query: idf``).
    ``echo`` (decoders only) repeats the text and pools the second copy, laid out by
    ``echo_template`` (default :data:`lsr.tokenize.ECHO_TEMPLATE`).
    """
    from lsr.manifest import CONTRACTS, DTYPES, KINDS

    if kind not in KINDS:
        raise ValueError(f"kind must be one of {', '.join(KINDS)}, got {kind!r}")
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    if echo and kind != "decoder":
        raise ValueError("echo applies to decoder-only models (--kind decoder)")
    if echo_template is not None and not echo:
        raise ValueError("an echo template needs echo (--echo)")
    if echo:
        echo_template = ECHO_TEMPLATE if echo_template is None else echo_template
        echo_parts(echo_template)  # fail before the export, not at the first encode
    if kind == "dense":
        contract = "dense"
    elif kind == "decoder" and contract != "vocab":
        raise ValueError("decoder encoders export the vocab contract only (Anserini's needs token_type_ids)")
    elif contract not in CONTRACTS:
        raise ValueError(f"contract must be one of {', '.join(CONTRACTS)}, got {contract!r}")
    model_dir, out_dir = Path(model_dir), Path(out_dir)
    config_dir, tok_dir = model_sources(model_dir, base)
    if idf is not None and kind not in ("inference-free", "decoder"):
        raise ValueError(f"an IDF query table is for inference-free and decoder encoders, not {kind!r}")
    if kind == "inference-free" and idf is None:
        shipped = model_dir / IDF
        if not shipped.is_file():
            raise FileNotFoundError(
                f"inference-free export needs an IDF table: {shipped} does not exist; "
                "pass one (--idf FILE) or a corpus to compute it from (--idf-corpus CORPUS)"
            )
        idf = json.loads(shipped.read_text(encoding="utf-8"))

    module, tokenizer = build_module(model_dir, kind, contract, base)
    config = json.loads((config_dir / "config.json").read_text(encoding="utf-8"))
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        # The tracer writes a graph over 2 GiB as one file per tensor beside it: keep those apart.
        trace = work / "trace"
        trace.mkdir()
        fp32 = trace / "model.onnx"
        bos = config.get("bos_token_id") if kind == "decoder" else None
        _export_graph(module, tokenizer, contract, fp32, kind, bos, echo, echo_template)
        del module  # a large model's weights are in the graph now
        graph = work / "model.onnx"
        external_data = _write_graph(trace, graph, dtype)
        shutil.rmtree(trace)
        _write_tokenizer(tok_dir / TOKENIZER, work / TOKENIZER)
        if idf is not None:
            (work / IDF).write_text(json.dumps(idf, ensure_ascii=False), encoding="utf-8")
        manifest = Manifest(
            kind=kind,  # type: ignore[arg-type]
            contract=contract,  # type: ignore[arg-type]
            dtype=dtype,  # type: ignore[arg-type]
            onnx=graph.name,
            external_data=external_data,
            inputs=list(DECODER_INPUTS if kind == "decoder" else INPUTS),
            outputs=list(OUTPUTS[contract]),
            pooling="mean+l2" if kind == "dense" else "max-log1p-relu",
            echo=echo,
            bos_token_id=bos,
            echo_template=echo_template,
            max_length=_max_length(config_dir, config),
            vocab_size=int(config.get("vocab_size", len(tokenizer.vocab))),
            dim=int(config["hidden_size"]) if kind == "dense" else None,
            opset=OPSET,
            special_token_ids=list(tokenizer.special_ids),
            query="idf" if idf is not None else "model",
            source={
                "model_dir": str(model_dir.resolve()),
                "architectures": config.get("architectures"),
                "torch": torch.__version__,
                **({"adapter_merged_into": str(config_dir.resolve())} if config_dir != model_dir else {}),
            },
        )
        manifest.save(work)
        _replace_dir(work, out_dir)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    log.info("exported %s (%s, %s, %s) to %s", model_dir, kind, contract, dtype, out_dir)
    return manifest


def _export_graph(
    module: torch.nn.Module,
    tokenizer: Tokenizer,
    contract: str,
    path: Path,
    kind: str,
    bos: int | None = None,
    echo: bool = False,
    echo_template: str | None = None,
) -> None:
    # Two rows of different lengths so that no shape is traced as a constant.
    texts = ["a sample text to trace the graph with", "short"]
    if kind == "decoder":
        names = DECODER_INPUTS
        ids = [e.ids for e in tokenizer.encode(texts, special_tokens=False)]
        layout = DecoderLayout.from_template(tokenizer, bos, echo, echo_template)
        inputs = decoder_inputs(ids, layout, tokenizer.pad_id, tokenizer.max_length)
    else:
        names = INPUTS
        inputs = tokenizer.pad(tokenizer.encode(texts))
    args = tuple(torch.from_numpy(getattr(inputs, n)) for n in names)
    axes = {n: {0: "batch", 1: "sequence"} for n in names}
    if contract == "vocab":
        axes["weights"] = {0: "batch"}
    elif contract == "dense":
        axes["embeddings"] = {0: "batch"}
    else:
        axes.update({n: {0: "nnz"} for n in OUTPUTS["anserini"]})
    with torch.no_grad(), warnings.catch_warnings():
        # The tracer warns about shape checks inside transformers that are constant for our inputs
        # (parity tests over varied batch and sequence sizes are the proof).
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", message="Exporting aten::index")
        torch.onnx.export(
            module,
            args,
            str(path),
            input_names=names,
            output_names=list(OUTPUTS[contract]),
            dynamic_axes=axes,
            opset_version=OPSET,
            dynamo=False,
            do_constant_folding=True,
        )


# Weights over this many bytes go to one external data file: a protobuf holds at most 2 GiB.
EXTERNAL_DATA_BYTES = 1 << 30
# Bytes of a weight in each dtype, against fp32's 4.
DTYPE_BYTES = {"fp32": 4, "fp16": 2, "int8": 1}


def _write_graph(trace: Path, graph: Path, dtype: str) -> str | None:
    """The ``dtype`` graph at ``graph`` from the traced fp32 one in ``trace``; returns the name of its
    external data file (``model.onnx.data``, beside it) when its weights exceed EXTERNAL_DATA_BYTES."""
    fp32 = trace / "model.onnx"
    files = list(trace.iterdir())
    weight_bytes = sum(f.stat().st_size for f in files)
    large = len(files) > 1  # the tracer went past 2 GiB and wrote its tensors beside the graph
    external = weight_bytes * DTYPE_BYTES[dtype] / 4 > EXTERNAL_DATA_BYTES
    data = f"{graph.name}.data" if external else None
    if dtype == "fp32" and not large and not external:
        fp32.rename(graph)
        return None
    if dtype == "int8":
        from onnxruntime.quantization import QuantType, quantize_dynamic

        # onnxruntime names the data file as `data` does.
        quantize_dynamic(
            str(fp32), str(graph), weight_type=QuantType.QInt8, use_external_data_format=external
        )
        return data
    import onnx

    model = onnx.load(str(fp32))
    if dtype == "fp16":  # for GPU; keeps fp32 inputs and outputs
        from onnxruntime.transformers.float16 import convert_float_to_float16

        # onnx's in-memory shape inference refuses a model over 2 GiB; the conversion does without it.
        model = convert_float_to_float16(model, keep_io_types=True, disable_shape_infer=large)
    if external:
        onnx.save_model(
            model, str(graph), save_as_external_data=True, all_tensors_to_one_file=True, location=data
        )
    else:
        onnx.save_model(model, str(graph))
    return data


def _max_length(model_dir: Path, config: dict) -> int:
    # sentence-transformers models were trained to a shorter length than their position table
    # (all-MiniLM-L6-v2: 256 of 512) and truncate there; keep that as the encoder's limit.
    st = model_dir / "sentence_bert_config.json"
    if st.is_file():
        length = json.loads(st.read_text(encoding="utf-8")).get("max_seq_length")
        if length:
            return int(length)
    return int(config.get("max_position_embeddings", 512))


def _write_tokenizer(src: Path, dst: Path) -> None:
    # Some model directories (all-MiniLM) fix padding to 128 tokens; the runtime pads per batch.
    data = json.loads(src.read_text(encoding="utf-8"))
    data["padding"] = None
    dst.write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")


def _replace_dir(new: Path, target: Path) -> None:
    # indexer.atomic.swap_in's rename-aside fallback, kept here: lsr sits above indexer, never imports it.
    if target.exists():
        old = target.with_name(f".{target.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        target.rename(old)
        new.rename(target)
        shutil.rmtree(old, ignore_errors=True)
    else:
        new.rename(target)
