"""The training loop: inference-free (IDF query side) or siamese SPLADE, seeded and resumable.

A step draws its batch and seeds dropout from ``(seed, step)`` alone (:func:`lsr.train.data.
sample_groups`), so a run killed at any point and resumed from its last checkpoint ends with the
weights of an uninterrupted run. Checkpoints hold the model, the IDF table and AdamW's state as
safetensors plus a JSON of the step and the figures so far; they are replaced atomically.

The output directory is a Hugging Face model directory (``config.json``, ``model.safetensors``,
``tokenizer.json``) plus ``idf.json`` (inference-free) and ``training.json`` (config, data, seed,
figures): what ``lsr export --kind inference-free`` takes unchanged.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import time
from collections.abc import Callable, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from lsr.idf import bm25_idf, document_frequencies, load_idf, save_idf
from lsr.manifest import IDF
from lsr.sparse import SparseBatch
from lsr.tokenize import ECHO_TEMPLATE, DecoderLayout, decoder_inputs
from lsr.train import losses
from lsr.train.data import Group, TrainingSet, sample_groups, teacher_matrix
from lsr.train.model import add_lora, calibrate_head_bias, keep_top_k, load_sparse_encoder

log = logging.getLogger(__name__)

TRAINING = "training.json"
LOG = "train-log.jsonl"
KINDS: tuple[str, ...] = ("inference-free", "splade")
HEAD_CALIBRATION_DOCS = 64
FLOPS: tuple[str, ...] = ("idf", "plain", "none")
DISTILL: tuple[str, ...] = ("kl", "margin-mse")
LMS: tuple[str, ...] = ("mlm", "causal")

# Evaluator: (encode documents, encode queries) -> {"ndcg@10": ..., ...} on the dev split.
Evaluator = Callable[[Callable[[Sequence[str]], SparseBatch], Callable[[Sequence[str]], SparseBatch]], dict]


@dataclass
class TrainConfig:
    """What a run does; saved in ``training.json`` and checked on resume.

    ``batch_size`` queries a micro-batch, each with one positive and ``negatives`` hard negatives
    drawn from its first ``depth`` mined candidates; ``grad_accum`` micro-batches a step.
    ``flops``: ``idf`` weighs query tokens by IDF in the training score (IDF-aware FLOPS),
    ``plain`` by 1, ``none`` drops the regulariser. ``teachers`` name the cached teacher scores
    that form the ensemble target (``None``: all of them; empty: InfoNCE on the judgements alone).
    ``ema``: when above 0, the weights evaluated, selected and written are an exponential moving
    average of the trained ones with this decay per step (the start weights seed it).
    ``lm``: ``mlm`` (BERT family) or ``causal`` (a decoder-only LM, Mistral-SPLADE style; ``echo``
    lays its input out as ``prefix text cue text`` and pools the second copy, ``echo_template``
    as :func:`lsr.export.export` takes it). ``lora_r`` above 0 trains a peft LoRA adapter of that
    rank on every linear layer (the projection to the vocabulary excepted) and writes the adapter
    directory, which ``lsr export`` merges into its base.
    ``query_dropout``: inference-free training queries lose each token with this probability (one
    always stays), so documents cannot rely on every query token the teachers saw.
    ``top_k``: documents keep their ``top_k`` heaviest terms in training and dev evaluation, as
    ``lsr encode --prune top_k:N`` serves them; ``query_top_k`` the same for siamese queries (an
    untrained decoder's vectors are positive on every term: unpruned, a query-document score sums
    ~49k products and the student's softmax over candidates is one-hot).
    ``head_nnz``: when the start has no MLM head, the added head's bias is set so that the first
    training documents average that many non-zeros (:func:`lsr.train.model.calibrate_head_bias`).
    """

    kind: Literal["inference-free", "splade"] = "inference-free"
    steps: int = 800
    batch_size: int = 8
    negatives: int = 3
    depth: int = 50
    grad_accum: int = 1
    lr: float = 5e-5
    idf_lr: float = 0.0
    warmup_steps: int = 60
    weight_decay: float = 0.01
    flops: Literal["idf", "plain", "none"] = "idf"
    flops_lambda: float = 1e-3
    flops_query_lambda: float = 1e-3
    flops_warmup: int = 200
    min_nnz: int | None = None
    head_nnz: int = 256
    teachers: list[str] | None = None
    teacher_scale: float = 30.0
    distill: Literal["kl", "margin-mse"] = "kl"
    distill_weight: float = 1.0
    infonce_weight: float = 1.0
    in_batch: bool = True
    max_length: int = 256
    query_max_length: int = 64
    seed: int = 0
    eval_every: int = 200
    checkpoint_every: int = 25
    eval_batch_size: int = 32
    ema: float = 0.0
    lm: Literal["mlm", "causal"] = "mlm"
    echo: bool = False
    echo_template: str | None = None
    lora_r: int = 0
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    query_dropout: float = 0.0
    top_k: int | None = None
    query_top_k: int | None = None

    def validate(self) -> None:
        for name, value, allowed in (
            ("kind", self.kind, KINDS),
            ("flops", self.flops, FLOPS),
            ("distill", self.distill, DISTILL),
        ):
            if value not in allowed:
                raise ValueError(f"{name} must be one of {', '.join(allowed)}, got {value!r}")
        names = ("steps", "batch_size", "negatives", "depth", "grad_accum", "max_length", "head_nnz")
        for name in (*names, "eval_every", "checkpoint_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.negatives > self.depth:
            raise ValueError(f"negatives ({self.negatives}) cannot exceed depth ({self.depth})")
        if self.lr <= 0 or self.idf_lr < 0:
            raise ValueError("lr must be > 0 and idf_lr >= 0")
        if not 0.0 <= self.ema < 1.0:
            raise ValueError(f"ema must be in [0, 1), got {self.ema}")
        if not 0.0 <= self.query_dropout < 1.0:
            raise ValueError(f"query_dropout must be in [0, 1), got {self.query_dropout}")
        if self.lm not in LMS:
            raise ValueError(f"lm must be one of {', '.join(LMS)}, got {self.lm!r}")
        if self.echo and self.lm != "causal":
            raise ValueError("echo applies to decoder-only models (lm causal)")
        if self.echo_template is not None and not self.echo:
            raise ValueError("an echo template needs echo")
        for name in ("top_k", "query_top_k"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1 or None, got {getattr(self, name)}")
        if self.query_top_k is not None and self.kind != "splade":
            raise ValueError("query_top_k applies to siamese queries (kind splade)")
        if self.lora_r < 0:
            raise ValueError(f"lora_r must be >= 0, got {self.lora_r}")
        if self.query_dropout > 0 and self.kind != "inference-free":
            raise ValueError("query_dropout applies to inference-free queries only")


def _tokenize(tokenizer, texts: Sequence[str], max_length: int):
    tokenizer.set_max_length(max_length)
    return tokenizer.encode(list(texts))


def _pad(tokenizer, encodings) -> dict[str, torch.Tensor]:
    inputs = tokenizer.pad(encodings)
    return {
        "input_ids": torch.from_numpy(inputs.input_ids),
        "attention_mask": torch.from_numpy(inputs.attention_mask),
        "token_type_ids": torch.from_numpy(inputs.token_type_ids),
    }


class Trainer:
    """Trains the sparse encoder of ``model_dir`` on ``data``; see the module doc.

    Parameters
    ----------
    model_dir : a Hugging Face model directory (BERT family; an MLM head is added when missing).
    out_dir : where the trained model directory goes; checkpoints live in ``out_dir/checkpoint``.
    data : the training set (its ``teacher_scores`` must hold every name in ``config.teachers``).
    train_qids : the queries to train on (the dev queries are left out by the caller).
    config : the run's :class:`TrainConfig`.
    idf : the initial query-side IDF ``{token: weight}``; by default the model directory's
        ``idf.json``, else the BM25 IDF of ``data.docs`` (:mod:`lsr.idf`).
    evaluate : scores the current encoder on the dev split (:data:`Evaluator`); its ``ndcg@10``
        picks the best checkpoint, the start included.
    """

    def __init__(
        self,
        model_dir: str | Path,
        out_dir: str | Path,
        data: TrainingSet,
        train_qids: list[str],
        config: TrainConfig,
        idf: dict[str, float] | None = None,
        evaluate: Evaluator | None = None,
        show_progress: bool = True,
    ):
        config.validate()
        if config.teachers is None:
            config.teachers = sorted(data.teacher_scores)
        missing = [t for t in config.teachers if t not in data.teacher_scores]
        if missing:
            raise ValueError(f"no cached scores for teacher(s) {', '.join(missing)}")
        self.model_dir, self.out_dir = Path(model_dir), Path(out_dir)
        self.data, self.config, self.evaluate = data, config, evaluate
        self.show_progress = show_progress
        trainable = set(data.trainable(config.depth, config.negatives))
        self.qids = [q for q in train_qids if q in trainable]
        if len(self.qids) < config.batch_size:
            raise ValueError(
                f"{len(self.qids)} train queries have a positive and {config.negatives} negatives; "
                f"a batch needs {config.batch_size}"
            )
        torch.manual_seed(config.seed)  # the added MLM head's initialisation, if any
        self.encoder, self.load_info = load_sparse_encoder(self.model_dir, config.lm)
        self.layout = None
        if config.lm == "causal":
            model_config = json.loads((self.model_dir / "config.json").read_text(encoding="utf-8"))
            template = (config.echo_template or ECHO_TEMPLATE) if config.echo else None
            self.layout = DecoderLayout.from_template(
                self.encoder.tokenizer, model_config.get("bos_token_id"), config.echo, template
            )
        if config.lora_r > 0:
            self.load_info["lora"] = add_lora(
                self.encoder, config.lora_r, config.lora_alpha, config.lora_dropout
            )
        if self.load_info["added_mlm_head"]:  # a resumed run's checkpoint overwrites this bias
            sample = [data.docs[d] for d in sorted(data.docs)[:HEAD_CALIBRATION_DOCS]]
            tau = calibrate_head_bias(self.encoder, sample, config.head_nnz, config.max_length)
            self.load_info["head_bias"] = -tau
        self.tokenizer = self.encoder.tokenizer
        vocab = self.tokenizer.vocab
        if idf is None and (self.model_dir / IDF).is_file():
            table = load_idf(self.model_dir / IDF, vocab)
        elif idf is None:
            df, n = document_frequencies(data.docs.values(), self.tokenizer)
            table = bm25_idf(df, n)
        else:
            table = np.zeros(len(vocab), np.float32)
            index = {t: i for i, t in enumerate(vocab)}
            for tok, w in idf.items():
                if tok in index:
                    table[index[tok]] = w
        table[list(self.tokenizer.special_ids)] = 0.0
        self.idf = torch.nn.Parameter(
            torch.from_numpy(np.array(table, np.float32)), requires_grad=config.idf_lr > 0
        )
        groups = [
            {"params": [p for p in self.encoder.parameters() if p.requires_grad], "lr": config.lr},
        ]
        if config.idf_lr > 0:
            groups.append({"params": [self.idf], "lr": config.idf_lr, "weight_decay": 0.0})
        self.optimizer = torch.optim.AdamW(groups, lr=config.lr, weight_decay=config.weight_decay)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, self._lr_factor)
        self._doc_tokens: dict[str, object] = {}
        self.averaged: dict[str, torch.Tensor] = (
            {n: p.detach().clone() for n, p in self._trained()} if config.ema > 0 else {}
        )
        self.step = 0
        self.history: list[dict] = []
        self.best: dict | None = None

    # ------------------------------------------------------------------ weight averaging
    def _trained(self) -> list[tuple[str, torch.nn.Parameter]]:
        """The parameters the optimizer moves, by name (the IDF table as ``idf``)."""
        named = [(n, p) for n, p in self.encoder.named_parameters() if p.requires_grad]
        return named + ([("idf", self.idf)] if self.idf.requires_grad else [])

    @torch.no_grad()
    def _update_average(self) -> None:
        d = self.config.ema
        for n, p in self._trained():
            self.averaged[n].mul_(d).add_(p.detach(), alpha=1.0 - d)

    @contextmanager
    def _averaged_weights(self):
        """The averaged weights in place of the trained ones for the block (no-op without ``ema``)."""
        if not self.averaged:
            yield
            return
        params = dict(self._trained())
        kept = {n: p.detach().clone() for n, p in params.items()}
        try:
            with torch.no_grad():
                for n, p in params.items():
                    p.copy_(self.averaged[n])
            yield
        finally:
            with torch.no_grad():
                for n, p in params.items():
                    p.copy_(kept[n])

    # ------------------------------------------------------------------ schedule
    def _lr_factor(self, step: int) -> float:
        c = self.config
        if step < c.warmup_steps:
            return (step + 1) / c.warmup_steps
        return max(0.0, (c.steps - step) / max(1, c.steps - c.warmup_steps))

    # ------------------------------------------------------------------ batches
    def _tokens(self, texts: Sequence[str], max_length: int) -> list:
        """Encodings (MLM) or text token ids without special tokens (causal: laid out at padding)."""
        if self.layout is None:
            return _tokenize(self.tokenizer, texts, max_length)
        self.tokenizer.set_max_length(max_length)  # as lsr.runtime: no special tokens, cut by the layout
        return [e.ids for e in self.tokenizer.encode(list(texts), special_tokens=False)]

    def _inputs(self, tokens: list, max_length: int) -> dict[str, torch.Tensor]:
        if self.layout is None:
            return _pad(self.tokenizer, tokens)
        x = decoder_inputs(tokens, self.layout, self.tokenizer.pad_id, max_length)
        return {
            "input_ids": torch.from_numpy(x.input_ids),
            "attention_mask": torch.from_numpy(x.attention_mask),
            "pool_mask": torch.from_numpy(x.pool_mask),
        }

    def _rep(self, tokens: list, max_length: int, top_k: int | None) -> torch.Tensor:
        rep = self.encoder(**self._inputs(tokens, max_length))
        return rep if top_k is None else keep_top_k(rep, top_k)

    def _docs(self, docids: Sequence[str]):
        todo = [d for d in docids if d not in self._doc_tokens]
        if todo:
            for d, e in zip(
                todo,
                self._tokens([self.data.docs[d] for d in todo], self.config.max_length),
                strict=True,
            ):
                self._doc_tokens[d] = e
        return [self._doc_tokens[d] for d in docids]

    def _query_reps(
        self, texts: Sequence[str], train: bool = True
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Query vectors ``[Q, vocab]`` and, for siamese models, the rows FLOPS reads.

        Inference-free queries are their distinct tokens weighted by the IDF table; with ``flops``
        ``plain`` the training score weighs them 1 (evaluation always uses the IDF, as search does).
        """
        if self.config.kind == "splade":
            qlen = self.config.query_max_length
            rep = self._rep(self._tokens(texts, qlen), qlen, self.config.query_top_k)
            return rep, rep
        encs = _tokenize(self.tokenizer, texts, self.config.query_max_length)
        mask = torch.zeros(len(texts), self.encoder.vocab_size)
        for r, e in enumerate(encs):
            mask[r, torch.tensor(e.ids, dtype=torch.long)] = 1.0
        mask *= self.encoder.vocab_keep
        if train and self.config.query_dropout > 0:
            mask = _drop_tokens(mask, self.config.query_dropout)
        idf = None if train and self.config.flops == "plain" else self.idf
        return losses.query_weights(mask, idf), None

    def loss(self, groups: list[Group], step: int) -> tuple[torch.Tensor, dict]:
        """The loss of one micro-batch and its parts (for the log)."""
        c = self.config
        docids = [d for g in groups for d in g.docids]
        d_rep = self._rep(self._docs(docids), c.max_length, c.top_k)
        q_rep, q_flops_rep = self._query_reps([self.data.queries[g.qid] for g in groups])
        parts: dict[str, float] = {}
        total = torch.zeros(())
        if c.infonce_weight > 0:
            nce = losses.infonce(q_rep, d_rep, in_batch=c.in_batch)
            total = total + c.infonce_weight * nce
            parts["infonce"] = float(nce.detach())
        if c.teachers and c.distill_weight > 0:
            target = losses.ensemble_scores(
                [torch.from_numpy(teacher_matrix(self.data, groups, t)) for t in c.teachers], c.teacher_scale
            )
            student = losses.group_scores(q_rep, d_rep)
            fn = losses.kl_distill if c.distill == "kl" else losses.margin_mse
            dist = fn(student, target)
            total = total + c.distill_weight * dist
            parts[c.distill] = float(dist.detach())
        d_flops = losses.idf_flops(d_rep, c.min_nnz) if c.flops == "idf" else losses.flops(d_rep, c.min_nnz)
        parts["flops"] = float(d_flops.detach())
        if c.flops != "none":
            total = total + losses.flops_weight(c.flops_lambda, step, c.flops_warmup) * d_flops
            if q_flops_rep is not None:
                total = total + losses.flops_weight(
                    c.flops_query_lambda, step, c.flops_warmup
                ) * losses.flops(q_flops_rep)
        parts["loss"] = float(total.detach())
        parts["doc_nnz"] = float((d_rep > 0).sum(dim=1).float().mean())
        return total, parts

    # ------------------------------------------------------------------ encoding for evaluation
    @torch.inference_mode()
    def encode_documents(self, texts: Sequence[str]) -> SparseBatch:
        return self._encode(texts, self.config.max_length, self.config.top_k)

    @torch.inference_mode()
    def encode_queries(self, texts: Sequence[str]) -> SparseBatch:
        if self.config.kind == "splade":
            return self._encode(texts, self.config.query_max_length, self.config.query_top_k)
        rep, _ = self._query_reps(texts, train=False)
        return SparseBatch.from_dense(rep.numpy(), self.tokenizer.vocab)

    def _encode(self, texts: Sequence[str], max_length: int, top_k: int | None = None) -> SparseBatch:
        """Encoded as search sees them: ``top_k`` by the served rule (:meth:`SparseBatch.prune`)."""
        was_training = self.encoder.training
        self.encoder.eval()
        try:
            encs = self._tokens(texts, max_length)
            order = np.argsort([-len(e if self.layout else e.ids) for e in encs], kind="stable")
            bs = self.config.eval_batch_size
            parts = [
                SparseBatch.from_dense(
                    self.encoder(**self._inputs([encs[i] for i in order[s : s + bs]], max_length)).numpy(),
                    self.tokenizer.vocab,
                )
                for s in range(0, len(order), bs)
            ]
            if not parts:
                return SparseBatch.empty(0, self.tokenizer.vocab)
            out = SparseBatch.concat(parts).take(np.argsort(order, kind="stable"))
            return out if top_k is None else out.prune("top_k", top_k)
        finally:
            self.encoder.train(was_training)

    # ------------------------------------------------------------------ checkpoints
    @property
    def checkpoint_dir(self) -> Path:
        return self.out_dir / "checkpoint"

    def _model_state(self) -> dict[str, torch.Tensor]:
        """What a checkpoint keeps of the model: everything, or with LoRA the adapter (the base is frozen)."""
        if self.config.lora_r > 0:
            return {n: p for n, p in self.encoder.named_parameters() if p.requires_grad}
        return self.encoder.state_dict()

    def _tensors(self) -> dict[str, torch.Tensor]:
        out = {f"model.{k}": v.detach().clone().contiguous() for k, v in self._model_state().items()}
        out["idf"] = self.idf.detach().clone()
        names = {id(p): n for n, p in self.encoder.named_parameters()}
        names[id(self.idf)] = "idf"
        for group in self.optimizer.param_groups:
            for p in group["params"]:
                for key, value in self.optimizer.state.get(p, {}).items():
                    t = value if torch.is_tensor(value) else torch.tensor(value)
                    out[f"adam.{names[id(p)]}.{key}"] = t.detach().clone().contiguous()
        for n, t in self.averaged.items():
            out[f"ema.{n}"] = t.clone().contiguous()
        return out

    def _load_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        state = {k[len("model.") :]: v for k, v in tensors.items() if k.startswith("model.")}
        missing, unexpected = self.encoder.load_state_dict(state, strict=False)
        if unexpected or (missing and self.config.lora_r == 0):
            raise ValueError(f"checkpoint does not fit the model: missing {missing}, unexpected {unexpected}")
        with torch.no_grad():
            self.idf.copy_(tensors["idf"])
        params = dict(self.encoder.named_parameters())
        params["idf"] = self.idf
        for key, value in tensors.items():
            if key.startswith("adam."):
                name, slot = key[len("adam.") :].rsplit(".", 1)
                self.optimizer.state.setdefault(params[name], {})[slot] = value.clone()
            elif key.startswith("ema."):
                self.averaged[key[len("ema.") :]] = value.clone()

    def save_checkpoint(self) -> None:
        tmp = self.out_dir / ".checkpoint.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        tensors = self._tensors()  # cloned, so tied weights are stored once under each name
        save_file(tensors, str(tmp / "state.safetensors"))
        meta = {
            "step": self.step,
            "config": asdict(self.config),
            "data": self.data.source,
            "history": self.history,
            "best": self.best,
        }
        (tmp / "state.json").write_text(json.dumps(meta), encoding="utf-8")
        old = self.out_dir / ".checkpoint.old"
        shutil.rmtree(old, ignore_errors=True)
        if self.checkpoint_dir.exists():
            self.checkpoint_dir.rename(old)
        tmp.rename(self.checkpoint_dir)
        shutil.rmtree(old, ignore_errors=True)

    def _resume(self) -> bool:
        ckpt = self.checkpoint_dir
        if not (ckpt / "state.json").is_file():
            old = self.out_dir / ".checkpoint.old"  # killed between the two renames
            if (old / "state.json").is_file():
                old.rename(ckpt)
            else:
                return False
        meta = json.loads((ckpt / "state.json").read_text(encoding="utf-8"))
        if meta["config"] != asdict(self.config):
            changed = sorted(k for k in meta["config"] if meta["config"][k] != asdict(self.config).get(k))
            raise ValueError(
                f"{ckpt} was written by a run with another configuration ({', '.join(changed)} differ); "
                "use another OUT_DIR or delete it"
            )
        if meta.get("data") != self.data.source:
            raise ValueError(
                f"{ckpt} was written by a run on other training data; use another OUT_DIR or delete it"
            )
        self._load_tensors(load_file(str(ckpt / "state.safetensors")))
        self.step, self.history, self.best = meta["step"], meta["history"], meta["best"]
        for _ in range(self.step):
            self.scheduler.step()
        # The killed run may have logged steps past its last checkpoint: they are run again.
        log_file = self.out_dir / LOG
        text = log_file.read_text(encoding="utf-8") if log_file.is_file() else ""
        rows = [json.loads(x) for x in text.splitlines() if x]
        kept = [r for r in rows if r["step"] <= self.step]
        log_file.write_text("".join(json.dumps(r) + "\n" for r in kept), encoding="utf-8")
        log.info("resumed %s at step %d", self.out_dir, self.step)
        return True

    # ------------------------------------------------------------------ the loop
    def _eval(self) -> dict | None:
        if self.evaluate is None:
            return None
        t0 = time.perf_counter()
        with self._averaged_weights():
            metrics = self.evaluate(self.encode_documents, self.encode_queries)
            best = self._maybe_best(metrics)
        row = {
            "step": self.step,
            **{f"dev_{k}": v for k, v in metrics.items()},
            "eval_seconds": time.perf_counter() - t0,
        }
        self.history.append(row)
        self._log(row)
        if best:
            self.best = {"step": self.step, "ndcg@10": metrics.get("ndcg@10", -math.inf)}
        return metrics

    def _maybe_best(self, metrics: dict) -> bool:
        """Keep the weights in place as ``best.safetensors`` when they beat the best so far."""
        score = metrics.get("ndcg@10", -math.inf)
        if self.best is not None and score <= self.best["ndcg@10"]:
            return False
        tensors = {k: v for k, v in self._tensors().items() if k.startswith("model.") or k == "idf"}
        save_file(tensors, str(self.out_dir / ".best.tmp"))
        os.replace(self.out_dir / ".best.tmp", self.out_dir / "best.safetensors")
        return True

    def _log(self, row: dict) -> None:
        with open(self.out_dir / LOG, "a", encoding="utf-8") as f:
            f.write(json.dumps(row) + "\n")

    def train(self) -> dict:
        """Run (or resume) the training and write the output directory; returns ``training.json``."""
        c = self.config
        self.out_dir.mkdir(parents=True, exist_ok=True)
        done = self.out_dir / TRAINING
        if done.is_file():
            summary = json.loads(done.read_text(encoding="utf-8"))
            if summary.get("config") == asdict(c) and summary.get("data") == self.data.source:
                log.info("%s is already trained with this configuration", self.out_dir)
                return summary
            raise ValueError(f"{self.out_dir} holds a model trained with another configuration")
        resumed = self._resume()
        if not resumed:
            (self.out_dir / LOG).unlink(missing_ok=True)
            self._eval()
        self.encoder.train()
        start_time = time.perf_counter()
        bar = tqdm(
            total=c.steps, initial=self.step, desc="train", unit="step", disable=not self.show_progress
        )
        try:
            while self.step < c.steps:
                self.optimizer.zero_grad(set_to_none=True)
                agg: dict[str, float] = {}
                for micro in range(c.grad_accum):
                    index = self.step * c.grad_accum + micro
                    torch.manual_seed(hash_seed(c.seed, index))
                    groups = sample_groups(
                        self.data, self.qids, c.batch_size, c.negatives, c.depth, c.seed, index
                    )
                    loss, parts = self.loss(groups, self.step)
                    (loss / c.grad_accum).backward()
                    for k, v in parts.items():
                        agg[k] = agg.get(k, 0.0) + v / c.grad_accum
                torch.nn.utils.clip_grad_norm_(self.encoder.parameters(), 1.0)
                self.optimizer.step()
                self.scheduler.step()
                if self.averaged:
                    self._update_average()
                self.step += 1
                row = {"step": self.step, "lr": self.scheduler.get_last_lr()[0], **agg}
                self._log(row)
                bar.set_postfix(
                    loss=f"{agg['loss']:.3f}", nnz=f"{agg['doc_nnz']:.0f}", flops=f"{agg['flops']:.2f}"
                )
                bar.update(1)
                if self.step % c.eval_every == 0 or self.step == c.steps:
                    self._eval()
                if self.step % c.checkpoint_every == 0 or self.step == c.steps:
                    self.save_checkpoint()
        finally:
            bar.close()
        return self._finish(time.perf_counter() - start_time)

    def _finish(self, seconds: float) -> dict:
        best = self.out_dir / "best.safetensors"
        if best.is_file():
            self._load_tensors(load_file(str(best)))
        elif self.averaged:  # no dev split: the last averaged weights
            with torch.no_grad():
                for n, p in self._trained():
                    p.copy_(self.averaged[n])
        self.encoder.save(self.out_dir)
        if self.config.kind == "inference-free":
            w = torch.relu(self.idf.detach()).numpy()
            save_idf(
                {t: float(w[i]) for i, t in enumerate(self.tokenizer.vocab) if w[i] > 0}, self.out_dir / IDF
            )
        summary = {
            "config": asdict(self.config),
            "model_dir": str(self.model_dir.resolve()),
            "data": self.data.source,
            "train_queries": len(self.qids),
            "seed": self.config.seed,
            "load": self.load_info,
            "best": self.best,
            "history": [h for h in self.history if "step" in h],
            "seconds_last_session": seconds,
            "torch": torch.__version__,
        }
        (self.out_dir / TRAINING).write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
        shutil.rmtree(self.checkpoint_dir, ignore_errors=True)
        best.unlink(missing_ok=True)
        return summary


def _drop_tokens(mask: torch.Tensor, p: float) -> torch.Tensor:
    """``mask`` with each 1 zeroed with probability ``p``; a row that would lose all keeps its first."""
    kept = mask * (torch.rand(mask.shape) >= p)
    empty = (kept.sum(dim=1) == 0) & (mask.sum(dim=1) > 0)
    if empty.any():
        rows = empty.nonzero().flatten()
        kept[rows, mask[rows].argmax(dim=1)] = 1.0
    return kept


def hash_seed(seed: int, index: int) -> int:
    """A torch seed for micro-batch ``index`` of a run seeded ``seed`` (dropout masks)."""
    return int(np.random.default_rng([seed, 4, index]).integers(2**62))
