"""Shards in Ray actors on a local cluster started here: the same hits as in-process shards, and an
actor killed during queries gives a clean error or a retried answer, never a hang, then recovers."""

from __future__ import annotations

import json
import threading
import time

import numpy as np
import pytest

ray = pytest.importorskip("ray", reason="Ray is the lsr[ray] extra: pip install 'lsr[ray]'")

from indexer.shards import build_sharded_index  # noqa: E402
from lsr.sparse import SparseBatch  # noqa: E402
from plugin.ray_shards import RayShardedSearcher, ShardUnavailable  # noqa: E402
from plugin.sharded import ShardedSearcher  # noqa: E402

pytestmark = pytest.mark.slow
VOCAB = tuple(f"t{i}" for i in range(40))


@pytest.fixture(scope="module")
def cluster():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def sharded(tmp_path_factory):
    rng = np.random.default_rng(0)
    d = tmp_path_factory.mktemp("ray-shards")
    with open(d / "v.jsonl", "w") as f:
        for i in range(400):
            terms = rng.choice(len(VOCAB), rng.integers(1, 8), replace=False)
            vec = {VOCAB[t]: float(rng.choice([0.5, 1.0, 2.0])) for t in terms}
            f.write(json.dumps({"id": f"d{i}", "vector": vec}) + "\n")
    build_sharded_index(d / "ix", [d / "v.jsonl"], 3, block_size=8)
    queries = [{VOCAB[t]: 1.0 for t in rng.choice(len(VOCAB), 3, replace=False)} for _ in range(20)]
    return d / "ix", queries


def test_actors_answer_as_in_process_shards(cluster, sharded):
    ix, queries = sharded
    local = ShardedSearcher(ix)
    remote = RayShardedSearcher(ix, deadline_s=30)
    try:
        assert remote.health() == {"shard-0": "ok", "shard-1": "ok", "shard-2": "ok"}
        for q in queries:
            for k in (1, 10, 400):
                assert remote.search(q, k) == local.search(SparseBatch.from_dicts([q], VOCAB), k)
        batch = remote.batch_search(queries, 10)
        assert remote.search(SparseBatch.from_dicts([queries[0]], VOCAB), 10) == batch[0]
        assert batch == local.batch_search(SparseBatch.from_dicts(queries, VOCAB), 10)
    finally:
        remote.close()
        local.close()


def test_a_killed_shard_actor_fails_cleanly_or_retries_then_recovers(cluster, sharded):
    ix, queries = sharded
    local = ShardedSearcher(ix)
    want = {i: local.search(SparseBatch.from_dicts([q], VOCAB), 10) for i, q in enumerate(queries)}
    remote = RayShardedSearcher(ix, deadline_s=20)
    outcomes, stop = [], threading.Event()

    def client():
        i = 0
        while not stop.is_set():
            t0 = time.monotonic()
            try:
                hits = remote.search(queries[i % len(queries)], 10)
                outcomes.append(("ok", hits == want[i % len(queries)], time.monotonic() - t0))
            except ShardUnavailable as e:
                outcomes.append(("unavailable", e.shard, time.monotonic() - t0))
            i += 1

    thread = threading.Thread(target=client)
    thread.start()
    try:
        time.sleep(1.0)
        ray.kill(remote.actors[1], no_restart=False)  # dies now, Ray restarts it
        time.sleep(1.0)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and remote.health()["shard-1"] != "ok":
            time.sleep(0.5)
        time.sleep(1.0)
    finally:
        stop.set()
        thread.join(timeout=60)
    assert not thread.is_alive(), "a query hung"
    assert outcomes and all(o[2] < 25 for o in outcomes), "every query ended within the deadline"
    assert all(o[1] is True for o in outcomes if o[0] == "ok"), "every answer is the exact one"
    assert all(o[1] == "shard-1" for o in outcomes if o[0] == "unavailable"), "errors name the shard"
    assert remote.health() == {"shard-0": "ok", "shard-1": "ok", "shard-2": "ok"}
    assert remote.search(queries[0], 10) == want[0], "recovered"
    # A shard that stays down: a clear error naming it, within the deadline.
    ray.kill(remote.actors[2], no_restart=True)
    t0 = time.monotonic()
    with pytest.raises(ShardUnavailable, match="shard shard-2 is down") as e:
        remote.search(queries[0], 10)
    assert e.value.shard == "shard-2" and time.monotonic() - t0 < 20
    assert remote.health()["shard-2"].startswith("unavailable")
    remote.close()
    local.close()


def test_the_service_reports_every_shard_and_answers_503_naming_a_dead_one(cluster, sharded):
    pytest.importorskip("fastapi", reason="lsr serve needs the serve extra: pip install 'lsr[serve]'")
    from fastapi.testclient import TestClient

    from plugin.serve import SearchService, create_app

    ix, queries = sharded
    service = SearchService(ix, ray=True)
    local = ShardedSearcher(ix)
    with TestClient(create_app(service)) as client:
        health = client.get("/health").json()
        assert health["shards"] == {"shard-0": "ok", "shard-1": "ok", "shard-2": "ok"}
        assert health["index"]["format"] == "lsr-sharded"
        body = client.post("/search", json={"vector": queries[0], "k": 10}).json()
        assert "hits" in body, body
        want = local.search(SparseBatch.from_dicts([queries[0]], VOCAB), 10)
        assert [(h["docid"], h["score"]) for h in body["hits"]] == [(h.docid, h.score) for h in want]
        # An actor killed and restarted by Ray: the service answers again once it is back.
        ray.kill(service.searcher.native.actors[1], no_restart=False)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and client.get("/health").json()["shards"]["shard-1"] != "ok":
            time.sleep(0.5)
        again = client.post("/search", json={"vector": queries[0], "k": 10})
        assert again.status_code == 200 and again.json()["hits"] == body["hits"]
        ray.kill(service.searcher.native.actors[0], no_restart=True)
        response = client.post("/search", json={"vector": queries[0], "k": 10})
        assert response.status_code == 503 and "shard shard-0" in response.json()["detail"]
        assert client.get("/health").json()["shards"]["shard-0"].startswith("unavailable")
    local.close()


def test_shards_built_as_ray_tasks_equal_shards_built_in_threads(cluster, sharded, tmp_path):
    from indexer.shards import open_sharded
    from plugin.cli import main

    ix, queries = sharded
    source = ix.parent / "v.jsonl"
    assert (
        main(["index", str(source), str(tmp_path / "r"), "--shards", "3", "--ray", "--block-size", "8"]) == 0
    )
    threads, _ = open_sharded(ix)
    tasks, _ = open_sharded(tmp_path / "r")
    assert [s["n_docs"] for s in tasks["shards"]] == [s["n_docs"] for s in threads["shards"]]
    assert [s["ordinals_sha256"] for s in tasks["shards"]] == [
        s["ordinals_sha256"] for s in threads["shards"]
    ]
    a, b = ShardedSearcher(ix), ShardedSearcher(tmp_path / "r")
    for q in queries:
        batch = SparseBatch.from_dicts([q], VOCAB)
        assert a.search(batch, 10) == b.search(batch, 10)
    a.close()
    b.close()
