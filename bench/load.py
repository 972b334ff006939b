"""Load test of ``lsr serve`` (issue 6): throughput, latency and memory under concurrent clients.

What it does, per query encoder (``--encoder``):

- index: the SciFact native index of the SciFact documents encoded by the real SPLADE-tiny model (the
  vectors and encoders come from :func:`plugin.prepare.prepare`, cached; the index is built once into the
  same cache folder ``lsr demo`` uses), or ``--index DIR`` with ``--encoder-dir`` and ``--queries``;
- encoders: ``siamese`` (the SPLADE-tiny query encoder on onnxruntime, 64 tokens) and ``free`` (the
  inference-free query side: WordPiece tokens weighted by IDF, no model runs);
- starts ``lsr serve`` as a child process on 127.0.0.1 (a free port; loopback only) and waits for
  ``/health`` (the server opens the index and encoder and warms them up before it listens);
- warm-up: each client sends ``--warmup`` requests first (connection set-up, caches), timed apart;
- load: ``--clients`` threads, each on its own keep-alive HTTP connection, send the test queries as text
  (``POST /search {"query", "k", "mode"}``, taken round robin from a shared counter) until ``--seconds``
  have passed or ``--requests`` were sent;
- checks every answer: HTTP 200, a JSON body with hits, and the same hits as the first answer to that
  query (a concurrency bug would show here). Any failure is an error; errors make the exit code 1.

Reported per encoder: requests, errors, throughput (requests/s over the load phase), client-side latency
p50 / p90 / p99 / max (ms, ``perf_counter`` around request and response), the server's own ``took_ms``
medians (encode, search), server CPU seconds per request, and the server's RSS (psutil) before the load
(after start-up and warm-up), after it, and its peak (sampled every 0.2 s). Clients and server share the
machine, so on few cores the clients' own CPU use (reported) takes from the server's. One JSON line per
encoder, with the machine, versions and git state, is appended to ``--out``.

Run from the repository root (quiet machine)::

    .venv/bin/python -m bench.load --clients 16 --seconds 60
    .venv/bin/python -m bench.load --encoder free --clients 16 --seconds 60
"""

from __future__ import annotations

import argparse
import http.client
import itertools
import json
import logging
import platform
import sys
import threading
import time
import urllib.parse
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from bench._context import (
    MB,
    Periodic,
    add_data_argument,
    add_output_arguments,
    append_jsonl,
    fmt,
    machine_info,
    package_version,
    percentile,
    positive_int,
    print_fixed_table,
    psutil_missing,
    record_context,
    scifact_missing,
    setup_logging,
    utc_stamp,
)
from indexer.native.format import is_current

log = logging.getLogger("bench.load")

ENCODERS = ("siamese", "free")
RSS_EVERY_S = 0.2


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m bench.load",
        description="Throughput, latency and memory of `lsr serve` under concurrent clients.",
    )
    p.add_argument("--clients", type=positive_int, default=16, help="client threads (default: %(default)s)")
    p.add_argument(
        "--seconds", type=float, default=60.0, help="load phase per encoder, seconds (default: %(default)s)"
    )
    p.add_argument(
        "--requests",
        type=positive_int,
        default=1_000_000,
        help="at most this many requests per encoder (default: %(default)s)",
    )
    p.add_argument(
        "--warmup", type=int, default=5, help="untimed requests per client first (default: %(default)s)"
    )
    p.add_argument(
        "--encoder",
        nargs="+",
        choices=ENCODERS,
        default=list(ENCODERS),
        help="SciFact query encoders to run, one server each (default: both)",
    )
    p.add_argument("--k", type=positive_int, default=10, help="hits per query (default: %(default)s)")
    p.add_argument("--mode", choices=("exact", "approx", "scan"), default="exact", help="(default: exact)")
    p.add_argument(
        "--threads", type=positive_int, default=None, help="server's onnxruntime threads (default: its own)"
    )
    add_target_arguments(p)
    add_output_arguments(p, "load")
    args = p.parse_args(argv)
    check_target_arguments(p, args)
    if args.seconds <= 0:
        p.error(f"--seconds must be > 0, got {args.seconds}")
    return args


def add_target_arguments(p: argparse.ArgumentParser) -> None:
    """What to serve: ``--data`` (SciFact), or ``--index`` with ``--encoder-dir`` and ``--queries``."""
    add_data_argument(p)
    p.add_argument("--index", type=Path, default=None, help="serve this index instead of SciFact's")
    p.add_argument("--encoder-dir", type=Path, default=None, help="with --index: its query ENCODER_DIR")
    p.add_argument("--queries", type=Path, default=None, help="with --index: queries.jsonl or TSV to send")


def check_target_arguments(p: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    given = [args.index, args.encoder_dir, args.queries]
    if any(given) and not all(given):
        p.error("--index, --encoder-dir and --queries go together")


def missing_requirements(args: argparse.Namespace, log: logging.Logger) -> bool:
    """psutil, and SciFact unless ``--index`` is given: True, with the error logged, when one is missing."""
    return psutil_missing(log) or (args.index is None and scifact_missing(args.data, log))


# ------------------------------------------------------------------ what to serve
@dataclass
class Target:
    name: str
    index: Path
    encoder: Path
    texts: list[str]
    corpus: str


def scifact_targets(args: argparse.Namespace) -> list[Target]:
    from indexer.corpus import read_corpus, read_qrels
    from indexer.native.build import build_native_index
    from plugin.prepare import prepare

    p = prepare(args.data)
    index = p.work / f"{p.tag}-native-{p.vectors.stem}"  # the directory `lsr demo` builds and reuses
    if not is_current(index):
        log.info("building the native index at %s", index)
        build_native_index(index, vector_files=[p.vectors])
    qrels = read_qrels(args.data / "qrels" / "test.tsv")
    texts = [r.text for r in read_corpus(args.data / "queries.jsonl") if r.id in qrels]
    encoders = {"siamese": p.splade, "free": p.free}
    return [Target(name, index, encoders[name], texts, "scifact") for name in args.encoder]


def given_target(args: argparse.Namespace) -> list[Target]:
    from indexer.corpus import read_corpus

    texts = [r.text for r in read_corpus(args.queries)]
    if not texts:
        raise ValueError(f"{args.queries}: no queries")
    return [Target("given", args.index, args.encoder_dir, texts, str(args.index))]


# ------------------------------------------------------------------ clients
@dataclass
class ClientResult:
    latencies_ms: list[float] = field(default_factory=list)
    encode_ms: list[float] = field(default_factory=list)
    search_ms: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


class Client:
    """One keep-alive HTTP connection; :meth:`send` returns the answer's hits or raises."""

    def __init__(self, url: str):
        u = urllib.parse.urlsplit(url)
        self.host, self.port = u.hostname, u.port
        self.conn: http.client.HTTPConnection | None = None

    def send(self, body: bytes) -> dict:
        if self.conn is None:
            self.conn = http.client.HTTPConnection(self.host, self.port, timeout=60)
        try:
            self.conn.request("POST", "/search", body, {"Content-Type": "application/json"})
            response = self.conn.getresponse()
            data = response.read()
        except (OSError, http.client.HTTPException):
            self.close()  # a fresh connection for the next request
            raise
        if response.status != 200:
            raise RuntimeError(f"HTTP {response.status}: {data[:200]!r}")
        answer = json.loads(data)
        if not isinstance(answer.get("hits"), list) or "took_ms" not in answer:
            raise RuntimeError(f"malformed answer: {data[:200]!r}")
        return answer

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None


def run_clients(
    url: str, bodies: list[bytes], args: argparse.Namespace, start: Callable[[], None] | None = None
) -> tuple[list[ClientResult], float]:
    """The warm-up, then ``start()`` (when given: once every client is connected and warmed up), then
    the timed load; (per-client results, load-phase wall seconds)."""
    first: dict[int, list] = {}  # query index -> hits of its first answer
    counter = itertools.count()  # next() on it is atomic under the GIL
    clients = [Client(url) for _ in range(args.clients)]
    results = [ClientResult() for _ in clients]
    deadline = [0.0]

    def open_load() -> None:
        # Runs once, before the barrier lets any thread through: no client can see deadline 0.
        if start is not None:
            start()
        deadline[0] = time.perf_counter() + args.seconds

    start_barrier = threading.Barrier(args.clients + 1, action=open_load)

    def work(client: Client, result: ClientResult) -> None:
        for i in range(args.warmup):
            try:
                client.send(bodies[i % len(bodies)])
            except Exception as e:
                result.errors.append(f"warm-up: {type(e).__name__}: {e}")
        start_barrier.wait()
        while True:
            n = next(counter)
            if n >= args.requests or time.perf_counter() >= deadline[0]:
                break
            q = n % len(bodies)
            t0 = time.perf_counter()
            try:
                answer = client.send(bodies[q])
            except Exception as e:
                result.errors.append(f"{type(e).__name__}: {e}")
                continue
            result.latencies_ms.append((time.perf_counter() - t0) * 1e3)
            result.encode_ms.append(answer["took_ms"]["encode"])
            result.search_ms.append(answer["took_ms"]["search"])
            hits = [(h["docid"], h["score"]) for h in answer["hits"]]
            if first.setdefault(q, hits) != hits:
                result.errors.append(f"query {q}: hits differ from its first answer")
        client.close()

    threads = [
        threading.Thread(target=work, args=(c, r), name=f"client{i}", daemon=True)
        for i, (c, r) in enumerate(zip(clients, results, strict=True))
    ]
    for t in threads:
        t.start()
    start_barrier.wait()  # every client has warmed up
    t0 = deadline[0] - args.seconds
    for t in threads:
        t.join()
    return results, time.perf_counter() - t0


class RssSampler(Periodic):
    """The peak RSS of a process, sampled every ``RSS_EVERY_S`` seconds on a thread."""

    every = RSS_EVERY_S

    def __init__(self, process):
        self.process = process
        self.peak = process.memory_info().rss
        self.samples: list[tuple[float, int]] = []  # (seconds since start, RSS)
        self._t0 = time.perf_counter()
        super().__init__()

    def tick(self) -> bool | None:
        try:
            rss = self.process.memory_info().rss
        except Exception:  # the process ended
            return False
        self.peak = max(self.peak, rss)
        self.samples.append((time.perf_counter() - self._t0, rss))
        return None

    def at(self, seconds: float) -> int | None:
        """The first RSS sampled at or after ``seconds`` into the run."""
        return next((rss for t, rss in self.samples if t >= seconds), None)


# ------------------------------------------------------------------ one server
def load_one(target: Target, args: argparse.Namespace) -> dict:
    import psutil

    from plugin.serve_client import ServerProcess

    server_args = ["--max-length", "64"] + (["--threads", str(args.threads)] if args.threads else [])
    with ServerProcess(target.index, target.encoder, args=server_args) as server:
        health = get_json(server.url + "/health")
        process = psutil.Process(server.pid)
        bodies = [json.dumps({"query": t, "k": args.k, "mode": args.mode}).encode() for t in target.texts]
        rss_start = process.memory_info().rss
        cpu0 = process.cpu_times()
        client_cpu0 = time.process_time()
        log.info("%s: %d clients for %.0f s against %s", target.name, args.clients, args.seconds, server.url)
        with RssSampler(process) as sampler:
            results, wall = run_clients(server.url, bodies, args)
        cpu1 = process.cpu_times()
        client_cpu = time.process_time() - client_cpu0
        rss_end = process.memory_info().rss
        startup_s = server.startup_seconds
        server_log = server.log_tail(2000)
    latencies = [x for r in results for x in r.latencies_ms]
    errors = [e for r in results for e in r.errors]
    if errors:
        log.error(
            "%s: %d error(s), first: %s\nserver log:\n%s", target.name, len(errors), errors[0], server_log
        )
    server_cpu = (cpu1.user + cpu1.system) - (cpu0.user + cpu0.system)
    done = len(latencies)
    return {
        "encoder": target.name,
        "encoder_kind": health["encoder"]["kind"] if health["encoder"] else None,
        "corpus": target.corpus,
        "index_docs": health["index"]["n_docs"],
        "index_backend": health["index"]["backend"],
        "n_queries": len(target.texts),
        "clients": args.clients,
        "seconds": wall,
        "requests": done,
        "errors": len(errors),
        "error_examples": errors[:5],
        "throughput_rps": done / wall if wall > 0 else None,
        "latency_p50_ms": percentile(latencies, 50),
        "latency_p90_ms": percentile(latencies, 90),
        "latency_p99_ms": percentile(latencies, 99),
        "latency_max_ms": max(latencies) if latencies else None,
        "latency_mean_ms": float(np.mean(latencies)) if latencies else None,
        "server_encode_p50_ms": percentile([x for r in results for x in r.encode_ms], 50),
        "server_search_p50_ms": percentile([x for r in results for x in r.search_ms], 50),
        "server_cpu_s": server_cpu,
        "server_cpu_ms_per_request": server_cpu / done * 1e3 if done else None,
        "client_cpu_s": client_cpu,
        "server_startup_s": startup_s,
        "server_warmup_s": health["warmup_seconds"],
        "rss_before_bytes": rss_start,
        "rss_after_bytes": rss_end,
        "rss_peak_bytes": sampler.peak,
        # Warm-up growth (onnxruntime's arena sizing itself to concurrent runs) happens in the first
        # seconds; a leak keeps growing after: RSS a quarter into the run vs at its end tells them apart.
        "rss_quarter_bytes": sampler.at(args.seconds / 4),
    }


def get_json(url: str) -> dict:
    import urllib.request

    with urllib.request.urlopen(url, timeout=30) as r:
        return json.loads(r.read())


# ------------------------------------------------------------------ report
def versions() -> dict:
    out = {"python": platform.python_version()}
    for name in ("fastapi", "uvicorn", "pydantic", "starlette", "onnxruntime", "numba", "numpy", "psutil"):
        out[name] = package_version(name)
    return out


def print_table(rows: list[dict], args: argparse.Namespace) -> None:
    r0 = rows[0]
    print(
        f"\nload test: lsr serve, {r0['corpus']} {r0['index_backend']} index ({r0['index_docs']} docs), "
        f"{r0['n_queries']} queries sent as text round robin, k={args.k}, mode={args.mode}, "
        f"{args.clients} clients, {args.seconds:g} s per encoder, loopback, "
        f"{machine_info()['cpus_usable']} CPUs shared by clients and server"
    )
    latency = ("throughput_rps", "latency_p50_ms", "latency_p90_ms", "latency_p99_ms", "latency_max_ms")
    server = ("server_encode_p50_ms", "server_search_p50_ms", "server_cpu_ms_per_request")
    rss = ("rss_before_bytes", "rss_quarter_bytes", "rss_after_bytes", "rss_peak_bytes")
    print_fixed_table(
        "encoder<9 | requests>9 | errors>7 | req/s>8 | p50 ms>8 | p90 ms>8 | p99 ms>8 | max ms>8"
        " | enc p50>8 | srch p50>9 | cpu ms/req>11 | RSS before>11 | at 1/4>8 | after>8 | peak>8",
        (
            [
                r["encoder"],
                r["requests"],
                r["errors"],
                *(fmt(r[k]) for k in latency),
                *(fmt(r[k], ".2f") for k in server),
                *(f"{(r[k] or 0) / MB:.0f}MB" for k in rss),  # no RSS at 1/4 on a short run
            ]
            for r in rows
        ),
    )
    print(
        "(latency: client-side, request sent to answer read; enc/srch p50: the server's own took_ms; "
        "cpu ms/req: server CPU time over the load / requests)"
    )
    for r in rows:
        if r["rss_quarter_bytes"]:
            growth = (r["rss_after_bytes"] - r["rss_quarter_bytes"]) / MB
            print(f"{r['encoder']}: RSS growth over the last three quarters of the load {growth:+.1f} MB")
    for r in rows:
        print(
            f"{r['encoder']}: server start-up {r['server_startup_s']:.1f} s "
            f"(warm-up {r['server_warmup_s']:.2f} s), "
            f"client CPU {r['client_cpu_s']:.1f} s, server CPU {r['server_cpu_s']:.1f} s"
        )
        for example in r["error_examples"]:
            print(f"{r['encoder']}: error: {example}")


# ------------------------------------------------------------------ main
def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    setup_logging(args.verbose)
    if missing_requirements(args, log):
        return 2
    context = record_context(versions())
    targets = given_target(args) if args.index is not None else scifact_targets(args)
    rows = [load_one(t, args) for t in targets]
    print_table(rows, args)

    argv = sys.argv[1:] if argv is None else list(argv)
    common = {"bench": "load", "time": utc_stamp(), "k": args.k, "mode": args.mode, "argv": argv}
    append_jsonl(args.out, [{**common, **r, **context} for r in rows])
    print(f"appended {len(rows)} line(s) to {args.out}")
    errors = sum(r["errors"] for r in rows)
    if errors:
        print(f"FAILED: {errors} request(s) failed", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
