"""bench/scaleout.py on a toy collection (Ray in this process: it runs in its own, tests/test_ray.py)."""

from __future__ import annotations

import json

import pytest


def test_scaleout_benchmark_runs_on_a_toy_collection(tmp_path, capsys):
    pytest.importorskip("ray")
    pytest.importorskip("psutil")
    from bench import scaleout
    from bench._context import SCIFACT
    from bench.synthetic import QUERY_DATA

    if not QUERY_DATA.is_dir():
        pytest.skip(f"real query vectors not found at {QUERY_DATA}")
    out = tmp_path / "scaleout.jsonl"
    argv = ["--docs", "3000", "--encode-docs", "50", "--queries", "20", "--pings", "20", "--repeat", "1"]
    assert scaleout.main([*argv, "--work", str(tmp_path), "--out", str(out)]) == 0
    (record,) = [json.loads(line) for line in out.read_text().splitlines()]
    assert record["ok"] and all(c["ok"] for c in record["checks"].values())
    builds = {"one index", "shards, threads", "shards, Ray tasks", "one index, reorder none"}
    assert set(record["builds"]) == builds
    assert [s["n_docs"] > 0 for s in record["builds"]["shards, threads"]["shards"]] == [True] * 4
    assert record["build_checks"]["Ray-built shards equal the thread-built ones"]["equal"] == 4
    assert {"4 shards, threads", "4 shards, Ray actors", "largest shard alone"} <= set(record["searchers"])
    assert record["fanout"]["ray_ping_one"]["p50_ms"] > 0 and record["capacity"]["shards"] >= 1
    printed = capsys.readouterr().out
    assert "topical generator" in printed and "capacity:" in printed
    assert "4 shards, threads p50 / one index p50" in printed and "fan-out cost: Ray per query" in printed
    if (SCIFACT / "corpus.jsonl").is_file():  # the encode part: single process vs Ray, same bytes
        runs = record["encode"]["runs"]
        assert set(runs) == {"single-process", "ray-1", "ray-2"}
        assert all(r["same_bytes"] and r["docs"] == 50 for r in runs.values())
        assert "ray 2 workers docs/s / ray 1 worker docs/s" in printed
    else:
        assert "skipped" in record["encode"] and "encode: skipped" in printed
