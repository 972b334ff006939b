"""Smoke runs of the benchmarks at toy sizes, so that they keep working as the library changes.

These check that each benchmark runs end to end and writes its JSON line; they assert no timing.
"""

from __future__ import annotations

import json

import pytest

pytestmark = pytest.mark.slow


def test_search_benchmark_runs_on_a_toy_collection(tmp_path, capsys):
    from bench import search
    from bench.synthetic import QUERY_DATA

    if not QUERY_DATA.is_dir():
        pytest.skip(f"real query vectors not found at {QUERY_DATA}")
    out = tmp_path / "search.jsonl"
    engines = ["scipy", "ours-scan", "ours-exact", "ours-approx"]
    rc = search.main(["--docs", "3000", "--queries", "5", "--engines", *engines, "--out", str(out)])
    assert rc == 0
    records = [json.loads(line) for line in out.read_text().splitlines()]
    exact = [r for r in records if r.get("engine") == "ours-exact"]
    assert {r["queries"] for r in exact} == {"splade", "idf"}
    assert all(r["recall_quantized"] == 1.0 for r in exact)
    assert "ours-exact" in capsys.readouterr().out


def test_encode_benchmark_runs_on_a_few_passages(scifact, tmp_path, capsys):
    from bench import encode

    out = tmp_path / "encode.jsonl"
    assert encode.main(["--docs", "6", "--max-length", "64", "--out", str(out), "--work", str(tmp_path)]) == 0
    (record,) = [json.loads(line) for line in out.read_text().splitlines()]
    assert "onnx-fp32 / torch" in capsys.readouterr().out
    assert record
