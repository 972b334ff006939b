"""The ``lsr`` command line as a user drives it: export, encode (resume, bad input), eval, demo."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys

import pytest

from indexer.jsonvector import read_vectors
from plugin.cli import main

CORPUS = [
    {"_id": "d1", "title": "Blood", "text": "the heart and the blood"},
    {"_id": "d2", "title": "", "text": "a tower in paris"},
    {"_id": "d3", "title": "Cells", "text": "the cell of a mouse " * 30},
    {"_id": "d4", "title": "", "text": "   "},
    {"_id": "d5", "text": "cancer risk in the study"},
]


def write_corpus(path, records=CORPUS):
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


@pytest.fixture
def encoder_dir(tiny_bert_dir, exported):
    return exported(tiny_bert_dir, "splade")


def vectors(path):
    return dict(read_vectors(path))


@pytest.mark.parametrize("suffix", [".jsonl", ".jsonl.gz"])
def test_encode_writes_every_record_and_resumes_after_a_crash(encoder_dir, tmp_path, suffix, capsys):
    corpus = write_corpus(tmp_path / "corpus.jsonl")
    out = tmp_path / f"vectors{suffix}"
    assert main(["encode", str(encoder_dir), str(corpus), str(out), "--batch-size", "2"]) == 0
    full = vectors(out)
    assert list(full) == ["d1", "d2", "d3", "d4", "d5"]
    assert full["d4"] == {} and all(full[k] for k in ("d1", "d2", "d3", "d5"))
    assert "1 empty, 1 truncated" in capsys.readouterr().out

    # A crash mid-write: keep two complete records and half of the third.
    lines = (gzip.open(out, "rt") if suffix.endswith(".gz") else open(out)).read().splitlines(True)
    torn = "".join(lines[:2]) + lines[2][: len(lines[2]) // 2]
    if suffix.endswith(".gz"):
        # Two complete records in one gzip member, then a member cut short.
        cut = gzip.compress(lines[2].encode())
        out.write_bytes(gzip.compress("".join(lines[:2]).encode()) + cut[: len(cut) // 2])
    else:
        out.write_text(torn)
    assert main(["encode", str(encoder_dir), str(corpus), str(out)]) == 0
    assert "kept 2 from an earlier run" in capsys.readouterr().out
    resumed = vectors(out)
    assert list(resumed) == ["d1", "d2", "d3", "d4", "d5"]
    for k in full:
        assert resumed[k] == pytest.approx(full[k], rel=1e-6)

    # Nothing left to do: a third run writes nothing.
    assert main(["encode", str(encoder_dir), str(corpus), str(out)]) == 0
    assert "wrote 0, kept 5" in capsys.readouterr().out


def test_a_line_that_is_not_json_names_file_and_line(encoder_dir, tmp_path, capsys):
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text('{"_id": "a", "text": "the cell"}\n\n{"_id": "b", "text": oops}\n')
    rc = main(["encode", str(encoder_dir), str(corpus), str(tmp_path / "v.jsonl")])
    assert rc == 2
    assert f"{corpus}:3: not valid JSON" in capsys.readouterr().err


def test_non_utf8_bytes_are_replaced_and_reported(encoder_dir, tmp_path, caplog):
    corpus = tmp_path / "corpus.tsv"
    corpus.write_bytes(b"d1\tthe cell\nd2\tthe \xff\xfe tower\n")
    out = tmp_path / "v.jsonl"
    assert main(["encode", str(encoder_dir), str(corpus), str(out)]) == 0
    assert f"{corpus}: 1 line(s) held bytes that are not UTF-8 (first at line 2)" in caplog.text
    assert "tower" in vectors(out)["d2"]


def test_prune_and_query_side(tiny_bert_dir, exported, tmp_path):
    corpus = write_corpus(tmp_path / "corpus.jsonl")
    out = tmp_path / "v.jsonl"
    enc = exported(tiny_bert_dir, "splade")
    assert main(["encode", str(enc), str(corpus), str(out), "--prune", "top_k:3"]) == 0
    assert all(len(v) <= 3 for v in vectors(out).values())
    assert main(["encode", str(enc), str(corpus), str(tmp_path / "x.jsonl"), "--prune", "top_k:0"]) == 2

    free = exported(tiny_bert_dir, "inference-free", idf={"cell": 1.5, "tower": 2.0})
    queries = write_corpus(tmp_path / "queries.jsonl", [{"_id": "q1", "text": "the tower cell"}])
    qout = tmp_path / "q.jsonl"
    assert main(["encode", str(free), str(queries), str(qout), "--side", "query"]) == 0
    assert vectors(qout) == {"q1": {"cell": 1.5, "tower": 2.0}}


def test_export_cli_with_idf_corpus_and_missing_model(tiny_bert_dir, tmp_path, capsys):
    corpus = write_corpus(tmp_path / "corpus.jsonl")
    out = tmp_path / "if"
    rc = main(
        ["export", str(tiny_bert_dir), str(out), "--kind", "inference-free", "--idf-corpus", str(corpus)]
    )
    assert rc == 0
    idf = json.loads((out / "idf.json").read_text())
    assert idf["paris"] > idf["the"] > 0  # 1 of 5 documents vs 2
    rc = main(["export", str(tmp_path / "nope"), str(tmp_path / "x"), "--kind", "splade"])
    assert rc == 2 and "model directory not found" in capsys.readouterr().err


def test_export_cli_merges_a_lora_adapter_with_an_echo_template(tiny_mistral_dir, tmp_path, capsys):
    from tests.test_export import make_lora_adapter

    make_lora_adapter(tiny_mistral_dir, tmp_path / "adapter")
    out = tmp_path / "dec"
    args = ["export", str(tmp_path / "adapter"), str(out), "--kind", "decoder", "--echo"]
    assert main([*args, "--base", str(tiny_mistral_dir), "--echo-template", "q: {text} again: {text}"]) == 0
    m = json.loads((out / "manifest.json").read_text())
    assert m["echo_template"] == "q: {text} again: {text}"
    assert m["source"]["adapter_merged_into"] == str(tiny_mistral_dir.resolve())
    assert main([*args, "--echo-template", "{text} once"]) == 2
    assert "twice" in capsys.readouterr().err


def test_eval_prints_metrics(tmp_path, capsys):
    run = tmp_path / "run.trec"
    run.write_text("q1 Q0 d1 1 2.0 t\nq1 Q0 d2 2 1.0 t\nq2 Q0 d9 1 1.0 t\n")
    qrels = tmp_path / "qrels.tsv"
    qrels.write_text("query-id\tcorpus-id\tscore\nq1\td2\t1\nq2\td3\t1\nq3\td1\t1\n")
    assert main(["eval", str(run), str(qrels), "--metrics", "mrr@10", "recall@100", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    # q1 finds d2 at rank 2, q2 finds nothing, q3 has no run: both count 0.
    assert result == pytest.approx({"mrr@10": 0.5 / 3, "recall@100": 1 / 3})
    assert main(["eval", str(run), str(qrels), "--metrics", "bogus@3"]) == 2


def test_help_lists_subcommands_with_examples():
    result = subprocess.run(
        [sys.executable, "-m", "plugin.cli", "encode", "--help"], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0
    assert "example:" in result.stdout and "lsr encode" in result.stdout


@pytest.mark.slow
def test_demo_on_a_scifact_slice(scifact, tmp_path, capsys):
    rc = main(["demo", "--data", str(scifact), "--max-docs", "150", "--work", str(tmp_path)])
    assert rc == 0
    out = capsys.readouterr().out
    assert "siamese" in out and "inference-free" in out and "nDCG@10" in out


def test_two_encodes_of_one_output_never_write_a_record_twice(encoder_dir, tmp_path):
    """A second `lsr encode` on the same output waits for the first, then resumes from its lines."""
    words = "the heart blood cell gene protein tower paris city river water brain cancer".split()
    records = [
        {"_id": f"d{i}", "text": " ".join(words[(i + j) % len(words)] for j in range(8))} for i in range(3000)
    ]
    corpus = write_corpus(tmp_path / "corpus.jsonl", records)
    out = tmp_path / "vectors.jsonl.gz"
    cmd = [sys.executable, "-m", "plugin.cli", "encode", str(encoder_dir), str(corpus), str(out)]
    procs = [
        subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)
    ]
    results = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], results
    ids = [json.loads(line)["id"] for line in gzip.open(out, "rt")]
    assert len(ids) == len(set(ids)) == 3000
    assert not list(tmp_path.glob(".*.lock"))
