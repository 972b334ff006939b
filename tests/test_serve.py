"""``lsr serve`` as a client sees it: the real uvicorn server in a child process, spoken to over HTTP."""

from __future__ import annotations

import json
import socket
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import pytest

from indexer.native.format import FORMAT_VERSION

pytest.importorskip("fastapi", reason="lsr serve needs the serve extra: pip install 'lsr[serve]'")

from lsr.runtime import load_encoder
from lsr.sparse import SparseBatch
from plugin.cli import main
from plugin.native import NativeSearcher
from plugin.serve_client import ServerProcess, post_json


@pytest.fixture(scope="module")
def server(tiny_index):
    with ServerProcess(tiny_index["index"], tiny_index["encoder"]) as s:
        yield s


@pytest.fixture(scope="module")
def reference(tiny_index):
    """The same index and encoder in this process: what the server must answer."""
    return NativeSearcher(tiny_index["index"]), load_encoder(tiny_index["encoder"], "query", max_length=64)


def get_json(url):
    with urllib.request.urlopen(url, timeout=30) as r:
        assert r.status == 200
        return json.loads(r.read())


def hits(response):
    return [(h["docid"], h["score"]) for h in response["hits"]]


def expected(reference, text=None, vector=None, k=10, **options):
    searcher, encoder = reference
    if text is not None:
        batch = encoder.encode([text])
    else:
        vocab = searcher.index.vocab
        batch = SparseBatch.from_dicts([{t: w for t, w in vector.items() if t in vocab}], vocab)
    return [(h.docid, h.score) for h in searcher.search(batch, k, **options)]


def test_health_reports_index_and_encoder(server, tiny_index):
    health = get_json(server.url + "/health")
    assert health["status"] == "ok"
    index = health["index"]
    assert (
        index["backend"] == "native"
        and index["format"] == "lsr-native"
        and index["format_version"] == FORMAT_VERSION
    )
    assert index["n_docs"] == 60 and index["vocab_size"] > 0
    assert index["build"]["scale"] == 100.0 and "build_seconds" in index["build"]
    assert health["encoder"]["kind"] == "splade" and health["encoder"]["dtype"] == "fp32"
    assert health["encoder"]["max_length"] == 64
    assert health["modes"] == ["exact", "approx", "scan"]
    # Directories by name only: /health does not map the server's file system for its clients.
    assert (
        index["path"] == tiny_index["index"].name and health["encoder"]["path"] == tiny_index["encoder"].name
    )
    assert str(tiny_index["index"].parent) not in json.dumps(health)
    assert health["limits"]["max_body_bytes"] == 1 << 20 and health["connections"]["open"] >= 1


@pytest.mark.parametrize(
    "options", [{}, {"k": 1000}, {"k": 3, "mode": "scan"}, {"k": 5, "mode": "approx", "alpha": 0.5}]
)
def test_text_queries_match_the_native_searcher(server, tiny_index, reference, options):
    for text in tiny_index["texts"]:
        status, body = post_json(server.url + "/search", {"query": text, **options})
        assert status == 200, body
        k = options.get("k", 10)
        rest = {key: v for key, v in options.items() if key != "k"}
        assert hits(body) == expected(reference, text, k=k, **rest)
        assert body["hits"] and set(body["took_ms"]) == {"encode", "search", "verify"}


def test_vector_query_ignores_unknown_tokens(server, reference):
    vocab = reference[0].index.vocab
    vector = {vocab[0]: 1.5, vocab[3]: 0.25, "not-a-token-anywhere": 9.0}
    status, body = post_json(server.url + "/search", {"vector": vector, "k": 7})
    assert status == 200, body
    assert hits(body) == expected(reference, vector=vector, k=7) and body["hits"]
    status, body = post_json(server.url + "/search", {"vector": {"not-a-token-anywhere": 1.0}})
    assert (status, body["hits"]) == (200, [])


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"query": "heart", "k": 0}, "k"),
        ({"query": "heart", "k": 1001}, "k"),
        ({"query": "heart", "vector": {"heart": 1.0}}, "query"),
        ({}, "vector"),
        ({"vector": {"heart": -1.0}}, "heart"),
        ({"vector": {"heart": 0.0}}, "heart"),
        ({"vector": {"heart": float("nan")}}, "heart"),
        ({"vector": {"heart": float("inf")}}, "heart"),
        ({"query": "heart", "mode": "fast"}, "mode"),
        ({"query": "heart", "mode": "approx", "alpha": 0}, "alpha"),
        ({"query": "heart", "mode": "approx", "beta": 1.5}, "beta"),
        ({"query": "heart", "alpha": 0.5}, "alpha"),
        ({"query": "heart", "top": 3}, "top"),
    ],
)
def test_bad_requests_are_422_naming_the_field(server, body, field):
    status, response = post_json(server.url + "/search", body)
    assert status == 422
    assert field in json.dumps(response["detail"])


def test_without_an_encoder_text_is_400_and_vectors_work(tiny_index, reference):
    vocab = reference[0].index.vocab
    with ServerProcess(tiny_index["index"]) as s:
        assert get_json(s.url + "/health")["encoder"] is None
        status, body = post_json(s.url + "/search", {"query": "heart"})
        assert status == 400 and body["detail"].startswith("query:") and "--encoder" in body["detail"]
        status, body = post_json(s.url + "/search", {"vector": {vocab[1]: 2.0}, "k": 4})
        assert status == 200 and hits(body) == expected(reference, vector={vocab[1]: 2.0}, k=4)


def test_sixteen_concurrent_requests_all_get_their_own_answer(server, tiny_index, reference):
    vocab = reference[0].index.vocab
    requests = []
    for i in range(16):
        if i % 2:
            requests.append({"vector": {vocab[i]: 1.0 + i / 10, vocab[i + 20]: 0.5}, "k": 3 + i})
        else:
            requests.append({"query": tiny_index["texts"][i % len(tiny_index["texts"])], "k": 3 + i})
    want = [
        expected(reference, r.get("query"), r.get("vector"), k=r["k"])
        for r in requests  # computed before the requests, in this thread
    ]
    with ThreadPoolExecutor(16) as pool:
        got = list(pool.map(lambda r: post_json(server.url + "/search", r), requests * 4))
    for (status, body), w in zip(got, want * 4, strict=True):
        assert status == 200, body
        assert hits(body) == w


def test_openapi_describes_the_endpoints(server):
    spec = get_json(server.url + "/openapi.json")
    assert {"/search", "/health"} <= set(spec["paths"])
    assert "post" in spec["paths"]["/search"] and "get" in spec["paths"]["/health"]
    schemas = spec["components"]["schemas"]
    assert {"SearchRequest", "SearchResponse", "Health"} <= set(schemas)
    assert {"query", "vector", "k", "mode", "alpha", "beta"} <= set(schemas["SearchRequest"]["properties"])
    assert schemas["SearchRequest"]["properties"]["k"]["maximum"] == 1000
    assert {"400", "413", "415", "422"} <= set(spec["paths"]["/search"]["post"]["responses"])
    # "Exactly one of query or vector", said to people and to schema-driven clients.
    request = schemas["SearchRequest"]
    assert "exactly one of `query`" in request["description"]
    assert [branch["required"] for branch in request["oneOf"]] == [["query"], ["vector"]]
    assert "post" in spec["paths"]["/admin/reload"]


def test_cli_errors_exit_non_zero(tiny_index, tmp_path, capsys):
    assert main(["serve", str(tmp_path / "missing")]) == 2
    assert "lsr serve: error:" in capsys.readouterr().err
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert main(["serve", str(tiny_index["index"]), "--port", str(port)]) == 2
    assert f"cannot listen on 127.0.0.1:{port}" in capsys.readouterr().err


@pytest.fixture(scope="module")
def lucene_index(tiny_index, tmp_path_factory):
    from indexer.java import anserini_jar, find_java
    from indexer.lucene import build_lucene_index

    try:
        find_java()
        anserini_jar()
    except RuntimeError as e:
        pytest.skip(f"Lucene backend unavailable: {e}")
    out = tmp_path_factory.mktemp("lucene") / "index"
    build_lucene_index([tiny_index["vectors"]], out)
    return out


def test_lucene_index_serves_exact_mode_only(lucene_index, tiny_index, reference):
    from plugin.lucene import LuceneSearcher

    encoder = reference[1]
    searcher = LuceneSearcher(lucene_index)
    text = tiny_index["texts"][0]
    want = [(h.docid, h.score) for h in searcher.search(encoder.encode([text]), 10)]
    with ServerProcess(lucene_index, tiny_index["encoder"]) as s:
        health = get_json(s.url + "/health")
        assert health["index"]["backend"] == "lucene" and health["index"]["n_docs"] == 60
        assert health["modes"] == ["exact"]
        assert "/" not in json.dumps(health["index"]["build"]["sources"])  # file names, not paths
        status, body = post_json(s.url + "/search", {"query": text})
        assert status == 200 and hits(body) == want
        # The same quantized problem as the native index: the same scores (ties may order apart).
        assert [score for _, score in want] == [score for _, score in expected(reference, text)]
        token = reference[0].index.vocab[2]
        query = SparseBatch.from_dicts([{token: 1.0}], (token,))
        want = [(h.docid, h.score) for h in searcher.search(query, 10)]
        with ThreadPoolExecutor(8) as pool:
            got = list(pool.map(lambda _: post_json(s.url + "/search", {"vector": {token: 1.0}}), range(8)))
        assert want and all(status == 200 and hits(b) == want for status, b in got)
        status, body = post_json(s.url + "/search", {"query": text, "mode": "approx", "alpha": 0.5})
        assert status == 400 and body["detail"].startswith("mode:") and "native" in body["detail"]
        # A reload re-opens the index on the Lucene thread, between two searches.
        status, body = post_json(s.url + "/admin/reload", {})
        assert status == 200 and body["reloads"] == 1 and body["index"]["backend"] == "lucene"
        with ThreadPoolExecutor(4) as pool:
            got = list(pool.map(lambda _: post_json(s.url + "/search", {"vector": {token: 1.0}}), range(4)))
        assert all(status == 200 and hits(b) == want for status, b in got)


def test_the_listening_socket_says_tcp():
    # asyncio sets TCP_NODELAY on accepted connections only when the socket's proto is TCP; without it a
    # keep-alive client waited out a delayed ACK (~40 ms) on every request.
    from plugin.serve import _bind

    with _bind("127.0.0.1", 0) as sock:
        assert sock.proto == socket.IPPROTO_TCP


def test_native_searcher_is_safe_to_share_between_threads(tiny_index, reference):
    # Queries over two vocabularies (the encoder's and the index's) at once: each thread must get the
    # term mapping of its own query's vocabulary.
    searcher, encoder = reference
    vocab = searcher.index.vocab
    texts = tiny_index["texts"]
    queries = [encoder.encode([t]) for t in texts]
    queries += [SparseBatch.from_dicts([{vocab[i]: 1.0, vocab[i + 7]: 2.0}], vocab) for i in range(5)]
    want = [searcher.search(q, 5) for q in queries]

    def hammer(offset):
        return [searcher.search(queries[(offset + i) % len(queries)], 5) for i in range(200)]

    with ThreadPoolExecutor(8) as pool:
        for offset, got in enumerate(pool.map(hammer, range(8))):
            assert got == [want[(offset + i) % len(queries)] for i in range(200)]


def test_verify_requests_are_bi_granular_over_the_dense_store(
    tiny_index, tiny_bert_dir, exported, tmp_path, server
):
    """A server started with --verify answers {"verify": true} as BiGranularSearcher does."""
    from indexer.encode import encode_corpus
    from indexer.native.build import build_native_index
    from plugin.verify import BiGranularSearcher

    dense_enc = exported(tiny_bert_dir, "dense")
    corpus = tiny_index["index"].parent / "corpus.jsonl"
    dense = tmp_path / "dense.jsonl"
    encode_corpus(load_encoder(dense_enc, "doc", max_length=32), corpus, dense, show_progress=False)
    index = tmp_path / "index"
    build_native_index(index, vector_files=[tiny_index["vectors"]], dense=[dense])
    verifier = BiGranularSearcher(index, dense_enc, candidates=20)
    encoder = load_encoder(tiny_index["encoder"], "query", max_length=64)
    args = ["--verify", str(dense_enc), "--candidates", "20"]
    with ServerProcess(index, tiny_index["encoder"], args=args) as s:
        dense_health = get_json(s.url + "/health")["dense"]
        assert (
            dense_health["dim"] == 32 and dense_health["candidates"] == 20 and dense_health["dtype"] == "fp16"
        )
        for text in tiny_index["texts"]:
            status, body = post_json(s.url + "/search", {"query": text, "k": 5, "verify": True})
            assert status == 200, body
            want = verifier.search(encoder.encode([text]), text, k=5)
            assert [h["docid"] for h in body["hits"]] == [h.docid for h in want]
            assert [h["score"] for h in body["hits"]] == pytest.approx([h.score for h in want], rel=1e-6)
            assert body["took_ms"]["verify"] > 0
        status, body = post_json(s.url + "/search", {"query": "heart", "verify": True, "mode": "scan"})
        assert status == 400 and body["detail"].startswith("mode:")
        status, body = post_json(s.url + "/search", {"vector": {"heart": 1.0}, "verify": True})
        assert status == 422 and "verify" in json.dumps(body["detail"])
        status, body = post_json(s.url + "/search", {"query": "heart"})
        assert status == 200 and body["took_ms"]["verify"] is None
    # A server without --verify says how to get it.
    status, body = post_json(server.url + "/search", {"query": "heart", "verify": True})
    assert status == 400 and body["detail"].startswith("verify:") and "--verify" in body["detail"]
