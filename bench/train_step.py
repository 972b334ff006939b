"""One training step's forward + backward through the SPLADE head: lsr's chunked max-pooled projection
(:func:`lsr.train.model.splade_pool`) against the plain torch head (:func:`lsr.train.model.reference_pool`,
full ``[batch, tokens, vocab]`` logits), on the real SPLADE-tiny and the first ``--docs`` SciFact documents.

Both run in one process on the same inputs, interleaved ``--repeat`` times after a warm-up; reported:
median seconds per step of each, the ratio, and the largest difference of the pooled weights and of
the gradients of a FLOPS-style loss. One JSON line goes to ``--out``.

    .venv/bin/python -m bench.train_step --docs 32 --max-length 256
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
    add_output_arguments(p, "train_step")
    a = p.parse_args(argv)
    setup_logging(a.verbose)
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


if __name__ == "__main__":
    raise SystemExit(main())
