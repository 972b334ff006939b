"""``lsr serve`` under hostile or careless clients: limits, timeouts, strict input, reloads.

Each test pins one finding of an outside probe of the service: half-sent headers held connections
(and file descriptors) forever, bodies had no size limit and 422s echoed them whole, some inputs were
500s, and the server never saw a rebuilt index. The server runs as a child process on loopback with
small limits, so each case is cheap to provoke.
"""

from __future__ import annotations

import http.client
import json
import logging
import shutil
import socket
import threading
import time
import urllib.parse

import pytest

pytest.importorskip("fastapi", reason="lsr serve needs the serve extra: pip install 'lsr[serve]'")

from plugin.serve import ACCEPT_BATCH, FD_RESERVE, RateLimitFilter, _fit_open_files, _preview
from plugin.serve_client import ServerProcess

LIMITS = ["--read-timeout", "1", "--keep-alive-timeout", "1", "--max-body-bytes", "100000"]
LIMITS += ["--max-query-chars", "1000", "--max-vector-terms", "50", "--max-connections", "40"]
# Fewer descriptors than the flood below opens: without a connection cap the server runs out.
NOFILE = 256


@pytest.fixture(scope="module")
def server(tiny_index):
    with ServerProcess(tiny_index["index"], tiny_index["encoder"], args=LIMITS, nofile=NOFILE) as s:
        yield s


def address(server) -> tuple[str, int]:
    u = urllib.parse.urlsplit(server.url)
    return u.hostname, u.port


def request(server, method, path, body=None, headers=None) -> tuple[int, dict, bytes]:
    """``(status, headers, body)`` of one request on its own connection."""
    conn = http.client.HTTPConnection(*address(server), timeout=30)
    try:
        conn.request(method, path, body, headers or {})
        r = conn.getresponse()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
    finally:
        conn.close()


def post(server, body: bytes | dict, content_type="application/json") -> tuple[int, object, bytes]:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    status, _, data = request(server, "POST", "/search", raw, {"Content-Type": content_type})
    return status, json.loads(data.decode("utf-8")), data


def read_until_closed(sock: socket.socket, timeout: float = 10.0) -> bytes:
    """Everything the server sends until it closes the connection (``timeout`` for each read)."""
    sock.settimeout(timeout)
    out = b""
    while True:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            return out
        if not chunk:
            return out
        out += chunk


def health(server) -> dict:
    status, _, data = request(server, "GET", "/health")
    assert status == 200
    return json.loads(data)


# ---------------------------------------------------------------- finding 2: connections
def test_a_half_sent_header_gets_408_and_is_closed_after_the_read_timeout(server):
    with socket.create_connection(address(server)) as s:
        s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        assert read_until_closed(s).startswith(b"HTTP/1.1 408 ")


def test_dripping_a_header_a_byte_at_a_time_does_not_extend_the_deadline(server):
    with socket.create_connection(address(server)) as s:
        s.sendall(b"GET /health HTTP/1.1\r\nX-Slow: ")
        closed = False
        for _ in range(40):  # 10 s of drips; the read timeout is 1 s
            try:
                s.sendall(b"a")
            except OSError:
                closed = True
                break
            time.sleep(0.25)
        assert closed or read_until_closed(s, 1.0).startswith(b"HTTP/1.1 408 ")


def test_a_connection_that_sends_nothing_is_closed_too(server):
    with socket.create_connection(address(server)) as s:
        assert read_until_closed(s).startswith(b"HTTP/1.1 408 ")


def test_an_idle_keep_alive_connection_is_closed(server):
    with socket.create_connection(address(server)) as s:
        s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        answer = read_until_closed(s)  # the answer, then the close once the keep-alive runs out
        assert answer.startswith(b"HTTP/1.1 200 ") and answer.count(b"HTTP/1.1") == 1


def test_a_flood_of_half_sent_headers_beyond_the_file_limit_leaves_the_server_answering(server):
    flood = []
    try:
        for _ in range(3 * NOFILE):
            s = socket.create_connection(address(server))
            s.sendall(b"GET /health HTTP/1.1\r\nX-Slow: ")
            flood.append(s)
        h = health(server)  # a new connection, after the flood
        connections = h["connections"]
        assert connections["open"] <= h["limits"]["max_connections"] == 40
        # Closed at the cap, or by the read timeout when the flood was slower than it.
        assert connections["evicted"] + connections["timed_out"] >= 3 * NOFILE - 40
        status, body, _ = post(server, {"vector": {"heart": 1.0}, "k": 3})
        assert status == 200, body
    finally:
        for s in flood:
            s.close()
    log = server.log_tail(200_000)
    assert "Too many open files" not in log
    # The evictions are logged, but not once per connection.
    assert log.count("connection limit (40) reached") <= 5


def test_the_log_keeps_a_few_of_each_repeated_warning_and_counts_the_rest():
    now = [0.0]
    f = RateLimitFilter(burst=3, window=60.0, clock=lambda: now[0])

    def record(msg, level=logging.ERROR):
        return logging.LogRecord("asyncio", level, __file__, 1, msg, None, None)

    passed = [f.filter(record("socket.accept() out of system resource")) for _ in range(100)]
    assert passed == [True] * 3 + [False] * 97
    assert f.filter(record("another message")) and f.filter(record("info", logging.INFO))
    now[0] = 61.0
    r = record("socket.accept() out of system resource")
    assert f.filter(r) and "97 more like this dropped" in r.msg


def test_the_connection_cap_is_fitted_to_the_open_file_limit(monkeypatch):
    import resource

    monkeypatch.setattr(resource, "getrlimit", lambda _which: (256, 256))
    monkeypatch.setattr(resource, "setrlimit", lambda *_: pytest.fail("cannot raise past the hard limit"))
    connections, batch = _fit_open_files(1024)
    assert 1 <= connections and connections + 2 * batch + FD_RESERVE <= 256
    raised = []
    monkeypatch.setattr(resource, "getrlimit", lambda _which: (1024, 1 << 20))
    monkeypatch.setattr(resource, "setrlimit", lambda _which, limits: raised.append(limits))
    assert _fit_open_files(1024) == (1024, ACCEPT_BATCH)
    assert raised[0][0] >= 1024 + 2 * ACCEPT_BATCH + FD_RESERVE


# ---------------------------------------------------------------- finding 3: sizes
def test_a_content_length_over_the_limit_is_413_before_the_body_is_sent(server):
    with socket.create_connection(address(server)) as s:
        s.sendall(
            b"POST /search HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: 50000000\r\n\r\n"
        )
        answer = read_until_closed(s)
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 413 ") and b"connection: close" in head.lower()
    assert json.loads(body)["detail"].startswith("body: 50000000 bytes is over")


def test_a_chunked_body_over_the_limit_is_413_while_it_streams(server):
    with socket.create_connection(address(server)) as s:
        s.sendall(
            b"POST /search HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n"
        )
        chunk = b'{"query": "' + b"a" * 30_000
        try:
            for _ in range(10):  # 300 KB, three times the limit
                s.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        except OSError:
            pass  # the server answered and closed mid-stream
        assert read_until_closed(s).startswith(b"HTTP/1.1 413 ")


def test_a_chunked_body_within_the_limit_is_answered(server):
    body = json.dumps({"vector": {"heart": 1.0}, "k": 2}).encode()
    with socket.create_connection(address(server)) as s:
        s.sendall(
            b"POST /search HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
        )
        half = len(body) // 2
        s.sendall(b"%x\r\n%s\r\n%x\r\n%s\r\n0\r\n\r\n" % (half, body[:half], len(body) - half, body[half:]))
        answer = read_until_closed(s)
    assert answer.startswith(b"HTTP/1.1 200 ") and b'"hits"' in answer


def test_a_422_echoes_a_bounded_prefix_of_the_input(server):
    status, body, raw = post(server, {"query": "a" * 5000})  # over --max-query-chars 1000
    assert status == 422 and len(raw) < 2000
    (error,) = body["detail"]
    assert error["loc"] == ["body", "query"] and error["type"] == "string_too_long"
    assert error["input"].startswith("aaa") and len(error["input"]) <= 201
    status, body, raw = post(server, {"vector": {f"t{i}": 1.0 for i in range(60)}})  # over 50 terms
    assert status == 422 and body["detail"][0]["loc"] == ["body", "vector"] and len(raw) < 2000
    # One error per bad weight, but a bounded list of them.
    status, body, raw = post(server, {"vector": {f"t{i}" * 50: -1.0 for i in range(50)}})
    assert status == 422 and len(body["detail"]) == 21 and body["detail"][-1]["type"] == "too_many_errors"
    assert len(raw) < 20_000


def test_the_query_and_vector_limits_are_in_the_openapi_spec(server):
    _, _, data = request(server, "GET", "/openapi.json")
    properties = json.loads(data)["components"]["schemas"]["SearchRequest"]["properties"]
    assert {"type": "string", "maxLength": 1000} in properties["query"]["anyOf"]
    assert any(branch.get("maxProperties") == 50 for branch in properties["vector"]["anyOf"])


def test_preview_bounds_what_an_error_echoes():
    assert _preview("x" * 10_000) == "x" * 200 + "…"
    text = _preview({f"token{i}": 1.0 for i in range(200_000)})
    assert text.startswith('{"token0": 1.0, ') and len(text) == 201
    assert _preview(float("nan")) == "nan" and _preview(7) == 7 and _preview(None) is None
    assert _preview("\ud800x") == "\\ud800x"  # a lone surrogate, escaped: the answer must encode


# ---------------------------------------------------------------- finding 4: no 500s
def test_a_weight_beyond_float32_is_422_naming_the_token(server):
    status, body, _ = post(server, b'{"vector": {"heart": 1e300}}')
    assert status == 422 and body["detail"][0]["loc"] == ["body", "vector", "heart"]


@pytest.mark.parametrize(
    ("raw", "field"), [(b'{"query": "\\ud800"}', "query"), (b'{"vector": {"a\\udfffb": 1.0}}', "vector")]
)
def test_a_lone_surrogate_is_422_and_the_answer_is_valid_utf8(server, raw, field):
    status, body, data = post(server, raw)
    assert status == 422 and field in body["detail"][0]["loc"]
    data.decode("utf-8")  # strict: the answer itself encodes


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"query": "heart", "k": True}, "k"),
        ({"query": "heart", "k": "10"}, "k"),
        ({"query": "heart", "k": 2.5}, "k"),
        ({"query": "heart", "verify": 1}, "verify"),
        ({"query": "heart", "mode": "approx", "alpha": "0.5"}, "alpha"),
        ({"vector": {"heart": "1.0"}}, "heart"),
    ],
)
def test_types_are_strict(server, body, field):
    status, response, _ = post(server, body)
    assert status == 422 and field in response["detail"][0]["loc"]


@pytest.mark.parametrize("content_type", ["text/plain", "", "application/x-www-form-urlencoded"])
def test_a_body_that_is_not_json_is_415(server, content_type):
    status, body, _ = post(server, {"query": "heart"}, content_type)
    assert status == 415 and body["detail"].startswith("content-type:")


def test_json_with_a_charset_is_json(server):
    status, body, _ = post(server, {"vector": {"heart": 1.0}}, "application/json; charset=utf-8")
    assert status == 200, body


# ---------------------------------------------------------------- finding 12: the rest
def test_health_names_directories_without_their_paths(server, tiny_index):
    h = health(server)
    assert h["index"]["path"] == "index" and h["encoder"]["path"] == tiny_index["encoder"].name
    assert str(tiny_index["index"].parent) not in json.dumps(h)


def test_docs_pages_are_off_unless_asked_for(server):
    assert request(server, "GET", "/docs")[0] == 404 and request(server, "GET", "/redoc")[0] == 404
    assert request(server, "GET", "/openapi.json")[0] == 200


def test_reload_is_refused_to_a_client_that_is_not_loopback(server):
    # uvicorn believes X-Forwarded-For from a proxy on this host: the request comes from 203.0.113.7.
    status, _, data = request(server, "POST", "/admin/reload", headers={"X-Forwarded-For": "203.0.113.7"})
    assert status == 403 and json.loads(data)["detail"].startswith("reload:")


@pytest.fixture
def rebuildable(tiny_index, tmp_path):
    """An index of the 60 tiny documents at a path of its own, and a 20-document rebuild of it."""
    from indexer.native.build import build_native_index

    lines = tiny_index["vectors"].read_text(encoding="utf-8").splitlines(keepends=True)
    few = tmp_path / "few.jsonl"
    few.write_text("".join(lines[:20]), encoding="utf-8")
    index = tmp_path / "index"
    build_native_index(index, vector_files=[tiny_index["vectors"]])
    return index, lambda: build_native_index(index, vector_files=[few])


def test_reload_swaps_in_a_rebuilt_index_without_failing_requests_in_flight(rebuildable):
    index, rebuild = rebuildable
    with ServerProcess(index, args=["--docs"]) as s:
        assert request(s, "GET", "/docs")[0] == 200 and request(s, "GET", "/openapi.json")[0] == 200
        assert health(s)["index"]["n_docs"] == 60
        statuses, stop = [], threading.Event()

        def hammer():
            while not stop.is_set():
                statuses.append(post(s, {"vector": {"heart": 1.0, "blood": 0.5}, "k": 5})[0])

        threads = [threading.Thread(target=hammer) for _ in range(4)]
        for t in threads:
            t.start()
        try:
            rebuild()
            status, _, data = request(s, "POST", "/admin/reload")
            assert status == 200, data
            reloaded = json.loads(data)
            assert reloaded["reloads"] == 1 and reloaded["index"]["n_docs"] == 20
            time.sleep(0.5)
        finally:
            stop.set()
            for t in threads:
                t.join()
        assert statuses and set(statuses) == {200}
        assert health(s)["index"]["n_docs"] == 20 and health(s)["reloads"] == 1

        # A broken index swapped in: 409, and the previous one is still served.
        broken = index.with_name("broken")
        shutil.copytree(index, broken)
        meta = json.loads((broken / "meta.json").read_text())
        (broken / "meta.json").write_text(json.dumps({**meta, "format_version": 999}))
        index.rename(index.with_name("previous"))
        broken.rename(index)
        status, _, data = request(s, "POST", "/admin/reload")
        assert status == 409 and json.loads(data)["detail"].startswith("index: cannot re-open")
        assert str(index.parent) not in data.decode()
        assert post(s, {"vector": {"heart": 1.0}})[0] == 200 and health(s)["index"]["n_docs"] == 20


def test_reload_on_change_follows_a_rebuild(rebuildable):
    index, rebuild = rebuildable
    with ServerProcess(index, args=["--reload-on-change"]) as s:
        assert health(s)["index"]["n_docs"] == 60
        rebuild()
        deadline = time.monotonic() + 30
        while health(s)["index"]["n_docs"] != 20:
            assert time.monotonic() < deadline, "the server did not re-open the rebuilt index"
            time.sleep(0.2)
        assert health(s)["reloads"] == 1 and post(s, {"vector": {"heart": 1.0}})[0] == 200


@pytest.mark.parametrize(
    ("flag", "value"), [("--read-timeout", "0"), ("--max-body-bytes", "-1"), ("--max-connections", "0")]
)
def test_a_bad_limit_is_an_error_naming_the_flag(tiny_index, capsys, flag, value):
    from plugin.cli import main

    assert main(["serve", str(tiny_index["index"]), flag, value]) == 2
    assert f"lsr serve: error: {flag}:" in capsys.readouterr().err


def test_the_limits_defaults_are_the_ones_the_help_gives(capsys):
    from plugin.cli import main
    from plugin.serve import Limits

    with pytest.raises(SystemExit):
        main(["serve", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for name, value in Limits().model_dump().items():
        shown = f"{value:g}" if isinstance(value, float) else str(value)
        assert f"--{name.replace('_', '-')}" in text and f"[{shown}]" in text, name


def test_evictions_past_their_rate_pause_accepting_until_the_budget_refills(monkeypatch):
    # A real listening socket on a real selector loop: past EVICT_BURST evictions, the loop stops
    # accepting (a connection waits in the kernel's queue), and accepts it once the budget refills.
    import asyncio

    import plugin.serve
    from plugin.serve import EVICT_BURST, ConnectionStats

    monkeypatch.setattr(plugin.serve, "EVICT_RATE", 2.0)  # a pause of 0.5 s: long against the checks

    async def run() -> tuple[int, bool, bool]:
        loop = asyncio.get_running_loop()
        accepted = asyncio.Event()

        class Mark(asyncio.Protocol):
            def connection_made(self, transport):
                accepted.set()
                transport.close()

        server = await loop.create_server(Mark, "127.0.0.1", 0)
        stats = ConnectionStats()
        stats.listen_on(loop, server.sockets)
        assert len(stats.listeners) == 1
        for _ in range(int(EVICT_BURST) + 1):
            stats.closed_at_cap()
        port = server.sockets[0].getsockname()[1]
        client = socket.create_connection(("127.0.0.1", port))  # completes in the kernel's queue
        try:
            await asyncio.sleep(0.1)
            while_paused = accepted.is_set()
            await asyncio.wait_for(accepted.wait(), timeout=5)
        finally:
            client.close()
            server.close()
        return stats.paused, while_paused, accepted.is_set()

    paused, while_paused, after = asyncio.run(run())
    assert paused == 1
    assert not while_paused
    assert after
