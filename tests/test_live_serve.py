"""Live indexes through the product: `lsr index --append/--upsert/--fields`, `lsr delete`, `lsr merge`,
`lsr search --filter`, the Searcher, and `lsr serve` picking up new generations and filtering."""

from __future__ import annotations

import json
import threading
import time

import numpy as np
import pytest

from indexer import live
from lsr.sparse import SparseBatch
from plugin.cli import main
from plugin.evaluate import read_run
from plugin.live import LiveSearcher, internal_order
from plugin.options import InvalidOption
from plugin.searcher import Searcher

VOCAB = tuple(f"t{i}" for i in range(40))


def vectors(rng, n, prefix, fields=True):
    out = {}
    for i in range(n):
        terms = rng.choice(len(VOCAB), rng.integers(2, 8), replace=False)
        rec = {"vector": {VOCAB[t]: float(rng.choice([0.5, 1.0, 2.0])) for t in terms}}
        if fields:
            rec["year"] = int(rng.integers(2000, 2004))
        out[f"{prefix}{i}"] = rec
    return out


def write(path, records):
    with open(path, "w") as f:
        for i, r in records.items():
            f.write(json.dumps({"id": i, **r}) + "\n")
    return path


def topics(path, queries):
    with open(path, "w") as f:
        for i, q in enumerate(queries):
            f.write(json.dumps({"id": f"q{i}", "vector": q}) + "\n")
    return path


def run_of(path):
    return {q: [(d, s) for d, s in hits] for q, hits in read_run(path).items()}


@pytest.fixture()
def corpus(tmp_path):
    rng = np.random.default_rng(0)
    a, b = vectors(rng, 120, "a"), vectors(rng, 30, "b")
    queries = [{VOCAB[t]: 1.0 for t in rng.choice(len(VOCAB), 3, replace=False)} for _ in range(12)]
    return {
        "a": write(tmp_path / "a.jsonl", a),
        "b": write(tmp_path / "b.jsonl", b),
        "records": {**a, **b},
        "topics": topics(tmp_path / "topics.jsonl", queries),
        "queries": queries,
    }


def search_cli(index, topics_file, out, *extra):
    assert (
        main(["search", str(index), "--topics", str(topics_file), "--output", str(out), "--k", "20", *extra])
        == 0
    )
    return read_run(out)


def test_cli_append_delete_merge_and_filter(tmp_path, corpus, capsys):
    ix = tmp_path / "ix"
    assert main(["index", str(corpus["a"]), str(ix), "--fields", "year", "--block-size", "8"]) == 0
    assert main(["index", str(corpus["b"]), str(ix), "--append", "--fields", "year"]) == 0
    assert "generation" in capsys.readouterr().out
    gone = tmp_path / "gone.txt"
    gone.write_text("a1\na2\nb3\nnot-there\n")
    assert main(["delete", str(ix), "--ids", str(gone)]) == 0
    assert "3 documents deleted, 1 not found" in capsys.readouterr().out
    before = search_cli(ix, corpus["topics"], tmp_path / "r1.trec")
    assert not any(d in ("a1", "a2", "b3") for hits in before.values() for d, _ in hits)
    searcher = Searcher(ix)
    assert searcher.live and len(searcher) == 147
    direct = searcher.batch_search(corpus["queries"], [f"q{i}" for i in range(12)], k=20)
    assert {q: [(h.docid, h.score) for h in hits] for q, hits in direct.items()} == before

    filtered = search_cli(ix, corpus["topics"], tmp_path / "r2.trec", "--filter", '{"year": {"gte": 2002}}')
    years = {i: r["year"] for i, r in corpus["records"].items()}
    assert filtered and all(years[d] >= 2002 for hits in filtered.values() for d, _ in hits)
    ids = tmp_path / "ids.txt"
    ids.write_text("\n".join(f"a{i}" for i in range(0, 120, 3)))
    only = search_cli(
        ix, corpus["topics"], tmp_path / "r3.trec", "--filter-ids", str(ids), "--filter", '{"year": 2001}'
    )
    allowed = {f"a{i}" for i in range(0, 120, 3)}
    assert all(d in allowed and years[d] == 2001 for hits in only.values() for d, _ in hits)

    assert main(["merge", str(ix)]) == 0
    assert "1 segment(s)" in capsys.readouterr().out
    after = search_cli(ix, corpus["topics"], tmp_path / "r4.trec")
    assert {q: [s for _, s in h] for q, h in after.items()} == {
        q: [s for _, s in h] for q, h in before.items()
    }
    again = search_cli(ix, corpus["topics"], tmp_path / "r5.trec", "--filter", '{"year": {"gte": 2002}}')
    assert {q: [s for _, s in h] for q, h in again.items()} == {
        q: [s for _, s in h] for q, h in filtered.items()
    }


def test_cli_upsert_replaces_documents(tmp_path, corpus, capsys):
    ix = tmp_path / "ix"
    assert main(["index", str(corpus["a"]), str(ix)]) == 0
    new = write(tmp_path / "new.jsonl", {"a5": {"vector": {"t39": 9.0}}, "z": {"vector": {"t39": 1.0}}})
    assert main(["index", str(new), str(ix), "--append"]) == 2
    assert "already in" in capsys.readouterr().err
    assert main(["index", str(new), str(ix), "--upsert"]) == 0
    assert "2 documents added, 1 replaced" in capsys.readouterr().out
    hits = {h.docid: h.score for h in Searcher(ix).search({"t39": 1.0}, 200)}
    assert hits["a5"] == 900 * 100 and hits["z"] == 100 * 100
    assert sum(1 for i in internal_order(LiveSearcher(ix)) if i == "a5") == 1


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--backend", "lucene", "--append"], "live indexes are native-only"),
        (["--fields-from", "x.jsonl"], "--fields-from needs --fields"),
        (["--append", "--fields", ","], "name at least one field"),
    ],
)
def test_cli_refuses_what_a_live_index_cannot_do(tmp_path, corpus, capsys, argv, message):
    assert main(["index", str(corpus["a"]), str(tmp_path / "ix"), *argv]) == 2
    assert message in capsys.readouterr().err


def test_cli_filter_errors_name_what_is_wrong(tmp_path, corpus, capsys):
    ix = tmp_path / "ix"
    assert main(["index", str(corpus["a"]), str(ix)]) == 0
    out = str(tmp_path / "r.trec")
    base = ["search", str(ix), "--topics", str(corpus["topics"]), "--output", out]
    assert main([*base, "--filter", "{year: 1}"]) == 2
    assert "--filter: not valid JSON" in capsys.readouterr().err
    assert main([*base, "--filter", '{"year": 2001}']) == 2  # a static index stores no fields
    assert "stores no fields" in capsys.readouterr().err
    ids = tmp_path / "ids.txt"
    ids.write_text("a1\na7\n")
    assert main([*base, "--filter-ids", str(ids)]) == 0  # an allow-list works on a static index too
    assert {d for hits in read_run(out).values() for d, _ in hits} <= {"a1", "a7"}


def test_searcher_filters_on_a_live_index(tmp_path, corpus):
    ix = tmp_path / "ix"
    live.append(ix, [corpus["a"]], fields=["year"])
    s = Searcher(ix)
    with pytest.raises(InvalidOption) as e:
        s.search({"t1": 1.0}, 10, filter={"where": {"colour": "red"}})
    assert e.value.field == "filter.where.colour"
    with pytest.raises(InvalidOption) as e:
        s.search({"t1": 1.0}, 10, filter={"idz": ["a1"]})
    assert e.value.field == "filter"
    with pytest.raises(ValueError, match="has no dense store"):
        Searcher(ix, dense_encoder="whatever")
    q = SparseBatch.from_dicts([{"t1": 1.0, "t2": 1.0}], VOCAB)
    assert s.search(q, 10, filter={"ids": []}) == []


def test_verification_through_the_searcher_on_a_live_index(tmp_path, tiny_bert_dir, exported, tiny_index):
    from lsr.runtime import load_encoder
    from plugin.live import LiveBiGranularSearcher

    dense_enc = exported(tiny_bert_dir, "dense")
    lines = tiny_index["vectors"].read_text().splitlines()
    ids = [json.loads(line)["id"] for line in lines]
    embeddings = load_encoder(dense_enc, "doc").encode([f"text of {i}" for i in ids])
    ix = tmp_path / "ix"
    for part in (slice(0, 35), slice(35, None)):
        v, d = tmp_path / f"v{part.start}.jsonl", tmp_path / f"d{part.start}.jsonl"
        v.write_text("\n".join(lines[part]) + "\n")
        d.write_text(
            "".join(
                json.dumps({"id": i, "vector": e.tolist()}) + "\n"
                for i, e in zip(ids[part], embeddings[part], strict=True)
            )
        )
        live.append(ix, [v], dense=[d])
    live.delete(ix, ids[::7])
    s = Searcher(ix, encoder=tiny_index["encoder"], dense_encoder=dense_enc, candidates=20)
    assert s.live and s.verifies
    enc = load_encoder(tiny_index["encoder"], "query", max_length=64)
    ref = LiveBiGranularSearcher(LiveSearcher(ix), dense_enc, candidates=20)
    allowed = set(ids[1::2])
    for text in tiny_index["texts"]:
        timings: dict[str, float] = {}
        hits = s.search(text, k=5, timings=timings)
        assert hits == ref.search(enc.encode([text]), text, k=5)
        assert not {h.docid for h in hits} & set(ids[::7])
        assert {"sparse_encode", "sparse_search", "dense_encode", "score", "fuse"} <= set(timings)
        assert {h.docid for h in s.search(text, k=5, filter={"ids": sorted(allowed)})} <= allowed


pytest.importorskip("fastapi", reason="lsr serve needs the serve extra: pip install 'lsr[serve]'")


def test_service_picks_up_generations_filters_and_merges(tmp_path, corpus):
    from plugin.serve import SearchService

    ix = tmp_path / "ix"
    live.append(ix, [corpus["a"]], fields=["year"])
    service = SearchService(ix, max_segments=1)
    assert service.live and service.health().index.n_docs == 120
    q = {"t1": 1.0, "t5": 2.0}
    hits, *_ = service.search(vector=q, k=10, filter={"ids": None, "where": {"year": 2003}})
    assert hits and all(corpus["records"][h.docid]["year"] == 2003 for h in hits)
    with pytest.raises(InvalidOption) as e:
        service.search(vector=q, k=10, filter={"ids": None, "where": {"year": {"near": 1}}})
    assert e.value.field == "filter.where.year"

    # Readers search while the index changes and the service reloads: no request fails.
    errors, stop = [], threading.Event()

    def reader():
        while not stop.is_set():
            try:
                service.search(vector=q, k=10)
            except Exception as e:  # pragma: no cover - what the test is about
                errors.append(e)

    threads = [threading.Thread(target=reader) for _ in range(2)]
    for t in threads:
        t.start()
    try:
        live.append(ix, [corpus["b"]], fields=["year"])
        assert service.changed()
        service.reload()
        assert service.health().index.n_docs == 150
        assert len(service.health().index.build["segments"]) == 2
        live.delete(ix, ["b0", "b1"])
        service.reload()
        assert service.health().index.n_docs == 148
        assert service.merge_if_needed()  # 2 segments > max_segments 1
        service.reload()
        assert len(service.health().index.build["segments"]) == 1
        assert not service.merge_if_needed()
        time.sleep(0.2)
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert errors == []
    got, *_ = service.search(vector=q, k=10)
    want = Searcher(ix).search(q, 10)
    assert [(h.docid, h.score) for h in got] == [(h.docid, h.score) for h in want]


def test_http_filter_is_validated_with_the_field_named(tmp_path, corpus):
    from plugin.serve_client import ServerProcess, post_json

    ix = tmp_path / "ix"
    live.append(ix, [corpus["a"]], fields=["year"])
    with ServerProcess(ix) as server:
        url = server.url + "/search"
        status, body = post_json(url, {"vector": {"t1": 1.0}, "k": 5, "filter": {"where": {"year": 2001}}})
        assert status == 200 and all(corpus["records"][h["docid"]]["year"] == 2001 for h in body["hits"])
        status, body = post_json(url, {"vector": {"t1": 1.0}, "filter": {"where": {"year": {"near": 3}}}})
        assert status == 400 and "filter.where.year" in body["detail"]
        status, body = post_json(url, {"vector": {"t1": 1.0}, "filter": {"where": {"month": 3}}})
        assert status == 400 and "filter.where.month" in body["detail"]
        status, body = post_json(url, {"vector": {"t1": 1.0}, "filter": {"ids": "a1"}})
        assert status == 422
        # A new generation is picked up by the server on its own (live indexes are watched).
        live.append(ix, [corpus["b"]], fields=["year"])
        deadline = time.time() + 30
        while time.time() < deadline:
            status, body = post_json(url, {"vector": {"t1": 1.0}, "k": 5, "filter": {"ids": ["b0", "b2"]}})
            if body["hits"]:
                break
            time.sleep(0.3)
        assert status == 200 and {h["docid"] for h in body["hits"]} <= {"b0", "b2"} and body["hits"]
