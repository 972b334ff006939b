"""lsr.train: losses against hand-computed values, the pooled projection against its twin, seeded and
resumable runs on a tiny random BERT, and `lsr train`'s errors."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from lsr.train import losses  # noqa: E402
from lsr.train.data import TrainingSet, sample_groups, split_dev  # noqa: E402
from lsr.train.model import MaxPooledProjection, reference_pool, splade_pool  # noqa: E402
from tests.conftest import TINY_WORDS, needs_java  # noqa: E402


# ---------------------------------------------------------------------------------------- losses
def test_flops_by_hand():
    rep = torch.tensor([[1.0, 0.0, 2.0], [3.0, 0.0, 0.0]])
    # mean |w| per term: [2, 0, 1] -> 4 + 0 + 1
    assert float(losses.flops(rep)) == pytest.approx(5.0)
    # L0 mask: only the row with more than 1 non-zero counts; the mean still divides by 2 rows
    assert float(losses.flops(rep, min_nnz=1)) == pytest.approx(0.25 + 1.0)
    assert float(losses.idf_flops(rep)) == pytest.approx(5.0)


def test_flops_weight_warms_up_quadratically():
    assert losses.flops_weight(2.0, 0, 4) == pytest.approx(2.0 / 16)
    assert losses.flops_weight(2.0, 1, 4) == pytest.approx(2.0 / 4)
    assert losses.flops_weight(2.0, 3, 4) == pytest.approx(2.0)
    assert losses.flops_weight(2.0, 100, 4) == pytest.approx(2.0)
    assert losses.flops_weight(2.0, 0, 0) == pytest.approx(2.0)


def test_query_weights_idf_or_binary():
    mask = torch.tensor([[1.0, 0.0, 1.0]])
    idf = torch.tensor([2.0, 5.0, -1.0])  # a negative learned IDF weighs 0
    assert losses.query_weights(mask, idf).tolist() == [[2.0, 0.0, 0.0]]
    assert losses.query_weights(mask, None).tolist() == [[1.0, 0.0, 1.0]]


def test_infonce_by_hand():
    q = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    # two queries, groups of 2 (positive first): q0 -> d0 (pos), d1; q1 -> d2 (pos), d3
    d = torch.tensor([[2.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.0, 3.0]])
    # own group only: q0 scores [2, 1], q1 scores [1, 3]
    own = (
        -math.log(math.exp(2) / (math.exp(2) + math.exp(1)))
        - math.log(math.exp(1) / (math.exp(1) + math.exp(3)))
    ) / 2
    assert float(losses.infonce(q, d, in_batch=False)) == pytest.approx(own, rel=1e-6)
    # in batch: q0 scores [2, 1, 0, 0] target 0; q1 scores [0, 0, 1, 3] target 2
    z0 = math.exp(2) + math.exp(1) + 2
    z1 = 2 + math.exp(1) + math.exp(3)
    both = (-math.log(math.exp(2) / z0) - math.log(math.exp(1) / z1)) / 2
    assert float(losses.infonce(q, d, in_batch=True)) == pytest.approx(both, rel=1e-6)


def test_kl_distill_by_hand():
    student = torch.tensor([[0.0, math.log(2.0)]])  # softmax [1/3, 2/3]
    teacher = torch.tensor([[0.0, 0.0]])  # softmax [1/2, 1/2]
    expected = 0.5 * math.log(0.5 / (1 / 3)) + 0.5 * math.log(0.5 / (2 / 3))
    assert float(losses.kl_distill(student, teacher)) == pytest.approx(expected, rel=1e-6)
    assert float(losses.kl_distill(teacher, teacher)) == pytest.approx(0.0, abs=1e-7)


def test_margin_mse_by_hand():
    student = torch.tensor([[3.0, 1.0, 2.0]])  # margins 2, 1
    teacher = torch.tensor([[2.0, 2.0, 0.0]])  # margins 0, 2
    assert float(losses.margin_mse(student, teacher)) == pytest.approx((4 + 1) / 2)


def test_ensemble_scores_by_hand():
    t1 = torch.tensor([[1.0, 3.0, 2.0], [5.0, 5.0, 5.0]])  # -> [0, 1, .5]; a constant row -> 0
    t2 = torch.tensor([[10.0, 10.0, 20.0], [0.0, 1.0, 2.0]])  # -> [0, 0, 1], [0, .5, 1]
    out = losses.ensemble_scores([t1, t2], scale=30.0)
    np.testing.assert_allclose(out.numpy(), [[0.0, 15.0, 22.5], [0.0, 7.5, 15.0]], rtol=1e-6)
    with pytest.raises(ValueError):
        losses.ensemble_scores([])


def test_idf_aware_flops_gradient():
    torch.manual_seed(0)
    w = (torch.rand(4, 6, dtype=torch.float64) * (torch.rand(4, 6) > 0.4)).requires_grad_()
    assert torch.autograd.gradcheck(lambda x: losses.idf_flops(x), (w,))
    # d/dw_it sum_t (mean_i |w_it|)^2 = 2 * mean_i(|w_it|) / N where w_it > 0 (0 at the kink)
    (g,) = torch.autograd.grad(losses.idf_flops(w), w)
    expected = (2 * w.mean(0) / 4).expand(4, 6) * (w > 0)
    np.testing.assert_allclose(g.numpy(), expected.detach().numpy(), rtol=1e-12)
    # in the inference-free score the ranking gradient on w_t scales with idf_t, the penalty's does not
    idf = torch.tensor([0.5, 1.0, 2.0, 4.0, 8.0, 16.0], dtype=torch.float64)
    q = losses.query_weights(torch.ones(1, 6, dtype=torch.float64), idf)
    (gs,) = torch.autograd.grad((q @ w.t()).sum(), w)
    np.testing.assert_allclose(gs.numpy(), idf.expand(4, 6).numpy())


# ------------------------------------------------------------------------------- pooled projection
@pytest.mark.parametrize("vocab", [7, 600, 1100])  # below, at and across the vocab chunk of 512
def test_max_pooled_projection_matches_reference(vocab):
    torch.manual_seed(vocab)
    h = torch.randn(3, 5, 4, dtype=torch.float64)
    w = torch.randn(vocab, 4, dtype=torch.float64)
    b = torch.randn(vocab, dtype=torch.float64)
    pool = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [0, 0, 0, 0, 0]], dtype=torch.bool)
    keep = torch.ones(vocab, dtype=torch.float64)
    keep[0] = 0
    args = [x.clone().requires_grad_() for x in (h, w, b)]
    ref_args = [x.clone().requires_grad_() for x in (h, w, b)]
    out = splade_pool(*args, pool, keep)
    ref = reference_pool(*ref_args, pool, keep)
    np.testing.assert_allclose(out.detach().numpy(), ref.detach().numpy(), rtol=1e-12)
    assert float(out[2].abs().sum()) == 0.0  # a row that pools nothing weighs nothing
    g = torch.randn_like(out)
    out.backward(g)
    ref.backward(g)
    for a, r in zip(args, ref_args, strict=True):
        np.testing.assert_allclose(a.grad.numpy(), r.grad.numpy(), rtol=1e-10, atol=1e-12)
    if vocab == 7:
        fn = lambda hh, ww, bb: MaxPooledProjection.apply(hh, ww, bb, pool[:2])  # noqa: E731
        assert torch.autograd.gradcheck(fn, tuple(x[:2] if x.dim() == 3 else x for x in args))


# ------------------------------------------------------------------------------------------ data
def _toy_set(n_queries: int = 12, n_docs: int = 40, seed: int = 0) -> TrainingSet:
    rng = np.random.default_rng(seed)
    words = TINY_WORDS
    docs = {f"d{i}": " ".join(rng.choice(words, size=int(rng.integers(5, 15)))) for i in range(n_docs)}
    queries, qrels, cands = {}, {}, {}
    for q in range(n_queries):
        pos = f"d{q}"
        queries[f"q{q}"] = " ".join(docs[pos].split()[:3])
        qrels[f"q{q}"] = {pos: 1}
        cands[f"q{q}"] = [pos] + [f"d{(q + 1 + j) % n_docs}" for j in range(8)]
    scores = {
        name: {q: {d: float(rng.random()) for d in cands[q]} for q in queries}
        for name in ("sparse:t", "dense:t")
    }
    return TrainingSet(queries, docs, qrels, cands, scores, {"toy": seed})


def test_split_dev_and_groups_are_seeded():
    ts = _toy_set()
    qids = ts.trainable(depth=6, n_negatives=3)
    assert len(qids) == 12
    train, dev = split_dev(qids, 3, seed=1)
    assert len(dev) == 3 and not set(train) & set(dev) and sorted(train + dev) == sorted(qids)
    assert split_dev(qids, 3, seed=1) == (train, dev)
    g1 = sample_groups(ts, train, 4, 3, 6, seed=7, step=5)
    assert g1 == sample_groups(ts, train, 4, 3, 6, seed=7, step=5)
    assert g1 != sample_groups(ts, train, 4, 3, 6, seed=8, step=5)
    for g in g1:
        assert g.docids[0] in ts.positives(g.qid)
        assert len(set(g.docids)) == 4 and not set(g.docids[1:]) & set(ts.positives(g.qid))
    assert len({g.qid for g in g1}) == 4


def test_training_set_round_trips(tmp_path):
    ts = _toy_set()
    ts.save(tmp_path / "ts.json")
    assert TrainingSet.load(tmp_path / "ts.json") == ts


# ---------------------------------------------------------------------------------------- trainer
def _config(**kw):
    from lsr.train.trainer import TrainConfig

    base = dict(
        steps=6,
        batch_size=4,
        negatives=2,
        depth=6,
        lr=1e-3,
        warmup_steps=2,
        flops_warmup=3,
        max_length=24,
        query_max_length=8,
        eval_every=3,
        checkpoint_every=2,
        teachers=["sparse:t", "dense:t"],
    )
    base.update(kw)
    return TrainConfig(**base)


def _weights(out_dir: Path) -> dict[str, np.ndarray]:
    from safetensors.numpy import load_file

    return load_file(str(out_dir / "model.safetensors"))


def _train(model_dir, out_dir, config, ts=None, evaluate=True):
    from lsr.train.trainer import Trainer

    ts = ts or _toy_set()
    qids = ts.trainable(config.depth, config.negatives)

    def mrr(encode_docs, encode_queries):  # a real metric over the toy set: MRR of the positive
        ids = sorted(ts.docs)
        scores = (
            encode_queries([ts.queries[q] for q in qids]).to_scipy()
            @ encode_docs([ts.docs[d] for d in ids]).to_scipy().T
        )
        scores = np.asarray(scores.todense())
        ranks = [
            1 + int((scores[i] > scores[i, ids.index(ts.positives(q)[0])]).sum()) for i, q in enumerate(qids)
        ]
        return {"ndcg@10": float(np.mean([1 / r for r in ranks]))}

    if evaluate is True:
        evaluate = mrr
    return Trainer(model_dir, out_dir, ts, qids, config, evaluate=evaluate, show_progress=False).train()


def test_same_seed_same_weights_and_export(tiny_bert_dir, tmp_path):
    a = _train(tiny_bert_dir, tmp_path / "a", _config())
    _train(tiny_bert_dir, tmp_path / "b", _config())
    _train(tiny_bert_dir, tmp_path / "c", _config(seed=1))
    wa, wb, wc = (_weights(tmp_path / n) for n in "abc")
    assert wa.keys() == wb.keys()
    for k in wa:
        np.testing.assert_array_equal(wa[k], wb[k])
    assert any(not np.array_equal(wa[k], wc[k]) for k in wa)
    # the output is what `lsr export --kind inference-free` takes unchanged
    assert {"config.json", "model.safetensors", "tokenizer.json", "idf.json", "training.json"} <= {
        p.name for p in (tmp_path / "a").iterdir()
    }
    assert not (tmp_path / "a" / "checkpoint").exists()
    assert [h["step"] for h in a["history"]] == [0, 3, 6]
    assert a["best"]["step"] in (0, 3, 6)
    from lsr.export import export
    from lsr.runtime import load_encoder

    export(tmp_path / "a", tmp_path / "enc", "inference-free")
    batch = load_encoder(tmp_path / "enc", "doc", max_length=24).encode(["the cell of the tower"])
    assert batch.nnz > 0
    q = load_encoder(tmp_path / "enc", "query").encode(["cell tower"])
    assert q.nnz == 2


def test_training_moves_the_weights_and_logs(tiny_bert_dir, tmp_path):
    _train(tiny_bert_dir, tmp_path / "t", _config(idf_lr=1e-2))
    before = __import__("safetensors.numpy", fromlist=["load_file"]).load_file(
        str(tiny_bert_dir / "model.safetensors")
    )
    after = _weights(tmp_path / "t")
    key = "bert.encoder.layer.0.attention.self.query.weight"
    assert not np.allclose(before[key], after[key])
    rows = [json.loads(x) for x in (tmp_path / "t" / "train-log.jsonl").read_text().splitlines()]
    steps = [r for r in rows if "loss" in r]
    assert [r["step"] for r in steps] == list(range(1, 7))
    assert all({"infonce", "kl", "flops", "doc_nnz"} <= r.keys() for r in steps)
    idf = json.loads((tmp_path / "t" / "idf.json").read_text())
    assert "[CLS]" not in idf and "cell" in idf


def test_siamese_and_margin_mse_run(tiny_bert_dir, tmp_path):
    s = _train(
        tiny_bert_dir, tmp_path / "s", _config(kind="splade", distill="margin-mse", steps=2, eval_every=2)
    )
    assert s["config"]["kind"] == "splade"
    assert not (tmp_path / "s" / "idf.json").exists()


_KILLED_RUN = """
import sys, torch
sys.path.insert(0, {root!r})
from tests.test_train import _config, _train
torch.set_num_threads(1)
_train({model!r}, {out!r}, _config(steps=12, checkpoint_every=2, eval_every=4, ema={ema!r}))
"""


@pytest.mark.parametrize("ema", [0.0, 0.7])
def test_sigkill_and_resume_gives_the_uninterrupted_weights(tiny_bert_dir, tmp_path, ema):
    torch.set_num_threads(1)
    try:
        _train(tiny_bert_dir, tmp_path / "full", _config(steps=12, checkpoint_every=2, eval_every=4, ema=ema))
        out = tmp_path / "killed"
        script = _KILLED_RUN.format(
            root=str(Path(__file__).resolve().parents[1]), model=str(tiny_bert_dir), out=str(out), ema=ema
        )
        proc = subprocess.Popen([sys.executable, "-c", script], env={**os.environ, "PYTHONHASHSEED": "0"})
        log = out / "train-log.jsonl"
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            if (out / "checkpoint" / "state.json").is_file() and log.is_file():
                if any(json.loads(x).get("step", 0) >= 5 for x in log.read_text().splitlines() if x.strip()):
                    break
            time.sleep(0.02)
        assert proc.poll() is None, "the run finished before it could be killed"
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        assert not (out / "training.json").exists()
        resumed = _train(tiny_bert_dir, out, _config(steps=12, checkpoint_every=2, eval_every=4, ema=ema))
    finally:
        torch.set_num_threads(os.cpu_count() or 1)
    full, again = _weights(tmp_path / "full"), _weights(out)
    for k in full:
        np.testing.assert_allclose(again[k], full[k], rtol=1e-5, atol=1e-6)
    rows = [json.loads(x) for x in (out / "train-log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "loss" in r] == list(range(1, 13))
    assert [h["step"] for h in resumed["history"]] == [0, 4, 8, 12]


def test_ema_writes_the_moving_average_of_the_trajectory(tiny_bert_dir, tmp_path):
    """Two steps inside the warm-up (so each step's rate does not depend on the run's length): the
    averaged weights are d^2 w0 + d(1-d) w1 + (1-d) w2, with or without a dev split choosing them."""
    from safetensors.numpy import load_file

    d = 0.6
    w0 = load_file(str(tiny_bert_dir / "model.safetensors"))
    common = dict(warmup_steps=4, eval_every=100)
    _train(tiny_bert_dir, tmp_path / "w1", _config(steps=1, **common), evaluate=None)
    _train(tiny_bert_dir, tmp_path / "w2", _config(steps=2, **common), evaluate=None)
    w1, w2 = _weights(tmp_path / "w1"), _weights(tmp_path / "w2")
    seen = iter(range(10))
    rising = lambda docs, queries: {"ndcg@10": float(next(seen))}  # noqa: E731 - the last step is best
    for name, evaluate in (("plain", None), ("selected", rising)):
        s = _train(tiny_bert_dir, tmp_path / name, _config(steps=2, ema=d, **common), evaluate=evaluate)
        avg = _weights(tmp_path / name)
        moved = 0
        for k in w2:
            if k not in w0 or not np.issubdtype(w2[k].dtype, np.floating):
                continue
            want = d * d * w0[k] + d * (1 - d) * w1[k] + (1 - d) * w2[k]
            np.testing.assert_allclose(avg[k], want, rtol=1e-5, atol=1e-6, err_msg=k)
            moved += not np.allclose(avg[k], w2[k])
        assert moved > 10  # the average is not the last weights
        assert s["config"]["ema"] == d
    assert s["best"]["step"] == 2
    with pytest.raises(ValueError, match="ema must be in"):
        _config(ema=1.0).validate()


def test_query_dropout_drops_tokens_but_never_a_whole_query(tiny_bert_dir, tmp_path):
    from lsr.train.trainer import _drop_tokens

    torch.manual_seed(0)
    mask = (torch.rand(400, 50) < 0.2).float()
    mask[0] = 0.0  # an empty query stays empty
    mask[1] = 0.0
    mask[1, 7] = 1.0  # a one-token query keeps its token whatever the draw
    kept = _drop_tokens(mask, 0.3)
    assert torch.all(kept <= mask)
    assert kept[0].sum() == 0 and kept[1, 7] == 1 and kept[1].sum() == 1
    assert torch.all(kept[2:].sum(dim=1) >= 1)
    assert abs(float(1 - kept.sum() / mask.sum()) - 0.3) < 0.03
    assert torch.equal(_drop_tokens(mask, 0.0), mask)
    a = _train(tiny_bert_dir, tmp_path / "a", _config(steps=2, query_dropout=0.5), evaluate=None)
    _train(tiny_bert_dir, tmp_path / "b", _config(steps=2, query_dropout=0.5), evaluate=None)
    _train(tiny_bert_dir, tmp_path / "c", _config(steps=2), evaluate=None)
    wa, wb, wc = (_weights(tmp_path / n) for n in "abc")
    assert all(np.array_equal(wa[k], wb[k]) for k in wa)  # seeded
    assert any(not np.array_equal(wa[k], wc[k]) for k in wa)
    assert a["config"]["query_dropout"] == 0.5
    with pytest.raises(ValueError, match="inference-free queries only"):
        _config(kind="splade", query_dropout=0.1).validate()


def _decoder_texts(ts):
    return [ts.docs[d] for d in sorted(ts.docs)[:6]] + ["", "cell"]


def test_lora_decoder_with_echo_trains_the_function_its_export_computes(tiny_mistral_dir, tmp_path):
    """Inference-free Mistral-SPLADE: a LoRA adapter with echo; the adapter directory exports (merged)
    to a graph whose document vectors are the trainer's own, and the base stays untouched."""
    from safetensors.numpy import load_file

    from lsr.export import export
    from lsr.runtime import load_encoder
    from lsr.train.trainer import Trainer

    ts = _toy_set()
    config = _config(lm="causal", echo=True, lora_r=4, lora_alpha=8, steps=3, max_length=40, lr=1e-2)
    qids = ts.trainable(config.depth, config.negatives)
    trainer = Trainer(tiny_mistral_dir, tmp_path / "m", ts, qids, config, show_progress=False)
    summary = trainer.train()
    out = tmp_path / "m"
    assert {"adapter_config.json", "adapter_model.safetensors", "tokenizer.json", "idf.json"} <= {
        p.name for p in out.iterdir()
    }
    assert not (out / "model.safetensors").exists()
    assert summary["load"]["lora"]["r"] == 4 and "q_proj" in summary["load"]["lora"]["targets"]
    adapter = load_file(str(out / "adapter_model.safetensors"))
    assert any("lora_B" in k and np.abs(v).max() > 0 for k, v in adapter.items())  # B starts at 0
    texts = _decoder_texts(ts)
    trained = trainer.encode_documents(texts).to_dense()
    idf = json.loads((out / "idf.json").read_text())
    export(out, tmp_path / "enc", "decoder", idf=idf, echo=True)
    graph = load_encoder(tmp_path / "enc", "doc", max_length=40).encode(texts).to_dense()
    np.testing.assert_allclose(graph, trained, rtol=1e-4, atol=1e-4)
    export(tiny_mistral_dir, tmp_path / "base", "decoder", idf=idf, echo=True)
    base = load_encoder(tmp_path / "base", "doc", max_length=40).encode(texts).to_dense()
    assert not np.allclose(base, trained, atol=1e-3)
    q = load_encoder(tmp_path / "enc", "query").encode(["cell tower"])
    assert q.nnz == 2  # no model at query time


def test_siamese_gpt2_full_finetune_queries_match_its_export(tiny_gpt2_dir, tmp_path):
    from lsr.export import export
    from lsr.runtime import load_encoder
    from lsr.train.trainer import Trainer

    ts = _toy_set()
    config = _config(kind="splade", lm="causal", steps=2, max_length=32, eval_every=2)
    qids = ts.trainable(config.depth, config.negatives)
    trainer = Trainer(tiny_gpt2_dir, tmp_path / "g", ts, qids, config, show_progress=False)
    trainer.train()
    assert (tmp_path / "g" / "model.safetensors").is_file() and not (tmp_path / "g" / "idf.json").exists()
    texts = _decoder_texts(ts)
    export(tmp_path / "g", tmp_path / "enc", "decoder")
    for side, max_length in (("query", config.query_max_length), ("doc", config.max_length)):
        graph = load_encoder(tmp_path / "enc", side, max_length=max_length).encode(texts).to_dense()
        ours = (trainer.encode_queries if side == "query" else trainer.encode_documents)(texts).to_dense()
        np.testing.assert_allclose(graph, ours, rtol=1e-4, atol=1e-4, err_msg=side)


def test_lora_run_that_crashed_resumes_to_the_uninterrupted_adapter(tiny_gpt2_dir, tmp_path):
    """GPT-2's Conv1D layers take LoRA too; the checkpoint keeps only the adapter and the optimizer."""
    from safetensors.numpy import load_file

    from lsr.train.trainer import Trainer

    ts = _toy_set()
    config = _config(lm="causal", echo=True, lora_r=2, steps=6, max_length=32, eval_every=2, ema=0.5)
    qids = ts.trainable(config.depth, config.negatives)
    calls = {"n": 0}

    def evaluate(encode_docs, encode_queries, crash_at=None):
        calls["n"] += 1
        if calls["n"] == crash_at:
            raise RuntimeError("killed")
        return {"ndcg@10": float(encode_docs(["cell tower"]).nnz % 7) + calls["n"] * 1e-3}

    Trainer(
        tiny_gpt2_dir, tmp_path / "full", ts, qids, config, evaluate=evaluate, show_progress=False
    ).train()
    calls["n"] = 0
    crashing = lambda d, q: evaluate(d, q, crash_at=3)  # noqa: E731 - the step-4 evaluation
    with pytest.raises(RuntimeError, match="killed"):
        Trainer(
            tiny_gpt2_dir, tmp_path / "cut", ts, qids, config, evaluate=crashing, show_progress=False
        ).train()
    state = load_file(str(tmp_path / "cut" / "checkpoint" / "state.safetensors"))
    assert state and all("lora_" in k for k in state if k.startswith("model."))
    calls["n"] = 2
    Trainer(tiny_gpt2_dir, tmp_path / "cut", ts, qids, config, evaluate=evaluate, show_progress=False).train()
    full, again = (load_file(str(tmp_path / n / "adapter_model.safetensors")) for n in ("full", "cut"))
    assert full.keys() == again.keys()
    for k in full:
        np.testing.assert_allclose(again[k], full[k], rtol=1e-5, atol=1e-6, err_msg=k)


def test_soup_is_the_weighted_mean_of_its_ingredients_and_exports(tiny_bert_dir, tmp_path):
    from lsr.export import export
    from lsr.runtime import load_encoder
    from lsr.train.soup import average_models

    _train(tiny_bert_dir, tmp_path / "a", _config(idf_lr=1e-2))
    _train(tiny_bert_dir, tmp_path / "b", _config(idf_lr=1e-2, seed=1))
    soup = average_models([tmp_path / "a", tmp_path / "b"], tmp_path / "soup", weights=[1, 3])
    wa, wb, ws = (_weights(tmp_path / n) for n in ("a", "b", "soup"))
    assert ws.keys() == wa.keys()
    moved = [k for k in wa if not np.array_equal(wa[k], wb[k])]
    assert moved  # two seeds, two sets of weights: the mean is not either
    for k in wa:
        np.testing.assert_allclose(ws[k], 0.25 * wa[k] + 0.75 * wb[k], rtol=0, atol=1e-6)
    ia, ib, isoup = (json.loads((tmp_path / n / "idf.json").read_text()) for n in ("a", "b", "soup"))
    for tok in set(ia) | set(ib):
        assert isoup.get(tok, 0.0) == pytest.approx(
            0.25 * ia.get(tok, 0.0) + 0.75 * ib.get(tok, 0.0), abs=1e-6
        )
    summary = json.loads((soup / "training.json").read_text())
    assert summary["soup"]["weights"] == [0.25, 0.75]
    assert summary["soup"]["ingredients"] == [str((tmp_path / n).resolve()) for n in "ab"]
    assert summary["config"]["kind"] == "inference-free"
    # a soup of one is its ingredient, and a soup goes through lsr export as a trained model does
    average_models([tmp_path / "a"], tmp_path / "one")
    for k, v in _weights(tmp_path / "one").items():
        np.testing.assert_array_equal(v, wa[k])
    export(soup, tmp_path / "enc", "inference-free")
    assert load_encoder(tmp_path / "enc", "doc", max_length=24).encode(["the cell of the tower"]).nnz > 0


def test_soup_refuses_what_it_cannot_average(tiny_bert_dir, tmp_path):
    from safetensors.numpy import save_file

    from lsr.train.soup import average_models

    _train(tiny_bert_dir, tmp_path / "a", _config(steps=2), evaluate=None)
    good = tmp_path / "a"
    with pytest.raises(ValueError, match="at least one"):
        average_models([], tmp_path / "s")
    with pytest.raises(ValueError, match="non-negative"):
        average_models([good, good], tmp_path / "s", weights=[1, -1])
    lora = tmp_path / "lora"
    lora.mkdir()
    (lora / "adapter_config.json").write_text("{}")
    with pytest.raises(ValueError, match="LoRA adapter"):
        average_models([good, lora], tmp_path / "s")
    with pytest.raises(ValueError, match=r"has no model\.safetensors"):
        average_models([good, tmp_path], tmp_path / "s")
    odd = tmp_path / "odd"
    odd.mkdir()
    for name in ("config.json", "tokenizer.json", "idf.json"):
        (odd / name).write_bytes((good / name).read_bytes())
    w = _weights(good)
    key = next(iter(w))
    w[key] = np.zeros((3, 3), np.float32)
    save_file(w, str(odd / "model.safetensors"))
    with pytest.raises(ValueError, match=f"tensor {key} is"):
        average_models([good, odd], tmp_path / "s")
    assert not (tmp_path / "s").exists()  # nothing half-written
    assert not list(tmp_path.glob(".s.*"))


def test_resume_with_another_config_is_refused(tiny_bert_dir, tmp_path):
    from lsr.train.trainer import Trainer

    ts = _toy_set()
    qids = ts.trainable(6, 2)
    t = Trainer(tiny_bert_dir, tmp_path / "o", ts, qids, _config(), show_progress=False)
    t.out_dir.mkdir()
    t.save_checkpoint()
    with pytest.raises(ValueError, match="lr"):
        Trainer(tiny_bert_dir, tmp_path / "o", ts, qids, _config(lr=5e-4), show_progress=False).train()


def test_bad_config_and_missing_teacher(tiny_bert_dir, tmp_path):
    from lsr.train.trainer import Trainer

    ts = _toy_set()
    with pytest.raises(ValueError, match="flops must be one of idf, plain, none"):
        Trainer(tiny_bert_dir, tmp_path / "x", ts, list(ts.qrels), _config(flops="l1"))
    with pytest.raises(ValueError, match="eval_every must be >= 1, got 0"):
        Trainer(tiny_bert_dir, tmp_path / "x", ts, list(ts.qrels), _config(eval_every=0))
    with pytest.raises(ValueError, match="no cached scores for teacher"):
        Trainer(tiny_bert_dir, tmp_path / "x", ts, list(ts.qrels), _config(teachers=["dense:other"]))


def test_mlm_head_is_added_to_a_bare_bert(tmp_path):
    from transformers import BertModel

    from lsr.train.model import load_sparse_encoder
    from tests.conftest import save_tiny_model, tiny_bert_config

    enc, info = load_sparse_encoder(save_tiny_model(BertModel(tiny_bert_config()), tmp_path))
    assert info["added_mlm_head"]
    # tied: the projection is the word embedding matrix itself
    assert enc.projection.weight.data_ptr() == enc.model.bert.embeddings.word_embeddings.weight.data_ptr()
    enc.save(tmp_path / "out")
    cfg = json.loads((tmp_path / "out" / "config.json").read_text())
    assert cfg["architectures"] == ["BertForMaskedLM"]
    _, info2 = load_sparse_encoder(tmp_path / "out")
    assert not info2["added_mlm_head"]


def test_added_head_bias_keeps_the_asked_non_zeros(tmp_path):
    """A tied head's bias is set so that the calibration texts keep ``target`` terms each on average:
    without it every term of the vocabulary is on (the tied logits of a bare model are mostly positive)."""
    import torch
    from transformers import BertModel

    from lsr.train.model import calibrate_head_bias, load_sparse_encoder
    from tests.conftest import save_tiny_model, tiny_bert_config

    torch.manual_seed(0)
    enc, _ = load_sparse_encoder(save_tiny_model(BertModel(tiny_bert_config()), tmp_path))
    texts = ["the cell tower", "radio signals travel far", "a phone", "towers and phones and radios"]

    def nnz():
        enc.eval()
        enc.tokenizer.set_max_length(16)
        inputs = enc.tokenizer.pad(enc.tokenizer.encode(texts))
        with torch.no_grad():
            out = enc(torch.from_numpy(inputs.input_ids), torch.from_numpy(inputs.attention_mask))
        return int((out > 0).sum())

    tau = calibrate_head_bias(enc, texts, target_nnz=5, max_length=16)
    assert torch.all(enc.projection.bias == -tau)
    assert nnz() == 4 * 5 - 1  # strictly above the 20th largest max-pooled logit: 19 (no ties)
    calibrate_head_bias(enc, texts, target_nnz=12, max_length=16)
    assert nnz() == 4 * 12 - 1


# -------------------------------------------------------------------------------------------- CLI
def test_cli_names_a_missing_split(tmp_path):
    from plugin.cli import main

    (tmp_path / "qrels").mkdir()
    (tmp_path / "corpus.jsonl").write_text('{"_id": "d1", "text": "cell"}\n')
    (tmp_path / "queries.jsonl").write_text('{"_id": "q1", "text": "cell"}\n')
    (tmp_path / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td1\t1\n")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "plugin.cli",
            "train",
            str(tmp_path),
            str(tmp_path / "out"),
            "--data",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2
    assert "train.tsv is missing" in proc.stderr and "splits there: test" in proc.stderr
    assert main is not None


def _tiny_beir(directory: Path, n_docs: int = 40, n_queries: int = 14) -> Path:
    rng = np.random.default_rng(3)
    docs = [" ".join(rng.choice(TINY_WORDS, size=int(rng.integers(6, 14)))) for _ in range(n_docs)]
    (directory / "qrels").mkdir(parents=True)
    with open(directory / "corpus.jsonl", "w") as f:
        for i, t in enumerate(docs):
            title = " ".join(t.split()[-2:]) if i >= n_docs - 5 else ""  # five titled documents
            f.write(json.dumps({"_id": f"d{i}", "title": title, "text": t}) + "\n")
    with open(directory / "queries.jsonl", "w") as f:
        for q in range(n_queries):
            f.write(json.dumps({"_id": f"q{q}", "text": " ".join(docs[q].split()[:3])}) + "\n")
    rows = "".join(f"q{q}\td{q}\t1\n" for q in range(n_queries))
    (directory / "qrels" / "train.tsv").write_text("query-id\tcorpus-id\tscore\n" + rows)
    (directory / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\n" + rows)
    return directory


def test_lsr_train_end_to_end_through_export_index_search(tiny_bert_dir, tmp_path, capsys):
    """`lsr train` mines with a native index, scores a sparse and a dense teacher, trains and writes a
    model that `lsr export`, `lsr index`, `lsr search` and `lsr eval` take as they are."""
    from plugin.cli import main

    data = _tiny_beir(tmp_path / "beir")
    out = tmp_path / "model"
    args = [
        "train",
        str(tiny_bert_dir),
        str(out),
        "--data",
        str(data),
        "--steps",
        "4",
        "--batch-size",
        "4",
        "--negatives",
        "2",
        "--depth",
        "8",
        "--max-length",
        "24",
        "--query-max-length",
        "8",
        "--dev-queries",
        "3",
        "--eval-every",
        "2",
        "--cache",
        str(tmp_path / "cache"),
        "--teachers",
        f"sparse:{tiny_bert_dir}",
        f"dense:{tiny_bert_dir}",
    ]
    assert main(args) == 0
    summary = json.loads((out / "training.json").read_text())
    assert summary["data"]["teachers"] == [f"sparse:{tiny_bert_dir.name}", f"dense:{tiny_bert_dir.name}"]
    assert summary["train_queries"] == 11 and summary["config"]["teachers"] == summary["data"]["teachers"]
    assert [h["step"] for h in summary["history"]] == [0, 2, 4]
    (cached_file,) = (tmp_path / "cache").glob("training-set-*.json")
    cached = json.loads(cached_file.read_text())
    assert set(cached["teacher_scores"]) == set(summary["data"]["teachers"])
    assert all(len(c) == 8 for c in cached["candidates"].values())
    enc, idx, run = tmp_path / "enc", tmp_path / "idx", tmp_path / "run.trec"
    assert main(["export", str(out), str(enc), "--kind", "inference-free"]) == 0
    vectors = tmp_path / "vectors.jsonl"
    assert main(["encode", str(enc), str(data / "corpus.jsonl"), str(vectors), "--max-length", "24"]) == 0
    assert main(["index", str(vectors), str(idx)]) == 0
    assert (
        main(
            [
                "search",
                str(idx),
                "--encoder",
                str(enc),
                "--topics",
                str(data / "queries.jsonl"),
                "--output",
                str(run),
                "--k",
                "10",
            ]
        )
        == 0
    )
    capsys.readouterr()
    assert main(["eval", str(run), str(data / "qrels" / "test.tsv"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["ndcg@10"] > 0
    # a second call finds the finished model and trains nothing
    assert main(args) == 0
    assert "best dev nDCG@10" in capsys.readouterr().out
    # dev_metrics scores a model on the run's own dev split: its output scores the figure recorded
    from lsr.train.trainer import TrainConfig
    from plugin.train import Teacher, dev_metrics

    teachers = [Teacher.parse(f"sparse:{tiny_bert_dir}"), Teacher.parse(f"dense:{tiny_bert_dir}")]
    again = dev_metrics(
        out,
        tiny_bert_dir,
        data,
        TrainConfig(**summary["config"]),
        teachers=teachers,
        n_dev=3,
        cache=tmp_path / "cache",
    )
    assert again["ndcg@10"] == pytest.approx(summary["best"]["ndcg@10"], abs=1e-9)


@needs_java
def test_bm25_teacher_scores_every_pair_as_anserinis_bm25(tiny_bert_dir, tmp_path):
    """A ``bm25`` teacher caches Anserini's BM25 score of every (query, candidate or judged) pair:
    a query's BM25 hits carry their search scores, the rest their exact scores (0 without a shared term)."""
    from plugin.lucene import BM25Searcher
    from plugin.train import Teacher, build_training_set

    data = _tiny_beir(tmp_path / "beir")
    ts, split = build_training_set(
        data, start=tiny_bert_dir, teachers=[Teacher("bm25")], depth=8, max_length=24, cache=tmp_path / "c"
    )
    assert ts.source["teachers"] == ["bm25"] and ts.source["teacher_dirs"] == ["anserini-bm25-0.9-0.4"]
    (index,) = (tmp_path / "c" / "indexes").glob("bm25-*")
    bm25 = BM25Searcher(index)
    for q, scores in ts.teacher_scores["bm25"].items():
        assert set(scores) == set(dict.fromkeys([*ts.qrels[q], *ts.candidates[q]]))
        hits = {h.docid: h.score for h in bm25.search(split.queries[q], k=len(split.docs))}
        for d, x in scores.items():
            assert x == pytest.approx(hits.get(d, 0.0), abs=1e-4)
    bm25.close()


def test_teacher_spec_errors():
    from plugin.train import Teacher

    assert Teacher.parse("dense:/x/minilm").name == "dense:minilm"
    assert Teacher.parse("bm25") == Teacher("bm25") and Teacher("bm25").name == "bm25"
    for bad in ("cross:/x", "bm25:/x", "sparse:", "dense"):
        with pytest.raises(ValueError, match="sparse:DIR, dense:DIR or bm25"):
            Teacher.parse(bad)


@pytest.mark.slow
def test_demo_shows_a_trained_model(scifact, tiny_bert_dir, tmp_path, capsys):
    from plugin.cli import main

    model = tmp_path / "model"
    _train(tiny_bert_dir, model, _config(steps=2, eval_every=2))
    rc = main(["demo", "--data", str(scifact), "--max-docs", "150", "--work", str(tmp_path / "w"),
               "--model", str(model), "--no-lucene"])  # fmt: skip
    assert rc == 0
    rows = {tuple(line.split()[:2]) for line in capsys.readouterr().out.splitlines() if line.strip()}
    assert {("trained", "native"), ("trained+dense", "native+store"), ("inference-free", "native")} <= rows


def test_title_pseudo_queries_join_the_train_split_only(tmp_path):
    from plugin.train import read_split

    data = _tiny_beir(tmp_path / "beir")
    lines = (data / "corpus.jsonl").read_text().splitlines()
    titled = [
        json.dumps({**json.loads(x), "title": "cell tower" if i < 3 else " "}) for i, x in enumerate(lines)
    ]
    (data / "corpus.jsonl").write_text("\n".join(titled) + "\n")
    plain = read_split(data)
    sp = read_split(data, pseudo="titles")
    assert set(sp.queries) - set(plain.queries) == {"title:d0", "title:d1", "title:d2"}  # titles "" skipped
    assert sp.queries["title:d1"] == "cell tower" and sp.qrels["title:d1"] == {"d1": 1}
    with pytest.raises(ValueError, match="pseudo must be one of none, titles"):
        read_split(data, pseudo="claims")


def test_sentence_pseudo_queries_come_from_document_bodies(tmp_path):
    from plugin.train import pick_sentence, read_split

    data = _tiny_beir(tmp_path / "beir")
    short, long_ = "Too short here.", " ".join(["word"] * 41) + "."
    body = f"{short} Cell towers carry radio signals far away. {long_} Mobile phones reach the nearest tower!"
    with open(data / "corpus.jsonl", "a") as f:
        f.write(json.dumps({"_id": "long", "title": "A title sentence of six words.", "text": body}) + "\n")
    sp = read_split(data, pseudo="sentences")
    fits = {"Cell towers carry radio signals far away.", "Mobile phones reach the nearest tower!"}
    assert sp.queries["sent:long"] in fits
    assert sp.qrels["sent:long"] == {}  # labelled later, by the teachers
    assert pick_sentence("x", short) is None and pick_sentence("x", long_) is None
    sentences = {q for q in sp.queries if q.startswith("sent:")}
    assert len(sentences) == 41  # every tiny document is one 6-13 word sentence, plus "long"
    two = {q for q in read_split(data, pseudo="sentences:2").queries if q.startswith("sent:")}
    assert len(two) == 2 and two <= sentences
    for bad in ("sentences:0", "sentences:x", "sentence", "claims"):
        with pytest.raises(ValueError, match="pseudo must be one of none, titles, sentences, sentences:N"):
            read_split(data, pseudo=bad)


def test_teacher_label_is_the_ensembles_best_candidate():
    from plugin.train import label_with_teachers

    # Min-max per teacher: a -> (1, 0), b -> (0.5, 1), c -> (0, 0.9); means 0.5, 0.75, 0.45.
    scores = {"t1": {"q": {"a": 4.0, "b": 3.0, "c": 2.0}}, "t2": {"q": {"a": 0.1, "b": 0.3, "c": 0.28}}}
    assert label_with_teachers(scores, "q") == "b"
    assert label_with_teachers({"t1": scores["t1"]}, "q") == "a"
    assert label_with_teachers({"flat": {"q": {"a": 1.0, "b": 1.0}}}, "q") == "a"  # a tie: the first


def test_sentence_queries_drop_their_document_and_train(tiny_bert_dir, tmp_path):
    """Each sentence query's own document is not among its candidates; its positive is the
    teacher's best candidate; the queries join the train split (never dev) and training runs."""
    from plugin.train import Teacher, build_training_set, is_pseudo

    data = _tiny_beir(tmp_path / "beir")
    teachers = [Teacher("sparse", tiny_bert_dir)]
    ts, _ = build_training_set(
        data, start=tiny_bert_dir, teachers=teachers, depth=8, max_length=24, cache=tmp_path / "c",
        pseudo="sentences:10",
    )  # fmt: skip
    sent = [q for q in ts.queries if q.startswith("sent:")]
    assert len(sent) == 10 and all(is_pseudo(q) for q in sent) and not is_pseudo("q1")
    table = ts.teacher_scores["sparse:" + tiny_bert_dir.name]
    for q in sent:
        own = q.removeprefix("sent:")
        assert own not in ts.candidates[q] and own not in table[q]
        (positive,) = ts.qrels[q]
        assert table[q][positive] == max(table[q].values())
    from plugin.train import train

    config = _config(steps=2, eval_every=2, teachers=[teachers[0].name], depth=8)
    summary = train(tiny_bert_dir, tmp_path / "model", data, config, teachers=teachers, n_dev=4,
                    cache=tmp_path / "c", show_progress=False, pseudo="sentences:10")  # fmt: skip
    assert summary["train_queries"] == 14 - 4 + 10  # the judged ones less dev, plus every sentence


def test_keep_top_k_is_the_served_top_k_prune_and_only_kept_weights_learn():
    from lsr.sparse import SparseBatch
    from lsr.train.model import keep_top_k

    torch.manual_seed(0)
    rep = torch.relu(torch.randn(5, 40)).requires_grad_()  # continuous: no ties among the kept
    kept = keep_top_k(rep, 6)
    vocab = [f"t{i}" for i in range(40)]
    served = SparseBatch.from_dense(rep.detach().numpy(), vocab).prune("top_k", 6).to_dense()
    np.testing.assert_array_equal(kept.detach().numpy(), served)
    assert int((kept > 0).sum(dim=1).max()) == 6
    kept.sum().backward()
    np.testing.assert_array_equal(rep.grad.numpy(), (served > 0).astype(np.float32))
    assert keep_top_k(rep, 40) is rep


def test_siamese_top_k_trains_and_evaluates_what_a_pruned_encode_serves(tiny_bert_dir, tmp_path):
    from lsr.train.trainer import Trainer

    ts = _toy_set()
    config = _config(kind="splade", steps=2, top_k=5, query_top_k=3, eval_every=2)
    qids = ts.trainable(config.depth, config.negatives)
    trainer = Trainer(tiny_bert_dir, tmp_path / "s", ts, qids, config, show_progress=False)
    summary = trainer.train()
    assert summary["config"]["top_k"] == 5 and summary["config"]["query_top_k"] == 3
    texts = [ts.docs[d] for d in sorted(ts.docs)]
    docs = trainer.encode_documents(texts)
    queries = trainer.encode_queries([ts.queries[q] for q in qids])
    assert docs.row_nnz().max() == 5 and queries.row_nnz().max() == 3
    with torch.inference_mode():  # the same weights unpruned, then pruned as served
        full = trainer._encode(texts, config.max_length)
    assert full.row_nnz().max() > 5
    np.testing.assert_array_equal(docs.to_dense(), full.prune("top_k", 5).to_dense())
    # The training loss reads the pruned vectors too: its FLOPS sees at most 5 terms a document.
    groups = sample_groups(ts, qids, 2, config.negatives, config.depth, seed=0, step=0)
    _, parts = trainer.loss(groups, step=10)
    assert parts["doc_nnz"] <= 5
    with pytest.raises(ValueError, match="query_top_k applies to siamese"):
        _config(query_top_k=3).validate()
    with pytest.raises(ValueError, match="top_k must be >= 1"):
        _config(top_k=0).validate()
