"""bench/search.py's recall@k / latency PNG, drawn from fake records shaped as the ones it appends."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench import search

MACHINE = {"machine": "x86_64", "cpu_count": 16, "cpus_usable": 16}


def record(engine: str, setting: str, queries: str, recall: float, p50: float, **extra) -> dict:
    """One ``kind: engine`` record, with the keys :func:`bench.search.run` writes that the plot reads."""
    exact = extra.pop("exact", False)
    return {
        "bench": "search",
        "corpus": "realseed",
        "docs": 5000,
        "k": 10,
        "kind": "engine",
        "engine": engine,
        "setting": setting,
        "params": {},
        "exact": exact,
        "problem": "quantized",
        "collection": "main",
        "collection_docs": 5000,
        "queries": queries,
        "n_queries": 20,
        "mean_ms": p50 * 1.1,
        "p50_ms": p50,
        "p99_ms": p50 * 3,
        "recall_float": recall,
        "recall_quantized": recall,
        "recall_own": recall,
        "machine": MACHINE,
        **extra,
    }


def fake_records() -> list[dict]:
    rows = []
    for qname in ("splade", "idf"):
        rows.append(record("scipy", "exhaustive", qname, 1.0, 4.0, exact=True))
        rows.append(record("ours-exact", "exact", qname, 1.0, 0.8, exact=True))
        # Out of recall order on purpose: the curve must sort them.
        for alpha, recall, p50 in ((0.8, 0.97, 0.2), (1.0, 1.0, 0.5), (0.9, 0.995, 0.3)):
            rows.append(record("ours-approx", f"alpha={alpha}", qname, recall, p50))
        rows.append(record("ours-approx", "cut=10,depth=100", qname, 0.992, 0.1))
        for qcut, recall, p50 in ((3, 0.90, 0.1), (10, 0.99, 0.25), (5, 0.96, 0.15)):
            rows.append(record("seismic", f"qcut={qcut} hf=0.9", qname, recall, p50))
    rows.append({"bench": "search", "kind": "summary", "queries": {"splade": 20, "idf": 20}})
    return rows


def test_curves_group_by_query_set_and_sort_each_engine_by_recall():
    panels = search.curves(fake_records())
    assert list(panels) == [("realseed", 5000, "splade"), ("realseed", 5000, "idf")]
    seismic = panels[("realseed", 5000, "idf")]["seismic"]
    assert [r["setting"] for r in seismic] == ["qcut=3 hf=0.9", "qcut=5 hf=0.9", "qcut=10 hf=0.9"]
    approx = panels[("realseed", 5000, "splade")]["ours-approx (alpha)"]
    assert [r["recall_own"] for r in approx] == [0.97, 0.995, 1.0]
    # Each of ours-approx's knobs is a line of its own.
    assert [r["setting"] for r in panels[("realseed", 5000, "splade")]["ours-approx (cut)"]] == [
        "cut=10,depth=100"
    ]
    assert len(panels[("realseed", 5000, "splade")]["ours-exact"]) == 1


def test_plot_curves_writes_a_png(tmp_path):
    pytest.importorskip("matplotlib")
    path = tmp_path / "sub" / "search.png"
    drawn = search.plot_curves(fake_records(), path)
    assert drawn == ["scipy", "ours-exact", "ours-approx (alpha)", "ours-approx (cut)", "seismic"]
    data = path.read_bytes()
    assert data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) > 10_000


def test_plot_curves_rejects_rows_without_recall(tmp_path):
    rows = [{**r, "recall_own": None} for r in fake_records() if r["kind"] == "engine"]
    rows.append({"bench": "search", "kind": "summary"})
    path = tmp_path / "search.png"
    with pytest.raises(ValueError, match="recall_own"):
        search.plot_curves(rows, path)
    with pytest.raises(ValueError, match="recall_own"):
        search.plot_curves([], path)
    assert not path.exists()


def test_plot_path_follows_out_unless_turned_off():
    assert search.parse_args(["--out", "/tmp/x/run.jsonl"]).plot == Path("/tmp/x/run.png")
    assert search.parse_args([]).plot.name == "search.png"
    assert search.parse_args(["--plot", "/tmp/p.png"]).plot == Path("/tmp/p.png")
    assert search.parse_args(["--plot", ""]).plot is None
    assert search.parse_args(["--no-plot"]).plot is None
