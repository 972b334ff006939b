"""Sharded native indexes: documents split by a hash of their ids, searched shard by shard and merged;
exact search equals one index of the same input (reordered or not) hit for hit."""

from __future__ import annotations

import json

import numpy as np
import pytest

from indexer.native.build import build_native_index
from indexer.shards import build_sharded_index, open_sharded, shard_of
from lsr.sparse import SparseBatch
from plugin.cli import main
from plugin.evaluate import read_run
from plugin.native import NativeSearcher
from plugin.options import InvalidOption
from plugin.searcher import Searcher
from plugin.sharded import ShardedSearcher

VOCAB = tuple(f"t{i}" for i in range(50))


def random_vectors(rng, n, levels=(0.5, 1.0, 2.0)):
    out = []
    for _ in range(n):
        terms = rng.choice(len(VOCAB), rng.integers(0, 8), replace=False)  # some empty: skipped
        out.append({VOCAB[t]: float(rng.choice(levels)) for t in terms})
    return out


def write(path, docs):
    with open(path, "w") as f:
        for i, v in docs.items():
            f.write(json.dumps({"id": i, "vector": v}) + "\n")
    return path


def test_the_shard_rule_is_stable_and_spreads_ids():
    assert [shard_of(f"doc{i}", 4) for i in range(6)] == [shard_of(f"doc{i}", 4) for i in range(6)]
    counts = np.bincount([shard_of(f"doc{i}", 7) for i in range(7000)], minlength=7)
    assert counts.min() > 800, counts
    assert shard_of("doc1", 1) == 0


@pytest.mark.parametrize("seed", range(5))
def test_sharded_exact_search_equals_one_index_hit_for_hit(tmp_path, seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(20, 300))
    docs = {f"d{i}": v for i, v in enumerate(random_vectors(rng, n))}
    vectors = write(tmp_path / "v.jsonl", docs)
    single = tmp_path / "single"
    build_native_index(single, vector_files=[vectors], reorder="none", block_size=4)
    bp = tmp_path / "bp"
    build_native_index(bp, vector_files=[vectors], block_size=4)
    one, reordered = NativeSearcher(single, scan_below=0), NativeSearcher(bp, scan_below=0)
    queries = random_vectors(rng, 15)
    for n_shards in range(1, 8):
        out = tmp_path / f"s{n_shards}"
        manifest = build_sharded_index(out, [vectors], n_shards, threads=2, block_size=4)
        assert manifest["n_docs"] == len(one)
        sharded = ShardedSearcher(out, scan_below=0)
        assert len(sharded) == len(one)
        for query in queries:
            q = SparseBatch.from_dicts([query], VOCAB)
            for k in (1, 10, n):  # k past a shard's size, and past the index's
                want = one.search(q, k)
                assert sharded.search(q, k) == want, (n_shards, k)
                assert reordered.search(q, k) == want  # ties by input position there too
            for mode, kw in (("scan", {}), ("approx", {"alpha": 1.0})):
                assert sharded.search(q, 10, mode=mode, **kw) == one.search(q, 10)
        batch = SparseBatch.from_dicts(queries, VOCAB)
        assert sharded.batch_search(batch, 10, threads=2) == one.batch_search(batch, 10)
        allowed = set(list(docs)[::3])
        for query in queries[:5]:
            q = SparseBatch.from_dicts([query], VOCAB)
            want = [h for h in one.search(q, len(docs)) if h.docid in allowed][:10]
            assert sharded.search(q, 10, filter=allowed) == want
        sharded.close()


def test_each_document_lands_in_its_shard_with_its_input_position(tmp_path):
    rng = np.random.default_rng(3)
    docs = {f"x{i}": v or {"t1": 1.0} for i, v in enumerate(random_vectors(rng, 100))}
    manifest = build_sharded_index(tmp_path / "ix", [write(tmp_path / "v.jsonl", docs)], 3)
    assert manifest["rule"] == "blake2b-64 mod n" and manifest["quantization"] == "lsr"
    _, opened = open_sharded(tmp_path / "ix")
    order = list(docs)
    for s, (index, ordinals) in enumerate(opened):
        ids = index.docids(range(index.n_docs))
        assert all(shard_of(i, 3) == s for i in ids)
        assert [order[o] for o in ordinals.tolist()] == ids


def test_integer_impacts_stay_given_in_every_shard(tmp_path):
    docs = {f"d{i}": {"t1": 3 + i % 4, "t2": 1} for i in range(40)}
    manifest = build_sharded_index(tmp_path / "ix", [write(tmp_path / "v.jsonl", docs)], 4)
    assert manifest["quantization"] == "given" and manifest["scale"] is None
    hits = ShardedSearcher(tmp_path / "ix").search(SparseBatch.from_dicts([{"t1": 1.0}], VOCAB), 3)
    assert [h.score for h in hits] == [6.0 * 100] * 3
    # Whole numbers in a float file stay floats in every shard (one quantization rule).
    floats = {f"d{i}": ({"t1": 2} if i % 2 else {"t1": 0.5}) for i in range(40)}
    path = tmp_path / "f.jsonl"
    write(path, floats)
    manifest = build_sharded_index(tmp_path / "fx", [path], 8)
    assert manifest["quantization"] == "lsr"
    top = ShardedSearcher(tmp_path / "fx").search(SparseBatch.from_dicts([{"t1": 1.0}], VOCAB), 1)
    assert top[0].score == 200 * 100


def test_bad_input_names_what_and_where(tmp_path):
    path = write(tmp_path / "v.jsonl", {"a": {"t1": 1.0}})
    with open(path, "a") as f:
        f.write(json.dumps({"id": "a", "vector": {"t2": 1.0}}) + "\n")
    with pytest.raises(ValueError, match=r"v.jsonl:2: duplicate id 'a' \(first at .*v.jsonl:1\)"):
        build_sharded_index(tmp_path / "ix", [path], 2)
    assert not (tmp_path / "ix").exists()
    with pytest.raises(ValueError, match="n_shards must be an integer >= 1"):
        build_sharded_index(tmp_path / "ix", [path], 0)


def test_cli_builds_and_searches_a_sharded_index(tmp_path, capsys):
    rng = np.random.default_rng(8)
    docs = {f"d{i}": v for i, v in enumerate(random_vectors(rng, 200))}
    vectors = write(tmp_path / "v.jsonl", docs)
    topics = tmp_path / "topics.jsonl"
    with open(topics, "w") as f:
        for i, q in enumerate(random_vectors(rng, 10)):
            f.write(json.dumps({"id": f"q{i}", "vector": q or {"t1": 1.0}}) + "\n")
    assert main(["index", str(vectors), str(tmp_path / "sh"), "--shards", "3", "--threads", "2"]) == 0
    assert "in 3 shards" in capsys.readouterr().out
    assert main(["index", str(vectors), str(tmp_path / "one"), "--reorder", "none"]) == 0
    for ix in ("sh", "one"):
        argv = [
            "search",
            str(tmp_path / ix),
            "--topics",
            str(topics),
            "--output",
            str(tmp_path / f"{ix}.trec"),
        ]
        assert main([*argv, "--k", "50"]) == 0
    assert read_run(tmp_path / "sh.trec") == read_run(tmp_path / "one.trec")
    s = Searcher(tmp_path / "sh")
    assert s.sharded and len(s) == len(Searcher(tmp_path / "one"))
    with pytest.raises(InvalidOption) as e:
        s.search({"t1": 1.0}, 5, filter={"where": {"year": 1}})
    assert e.value.field == "filter.where"
    s.close()
    assert main(["index", str(vectors), str(tmp_path / "x"), "--shards", "2", "--append"]) == 2
    assert "--shards builds a static sharded index" in capsys.readouterr().err


def test_the_service_answers_from_a_sharded_index(tmp_path):
    pytest.importorskip("fastapi", reason="lsr serve needs the serve extra: pip install 'lsr[serve]'")
    from plugin.serve import SearchService

    rng = np.random.default_rng(12)
    docs = {f"d{i}": v for i, v in enumerate(random_vectors(rng, 150))}
    vectors = write(tmp_path / "v.jsonl", docs)
    build_sharded_index(tmp_path / "sh", [vectors], 4)
    build_native_index(tmp_path / "one", vector_files=[vectors], reorder="none")
    service = SearchService(tmp_path / "sh")
    health = service.health().index
    assert health.format == "lsr-sharded" and health.n_docs == len(NativeSearcher(tmp_path / "one"))
    one = Searcher(tmp_path / "one")
    for query in random_vectors(rng, 8):
        if query:
            hits, *_ = service.search(vector=query, k=10)
            assert hits == one.search(query, 10)
    assert service.reload() >= 0
    service.close()


@pytest.mark.slow
def test_sharded_equals_one_index_on_scifact_through_the_cli(scifact, tmp_path, capsys):
    """The real SPLADE's SciFact vectors (cached, shared with lsr demo), 4 shards vs one index, through
    `lsr index` and `lsr search`: the same run, hit for hit, and the pinned inference-free quality."""
    from indexer.corpus import read_qrels
    from plugin.evaluate import evaluate
    from plugin.prepare import prepare

    p = prepare(scifact)
    qrels = scifact / "qrels" / "test.tsv"
    assert main(["index", str(p.vectors), str(tmp_path / "one"), "--reorder", "none"]) == 0
    assert main(["index", str(p.vectors), str(tmp_path / "sh"), "--shards", "4", "--threads", "2"]) == 0
    runs = {}
    for ix in ("one", "sh"):
        out = tmp_path / f"{ix}.trec"
        argv = [
            "search",
            str(tmp_path / ix),
            "--encoder",
            str(p.free),
            "--topics",
            str(scifact / "queries.jsonl"),
        ]
        assert main([*argv, "--qrels", str(qrels), "--output", str(out), "--k", "100", "--threads", "2"]) == 0
        runs[ix] = read_run(out)
    assert len(runs["sh"]) == 300 and runs["sh"] == runs["one"]
    got = evaluate(runs["sh"], read_qrels(qrels), ["ndcg@10"])
    assert got["ndcg@10"] == pytest.approx(0.6515, abs=5e-4)


def test_verification_across_shards_equals_one_index(tmp_path):
    """Each shard gets its own dense store (the dense vectors split by the same rule); bi-granular
    search over the shards fuses their global candidates once: one index's answer."""
    from plugin.live import LiveBiGranularSearcher
    from plugin.verify import BiGranularSearcher

    rng = np.random.default_rng(21)
    docs = {f"d{i}": v or {"t1": 1.0} for i, v in enumerate(random_vectors(rng, 200))}
    vectors = write(tmp_path / "v.jsonl", docs)
    with open(tmp_path / "d.jsonl", "w") as f:
        for i in docs:
            f.write(json.dumps({"id": i, "vector": rng.normal(size=8).round(3).tolist()}) + "\n")
    build_native_index(tmp_path / "one", vector_files=[vectors], reorder="none", dense=[tmp_path / "d.jsonl"])
    assert (
        main(
            [
                "index",
                str(vectors),
                str(tmp_path / "sh"),
                "--shards",
                "3",
                "--dense",
                str(tmp_path / "d.jsonl"),
            ]
        )
        == 0
    )
    one = BiGranularSearcher(tmp_path / "one", candidates=30)
    sharded = ShardedSearcher(tmp_path / "sh")
    across = LiveBiGranularSearcher(sharded, candidates=30)
    for query in random_vectors(rng, 12):
        q = SparseBatch.from_dicts([query or {"t2": 1.0}], VOCAB)
        dense = rng.normal(size=8).astype(np.float32)
        got, want = across.search(q, dense, 10), one.search(q, dense, 10)
        assert [h.docid for h in got] == [h.docid for h in want]
        np.testing.assert_allclose([h.score for h in got], [h.score for h in want], rtol=1e-6)
    sharded.close()
