"""Abuse test of ``lsr serve``: normal clients' latency and errors with and without hostile ones.

What it does (loopback only; every phase bounded in time and in connections):

- index: the SciFact native index with the SPLADE-tiny query encoder (as :mod:`bench.load` builds
  them), or ``--index DIR`` with ``--encoder-dir`` and ``--queries``; ``lsr serve`` starts as a child
  process with its default limits (``--server-args`` adds flags);
- baseline: ``--clients`` normal clients (keep-alive connections, text queries round robin, each
  answer checked, as in :mod:`bench.load`) for ``--seconds``;
- abuse: the same clients for ``--seconds`` again while a second process attacks the server:
  a slow-header flood (``--flood`` sockets, at most the process's open-file limit minus a margin,
  opened at up to ``--flood-rate`` a second, each sending half a request header and then a byte every
  ``DRIP_S`` seconds, reopened when the server closes them, at most twice ``--flood`` opens in all),
  ``--body-clients`` clients sending
  ``--body-mb`` MB bodies (by Content-Length, then chunked, in turn) and ``--vector-clients``
  clients sending ``--vector-terms``-term vectors, each as fast as the server answers;
- reported: the normal clients' requests, errors (must be 0) and latency p50 / p99 in both phases
  with the ratio abuse / baseline (target: p99 within 2x), what the attackers got (statuses,
  connections closed by the server), the server's RSS and open files before and at their peak
  (psutil), its connection counters (``/health``) and log size and "Too many open files" lines.

One JSON line (with the machine, versions and git state) is appended to ``--out``.

    .venv/bin/python -m bench.abuse                    # SciFact, 8 clients, 20 s a phase
    .venv/bin/python -m bench.abuse --quick --index DIR --encoder-dir ENC --queries Q.jsonl
"""

from __future__ import annotations

import argparse
import errno
import http.client
import json
import logging
import math
import multiprocessing as mp
import os
import resource
import selectors
import socket
import sys
import threading
import time
import urllib.parse
from collections import Counter, OrderedDict
from collections.abc import Sequence

from bench._context import (
    MB,
    Periodic,
    add_output_arguments,
    append_jsonl,
    fmt,
    machine_info,
    percentile,
    positive_int,
    print_fixed_table,
    record_context,
    setup_logging,
    utc_stamp,
)
from bench.load import (
    Target,
    add_target_arguments,
    check_target_arguments,
    get_json,
    given_target,
    missing_requirements,
    run_clients,
    scifact_targets,
    versions,
)

log = logging.getLogger("bench.abuse")

SAMPLE_EVERY_S = 0.2
# A half-sent header, and the byte a slow client adds now and then to look alive.
HALF_HEADER = b"GET /health HTTP/1.1\r\nHost: lsr\r\nUser-Agent: slow\r\nX-Slow: "
DRIP_S = 2.0
# Seconds the flood runs before the normal clients' timed phase starts (under the keep-alive timeout:
# their connections, opened and warmed up before the attack, wait idle meanwhile).
RAMP_S = 1.0
# How often a new connection is tried during a phase (a client arriving under the attack).
PROBE_EVERY_S = 0.25
# Descriptors the flood leaves to its own process (the other attackers, pipes, imports).
FD_MARGIN = 256
PIECE = bytes(1 << 20)  # what the body clients send, a MiB at a time


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m bench.abuse",
        description="Normal clients' latency and errors under slow-header floods, huge bodies and vectors.",
    )
    p.add_argument("--quick", action="store_true", help="a smoke run: 2 clients, 2 s, small attacks")
    p.add_argument("--clients", type=positive_int, default=8, help="normal clients (default: %(default)s)")
    p.add_argument("--seconds", type=float, default=20.0, help="each phase, seconds (default: %(default)s)")
    p.add_argument("--warmup", type=int, default=5, help="untimed requests per client per phase")
    p.add_argument(
        "--flood",
        type=int,
        default=20_500,
        help="slow-header sockets, at most the open-file limit minus a margin (default: %(default)s)",
    )
    p.add_argument(
        "--flood-rate",
        type=float,
        default=2000.0,
        help="flood sockets opened a second, at most (default: %(default)s)",
    )
    p.add_argument("--body-clients", type=int, default=3, help="huge-body clients (default: %(default)s)")
    p.add_argument("--body-mb", type=float, default=50.0, help="their body size, MB (default: %(default)s)")
    p.add_argument("--vector-clients", type=int, default=2, help="huge-vector clients (default: %(default)s)")
    p.add_argument("--vector-terms", type=int, default=200_000, help="their terms (default: %(default)s)")
    p.add_argument("--k", type=positive_int, default=10, help="hits per normal query (default: %(default)s)")
    p.add_argument("--encoder", choices=("siamese", "free"), default="siamese", help="SciFact query encoder")
    add_target_arguments(p)
    p.add_argument(
        "--server-args", nargs=argparse.REMAINDER, default=[], help="more `lsr serve` flags (last)"
    )
    add_output_arguments(p, "abuse")
    args = p.parse_args(argv)
    check_target_arguments(p, args)
    if args.quick:
        args.clients, args.seconds, args.warmup = min(args.clients, 2), min(args.seconds, 2.0), 2
        args.flood, args.body_clients, args.body_mb = min(args.flood, 300), min(args.body_clients, 1), 5.0
        args.vector_clients = min(args.vector_clients, 1)
    if args.seconds <= 0 or args.flood < 0 or args.body_mb <= 0 or args.vector_terms < 1:
        p.error("--seconds and --body-mb must be > 0, --flood >= 0, --vector-terms >= 1")
    args.mode, args.requests = "exact", 1_000_000  # what bench.load's clients read (run_clients)
    return args


# ------------------------------------------------------------------ the attackers (a process of their own)
def _raise_file_limit() -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError):
            pass
    return soft


def flood(addr: tuple[str, int], wanted: int, rate: float, deadline: float, out: dict) -> None:
    """Keep up to ``wanted`` half-sent headers open until ``deadline``, opening ``rate`` a second at
    most (a slow-header flood, not a SYN flood), ``2 x wanted`` opens in all; each drips a byte
    every ``DRIP_S`` seconds, the drips spread over time."""
    budget = 2 * wanted
    sel = selectors.DefaultSelector()
    stats = Counter()
    connecting: set[socket.socket] = set()
    alive: OrderedDict[socket.socket, None] = OrderedDict()  # header sent; next to drip first
    start = last = time.monotonic()

    def open_one() -> bool:
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setblocking(False)
        rc = s.connect_ex(addr)
        if rc not in (0, errno.EINPROGRESS):
            s.close()
            stats["connect_errors"] += 1
            return False
        sel.register(s, selectors.EVENT_WRITE)
        connecting.add(s)
        stats["opened"] += 1
        return True

    def drop(s: socket.socket, why: str) -> None:
        sel.unregister(s)
        connecting.discard(s)
        alive.pop(s, None)
        s.close()
        stats[why] += 1

    while (now := time.monotonic()) < deadline:
        room = min(wanted - len(connecting) - len(alive), budget - stats["opened"])
        for _ in range(max(0, min(room, int(rate * (now - start)) - stats["opened"], 200))):
            if not open_one():
                break
        stats["peak_open"] = max(stats["peak_open"], len(connecting) + len(alive))
        for key, events in sel.select(timeout=0.02):
            s = key.fileobj
            if events & selectors.EVENT_WRITE:
                connecting.discard(s)
                if s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR):
                    drop(s, "connect_errors")
                    continue
                try:
                    s.send(HALF_HEADER)
                except OSError:
                    drop(s, "closed_by_server")
                    continue
                sel.modify(s, selectors.EVENT_READ)
                alive[s] = None
            elif events & selectors.EVENT_READ:
                try:
                    data = s.recv(4096)
                except OSError:
                    data = b""
                if data.startswith(b"HTTP/1.1 408"):
                    stats["answered_408"] += 1
                elif data.startswith(b"HTTP/1.1 503"):
                    stats["answered_503"] += 1
                drop(s, "closed_by_server")
        now = time.monotonic()
        for _ in range(min(len(alive), math.ceil(len(alive) * (now - last) / DRIP_S))):
            s = next(iter(alive))
            alive.move_to_end(s)
            try:
                s.send(b"a")
                stats["drips"] += 1
            except BlockingIOError:
                pass
            except OSError:
                drop(s, "closed_by_server")
        last = now
        if stats["opened"] >= budget and not connecting and not alive:
            break
    for s in [*connecting, *alive]:
        drop(s, "closed_at_end")
    out.update(stats)
    out["wanted"] = wanted


def big_bodies(addr: tuple[str, int], size: int, deadline: float, out: Counter, chunked: list[bool]) -> None:
    """Send ``size``-byte bodies until ``deadline``: by Content-Length, then chunked, in turn."""
    turn = 0
    while time.monotonic() < deadline:
        use_chunks = chunked[0] if len(chunked) == 1 else bool(turn % 2)
        turn += 1
        out["requests"] += 1
        try:
            with socket.create_connection(addr, timeout=30) as s:
                head = b"POST /search HTTP/1.1\r\nHost: lsr\r\nContent-Type: application/json\r\n"
                head += (
                    b"Transfer-Encoding: chunked\r\n\r\n"
                    if use_chunks
                    else b"Content-Length: %d\r\n\r\n" % size
                )
                s.sendall(head)
                sent = 0
                try:
                    while sent < size:
                        n = min(len(PIECE), size - sent)
                        s.sendall(b"%x\r\n%s\r\n" % (n, PIECE[:n]) if use_chunks else PIECE[:n])
                        sent += n
                    if use_chunks:
                        s.sendall(b"0\r\n\r\n")
                except OSError:
                    out["cut_off"] += 1  # the server answered and closed mid-body
                out["body_bytes_sent"] += sent
                status = _status(s)
        except OSError:
            status = "error"
        out[f"status_{status}"] += 1


def _status(s: socket.socket) -> str:
    try:
        line = s.recv(64)
    except OSError:
        return "reset"
    return line.split(b" ", 2)[1].decode() if line.startswith(b"HTTP/") else "closed"


def big_vectors(addr: tuple[str, int], terms: int, deadline: float, out: Counter) -> None:
    """POST a ``terms``-term vector until ``deadline``, one connection each."""
    body = json.dumps({"vector": {f"t{i}": 1.0 for i in range(terms)}}).encode()
    out["body_bytes"] = len(body)
    while time.monotonic() < deadline:
        out["requests"] += 1
        conn = http.client.HTTPConnection(*addr, timeout=30)
        try:
            conn.request("POST", "/search", body, {"Content-Type": "application/json"})
            r = conn.getresponse()
            r.read()
            out[f"status_{r.status}"] += 1
        except (OSError, http.client.HTTPException):
            out["status_reset"] += 1
        finally:
            conn.close()


def attack(addr: tuple[str, int], plan: dict, ready, results) -> None:
    """The attackers' process: every attack at once for ``plan["seconds"]``; results to the queue."""
    limit = _raise_file_limit()
    wanted = max(0, min(plan["flood"], limit - FD_MARGIN))
    deadline = time.monotonic() + plan["seconds"]
    flood_out: dict = {}
    bodies = [Counter() for _ in range(plan["body_clients"])]
    vectors = [Counter() for _ in range(plan["vector_clients"])]
    threads = [
        threading.Thread(
            target=flood, args=(addr, wanted, plan["flood_rate"], deadline, flood_out), daemon=True
        )
    ]
    size = int(plan["body_mb"] * MB)
    threads += [
        threading.Thread(target=big_bodies, args=(addr, size, deadline, c, [i % 2 == 1]), daemon=True)
        for i, c in enumerate(bodies)
    ]
    threads += [
        threading.Thread(target=big_vectors, args=(addr, plan["vector_terms"], deadline, c), daemon=True)
        for c in vectors
    ]
    ready.set()
    for t in threads:
        t.start()
    for t in threads:
        t.join(plan["seconds"] + 60)
    cpu = os.times()
    results.put(
        {
            "cpu_s": cpu.user + cpu.system,
            "file_limit": limit,
            "flood": flood_out,
            "bodies": dict(sum(bodies, Counter())),
            "vectors": dict(sum(vectors, Counter())),
        }
    )


# ------------------------------------------------------------------ measuring
class Sampler(Periodic):
    """Peak RSS and open files of a process, sampled every ``SAMPLE_EVERY_S`` seconds on a thread."""

    every = SAMPLE_EVERY_S

    def __init__(self, process):
        self.process = process
        self.rss_before = self.rss_peak = process.memory_info().rss
        self.fds_before = self.fds_peak = process.num_fds()
        super().__init__()

    def tick(self) -> bool | None:
        try:
            self.rss_peak = max(self.rss_peak, self.process.memory_info().rss)
            self.fds_peak = max(self.fds_peak, self.process.num_fds())
        except Exception:  # the process ended
            return False
        return None

    def figures(self) -> dict:
        return {
            "rss_before_bytes": self.rss_before,
            "rss_peak_bytes": self.rss_peak,
            "open_files_before": self.fds_before,
            "open_files_peak": self.fds_peak,
        }


class NewConnections(Periodic):
    """A client arriving every ``PROBE_EVERY_S`` s on a new connection (``GET /health``), timed."""

    every = PROBE_EVERY_S

    def __init__(self, url: str):
        u = urllib.parse.urlsplit(url)
        self.addr = (u.hostname, u.port)
        self.latencies_ms: list[float] = []
        self.errors: list[str] = []
        super().__init__()

    def tick(self) -> None:
        t0 = time.perf_counter()
        conn = http.client.HTTPConnection(*self.addr, timeout=30)
        try:
            conn.request("GET", "/health")
            r = conn.getresponse()
            r.read()
            if r.status != 200:
                raise RuntimeError(f"HTTP {r.status}")
            self.latencies_ms.append((time.perf_counter() - t0) * 1e3)
        except Exception as e:
            self.errors.append(f"{type(e).__name__}: {e}")
        finally:
            conn.close()

    def figures(self) -> dict:
        return {
            "new_connections": len(self.latencies_ms) + len(self.errors),
            "new_connection_errors": len(self.errors),
            "new_connection_p50_ms": percentile(self.latencies_ms, 50),
            "new_connection_max_ms": max(self.latencies_ms) if self.latencies_ms else None,
        }


def kernel_drops() -> dict:
    """Machine-wide packet drops: the loopback's input queue (softnet) and full listen queues."""
    out = {}
    try:
        with open("/proc/net/softnet_stat") as f:
            out["softnet_dropped"] = sum(int(line.split()[1], 16) for line in f)
        with open("/proc/net/netstat") as f:
            rows = [line.split() for line in f if line.startswith("TcpExt:")]
        out["listen_overflows"] = int(dict(zip(rows[0], rows[1], strict=True))["ListenOverflows"])
    except (OSError, KeyError, IndexError, ValueError):  # not Linux
        pass
    return out


def phase(url: str, bodies: list[bytes], args: argparse.Namespace, process, start=None) -> dict:
    """One phase: the normal clients' figures, new connections', and the server's RSS and open files."""
    cpu0, drops0 = process.cpu_times(), kernel_drops()
    with Sampler(process) as sampler, NewConnections(url) as arriving:
        results, wall = run_clients(url, bodies, args, start)
    cpu1, drops1 = process.cpu_times(), kernel_drops()
    latencies = [x for r in results for x in r.latencies_ms]
    errors = [e for r in results for e in r.errors]
    return {
        "seconds": wall,
        "requests": len(latencies),
        "errors": len(errors),
        "error_examples": errors[:5],
        "throughput_rps": len(latencies) / wall if wall > 0 else None,
        "latency_p50_ms": percentile(latencies, 50),
        "latency_p99_ms": percentile(latencies, 99),
        "latency_max_ms": max(latencies) if latencies else None,
        "server_cpu_s": (cpu1.user + cpu1.system) - (cpu0.user + cpu0.system),
        "kernel_drops": {k: drops1[k] - drops0[k] for k in drops1},
        **arriving.figures(),
        "new_connection_error_examples": arriving.errors[:3],
        **sampler.figures(),
    }


def run(target: Target, args: argparse.Namespace) -> dict:
    import psutil

    from plugin.serve_client import ServerProcess

    bodies = [json.dumps({"query": t, "k": args.k}).encode() for t in target.texts]
    with ServerProcess(
        target.index, target.encoder, args=["--max-length", "64", *args.server_args]
    ) as server:
        process = psutil.Process(server.pid)
        u = urllib.parse.urlsplit(server.url)
        addr = (u.hostname, u.port)
        health = get_json(server.url + "/health")
        log.info("%s: baseline, %d clients for %.0f s", server.url, args.clients, args.seconds)
        baseline = phase(server.url, bodies, args, process)

        ctx = mp.get_context("spawn")  # the attackers get their own interpreter (and GIL)
        ready, results = ctx.Event(), ctx.Queue()
        names = ("flood", "flood_rate", "body_clients", "body_mb", "vector_clients", "vector_terms")
        plan = {k: getattr(args, k) for k in names}
        plan["seconds"] = args.seconds + RAMP_S + 1.0  # outlasts the timed phase
        attacker = ctx.Process(target=attack, args=(addr, plan, ready, results), name="lsr-abuse")

        def start_attack() -> None:
            # The normal clients are connected and warmed up: they are the server's established users.
            attacker.start()
            if not ready.wait(60):
                attacker.kill()
                raise RuntimeError("the attacking process did not start")
            log.info("abuse: flood %d sockets, %d body and %d vector clients", args.flood,
                     args.body_clients, args.vector_clients)  # fmt: skip
            time.sleep(RAMP_S)

        abused = phase(server.url, bodies, args, process, start_attack)
        attack_results = results.get(timeout=plan["seconds"] + 120)
        attacker.join(30)
        after = get_json(server.url + "/health")  # answering after the attack
        log_text = server.log_tail(1 << 30)
    ratio = (
        abused["latency_p99_ms"] / baseline["latency_p99_ms"]
        if abused["latency_p99_ms"] and baseline["latency_p99_ms"]
        else None
    )
    return {
        "corpus": target.corpus,
        "encoder": target.name,
        "index_docs": health["index"]["n_docs"],
        "limits": health["limits"],
        "clients": args.clients,
        "baseline": baseline,
        "abuse": abused,
        "p99_ratio": ratio,
        "p50_ratio": (
            abused["latency_p50_ms"] / baseline["latency_p50_ms"]
            if abused["latency_p50_ms"] and baseline["latency_p50_ms"]
            else None
        ),
        "attack": {**attack_results, "plan": plan},
        "server_connections_after": after["connections"],
        "server_log_bytes": len(log_text.encode()),
        "server_log_emfile_lines": log_text.count("Too many open files"),
    }


# ------------------------------------------------------------------ report
def print_summary(r: dict, args: argparse.Namespace) -> None:
    print(
        f"\nabuse test: lsr serve, {r['corpus']} index ({r['index_docs']} docs), {r['encoder']} encoder, "
        f"{r['clients']} normal clients, {args.seconds:g} s a phase, loopback, "
        f"{machine_info()['cpus_usable']} CPUs shared by everyone"
    )
    latency = ("throughput_rps", "latency_p50_ms", "latency_p99_ms", "latency_max_ms")
    print_fixed_table(
        "phase<9 | requests>9 | errors>7 | req/s>8 | p50 ms>8 | p99 ms>8 | max ms>8 | new conn>9"
        " | errors>7 | p50 ms>8 | max ms>8 | RSS before>11 | peak>8 | files>7 | peak>7",
        (
            [
                name,
                p["requests"],
                p["errors"],
                *(fmt(p[k]) for k in latency),
                p["new_connections"],
                p["new_connection_errors"],
                *(fmt(p[k]) for k in ("new_connection_p50_ms", "new_connection_max_ms")),
                *(f"{p[k] / MB:.0f}MB" for k in ("rss_before_bytes", "rss_peak_bytes")),
                p["open_files_before"],
                p["open_files_peak"],
            ]
            for name in ("baseline", "abuse")
            for p in [r[name]]
        ),
    )
    a = r["attack"]
    f = a["flood"]
    print(
        f"slow-header flood: {f.get('opened', 0)} sockets opened (up to {f.get('wanted', 0)} at once, "
        f"peak {f.get('peak_open', 0)}), {f.get('closed_by_server', 0)} closed by the server "
        f"({f.get('answered_408', 0)} with a 408, {f.get('answered_503', 0)} with a 503), "
        f"{f.get('connect_errors', 0)} connect errors"
    )
    print(
        f"{args.body_mb:g} MB bodies: {_statuses(a['bodies'])}; "
        f"cut off mid-body {a['bodies'].get('cut_off', 0)}"
    )
    print(
        f"{args.vector_terms}-term vectors ({a['vectors'].get('body_bytes', 0) / MB:.1f} MB): "
        f"{_statuses(a['vectors'])}"
    )
    for name in ("baseline", "abuse"):
        p = r[name]
        drops = ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in p["kernel_drops"].items())
        print(f"{name}: server CPU {p['server_cpu_s']:.1f} s; machine-wide kernel drops: {drops or '-'}")
    print(f"attackers' CPU {a['cpu_s']:.1f} s")
    c = r["server_connections_after"]
    print(
        f"server: evicted {c['evicted']}, timed out {c['timed_out']}, refused {c['refused']} connections; "
        f"log {r['server_log_bytes'] / 1e3:.1f} kB, "
        f"{r['server_log_emfile_lines']} 'Too many open files' lines"
    )
    print(
        f"ratio p99 abuse / baseline: {fmt(r['p99_ratio'], '.2f')}x (target <= 2x); "
        f"p50 {fmt(r['p50_ratio'], '.2f')}x; normal clients' errors under abuse: {r['abuse']['errors']}"
    )
    print(
        "(latency: client-side, keep-alive connections opened and warmed up before the phase; new conn: "
        f"a GET /health on a new connection every {PROBE_EVERY_S:g} s, connect included)"
    )
    for name in ("baseline", "abuse"):
        for example in r[name]["error_examples"]:
            print(f"{name}: error: {example}")
        for example in r[name]["new_connection_error_examples"]:
            print(f"{name}: new connection error: {example}")


def _statuses(counter: dict) -> str:
    parts = [f"{k[7:]} x{v}" for k, v in sorted(counter.items()) if k.startswith("status_")]
    return f"{counter.get('requests', 0)} sent, " + (", ".join(parts) or "no answers")


# ------------------------------------------------------------------ main
def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    setup_logging(args.verbose)
    if missing_requirements(args, log):
        return 2
    context = record_context(versions())
    if args.index is not None:
        target = given_target(args)[0]
    else:
        args.encoder = [args.encoder]  # scifact_targets reads a list
        target = scifact_targets(args)[0]
        args.encoder = args.encoder[0]
    row = run(target, args)
    print_summary(row, args)

    argv = sys.argv[1:] if argv is None else list(argv)
    record = {"bench": "abuse", "time": utc_stamp(), "argv": argv, "quick": args.quick, **row, **context}
    append_jsonl(args.out, [record])
    print(f"appended 1 line to {args.out}")
    errors = row["baseline"]["errors"] + row["abuse"]["errors"]
    if errors:
        print(f"FAILED: {errors} normal request(s) failed", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
