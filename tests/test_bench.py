"""Smoke runs of the benchmarks at toy sizes, so that they keep working as the library changes.

These check that each benchmark runs end to end and writes its JSON line; they assert no timing.
"""

from __future__ import annotations

import json

import pytest

from tests.conftest import needs_java

pytestmark = pytest.mark.slow


def test_search_benchmark_runs_on_a_toy_collection(tmp_path, capsys):
    from bench import search
    from bench.synthetic import QUERY_DATA

    if not QUERY_DATA.is_dir():
        pytest.skip(f"real query vectors not found at {QUERY_DATA}")
    out = tmp_path / "search.jsonl"
    engines = ["scipy", "ours-scan", "ours-exact", "ours-approx", "ours-float"]
    argv = ["--corpus", "topical", "--docs", "3000", "--queries", "5", "--engines", *engines]
    assert search.main([*argv, "--out", str(out)]) == 0
    records = [json.loads(line) for line in out.read_text().splitlines()]
    exact = [r for r in records if r.get("engine") == "ours-exact"]
    assert {r["queries"] for r in exact} == {"splade", "idf"}
    assert all(r["recall_quantized"] == 1.0 for r in exact)
    floats = [r for r in records if r.get("engine") == "ours-float"]
    assert len(floats) == 2 and all(r["recall_float"] == 1.0 for r in floats)
    printed = capsys.readouterr().out
    assert "ours-exact" in printed and "ours-float p50" in printed


def test_encode_benchmark_runs_on_a_few_passages(scifact, tmp_path, capsys):
    from bench import encode

    out = tmp_path / "encode.jsonl"
    assert encode.main(["--docs", "6", "--max-length", "64", "--out", str(out), "--work", str(tmp_path)]) == 0
    (record,) = [json.loads(line) for line in out.read_text().splitlines()]
    assert "onnx-fp32 / torch" in capsys.readouterr().out
    assert record


@pytest.mark.slow
def test_encode_benchmark_runs_the_real_decoder(scifact, tmp_path, capsys):
    """SmolLM2-135M with echo through the same three engines: fp32 ONNX keeps torch's weights."""
    from bench import encode
    from tests.conftest import fetch_or_skip

    fetch_or_skip("smollm2-135m", "SmolLM2-135M")
    out = tmp_path / "encode.jsonl"
    argv = ["--model", "smollm2-135m", "--docs", "3", "--max-length", "48", "--batch-size", "2"]
    assert encode.main([*argv, "--out", str(out), "--work", str(tmp_path)]) == 0
    (record,) = [json.loads(line) for line in out.read_text().splitlines()]
    assert (record["model"], record["kind"], record["echo"]) == ("smollm2-135m", "decoder", True)
    assert record["quality"]["fp32_vs_torch_max_abs_diff"] <= 1e-4
    assert record["engines"]["onnx-fp32"]["mean_nnz"] > 1000  # untrained: dense
    assert "onnx-int8 / onnx-fp32" in capsys.readouterr().out


def test_load_benchmark_runs_against_a_tiny_index(tiny_index, tmp_path, capsys):
    from bench import load

    out = tmp_path / "load.jsonl"
    argv = ["--index", str(tiny_index["index"]), "--encoder-dir", str(tiny_index["encoder"])]
    argv += ["--queries", str(tiny_index["queries"]), "--clients", "4", "--seconds", "2", "--out", str(out)]
    assert load.main(argv) == 0
    (record,) = [json.loads(line) for line in out.read_text().splitlines()]
    assert record["errors"] == 0 and record["requests"] > 0 and record["clients"] == 4
    assert record["rss_before_bytes"] > 0 and record["latency_p99_ms"] >= record["latency_p50_ms"]
    assert "req/s" in capsys.readouterr().out


def test_verify_benchmark_runs_on_a_toy_collection(tmp_path, capsys):
    from bench import verify
    from bench.synthetic import QUERY_DATA

    if not QUERY_DATA.is_dir():
        pytest.skip(f"real query vectors not found at {QUERY_DATA}")
    out = tmp_path / "verify.jsonl"
    argv = ["--docs", "3000", "--queries", "5", "--brute-queries", "2", "--dim", "32", "--candidates", "50"]
    assert verify.main([*argv, "--work", str(tmp_path), "--out", str(out)]) == 0
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert {(r["queries"], r["alpha"]) for r in records} == {
        (q, a) for q in ("splade", "idf") for a in (1.0, 0.8)
    }
    assert all(0 <= r["recall_fused"] <= 1 and r["brute_p50_ms"] > 0 for r in records)
    assert all(r["rss_after"]["dense_store_rss"] <= r["dense_store_bytes"] + 4096 for r in records)
    assert "ratio dense brute force" in capsys.readouterr().out


def test_train_step_benchmark_runs_on_a_few_passages(scifact, tmp_path, capsys):
    from bench import train_step

    out = tmp_path / "train_step.jsonl"
    assert train_step.main(["--docs", "2", "--max-length", "32", "--repeat", "1", "--out", str(out)]) == 0
    (record,) = [json.loads(line) for line in out.read_text().splitlines()]
    assert "ratio plain / chunked" in capsys.readouterr().out
    assert record["max_abs_weight_diff"] < 1e-4 and record["max_abs_grad_diff"] < 1e-4


def test_abuse_benchmark_runs_against_a_tiny_index(tiny_index, tmp_path, capsys):
    from bench import abuse

    out = tmp_path / "abuse.jsonl"
    argv = ["--quick", "--index", str(tiny_index["index"]), "--encoder-dir", str(tiny_index["encoder"])]
    assert abuse.main([*argv, "--queries", str(tiny_index["queries"]), "--out", str(out)]) == 0
    (record,) = [json.loads(line) for line in out.read_text().splitlines()]
    assert (
        record["baseline"]["errors"] == 0 and record["abuse"]["errors"] == 0 and record["abuse"]["requests"]
    )
    assert record["attack"]["flood"]["opened"] > 0 and record["server_log_emfile_lines"] == 0
    statuses = {
        k for part in ("bodies", "vectors") for k in record["attack"][part] if k.startswith("status_")
    }
    assert statuses and not statuses & {"status_200", "status_500"}
    assert "ratio p99 abuse / baseline" in capsys.readouterr().out


def test_live_benchmark_runs_on_a_toy_collection(tmp_path, capsys):
    from bench import live
    from bench.synthetic import QUERY_DATA

    if not QUERY_DATA.is_dir():
        pytest.skip(f"real query vectors not found at {QUERY_DATA}")
    out = tmp_path / "live.jsonl"
    argv = ["--docs", "3000", "--changes", "200", "--queries", "8", "--check-queries", "4"]
    argv += ["--selectivities", "0.01", "0.5", "--work", str(tmp_path), "--out", str(out)]
    assert live.main(argv) == 0
    (record,) = [json.loads(line) for line in out.read_text().splitlines()]
    fig = record["figures"]
    assert fig["ok"] and fig["final_live_docs"] == 3000
    assert set(fig["changes"]) == {"convert to live", "append", "delete", "upsert", "merge to 1 segment"}
    assert [f["share"] for f in fig["filters"]] == [0.01, 0.5, None]
    assert all(f["check"]["recall"] == 1.0 for f in fig["filters"])
    # Segments sweep: 1, 4 and 16 segments of the same live documents, scores equal to the merged ones.
    assert {n: w["segments"] for n, w in fig["segments_sweep"].items()} == {"1": 1, "4": 4, "16": 16}
    assert all(w["docs"] == 3000 for w in fig["segments_sweep"].values())
    assert all(fig["checks"][f"sweep {n} seg vs merged"]["recall"] == 1.0 for n in ("1", "4", "16"))
    # Post-filtering: top-k and top-ceil(k / share) (10 / 0.01 = 1000; 10 / 0.5 = 20).
    assert [[p["depth"] for p in f["post_filter"]] for f in fig["filters"]] == [[10, 1000], [10, 20], []]
    assert all(0 <= p["check"]["recall"] <= 1 for f in fig["filters"] for p in f["post_filter"])
    printed = capsys.readouterr().out
    assert "append / full rebuild" in printed and "filtered 1.0% p50 / direct p50" in printed
    assert "16 seg p50 / merged p50" in printed and "filtered 1.0% p50 / post-filter top-1000 p50" in printed
    # The forward store, when the builds take forward=: the same filters on the merged segment with it.
    if fig["forward_store"]["available"]:
        assert fig["forward_store"]["same_order"] and fig["forward_store"]["has_forward"]
        assert all(f["forward"]["check"]["recall"] == 1.0 for f in fig["filters"])
        assert "filtered 1.0% p50 with forward store / without" in printed
    else:
        assert all(f["forward"] is None for f in fig["filters"]) and "forward store: skipped" in printed


@needs_java
def test_train_benchmark_lucene_figures_match_the_native_run(tmp_path):
    """bench.train --lucene: the same vectors in Lucene give the native run's score lists (and, without
    reordering, its docid lists and figures; reordered, the same)."""
    import numpy as np

    from bench.train import _lucene_figures
    from indexer.native.build import build_native_index
    from lsr.sparse import SparseBatch
    from plugin.evaluate import evaluate
    from plugin.native import NativeSearcher

    vocab = tuple(f"t{i}" for i in range(40))
    rng = np.random.default_rng(3)
    # Few distinct weights: score ties are common.
    rows = [
        {
            vocab[j]: float(rng.choice([0.5, 1.0, 2.0]))
            for j in rng.choice(40, rng.integers(1, 6), replace=False)
        }
        for _ in range(400)
    ]
    vectors = tmp_path / "v.jsonl"
    vectors.write_text(
        "".join(json.dumps({"id": f"d{i}", "contents": "", "vector": v}) + "\n" for i, v in enumerate(rows))
    )
    queries = SparseBatch.from_dicts(
        [{vocab[j]: 1.0 for j in rng.choice(40, 3, replace=False)} for _ in range(12)], vocab
    )
    qids = [f"q{i}" for i in range(12)]
    qrels = {q: {f"d{int(rng.integers(400))}": 1} for q in qids}
    build_native_index(tmp_path / "native", vector_files=[vectors], reorder="none", block_size=16)
    hits = NativeSearcher(tmp_path / "native").batch_search(queries, k=100)
    native = dict(zip(qids, hits, strict=True))
    fig = _lucene_figures(vectors, tmp_path / "lucene", queries, native, qrels)
    assert fig["lucene_score_lists_differ"] == 0 and fig["lucene_docid_lists_differ"] == 0
    assert fig["lucene_ndcg@10"] == evaluate(native, qrels)["ndcg@10"]
    # A reordered native index breaks ties by input position too (its stored tie order): the same lists.
    build_native_index(tmp_path / "bp", vector_files=[vectors], reorder="bp", block_size=16)
    bp = dict(zip(qids, NativeSearcher(tmp_path / "bp").batch_search(queries, k=100), strict=True))
    fig = _lucene_figures(vectors, tmp_path / "lucene", queries, bp, qrels)
    assert fig["lucene_score_lists_differ"] == 0 and fig["lucene_docid_lists_differ"] == 0
