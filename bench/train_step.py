"""One training step's forward + backward through the SPLADE head: lsr's chunked max-pooled projection
(:func:`lsr.train.model.splade_pool`) against the plain torch head (:func:`lsr.train.model.reference_pool`,
full ``[batch, tokens, vocab]`` logits), on the real SPLADE-tiny and the first ``--docs`` SciFact documents.

Both run in one process on the same inputs, interleaved ``--repeat`` times after a warm-up; reported:
median seconds per step of each, the ratio, and the largest difference of the pooled weights and of
the gradients of a FLOPS-style loss. One JSON line goes to ``--out``.

    .venv/bin/python -m bench.train_step --docs 32 --max-length 256

``--run NAME`` instead times ``--steps`` optimizer steps of a :mod:`bench.train` run's own trainer
(its start model, configuration and cached SciFact training set; no dev pass, no checkpoint):
what a step of that run costs on this machine, and its peak RSS.

    .venv/bin/python -m bench.train_step --run smollm2-lora-idf-bm25-ensemble --steps 3
"""

from __future__ import annotations

import argparse
import statistics
import time
from itertools import islice

from bench._context import (
    SCIFACT,
    add_output_arguments,
    append_jsonl,
    git_state,
    machine_info,
    positive_int,
    ratio_text,
    setup_logging,
    utc_stamp,
)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--docs", type=positive_int, default=32)
    p.add_argument("--max-length", type=positive_int, default=256)
    p.add_argument("--repeat", type=positive_int, default=3)
    p.add_argument("--run", default=None, help="time a bench.train run's trainer instead")
    p.add_argument("--steps", type=positive_int, default=3, help="with --run: optimizer steps timed")
    add_output_arguments(p, "train_step")
    a = p.parse_args(argv)
    setup_logging(a.verbose)
    if a.run:
        return time_run(a.run, a.steps, a.out)
    import torch

    from indexer.corpus import read_corpus
    from lsr.models import fetch
    from lsr.train import model as m

    enc, _ = m.load_sparse_encoder(fetch())
    enc.train()
    tok = enc.tokenizer
    tok.set_max_length(a.max_length)
    texts = [r.text for r in islice(read_corpus(SCIFACT / "corpus.jsonl"), a.docs)]
    inputs = tok.pad(tok.encode(texts))
    ids, mask = torch.from_numpy(inputs.input_ids), torch.from_numpy(inputs.attention_mask)
    pool = mask.bool() & ~(ids.unsqueeze(-1) == enc.special).any(-1)
    proj = enc.projection

    def step(pool_fn) -> tuple[float, torch.Tensor, torch.Tensor]:
        enc.zero_grad(set_to_none=True)
        torch.manual_seed(0)
        t0 = time.perf_counter()
        hidden = enc.model(input_ids=ids, attention_mask=mask).logits
        w = pool_fn(hidden, proj.weight, proj.bias, pool, enc.vocab_keep)
        loss = w.sum() + (w.mean(0) ** 2).sum()
        loss.backward()
        return time.perf_counter() - t0, w.detach(), proj.weight.grad.clone()

    engines = {"chunked": m.splade_pool, "plain": m.reference_pool}
    for fn in engines.values():  # warm-up
        step(fn)
    times: dict[str, list[float]] = {k: [] for k in engines}
    outputs = {}
    for _ in range(a.repeat):
        for name, fn in engines.items():
            seconds, w, g = step(fn)
            times[name].append(seconds)
            outputs[name] = (w, g)
    med = {k: statistics.median(v) for k, v in times.items()}
    dw = float((outputs["chunked"][0] - outputs["plain"][0]).abs().max())
    dg = float((outputs["chunked"][1] - outputs["plain"][1]).abs().max())
    for name, s in med.items():
        print(f"{name:<8} {s:.3f} s/step ({a.docs} docs x {a.max_length} tokens, fwd + bwd)")
    print(
        f"ratio {ratio_text('plain', 'chunked', med['plain'] / med['chunked'])}; "
        f"max |dw| {dw:.2e}, max |dgrad| {dg:.2e}"
    )
    record = {
        "bench": "train_step",
        "time": utc_stamp(),
        "docs": a.docs,
        "max_length": a.max_length,
        "repeat": a.repeat,
        "seconds": times,
        "median_seconds": med,
        "ratio_plain_over_chunked": med["plain"] / med["chunked"],
        "max_abs_weight_diff": dw,
        "max_abs_grad_diff": dg,
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "machine": machine_info(),
        "git": git_state(),
    }
    append_jsonl(a.out, [record])
    return 0


def time_run(name: str, steps: int, out) -> int:
    import resource
    import tempfile
    from dataclasses import asdict
    from pathlib import Path

    import torch

    from bench.train import RUN_KEYS, RUNS, _config
    from lsr.models import fetch
    from lsr.train.trainer import Trainer
    from plugin.train import Teacher, build_training_set, default_teachers

    start, overrides, kinds = RUNS[name]
    overrides = {k: v for k, v in overrides.items() if k not in RUN_KEYS}
    teachers = default_teachers() + ([Teacher("bm25")] if "bm25" in kinds else [])
    config = _config(overrides, steps, [t.name for t in teachers if t.kind in kinds])
    config.steps, config.eval_every, config.checkpoint_every = steps, 10**9, 10**9
    model = fetch(start)
    ts, _ = build_training_set(
        SCIFACT, "train", model, teachers, "native", config.depth, config.max_length, config.query_max_length
    )
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        trainer = Trainer(model, Path(tmp) / "run", ts, sorted(ts.qrels), config, show_progress=False)
        load_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        trainer.train()
        total = time.perf_counter() - t0
        log = (Path(tmp) / "run" / "train-log.jsonl").read_text().splitlines()
    per_step = total / steps
    rss_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    print(
        f"{name}: {per_step:.1f} s/step over {steps} steps ({config.batch_size} queries x "
        f"{1 + config.negatives} documents, {config.max_length} positions), load {load_s:.0f} s, "
        f"peak RSS {rss_gb:.1f} GB; {trainer.load_info}"
    )
    append_jsonl(
        out,
        [
            {
                "bench": "train_step",
                "time": utc_stamp(),
                "run": name,
                "config": asdict(config),
                "steps": steps,
                "seconds_per_step": per_step,
                "seconds_total": total,
                "load_seconds": load_s,
                "peak_rss_gb": rss_gb,
                "load": trainer.load_info,
                "last_log": log[-1:],
                "torch_threads": torch.get_num_threads(),
                "machine": machine_info(),
                "git": git_state(),
            }
        ],
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
