"""Training runs and their ablation: start / plain FLOPS / IDF-aware FLOPS, dense / sparse / ensemble
teacher, the all-MiniLM start and the siamese comparison, on SciFact test and zero-shot elsewhere.

Each run trains with :func:`plugin.train.train` on SciFact ``qrels/train.tsv`` (60 of its queries
held out as the dev split that picks the checkpoint; the test split is never read while training)
into ``--work/RUN`` (a finished run is reused, a killed one resumes). Every model, the untrained
start included, is then evaluated the way a user runs it: ``lsr export`` (inference-free, the
query side's IDF computed from the collection searched: a corpus statistic, not learned, unless
the run learned it), ``lsr encode`` of the whole corpus (documents at 256 tokens), a native index,
exact search with the IDF query side (no model at query time; siamese runs encode queries), and
ir-measures against the test qrels. Reported per (run, collection): nDCG@10, R@100, mean document
non-zeros and FLOPS, the expected number of non-zeros a query and a document share
(``sum_t P(t in q) P(t in d)`` over the test queries and the corpus); on SciFact also bi-granular
(sparse top-1000 verified by all-MiniLM-L6-v2's dense store, as ``lsr demo``). One JSON line per
(run, collection) goes to ``--out`` and the curves (loss, document non-zeros, dev nDCG@10 against
steps) to ``--plot PATH`` when given (no default file: a run of a few models would overwrite the
curves of an earlier set).

    .venv/bin/python -m bench.train --runs start idf-ensemble              # the main row
    .venv/bin/python -m bench.train                                          # every run (hours)
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import logging
import shutil
import time
from pathlib import Path

import numpy as np

from bench._context import (
    SCIFACT,
    add_output_arguments,
    append_jsonl,
    git_state,
    machine_info,
    setup_logging,
    table_header,
    table_line,
    utc_stamp,
)

log = logging.getLogger("bench.train")

SHARED = SCIFACT.parent
ZERO_SHOT = ("cranfield", "med")
# What every run shares (the best of the first runs on the dev split: KL to the ensemble only, a low rate;
# InfoNCE on the judgements collapsed document expansions and overfit after one epoch).
BASE = {"lr": 1e-5, "infonce_weight": 0.0, "eval_every": 50}
DECODER = {
    "lm": "causal",
    "echo": True,
    "lora_r": 16,
    "lora_alpha": 32,
    "batch_size": 2,
    "steps": 80,
    "warmup_steps": 8,
    "flops_warmup": 40,
    "eval_every": 80,
    "n_dev": 15,
    "dev_distractors": 100,
    "max_length": 128,
}
# The decoder's inference-free run at a hundredth of the FLOPS weight, and its longer variant.
DECODER_IDF_1E5 = {**DECODER, "flops": "idf", "lr": 1e-4, "flops_lambda": 1e-5, "prune": "top_k:256"}
# Bench-side keys of a run (the rest is its TrainConfig): pseudo-queries, dev split size, encode pruning.
RUN_KEYS = {"pseudo": "none", "n_dev": 60, "dev_distractors": 500, "prune": None, "dev_seed": None}
# name: (start model, config overrides, teachers). "start" and "*-start" train nothing.
RUNS: dict[str, tuple[str, dict, tuple[str, ...]]] = {
    "start": ("splade-tiny", {}, ()),
    "idf-ensemble": ("splade-tiny", {"flops": "idf"}, ("sparse", "dense")),
    "plain-ensemble": ("splade-tiny", {"flops": "plain"}, ("sparse", "dense")),
    "idf-dense": ("splade-tiny", {"flops": "idf"}, ("dense",)),
    "idf-sparse": ("splade-tiny", {"flops": "idf"}, ("sparse",)),
    "idf-bm25-ensemble": ("splade-tiny", {"flops": "idf"}, ("sparse", "dense", "bm25")),
    "plain-bm25-ensemble": ("splade-tiny", {"flops": "plain"}, ("sparse", "dense", "bm25")),
    "idf-bm25-ensemble-lr3e-5": ("splade-tiny", {"flops": "idf", "lr": 3e-5}, ("sparse", "dense", "bm25")),
    # The query side learns too: the IDF table of the tokens the training queries hold, at its own rate.
    "idf-bm25-ensemble-idflr1e-3": (
        "splade-tiny",
        {"flops": "idf", "lr": 3e-5, "idf_lr": 1e-3},
        ("sparse", "dense", "bm25"),
    ),
    "idf-bm25-ensemble-idflr1e-2": (
        "splade-tiny",
        {"flops": "idf", "lr": 3e-5, "idf_lr": 1e-2},
        ("sparse", "dense", "bm25"),
    ),
    # The dev curve peaked at step 100 (the FLOPS weight at a quarter of its full value) and fell as it
    # rose: a tenth of the weight.
    "idf-bm25-ensemble-flops1e-4": (
        "splade-tiny",
        {"flops": "idf", "lr": 3e-5, "flops_lambda": 1e-4},
        ("sparse", "dense", "bm25"),
    ),
    # Its KL fell to 0.01 by step 300 (the 749 queries' targets learnt by heart): seven negatives a query.
    "idf-bm25-ensemble-flops1e-4-neg7": (
        "splade-tiny",
        {"flops": "idf", "lr": 3e-5, "flops_lambda": 1e-4, "negatives": 7},
        ("sparse", "dense", "bm25"),
    ),
    # Against the same memorising: the dev-selected weights averaged over ~50 steps, or queries that
    # lose a tenth of their tokens at random in training.
    "idf-bm25-ensemble-flops1e-4-ema": (
        "splade-tiny",
        {"flops": "idf", "lr": 3e-5, "flops_lambda": 1e-4, "ema": 0.98},
        ("sparse", "dense", "bm25"),
    ),
    # Or the schedule ends at the dev peak: the rate decays to 0 by step 150, not 300.
    "idf-bm25-ensemble-flops1e-4-s150": (
        "splade-tiny",
        {"flops": "idf", "lr": 3e-5, "flops_lambda": 1e-4, "steps": 150},
        ("sparse", "dense", "bm25"),
    ),
    "idf-bm25-ensemble-flops1e-4-qdrop": (
        "splade-tiny",
        {"flops": "idf", "lr": 3e-5, "flops_lambda": 1e-4, "query_dropout": 0.1},
        ("sparse", "dense", "bm25"),
    ),
    # Trained at the length it is evaluated at: documents, the miner's index and the sparse teacher at
    # 512 tokens (the dense teacher stays at its 256); the start gains ~0.01 from 256 to 512 alone.
    "idf-bm25-ensemble-flops1e-4-len512": (
        "splade-tiny",
        {"flops": "idf", "lr": 3e-5, "flops_lambda": 1e-4, "max_length": 512},
        ("sparse", "dense", "bm25"),
    ),
    # The same run under other seeds (batch order, dropout) on seed 0's dev split: the spread a seed
    # carries, and the ingredients of a weight-averaged soup (bench.train --soup).
    **{
        f"idf-bm25-ensemble-flops1e-4-seed{s}": (
            "splade-tiny",
            {"flops": "idf", "lr": 3e-5, "flops_lambda": 1e-4, "seed": s, "dev_seed": 0},
            ("sparse", "dense", "bm25"),
        )
        for s in (1, 2, 3)
    },
    # Mistral-SPLADE at the size this machine trains: SmolLM2-135M, echo, LoRA r=16 (the paper's), two
    # queries a step, 128 positions (each copy ~60 tokens): a step of 8 documents takes ~20 s here and a
    # dev pass ~20 s a dev query, so 80 steps and 15 dev queries fit 60 minutes. Evaluate with
    # --doc-length 128 (a SciFact encode at 256 takes ~43 min here). 80 steps leave ~8,000 terms a
    # document: every decoder row is pruned to its 256 heaviest, as the untrained one.
    "smollm2-start": ("smollm2-135m", {"lm": "causal", "echo": True, "prune": "top_k:256"}, ()),
    # The untrained decoder siamese, pruned as the siamese run trains: queries at their 64 heaviest terms.
    "smollm2-siamese-start": (
        "smollm2-135m",
        {"kind": "splade", "lm": "causal", "echo": True, "prune": "top_k:256", "query_top_k": 64},
        (),
    ),
    "smollm2-lora-idf-bm25-ensemble": (
        "smollm2-135m",
        {**DECODER, "flops": "idf", "lr": 1e-4, "prune": "top_k:256"},
        ("sparse", "dense", "bm25"),
    ),
    # Its FLOPS term (lambda 1e-3 on ~400k shared terms at the start) outweighed the KL 20-40x and the
    # dev score fell: a hundredth of the weight.
    "smollm2-lora-idf-bm25-ensemble-flops1e-5": (
        "smollm2-135m",
        DECODER_IDF_1E5,
        ("sparse", "dense", "bm25"),
    ),
    # Its dev curve still rose at step 80 (two queries a step had seen a fifth of the 749): twice the steps.
    "smollm2-lora-idf-bm25-ensemble-flops1e-5-s160": (
        "smollm2-135m",
        {**DECODER_IDF_1E5, "steps": 160},
        ("sparse", "dense", "bm25"),
    ),
    "smollm2-lora-siamese-bm25-ensemble": (
        "smollm2-135m",
        {**DECODER, "kind": "splade", "flops": "plain", "lr": 1e-4, "prune": "top_k:256"},
        ("sparse", "dense", "bm25"),
    ),
    # Its queries and documents were positive on all 49,152 terms (a score summed ~49k products, the
    # student's softmax was one-hot, KL 6,000-13,000, dev 0.000): both sides trained and evaluated at
    # their heaviest terms, 256 a document (as served) and 64 a query.
    "smollm2-lora-siamese-bm25-ensemble-topk": (
        "smollm2-135m",
        {
            **DECODER,
            "kind": "splade",
            "flops": "plain",
            "lr": 1e-4,
            "top_k": 256,
            "query_top_k": 64,
        },
        ("sparse", "dense", "bm25"),
    ),
    # One sentence of 2,500 documents' texts as extra queries, labelled by the teachers (plugin.train).
    "idf-bm25-ensemble-sentences": (
        "splade-tiny",
        {"flops": "idf", "lr": 3e-5, "pseudo": "sentences:2500"},
        ("sparse", "dense", "bm25"),
    ),
    "idf-labels": ("splade-tiny", {"flops": "idf", "infonce_weight": 1.0}, ()),
    "minilm-idf-ensemble": ("all-minilm-l6-v2", {"flops": "idf"}, ("sparse", "dense")),
    # The added head starts at 256 terms a document (TrainConfig.head_nnz); it learns from nothing,
    # hence the higher rate and the later FLOPS warm-up.
    "minilm-idf-bm25-ensemble": (
        "all-minilm-l6-v2",
        {"flops": "idf", "lr": 5e-5, "flops_warmup": 100},
        ("sparse", "dense", "bm25"),
    ),
    # The same with a tenth of the FLOPS weight (its dev curve still rose at step 200 with the full one);
    # 180 steps of ~13 s and three dev evaluations fit 45 minutes here.
    "minilm-idf-bm25-ensemble-flops1e-4": (
        "all-minilm-l6-v2",
        {"flops": "idf", "lr": 5e-5, "flops_warmup": 100, "flops_lambda": 1e-4, "eval_every": 60},
        ("sparse", "dense", "bm25"),
    ),
    "siamese-ensemble": ("splade-tiny", {"kind": "splade"}, ("sparse", "dense")),
    # The comparison for the best inference-free run: its teachers and rate, queries through the model.
    "siamese-bm25-ensemble": (
        "splade-tiny",
        {"kind": "splade", "flops": "plain", "lr": 3e-5},
        ("sparse", "dense", "bm25"),
    ),
}


def _config(overrides: dict, steps: int, teachers: list[str]):
    from lsr.train.trainer import TrainConfig

    return TrainConfig(**{**BASE, "steps": steps, **overrides, "teachers": teachers})


def train_run(name: str, work: Path, steps: int) -> tuple[Path, dict | None]:
    from lsr.models import fetch
    from plugin.train import Teacher, default_teachers, train

    start, overrides, kinds = RUNS[name]
    if name == "start" or name.endswith("-start"):
        return fetch(start), None
    overrides = dict(overrides)
    extra = {k: overrides.pop(k, v) for k, v in RUN_KEYS.items()}
    teachers = default_teachers() + ([Teacher("bm25")] if "bm25" in kinds else [])
    config = _config(overrides, steps, [t.name for t in teachers if t.kind in kinds])
    out = work / name
    summary = train(
        fetch(start),
        out,
        SCIFACT,
        config,
        teachers=teachers,
        n_dev=extra["n_dev"],
        pseudo=extra["pseudo"],
        dev_distractors=extra["dev_distractors"],
        dev_seed=extra["dev_seed"],
    )
    return out, summary


def _top_k_spec(k: int | None) -> str | None:
    return None if k is None else f"top_k:{k}"


def flops_expected(queries, docs) -> float:
    """``sum_t P(t in q) P(t in d)``: the mean number of terms a (query, document) pair shares."""
    v = len(docs.vocab)
    pq = np.bincount(queries.term_ids, minlength=v) / max(len(queries), 1)
    pd = np.bincount(docs.term_ids, minlength=v) / max(len(docs), 1)
    return float(pq @ pd)


def evaluate_model(
    model: Path,
    kind: str,
    collection: Path,
    work: Path,
    dense,
    doc_length: int = 256,
    split: str = "test",
    lm: str = "mlm",
    echo: bool = False,
    prune: str | None = None,
    lucene: bool = False,
    query_prune: str | None = None,
) -> dict:
    """Export, encode (documents cut at ``doc_length`` tokens, pruned by ``prune``), index and search
    ``model`` on ``collection``'s test split (module doc); ``lm`` ``causal``: a decoder export.
    ``lucene``: the same vectors in a Lucene impact index too, searched with the same query vectors
    (``lucene_*`` figures and whether both backends returned the same ranked lists); ``query_prune``:
    siamese query vectors pruned so (as the run trained them)."""
    from indexer.corpus import read_corpus, read_qrels
    from indexer.encode import encode_corpus
    from indexer.jsonvector import load_batch
    from indexer.native.build import build_native_index
    from indexer.native.format import is_current
    from lsr.runtime import load_encoder
    from lsr.sparse import parse_prune
    from plugin.evaluate import evaluate
    from plugin.native import NativeSearcher
    from plugin.prepare import export_once

    weights = next(
        model / n for n in ("model.safetensors", "adapter_model.safetensors") if (model / n).is_file()
    )
    digest = hashlib.sha256(weights.read_bytes()).hexdigest()[:10]
    learned_idf = (
        kind == "inference-free"
        and (model / "training.json").is_file()
        and json.loads((model / "training.json").read_text())["config"]["idf_lr"] > 0
    )
    tag = f"{model.name}-{digest}-{collection.name}"
    if lm == "causal":
        export_kind = "decoder"
    else:
        export_kind = "splade" if kind == "splade" else "inference-free"
    enc = export_once(
        model,
        work / "encoders" / tag,
        export_kind,
        "fp32",
        None if learned_idf or kind == "splade" else collection / "corpus.jsonl",
        echo=echo,
    )
    if learned_idf and lm == "causal":  # a decoder's export takes the learnt table only when given it
        raise NotImplementedError("a decoder with a learnt IDF table: export it with --idf OUT/idf.json")
    vectors = work / "vectors" / f"{tag}-{doc_length}{'' if prune is None else '-' + prune}.jsonl.gz"
    encode_corpus(
        load_encoder(enc, "doc", max_length=doc_length),
        collection / "corpus.jsonl",
        vectors,
        batch_size=8,
        prune=parse_prune(prune) if prune else None,
    )
    use_dense = dense is not None and collection.resolve() == SCIFACT.resolve()
    index_dir = (
        work
        / "indexes"
        / (
            tag
            + ("" if doc_length == 256 else f"-{doc_length}")
            + ("" if prune is None else f"-{prune}")
            + ("-dense" if use_dense else "")
        )
    )
    if not is_current(index_dir):
        build_native_index(index_dir, vector_files=[vectors], dense=[dense[1]] if use_dense else None)
    qrels = read_qrels(collection / "qrels" / f"{split}.tsv")
    queries = [r for r in read_corpus(collection / "queries.jsonl") if r.id in qrels]
    q_enc = load_encoder(enc, "query", max_length=64)
    qvecs = q_enc.encode([q.text for q in queries])
    if query_prune is not None:
        qvecs = qvecs.prune(*parse_prune(query_prune))
    native = NativeSearcher(index_dir)
    native.batch_search(qvecs.take([0]), k=100)  # JIT warm-up, not timed
    t0 = time.perf_counter()
    hits = native.batch_search(qvecs, k=100)
    search_ms = (time.perf_counter() - t0) * 1e3 / max(len(queries), 1)
    run = {q.id: h for q, h in zip(queries, hits, strict=True)}
    metrics = evaluate(run, qrels)
    _, docs = load_batch(vectors, q_enc.vocab)
    row = {
        **metrics,
        "doc_nnz": float(docs.row_nnz().mean()),
        "query_nnz": float(qvecs.row_nnz().mean()),
        "flops": flops_expected(qvecs, docs),
        "search_ms_mean": search_ms,
        "queries": len(queries),
        "docs": len(docs),
        "idf": "learned" if learned_idf else ("model" if kind == "splade" else "collection"),
        "doc_length": doc_length,
        "split": split,
        **({} if prune is None else {"prune": prune}),
        **({} if query_prune is None else {"query_prune": query_prune}),
    }
    if lucene:
        row.update(_lucene_figures(vectors, work / "indexes" / f"{index_dir.name}-lucene", qvecs, run, qrels))
    if use_dense:
        from plugin.verify import BiGranularSearcher

        verifier = BiGranularSearcher(index_dir, dense[0], candidates=1000, sparse=native)
        dvecs = verifier.encode([q.text for q in queries])
        vrun = {q.id: verifier.search(qvecs.take([i]), dvecs[i], k=100) for i, q in enumerate(queries)}
        row.update({f"bigranular_{k}": v for k, v in evaluate(vrun, qrels).items()})
    return row


def _lucene_figures(vectors: Path, index_dir: Path, qvecs, native_run: dict, qrels) -> dict:
    """Lucene's figures for ``vectors`` searched with ``qvecs``; how many queries' ranked score lists
    differ from the native ones, and how many docid lists (both break score ties by input position, so
    a docid list that differs where the scores agree is a tie-rule regression)."""
    from indexer.lucene import build_lucene_index
    from indexer.lucene import is_current as lucene_is_current
    from plugin.evaluate import evaluate
    from plugin.lucene import LuceneSearcher

    if not lucene_is_current(index_dir):
        build_lucene_index([vectors], index_dir, threads=2)
    searcher = LuceneSearcher(index_dir)
    try:
        hits = searcher.batch_search(qvecs, k=100, threads=2)
    finally:
        searcher.close()
    run = dict(zip(native_run, hits, strict=True))

    def differ(field: str) -> int:
        return sum(
            [getattr(h, field) for h in run[q]] != [getattr(h, field) for h in native_run[q]] for q in run
        )

    return {
        **{f"lucene_{k}": v for k, v in evaluate(run, qrels).items()},
        "lucene_score_lists_differ": differ("score"),
        "lucene_docid_lists_differ": differ("docid"),
    }


def plot(run_dirs: list[Path], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    for run_dir in run_dirs:
        name = run_dir.name
        log_file = run_dir / "train-log.jsonl"
        if not log_file.is_file():
            continue
        rows = [json.loads(x) for x in log_file.read_text().splitlines() if x.strip()]
        steps = [r for r in rows if "loss" in r]
        evals = [r for r in rows if "dev_ndcg@10" in r]
        smooth = (
            np.convolve([r["loss"] for r in steps], np.ones(10) / 10, mode="valid")
            if len(steps) >= 10
            else []
        )
        axes[0].plot(range(10, 10 + len(smooth)), smooth, label=name)
        axes[1].plot([r["step"] for r in steps], [r["doc_nnz"] for r in steps], label=name)
        axes[2].plot([r["step"] for r in evals], [r["dev_ndcg@10"] for r in evals], marker="o", label=name)
    for ax, title in zip(
        axes, ("loss (10-step mean)", "document non-zeros (train batch)", "dev nDCG@10"), strict=True
    ):
        ax.set_title(title)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    axes[2].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def record_dev(run_dirs: list[Path], out: Path) -> None:
    """Append a JSON line per ``lsr train`` output or checkpoint: config and dev curve (no test figures)."""
    for d in run_dirs:
        summary = d / "training.json"
        ckpt = d / "checkpoint" / "state.json"
        meta = json.loads((summary if summary.is_file() else ckpt).read_text())
        rows = [json.loads(x) for x in (d / "train-log.jsonl").read_text().splitlines() if x.strip()]
        record = {
            "bench": "train-dev",
            "time": utc_stamp(),
            "run_dir": str(d),
            "finished": summary.is_file(),
            "config": meta["config"],
            "data": meta.get("data"),
            "steps_logged": max((r["step"] for r in rows), default=0),
            "last_train_rows": [r for r in rows if "loss" in r][-3:],
            "dev": [r for r in rows if "dev_ndcg@10" in r],
            "best": meta.get("best"),
            "machine": machine_info(),
            "git": git_state(),
        }
        append_jsonl(out, [record])
        curve = ", ".join(
            f"{r['step']}: {r['dev_ndcg@10']:.4f} ({r['dev_doc_nnz']:.0f} nnz)" for r in record["dev"]
        )
        print(f"{d.name}: {curve}")


def greedy_soup(names: list[str], work: Path, steps: int, out: Path) -> Path:
    """The greedy soup of ``names`` (Wortsman et al. 2022): ingredients in order of their best dev
    nDCG@10, each kept only when the average with it does not score lower on the dev split. Every
    choice reads the dev split alone; one JSON line a candidate goes to ``out``. Returns the soup."""
    from lsr.models import fetch
    from lsr.train.soup import average_models
    from plugin.train import Teacher, default_teachers, dev_metrics

    def dev_of(name: str) -> tuple:
        overrides = {**RUN_KEYS, **RUNS[name][1]}
        seed = overrides.get("seed", 0)
        return (
            RUNS[name][0],
            overrides["n_dev"],
            overrides["dev_distractors"],
            seed if overrides["dev_seed"] is None else overrides["dev_seed"],  # 0 is a dev seed
        )

    if len({dev_of(n) for n in names}) != 1:
        raise SystemExit(f"soup ingredients must share a start and a dev split: {[dev_of(n) for n in names]}")
    runs = []
    for name in names:
        model, summary = train_run(name, work, steps)
        if summary is None or not summary.get("best"):
            raise SystemExit(f"{name} has no dev-selected checkpoint to put in a soup")
        runs.append((summary["best"]["ndcg@10"], name, model))
    runs.sort(key=lambda r: -r[0])
    start, overrides, kinds = RUNS[runs[0][1]]
    extra = {k: overrides.get(k, v) for k, v in RUN_KEYS.items()}
    teachers = default_teachers() + ([Teacher("bm25")] if "bm25" in kinds else [])
    config = _config(
        {k: v for k, v in overrides.items() if k not in RUN_KEYS},
        steps,
        [t.name for t in teachers if t.kind in kinds],
    )
    soup_dir = work / ("soup-" + hashlib.sha1(" ".join(sorted(names)).encode()).hexdigest()[:10])
    trial = work / ".soup-trial"

    def score(models: list[Path]) -> dict:
        average_models(models, trial)
        m = dev_metrics(
            trial,
            fetch(start),
            SCIFACT,
            config,
            teachers=teachers,
            n_dev=extra["n_dev"],
            dev_seed=extra["dev_seed"] if extra["dev_seed"] is not None else config.seed,
            dev_distractors=extra["dev_distractors"],
        )
        return m

    def record(models: list[str], m: dict, kept: bool) -> None:
        append_jsonl(
            out,
            [
                {
                    "bench": "train-soup",
                    "time": utc_stamp(),
                    "ingredients": models,
                    "kept": kept,
                    **{f"dev_{k}": v for k, v in m.items()},
                    "git": git_state(),
                }
            ],
        )
        print(
            f"soup {' + '.join(models)}: dev nDCG@10 {m['ndcg@10']:.4f} ({m['doc_nnz']:.0f} nnz)"
            f"{'' if kept else ' (dropped)'}",
            flush=True,
        )

    chosen = [runs[0]]
    best = score([runs[0][2]])
    record([runs[0][1]], best, True)  # equals the run's own best dev figure: the same pool and weights
    for run in runs[1:]:
        m = score([r[2] for r in [*chosen, run]])
        kept = m["ndcg@10"] >= best["ndcg@10"]
        record([r[1] for r in [*chosen, run]], m, kept)
        if kept:
            chosen, best = [*chosen, run], m
    if len(chosen) < len(runs):  # the uniform soup, for the record
        record([r[1] for r in runs], score([r[2] for r in runs]), False)
    average_models([r[2] for r in chosen], soup_dir)
    shutil.rmtree(trial, ignore_errors=True)
    return soup_dir


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--record-dev",
        nargs="+",
        type=Path,
        default=None,
        metavar="RUN_DIR",
        help="only append the dev curves of these `lsr train` outputs to --out and stop",
    )
    p.add_argument(
        "--runs", nargs="+", default=None, choices=list(RUNS), help="default: all (none with --evaluate)"
    )
    p.add_argument(
        "--steps",
        type=int,
        default=300,
        help="optimizer steps of each training run (a run that names its own keeps them)",
    )
    p.add_argument("--zero-shot", nargs="*", default=list(ZERO_SHOT), help="collections under shared/data")
    p.add_argument("--no-dense", action="store_true", help="skip the bi-granular rows")
    p.add_argument(
        "--lucene", action="store_true", help="search the same vectors in a Lucene impact index too"
    )
    p.add_argument("--doc-length", type=int, default=256, help="document tokens at encoding (queries: 64)")
    p.add_argument(
        "--split",
        default="test",
        help="judged queries to evaluate on (train: for choices the test must not see)",
    )
    add_output_arguments(p, "train", work_help="runs, exports, vectors and indexes")
    p.add_argument("--plot", type=Path, default=None, help="draw the runs' curves to this PNG")
    p.add_argument(
        "--soup",
        nargs="+",
        default=None,
        choices=list(RUNS),
        metavar="RUN",
        help="train these runs, average the greedy soup of them chosen on dev (train-dev.jsonl), evaluate it",
    )
    p.add_argument(
        "--evaluate",
        nargs="+",
        type=Path,
        default=None,
        metavar="MODEL_DIR",
        help="evaluate these `lsr train` outputs instead of the named runs",
    )
    a = p.parse_args(argv)
    setup_logging(a.verbose)
    if a.record_dev:
        record_dev(a.record_dev, a.out.with_name("train-dev.jsonl"))
        return 0
    from lsr.models import cache_dir

    work = a.work or cache_dir() / "bench-train"
    dense = None
    if not a.no_dense:
        from plugin.prepare import prepare

        prep = prepare(SCIFACT)
        dense = (prep.dense, prep.dense_vectors)
    collections = [SCIFACT] + [
        SHARED / c for c in a.zero_shot if (SHARED / c / "qrels" / f"{a.split}.tsv").is_file()
    ]
    table = "run<36 | collection<11 | nDCG@10>8 | R@100>8 | doc nnz>9 | FLOPS>8 | +dense>8"
    lines = []
    names = a.runs if a.runs is not None else ([] if a.evaluate or a.soup else list(RUNS))
    jobs = [(n, None) for n in names] + [(d.name, d) for d in a.evaluate or []]
    if a.soup:
        soup = greedy_soup(a.soup, work, a.steps, a.out.with_name("train-dev.jsonl"))
        jobs.append((soup.name, soup))
    for name, given in jobs:
        t0 = time.perf_counter()
        if given is None:
            model, summary = train_run(name, work, a.steps)
        else:
            model, summary = given, json.loads((given / "training.json").read_text())
        train_s = time.perf_counter() - t0
        config = (summary or {}).get("config") or (RUNS[name][1] if given is None else {})
        kind = config.get("kind", "inference-free")
        lm, echo = config.get("lm", "mlm"), config.get("echo", False)
        # A run trained at top_k / query_top_k is served pruned so, named or given by --evaluate.
        prune = (RUNS[name][1].get("prune") if given is None else None) or _top_k_spec(config.get("top_k"))
        query_prune = _top_k_spec(config.get("query_top_k"))
        for coll in collections:
            row = evaluate_model(
                model, kind, coll, work, dense, a.doc_length, a.split, lm, echo, prune, a.lucene,
                query_prune=query_prune,
            )  # fmt: skip
            record = {
                "bench": "train",
                "time": utc_stamp(),
                "run": name,
                "collection": coll.name,
                "start": RUNS[name][0] if given is None else summary["model_dir"],
                "teachers": list(RUNS[name][2]) if given is None else summary["config"]["teachers"],
                **row,
                "training": copy.deepcopy({k: v for k, v in (summary or {}).items() if k != "history"}),
                "train_wall_seconds_this_call": train_s,
                "machine": machine_info(),
                "git": git_state(),
            }
            append_jsonl(a.out, [record])
            dn = row.get("bigranular_ndcg@10")
            cells = [name, coll.name, *(f"{row[m]:.4f}" for m in ("ndcg@10", "recall@100"))]
            cells += [f"{row['doc_nnz']:.1f}", f"{row['flops']:.2f}", *([] if dn is None else [f"{dn:.4f}"])]
            line = table_line(table, cells)  # no +dense cell without the bi-granular rows
            if "lucene_ndcg@10" in row:
                line += (
                    f"  (lucene {row['lucene_ndcg@10']:.4f}; lists differing in scores "
                    f"{row['lucene_score_lists_differ']}, in docids {row['lucene_docid_lists_differ']})"
                )
            lines.append(line)
            print(line, flush=True)
    if a.plot is not None:
        plot([work / n for n in names if n != "start"] + list(a.evaluate or []), a.plot)
    header = table_header(table)
    print("\n" + header + "\n" + "-" * len(header))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
