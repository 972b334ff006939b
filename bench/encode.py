"""Document-encoding throughput: PyTorch vs ONNX Runtime fp32 vs ONNX Runtime int8.

What it measures, in one process on the same first ``--docs`` SciFact passages, with a real model
(:func:`lsr.models.fetch`): ``--model splade-tiny`` (the SPLADE BERT-tiny, default) or
``--model smollm2-135m`` (the decoder kind: SmolLM2-135M with echo, ``--max-length`` counting the
whole echoed sequence):

- ``torch``: the eval torch module that the ONNX graph is exported from (:func:`lsr.export.build_module`);
- ``onnx-fp32`` and ``onnx-int8``: that module exported with :func:`lsr.export.export` and run through
  :func:`lsr.runtime.load_encoder` on onnxruntime;
- optionally (``--cuda-fp16``) the torch module in fp16 on a CUDA GPU.

Every engine is timed end to end from texts to a :class:`lsr.sparse.SparseBatch`: tokenization,
the same longest-first length bucketing (:func:`lsr.runtime.length_batches`), padding, the model,
and the dense-to-sparse conversion. A warm-up on a few texts runs first and is reported apart.
With ``--repeat N`` the engines run interleaved N times and the best run counts.

Reported per engine: docs/s, seconds, warm-up seconds, mean non-zero terms per document. Then the
speed ratios ``onnx-fp32 / torch`` and ``onnx-int8 / onnx-fp32``, and quality: the maximum absolute
difference between ONNX fp32 and torch weights over all documents, and the top-20 term overlap of
int8 against fp32. Targets (fp32 >= 1.5x torch; int8 >= 1.5x fp32 with mean overlap >= 0.9) are
reported as PASS/MISS and never asserted. One JSON line with every figure, the machine and the
library versions is appended to ``--out``.

Run from the repository root::

    .venv/bin/python -m bench.encode                       # 500 docs, library thread defaults
    .venv/bin/python -m bench.encode --docs 100 --threads 2 --repeat 3
    .venv/bin/python -m bench.encode --model smollm2-135m --docs 48 --max-length 256
"""

from __future__ import annotations

import argparse
import copy
import logging
import platform
import sys
import time
from collections.abc import Callable, Sequence
from itertools import islice
from pathlib import Path

import numpy as np

from bench._context import (
    SCIFACT,
    add_output_arguments,
    append_jsonl,
    positive_int,
    print_fixed_table,
    ratio_text,
    record_context,
    setup_logging,
    utc_stamp,
    work_dir,
)
from lsr.sparse import SparseBatch

log = logging.getLogger("bench.encode")

DEFAULT_CORPUS = SCIFACT / "corpus.jsonl"
WARMUP_DOCS = 16
TOP_K = 20
TARGET_FP32_SPEEDUP = 1.5
TARGET_INT8_SPEEDUP = 1.5
TARGET_INT8_OVERLAP = 0.9

Encode = Callable[[Sequence[str]], SparseBatch]


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m bench.encode",
        description="Encoding throughput of the SPLADE document encoder: torch vs ONNX fp32 vs ONNX int8.",
    )
    p.add_argument(
        "--corpus", type=Path, default=DEFAULT_CORPUS, help="BEIR corpus.jsonl (default: %(default)s)"
    )
    p.add_argument(
        "--model",
        default="splade-tiny",
        choices=["splade-tiny", "smollm2-135m"],
        help="splade-tiny (SPLADE kind) or smollm2-135m (decoder kind, echo); default: %(default)s",
    )
    p.add_argument("--docs", type=positive_int, default=500, help="first N passages (default: %(default)s)")
    p.add_argument(
        "--max-length", type=positive_int, default=256, help="tokens per passage (default: %(default)s)"
    )
    p.add_argument(
        "--batch-size", type=positive_int, default=8, help="passages per batch (default: %(default)s)"
    )
    p.add_argument(
        "--threads",
        type=positive_int,
        default=None,
        help="torch and onnxruntime intra-op threads (default: each library's own default)",
    )
    p.add_argument("--repeat", type=positive_int, default=1, help="timed runs per engine, best counts")
    p.add_argument(
        "--cuda-fp16", action="store_true", help="also time the torch module in fp16 on CUDA, if present"
    )
    add_output_arguments(p, "encode", "directory for the exported encoders")
    args = p.parse_args(argv)
    if args.max_length < 2:
        p.error("--max-length must be >= 2 (room for [CLS] and [SEP])")
    return args


# ------------------------------------------------------------------ engines
def torch_encoder(
    module, tok, vocab: tuple[str, ...], batch_size: int, device: str = "cpu", layout=None
) -> Encode:
    """An encode function for the torch module that mirrors ``OnnxSparseEncoder.encode`` step for step.

    The ONNX encoder's own post-processing (per-batch ``from_dense``, concat, reorder) is repeated
    here so that the timings differ only by the engine that runs the model. ``layout`` (a
    :class:`lsr.tokenize.DecoderLayout`): the module is a decoder's, fed as the runtime feeds it.
    """
    import torch

    from lsr.runtime import length_batches
    from lsr.tokenize import decoder_inputs

    def model_inputs(encodings, rows):
        if layout is None:
            x = tok.pad([encodings[r] for r in rows])
            names = ("input_ids", "token_type_ids", "attention_mask")
        else:
            ids = [encodings[r].ids for r in rows]
            x = decoder_inputs(ids, layout, tok.pad_id, tok.max_length)
            names = ("input_ids", "attention_mask", "pool_mask")
        return [torch.from_numpy(getattr(x, n)).to(device) for n in names]

    def encode(texts: Sequence[str]) -> SparseBatch:
        encodings = tok.encode(list(texts), special_tokens=layout is None)
        batches = length_batches([len(e.ids) for e in encodings], batch_size)
        parts: list[SparseBatch] = []
        order = []
        with torch.inference_mode():
            for rows in batches:
                out = module(*model_inputs(encodings, rows))
                # .float().cpu() is a no-op on the CPU path and the device sync on the CUDA one.
                parts.append(SparseBatch.from_dense(out.float().cpu().numpy(), vocab))
                order.append(rows)
        if not parts:
            return SparseBatch.empty(0, vocab)
        return SparseBatch.concat(parts).take(np.argsort(np.concatenate(order), kind="stable"))

    return encode


def timed(fn: Callable[[], object]) -> tuple[float, object]:
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


# ------------------------------------------------------------------ quality
def max_abs_diff(a, b, chunk: int = 128) -> float:
    """Largest |a - b| over the dense matrices, built a chunk of rows at a time to bound memory."""
    if a.shape != b.shape:
        raise ValueError(f"cannot compare batches of shapes {a.shape} and {b.shape}")
    worst = 0.0
    for s in range(0, len(a), chunk):
        rows = np.arange(s, min(s + chunk, len(a)))
        diff = np.abs(a.take(rows).to_dense() - b.take(rows).to_dense())
        worst = max(worst, float(diff.max(initial=0.0)))
    return worst


def top_k_overlap(test, ref, k: int = TOP_K) -> np.ndarray:
    """Per row, |top_k(test) ∩ top_k(ref)| / min(k, nnz(ref row)).

    Top-k is the library's own ``top_k`` pruning (ties go to the lower term id). The denominator is
    the reference row's top-k size, so a row with fewer than k terms can still score 1; a row
    empty in both scores 1, and one empty only in the reference scores 0.
    """
    t, r = test.prune("top_k", k), ref.prune("top_k", k)
    out = np.empty(len(ref), np.float64)
    for i in range(len(ref)):
        t_ids, r_ids = t.row(i)[0], r.row(i)[0]
        if len(r_ids) == 0:
            out[i] = 1.0 if len(t_ids) == 0 else 0.0
        else:
            out[i] = len(np.intersect1d(t_ids, r_ids, assume_unique=True)) / len(r_ids)
    return out


# ------------------------------------------------------------------ context
def versions() -> dict:
    import onnxruntime
    import tokenizers
    import torch
    import transformers

    return {
        "python": platform.python_version(),
        "numpy": np.__version__,
        "torch": torch.__version__,
        "onnxruntime": onnxruntime.__version__,
        "transformers": transformers.__version__,
        "tokenizers": tokenizers.__version__,
    }


def verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


# ------------------------------------------------------------------ main
def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    # Ours at INFO; onnxruntime's quantizer logs a line per tensor to the root logger at INFO.
    setup_logging(args.verbose)
    if not args.corpus.is_file():
        log.error(
            "corpus not found: %s (expected SciFact's BEIR corpus.jsonl; pass --corpus PATH)", args.corpus
        )
        return 2

    from indexer.corpus import read_corpus

    texts = [r.text for r in islice(read_corpus(args.corpus), args.docs)]
    if len(texts) < args.docs:
        log.warning("%s holds only %d passages; benchmarking those", args.corpus, len(texts))
    if not texts:
        log.error("%s holds no passages", args.corpus)
        return 2

    with work_dir(args.work, "lsr-bench-") as work:
        return run(args, texts, work)


def run(args: argparse.Namespace, texts: list[str], work: Path) -> int:
    # Heavy imports here, so that --help and a missing corpus answer at once.
    import torch

    from lsr.export import build_module, export
    from lsr.models import fetch
    from lsr.runtime import load_encoder

    if args.threads:
        torch.set_num_threads(args.threads)
    model_dir = fetch(args.model)
    kind = "decoder" if args.model == "smollm2-135m" else "splade"
    log.info("model %s (%s)", model_dir, kind)
    export_s: dict[str, float] = {}
    encoders = {}
    for dtype in ("fp32", "int8"):
        name, out_dir = f"onnx-{dtype}", work / f"{args.model}-{dtype}"
        export_s[name], _ = timed(
            lambda d=dtype, o=out_dir: export(model_dir, o, kind, "vocab", d, echo=kind == "decoder")
        )
        log.info("exported %s in %.1f s", out_dir, export_s[name])
        try:
            encoders[name] = load_encoder(out_dir, "doc", threads=args.threads, max_length=args.max_length)
        except ValueError as e:  # --max-length beyond the model's position table
            log.error("%s", e)
            return 2

    module, tok = build_module(model_dir, kind, "vocab")
    tok.set_max_length(args.max_length)
    tok.extend_vocab(encoders["onnx-fp32"].manifest.vocab_size)
    vocab = encoders["onnx-fp32"].vocab
    if tuple(tok.vocab) != vocab:
        log.error("the torch tokenizer and the exported one disagree on the vocabulary")
        return 1
    layout = encoders["onnx-fp32"].layout

    engines: dict[str, Encode] = {"torch": torch_encoder(module, tok, vocab, args.batch_size, layout=layout)}
    for name, enc in encoders.items():
        engines[name] = lambda t, e=enc: e.encode(t, batch_size=args.batch_size)
    if args.cuda_fp16:
        if torch.cuda.is_available():
            # A copy: .half() and .cuda() work in place and the CPU module is still compared above.
            gpu = copy.deepcopy(module).half().cuda()
            engines["torch-cuda-fp16"] = torch_encoder(
                gpu, tok, vocab, args.batch_size, device="cuda", layout=layout
            )
        else:
            print("--cuda-fp16: no CUDA GPU present (torch.cuda.is_available() is False); skipped")

    warm = texts[:WARMUP_DOCS]
    warmup_s = {}
    for name, fn in engines.items():
        warmup_s[name], _ = timed(lambda f=fn: f(warm))
        log.info("warm-up %s: %.3f s on %d texts", name, warmup_s[name], len(warm))

    # Interleaved, so that drift in the machine's speed (turbo, a neighbour) hits every engine alike.
    runs: dict[str, list[float]] = {name: [] for name in engines}
    results = {}
    for rep in range(args.repeat):
        for name, fn in engines.items():
            seconds, results[name] = timed(lambda f=fn: f(texts))
            runs[name].append(seconds)
            log.info("run %d/%d %s: %.3f s", rep + 1, args.repeat, name, seconds)

    n = len(texts)
    figures = {}
    for name in engines:
        best = min(runs[name])
        figures[name] = {
            "docs_per_s": n / best,
            "seconds": best,
            "runs_s": runs[name],
            "warmup_s": warmup_s[name],
            "mean_nnz": float(results[name].row_nnz().mean()),
            "export_s": export_s.get(name),
        }

    fp32_vs_torch = figures["onnx-fp32"]["docs_per_s"] / figures["torch"]["docs_per_s"]
    int8_vs_fp32 = figures["onnx-int8"]["docs_per_s"] / figures["onnx-fp32"]["docs_per_s"]
    fp32_diff = max_abs_diff(results["onnx-fp32"], results["torch"])
    overlap = top_k_overlap(results["onnx-int8"], results["onnx-fp32"])
    quality = {
        "fp32_vs_torch_max_abs_diff": fp32_diff,
        "int8_vs_fp32_top20_overlap_mean": float(overlap.mean()),
        "int8_vs_fp32_top20_overlap_min": float(overlap.min()),
    }
    gpu_diff = None
    if "torch-cuda-fp16" in results:
        gpu_diff = max_abs_diff(results["torch-cuda-fp16"], results["torch"])
        quality["cuda_fp16_vs_torch_max_abs_diff"] = gpu_diff
    # bool(): numpy comparisons give numpy bools, which json cannot write.
    targets = {
        "fp32_speedup": bool(fp32_vs_torch >= TARGET_FP32_SPEEDUP),
        "int8_speedup_and_overlap": bool(
            int8_vs_fp32 >= TARGET_INT8_SPEEDUP and overlap.mean() >= TARGET_INT8_OVERLAP
        ),
    }

    providers = {name: enc.session.get_providers() for name, enc in encoders.items()}
    threads = {"torch": torch.get_num_threads(), "onnxruntime": args.threads or "default"}
    gpu_name = torch.cuda.get_device_name(0) if "torch-cuda-fp16" in engines else None

    print(
        f"encode benchmark: {args.model} ({kind}), {n} passages of {args.corpus.name}, "
        f"max_length {args.max_length}, "
        f"batch_size {args.batch_size}, best of {args.repeat}, threads torch={threads['torch']} "
        f"onnxruntime={threads['onnxruntime']}"
    )
    specs = {"docs_per_s": ".1f", "seconds": ".3f", "warmup_s": ".3f", "mean_nnz": ".1f"}
    print_fixed_table(
        "engine<16 | docs/s>10 | seconds>10 | warm-up s>11 | mean nnz>10",
        ([name, *(format(f[k], spec) for k, spec in specs.items())] for name, f in figures.items()),
        rule=False,
    )
    print(ratio_text("onnx-fp32", "torch", fp32_vs_torch))
    print(ratio_text("onnx-int8", "onnx-fp32", int8_vs_fp32))
    print(f"quality: onnx-fp32 vs torch max abs diff = {fp32_diff:.3g}")
    print(
        f"quality: onnx-int8 vs onnx-fp32 top-{TOP_K} overlap mean = {overlap.mean():.3f}, "
        f"min = {overlap.min():.3f}"
    )
    if gpu_diff is not None:
        print(f"quality: torch-cuda-fp16 vs torch max abs diff = {gpu_diff:.3g}")
    print(
        f"target onnx-fp32 >= {TARGET_FP32_SPEEDUP:.1f}x torch: {verdict(targets['fp32_speedup'])} "
        f"({fp32_vs_torch:.2f}x)"
    )
    print(
        f"target onnx-int8 >= {TARGET_INT8_SPEEDUP:.1f}x onnx-fp32 with mean top-{TOP_K} overlap >= "
        f"{TARGET_INT8_OVERLAP:.2f}: {verdict(targets['int8_speedup_and_overlap'])} "
        f"({int8_vs_fp32:.2f}x, overlap {overlap.mean():.3f})"
    )
    print(f"onnxruntime providers: {', '.join(f'{k}={v[0]}' for k, v in providers.items())}")

    record = {
        "bench": "encode",
        "time": utc_stamp(),
        "corpus": str(args.corpus),
        "docs": n,
        "max_length": args.max_length,
        "batch_size": args.batch_size,
        "repeat": args.repeat,
        "warmup_docs": len(warm),
        "model": args.model,
        "kind": kind,
        "echo": kind == "decoder",
        "model_dir": str(model_dir),
        "threads": threads,
        **record_context(versions()),
        "onnxruntime_providers": providers,
        "gpu": gpu_name,
        "engines": figures,
        "ratios": {"onnx-fp32/torch": fp32_vs_torch, "onnx-int8/onnx-fp32": int8_vs_fp32},
        "quality": quality,
        "targets": {
            "onnx-fp32/torch": TARGET_FP32_SPEEDUP,
            "onnx-int8/onnx-fp32": TARGET_INT8_SPEEDUP,
            "int8_top20_overlap_mean": TARGET_INT8_OVERLAP,
            "met": targets,
        },
    }
    append_jsonl(args.out, [record])
    print(f"appended to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
