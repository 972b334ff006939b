"""Exporting a decoder over ONNX's 2 GiB protobuf limit: time, peak RSS, file sizes and parity.

A random Llama (SmolLM2's 49,152-piece vocabulary and tokenizer, untied output head, ``--layers``
decoder layers of width 1024: 32 layers is 583M parameters, 2.33 GB in fp32) is saved as a Hugging
Face directory, then ``lsr export --kind decoder --echo`` writes it at each ``--dtypes`` in a child
process whose wall time and peak RSS (``wait4``'s ``ru_maxrss``) are measured. Each ENCODER_DIR is
loaded by onnxruntime (CPU) and compared with the torch module the graph was exported from on texts
of varied lengths: max abs difference of the weights (fp32 must stay <= 1e-4; fp16 is a GPU dtype,
its CPU difference is reported, not bounded). One JSON line per dtype goes to ``--out``.

    .venv/bin/python -m bench.export_large                       # fp32 and fp16, ~10 min, ~9 GB RAM
"""

from __future__ import annotations

import argparse
import logging
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from bench._context import (
    add_output_arguments,
    append_jsonl,
    git_state,
    machine_info,
    setup_logging,
    utc_stamp,
)

log = logging.getLogger("bench.export_large")

TEXTS = [
    "The Eiffel Tower is a wrought-iron lattice tower in Paris.",
    "short",
    "Cells divide by mitosis; the spindle pulls the chromosomes apart. " * 6,
]
MAX_LENGTH = 128
PROTOBUF_LIMIT = 2**31


def build_model(out: Path, layers: int) -> dict:
    """A random Llama over SmolLM2's tokenizer saved at ``out``; returns its size."""
    import shutil

    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from lsr.models import SMOLLM2, fetch

    smollm2 = fetch(SMOLLM2)
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=49_152,
        hidden_size=1024,
        intermediate_size=4096,
        num_hidden_layers=layers,
        num_attention_heads=16,
        num_key_value_heads=4,
        max_position_embeddings=2048,
        tie_word_embeddings=False,
        bos_token_id=1,
        eos_token_id=2,
    )
    t0 = time.perf_counter()
    model = LlamaForCausalLM(config).eval()
    params = sum(p.numel() for p in model.parameters())
    model.save_pretrained(out)
    shutil.copy(smollm2 / "tokenizer.json", out / "tokenizer.json")
    return {"parameters": params, "fp32_bytes": 4 * params, "build_seconds": time.perf_counter() - t0}


def timed_export(model_dir: Path, out: Path, dtype: str) -> dict:
    """``lsr export`` in a child process: wall seconds and the child's peak RSS."""
    cmd = [sys.executable, "-m", "plugin.cli", "--log-level", "WARNING", "export", str(model_dir), str(out)]
    cmd += ["--kind", "decoder", "--echo", "--dtype", dtype]
    t0 = time.perf_counter()
    child = subprocess.Popen(cmd)
    _, status, usage = os.wait4(child.pid, 0)
    seconds = time.perf_counter() - t0
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed with status {status}")
    files = {f.name: f.stat().st_size for f in sorted(out.iterdir())}
    return {"export_seconds": seconds, "export_peak_rss_bytes": usage.ru_maxrss * 1024, "files": files}


def torch_reference(model_dir: Path) -> np.ndarray:
    """The weights of the torch module the graph is exported from, each text alone."""
    import torch

    from lsr.export import build_module
    from lsr.tokenize import ECHO_TEMPLATE, DecoderLayout, decoder_inputs

    module, tok = build_module(model_dir, "decoder")
    layout = DecoderLayout.from_template(tok, 1, True, ECHO_TEMPLATE)
    rows = []
    for text in TEXTS:
        x = decoder_inputs([tok.token_ids(text)], layout, tok.pad_id, MAX_LENGTH)
        with torch.no_grad():
            args = [torch.from_numpy(getattr(x, n)) for n in ("input_ids", "attention_mask", "pool_mask")]
            rows.append(module(*args).numpy()[0])
    return np.stack(rows)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--layers", type=int, default=32, help="decoder layers (32: 2.33 GB of fp32 weights)")
    p.add_argument("--dtypes", nargs="+", default=["fp32", "fp16"], choices=["fp32", "fp16", "int8"])
    add_output_arguments(p, "export", work_help="the model and its exports (GBs)")
    a = p.parse_args(argv)
    setup_logging(a.verbose)
    from lsr.runtime import load_encoder

    with tempfile.TemporaryDirectory(dir=a.work) as tmp:
        work = Path(tmp)
        model_dir = work / "model"
        size = build_model(model_dir, a.layers)
        log.info("random Llama: %d parameters, %.2f GB fp32", size["parameters"], size["fp32_bytes"] / 1e9)
        ref = torch_reference(model_dir)
        for dtype in a.dtypes:
            out = work / f"enc-{dtype}"
            row = timed_export(model_dir, out, dtype)
            t0 = time.perf_counter()
            enc = load_encoder(out, max_length=MAX_LENGTH)
            load_s = time.perf_counter() - t0
            got = enc.encode(TEXTS, batch_size=len(TEXTS)).to_dense()
            diff = float(np.abs(got - ref).max())
            del enc
            record = {
                "bench": "export-large",
                "time": utc_stamp(),
                "model": f"random Llama, {a.layers} layers x 1024, vocab 49152, untied head",
                **size,
                "over_protobuf_limit": size["fp32_bytes"] > PROTOBUF_LIMIT,
                "dtype": dtype,
                **row,
                "onnxruntime_load_seconds": load_s,
                "max_abs_diff_vs_torch": diff,
                "texts": len(TEXTS),
                "max_length": MAX_LENGTH,
                "machine": machine_info(),
                "git": git_state(),
            }
            append_jsonl(a.out, [record])
            sizes = ", ".join(f"{n} {b / 1e6:.1f} MB" for n, b in row["files"].items())
            rss = row["export_peak_rss_bytes"] / 1e9
            print(
                f"{dtype}: export {row['export_seconds']:.0f} s, peak RSS {rss:.2f} GB, load {load_s:.1f} s, "
                f"max |onnx - torch| {diff:.2e}; {sizes}",
                flush=True,
            )
            if dtype == "fp32" and diff > 1e-4:
                print(f"fp32 parity broken: {diff:.2e} > 1e-4", file=sys.stderr)
                return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
