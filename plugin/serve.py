"""The HTTP search service behind ``lsr serve``: one index and one query encoder, opened once.

Endpoints (FastAPI; the OpenAPI spec is at ``/openapi.json``, interactive docs at ``/docs``):

- ``POST /search``: ``{"query": text}`` or ``{"vector": {token: weight}}`` (exactly one), ``k``,
  ``mode`` (``exact``, or ``approx`` / ``scan`` on a native index) and the approx knobs ``alpha`` and
  ``beta``. Returns ``{"hits": [{"docid", "score"}], "took_ms": {"encode", "search"}}``; tokens of a
  vector that the index never saw are ignored, as in ``lsr search``.
- ``GET /health``: ``{"status": "ok"}`` with what the server holds: the index (backend, documents,
  vocabulary size, format and build) and the query encoder (kind, dtype, contract).

Errors: 422 when the body breaks the schema (pydantic names the field in ``detail[].loc``), 400 with
``{"detail": "FIELD: message"}`` when a valid body asks what this server cannot do (a text query with
no encoder, ``mode="approx"`` on a Lucene index).

Concurrency: the endpoints are plain ``def``, so FastAPI runs them on its thread pool; the numba
kernels (``nogil``) and onnxruntime release the GIL, so requests search and encode side by side. The
native searcher is read-only once opened (memory maps; its query-vocabulary cache is thread-safe).
Lucene is reached through pyjnius, whose calls all run on one dedicated thread.

:class:`ServerProcess` runs ``lsr serve`` as a child process (tests, benchmarks, notebooks).
"""

from __future__ import annotations

import json
import logging
import math
import os
import selectors
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np

try:
    from fastapi import FastAPI, HTTPException, Request
    from fastapi.encoders import jsonable_encoder
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse
    from pydantic import BaseModel, ConfigDict, Field, model_validator
except ImportError as e:  # pragma: no cover - the extra is missing
    raise ImportError("lsr serve needs FastAPI: pip install 'lsr[serve]'") from e

from indexer.lucene import LuceneIndexInfo
from indexer.native.format import META as NATIVE_META
from lsr.sparse import SparseBatch, token_index
from plugin.hits import Hit

log = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parents[1]
MAX_K = 1000
# Request size limits: a query is cut at the encoder's max_length tokens anyway.
MAX_QUERY_CHARS = 20_000
MAX_VECTOR_TERMS = 20_000
WARMUP_TEXT = "warm up the query encoder"

Mode = Literal["exact", "approx", "scan"]
Weight = Annotated[float, Field(gt=0, allow_inf_nan=False)]


# ---------------------------------------------------------------- the HTTP schema
class SearchRequest(BaseModel):
    """One query: text (encoded by the server's encoder) or a pre-encoded sparse vector."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"query": "what causes heart disease", "k": 10},
                {"vector": {"heart": 1.7, "disease": 1.2}, "k": 5, "mode": "approx", "alpha": 0.9},
            ]
        },
    )

    query: str | None = Field(
        None,
        max_length=MAX_QUERY_CHARS,
        description="Query text, encoded by the server's query encoder. Give this or `vector`.",
    )
    vector: dict[str, Weight] | None = Field(
        None,
        max_length=MAX_VECTOR_TERMS,
        description="A pre-encoded query `{token: weight}`, weights finite and > 0; tokens the index "
        "never saw are ignored. Give this or `query`.",
    )
    k: int = Field(10, ge=1, le=MAX_K, description="Number of hits.")
    mode: Mode = Field(
        "exact",
        description="`exact` (block-max, exact top-k), `approx` (block-max with the `alpha`/`beta` "
        "recall knobs) or `scan` (exhaustive). `approx` and `scan` need a native index.",
    )
    alpha: float = Field(1.0, gt=0, le=1, description="approx: block-bound scaling (1 is exact).")
    beta: float = Field(1.0, gt=0, le=1, description="approx: fraction of query terms used for bounds.")
    verify: bool = Field(
        False,
        description="Bi-granular: re-score the sparse top candidates with the index's dense store and "
        "fuse (servers started with `--verify DENSE_ENCODER_DIR`); needs `query` text.",
    )

    @model_validator(mode="after")
    def _one_query_and_knobs(self) -> SearchRequest:
        if (self.query is None) == (self.vector is None):
            raise ValueError("give exactly one of `query` (text) or `vector` ({token: weight})")
        if self.verify and self.query is None:
            raise ValueError("`verify` needs `query` text (the dense encoder reads it), not a `vector`")
        if self.mode != "approx" and (self.alpha != 1.0 or self.beta != 1.0):
            raise ValueError(f"`alpha` and `beta` apply to mode 'approx' only, not {self.mode!r}")
        return self


class HitOut(BaseModel):
    docid: str = Field(description="External document id.")
    score: float = Field(description="Integer impact dot product (the quantized score).")


class TookMs(BaseModel):
    encode: float = Field(description="Milliseconds to encode the text (or read the vector).")
    search: float = Field(description="Milliseconds in the searcher.")
    verify: float | None = Field(
        None, description="verify: milliseconds to encode the dense query and verify the candidates."
    )


class SearchResponse(BaseModel):
    hits: list[HitOut] = Field(description="Best first; ties by the lower internal doc id.")
    took_ms: TookMs


class ErrorResponse(BaseModel):
    detail: str = Field(description="`FIELD: message`")


class IndexHealth(BaseModel):
    backend: Literal["native", "lucene"]
    path: str
    n_docs: int
    vocab_size: int | None = Field(description="Distinct terms (native; null for Lucene).")
    format: str
    format_version: int | None
    build: dict[str, Any] = Field(description="How the index was built (from its metadata).")


class EncoderHealth(BaseModel):
    path: str
    kind: str
    dtype: str
    contract: str
    query: str = Field(description="`model` (the graph encodes queries) or `idf` (no model runs).")
    max_length: int


class DenseHealth(BaseModel):
    encoder: str
    dim: int
    dtype: str = Field(description="How the store keeps vectors: fp16 or int8.")
    candidates: int = Field(description="Sparse hits verified per query.")
    fusion: str
    weight: float


class Health(BaseModel):
    status: Literal["ok"]
    index: IndexHealth
    encoder: EncoderHealth | None
    modes: list[str] = Field(description="Search modes this index supports.")
    dense: DenseHealth | None = Field(description="The dense store and encoder behind `verify`, if any.")
    warmup_seconds: float = Field(description="First encode and search at start-up (JIT, caches).")


# ---------------------------------------------------------------- the service
class RequestError(ValueError):
    """A valid request this server cannot answer; ``field`` names the request field at fault."""

    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.field = field


class SearchService:
    """The index and query encoder behind the endpoints, opened once; usable without HTTP.

    Parameters
    ----------
    index_dir
        A native index (``meta.json``) or a Lucene impact index (``lsr-index.json``).
    encoder_dir
        An exported ENCODER_DIR whose query side encodes text (SPLADE, or inference-free: no model
        runs); ``None`` serves pre-encoded vectors only.
    max_length
        Query tokens kept.
    threads
        onnxruntime intra-op threads of the query encoder (default: onnxruntime's).
    verify_encoder
        A dense ENCODER_DIR for bi-granular requests (``verify``), over a native index built with a
        dense store (:mod:`plugin.verify`); ``candidates`` sparse hits are verified per query.
    """

    def __init__(
        self,
        index_dir: str | Path,
        encoder_dir: str | Path | None = None,
        max_length: int = 64,
        threads: int | None = None,
        verify_encoder: str | Path | None = None,
        candidates: int = 1000,
    ):
        self.index_dir = Path(index_dir)
        self._pool: ThreadPoolExecutor | None = None
        if (self.index_dir / NATIVE_META).is_file():
            from plugin.native import MODES, NativeSearcher

            self.backend = "native"
            self.searcher = NativeSearcher(self.index_dir)
            self.modes = list(MODES)
            meta = self.searcher.index.meta
            self.index_info = IndexHealth(
                backend="native",
                path=str(self.index_dir),
                n_docs=self.searcher.index.n_docs,
                vocab_size=len(self.searcher.index.vocab),
                format=meta["format"],
                format_version=meta["format_version"],
                build={k: v for k, v in meta.items() if k not in ("arrays", "format", "format_version")},
            )
        else:
            info = LuceneIndexInfo.load(self.index_dir)
            if info.format != "lucene-impact":
                raise ValueError(
                    f"{self.index_dir}: lsr serve searches impact indexes (native or Lucene), "
                    f"not {info.format!r}"
                )
            from plugin.lucene import LuceneSearcher

            self.backend = "lucene"
            # pyjnius attaches each calling thread to the JVM; one long-lived thread makes every call.
            self._pool = ThreadPoolExecutor(1, thread_name_prefix="lsr-lucene")
            self.searcher = self._pool.submit(LuceneSearcher, self.index_dir).result()
            self.modes = ["exact"]
            self.index_info = IndexHealth(
                backend="lucene",
                path=str(self.index_dir),
                n_docs=info.documents,
                vocab_size=None,
                format=info.format,
                format_version=None,
                build={
                    "documents": info.documents,
                    "skipped_empty": info.skipped_empty,
                    "quantization": info.quantization,
                    "scale": info.scale,
                    "threads": info.threads,
                    "optimized": info.optimized,
                    "sources": info.sources,
                    "anserini_jar": info.anserini_jar,
                    "build_seconds": info.seconds,
                },
            )
        self.encoder = None
        self.encoder_info = None
        if encoder_dir is not None:
            from lsr.runtime import load_encoder

            encoder = load_encoder(encoder_dir, side="query", threads=threads, max_length=max_length)
            if not hasattr(encoder, "vocab"):
                raise ValueError(f"{encoder_dir} is a dense encoder; lsr serve needs a sparse query encoder")
            m = encoder.manifest
            self.encoder = encoder
            self.encoder_info = EncoderHealth(
                path=str(encoder_dir),
                kind=m.kind,
                dtype=m.dtype,
                contract=m.contract,
                query=m.query,
                max_length=encoder.tokenizer.max_length,
            )
        self.verifier = None
        self.dense_info = None
        if verify_encoder is not None:
            if self.backend != "native":
                raise ValueError("--verify needs a native index built with a dense store (lsr index --dense)")
            from plugin.verify import BiGranularSearcher

            self.verifier = BiGranularSearcher(
                self.index_dir, verify_encoder, candidates=candidates, sparse=self.searcher
            )
            v = self.verifier
            self.dense_info = DenseHealth(
                encoder=str(verify_encoder),
                dim=v.store.dim,
                dtype=v.store.meta["dtype"],
                candidates=v.candidates,
                fusion=v.fusion,
                weight=v.weight,
            )
        self.warmup_seconds = self._warm_up()

    def _warm_up(self) -> float:
        """Encode and search once, so that the first request pays no JIT compilation or cache fill."""
        start = time.perf_counter()
        if self.encoder is not None:
            self.encoder.encode([WARMUP_TEXT])
        if self.backend == "native" and self.searcher.index.vocab:
            self.search(vector={self.searcher.index.vocab[0]: 1.0}, k=10)
        if self.verifier is not None and self.encoder is not None:
            self.search(query=WARMUP_TEXT, k=10, verify=True)
        seconds = time.perf_counter() - start
        log.info("warm-up: %.2f s", seconds)
        return seconds

    def health(self) -> Health:
        return Health(
            status="ok",
            index=self.index_info,
            encoder=self.encoder_info,
            modes=self.modes,
            dense=self.dense_info,
            warmup_seconds=self.warmup_seconds,
        )

    # ------------------------------------------------------------ queries
    def query_batch(self, query: str | None = None, vector: dict[str, float] | None = None) -> SparseBatch:
        """The one-row query batch of a text (through the encoder) or a ``{token: weight}`` vector."""
        if (query is None) == (vector is None):
            raise RequestError("query", "give exactly one of `query` or `vector`")
        if query is not None:
            if self.encoder is None:
                raise RequestError(
                    "query",
                    "this server has no query encoder (start it with --encoder ENCODER_DIR); "
                    "send a pre-encoded `vector` instead",
                )
            return self.encoder.encode([query])
        for token, w in vector.items():
            if not (isinstance(w, int | float) and math.isfinite(w) and w > 0):
                raise RequestError(
                    "vector", f"token {token!r} has weight {w}; weights must be finite and > 0"
                )
        if self.backend == "native":
            vocab = self.searcher.index.vocab
            known = token_index(vocab)
            return SparseBatch.from_dicts([{t: w for t, w in vector.items() if t in known}], vocab)
        # Lucene: a vocabulary of the query's own tokens; the index ignores those it never saw.
        tokens = sorted(vector)
        weights = np.asarray([vector[t] for t in tokens], np.float32)
        keep = weights > 0  # weights below float32's range are zeros
        tokens = [t for t, kept in zip(tokens, keep.tolist(), strict=True) if kept]
        return SparseBatch(
            np.asarray([0, len(tokens)], np.int64),
            np.arange(len(tokens), dtype=np.int32),
            weights[keep],
            tuple(tokens),
        )

    def search(
        self,
        query: str | None = None,
        vector: dict[str, float] | None = None,
        k: int = 10,
        mode: Mode = "exact",
        alpha: float = 1.0,
        beta: float = 1.0,
        verify: bool = False,
    ) -> tuple[list[Hit], float, float, float | None]:
        """``(hits, encode ms, search ms, verify ms)`` of one text ``query`` or pre-encoded ``vector``;
        verify ms (dense query encoding and verification) is None without ``verify``.

        Raises :class:`RequestError` (a ``ValueError`` naming the field) for what cannot be answered.
        """
        if not 1 <= k <= MAX_K:
            raise RequestError("k", f"must be in [1, {MAX_K}], got {k}")
        if mode not in self.modes:
            if self.backend == "lucene":
                raise RequestError("mode", f"{mode!r} needs a native index; this server searches Lucene")
            raise RequestError("mode", f"must be one of {', '.join(self.modes)}, got {mode!r}")
        if verify:
            if self.verifier is None:
                raise RequestError(
                    "verify", "this server has no dense encoder (start it with --verify DENSE_ENCODER_DIR)"
                )
            if query is None:
                raise RequestError("verify", "needs `query` text (the dense encoder reads it)")
            if mode != "exact":
                raise RequestError("mode", "verify searches its sparse candidates in exact mode")
        t0 = time.perf_counter()
        batch = self.query_batch(query, vector)
        t1 = time.perf_counter()
        if verify:
            stages: dict[str, float] = {}
            hits = self.verifier.search(batch, query, k, timings=stages)
            sparse_ms = stages.pop("sparse_search")
            return hits, (t1 - t0) * 1e3, sparse_ms, sum(stages.values())
        if self.backend == "lucene":
            hits = self._pool.submit(self.searcher.search, batch, k).result()
        else:
            try:
                if mode == "approx":
                    hits = self.searcher.search(batch, k, mode, alpha, beta)
                else:
                    hits = self.searcher.search(batch, k, mode)
            except ValueError as e:
                field = next((f for f in ("alpha", "beta", "mode") if str(e).startswith(f)), "vector")
                raise RequestError(field, str(e)) from None
        t2 = time.perf_counter()
        return hits, (t1 - t0) * 1e3, (t2 - t1) * 1e3, None

    def close(self) -> None:
        if self._pool is not None:
            self._pool.submit(self.searcher.close).result()
            self._pool.shutdown()
            self._pool = None


# ---------------------------------------------------------------- the app
def create_app(service: SearchService) -> FastAPI:
    """The FastAPI app answering from ``service`` (see the module docstring); it closes it at shutdown."""

    @asynccontextmanager
    async def lifespan(_app: FastAPI):
        yield
        service.close()

    app = FastAPI(
        title="lsr",
        version=_version(),
        summary="Learned sparse retrieval: search one index with text or sparse query vectors.",
        lifespan=lifespan,
    )
    app.state.service = service

    @app.exception_handler(RequestValidationError)
    async def validation_error(_request: Request, exc: RequestValidationError) -> JSONResponse:
        # FastAPI's own handler echoes the input, and JSON cannot carry a NaN weight back: a 500.
        errors = [
            {**e, "ctx": {k: str(v) if isinstance(v, Exception) else v for k, v in e["ctx"].items()}}
            if "ctx" in e
            else e
            for e in exc.errors()
        ]
        return JSONResponse(status_code=422, content={"detail": _json_safe(jsonable_encoder(errors))})

    @app.post(
        "/search",
        response_model=SearchResponse,
        responses={400: {"model": ErrorResponse, "description": "A valid request this server cannot answer"}},
        summary="Top-k hits of one query",
    )
    def search(request: SearchRequest) -> SearchResponse:
        try:
            hits, encode_ms, search_ms, verify_ms = service.search(
                request.query,
                request.vector,
                request.k,
                request.mode,
                request.alpha,
                request.beta,
                request.verify,
            )
        except RequestError as e:
            raise HTTPException(status_code=400, detail=str(e)) from None
        return SearchResponse(
            hits=[HitOut(docid=h.docid, score=h.score) for h in hits],
            took_ms=TookMs(encode=encode_ms, search=search_ms, verify=verify_ms),
        )

    @app.get("/health", response_model=Health, summary="Status and what this server holds")
    def health() -> Health:
        return service.health()

    return app


def _json_safe(obj: Any) -> Any:
    """``obj`` with non-finite floats as strings (``"nan"``, ``"inf"``), which strict JSON lacks."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return str(obj)
    if isinstance(obj, dict):
        return {k: _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_json_safe(v) for v in obj]
    return obj


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("lsr")
    except PackageNotFoundError:
        return "0+unknown"


def _bind(host: str, port: int) -> socket.socket:
    if not 0 <= port <= 65535:
        raise ValueError(f"port must be in [0, 65535], got {port}")
    # IPPROTO_TCP named: asyncio sets TCP_NODELAY only on sockets whose proto says TCP; without it
    # a keep-alive client waits out delayed ACKs (~40 ms a request).
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as e:
        sock.close()
        raise RuntimeError(f"cannot listen on {host}:{port}: {e.strerror or e}") from None
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def serve(
    service: SearchService,
    host: str = "127.0.0.1",
    port: int = 8080,
    access_log: bool = False,
    ready: Callable[[str], None] | None = None,
) -> None:
    """Serve ``service`` over HTTP with uvicorn until SIGINT or SIGTERM.

    Open the service (index and encoders, warmed up) before calling, so the socket is bound only
    once it can answer; ``port=0`` takes a free port. ``ready(url)`` is called once the socket
    listens (``lsr serve`` prints the URL).
    """
    import uvicorn

    app = create_app(service)
    sock = _bind(host, port)
    bound = sock.getsockname()[1]
    url = f"http://[{host}]:{bound}" if ":" in host else f"http://{host}:{bound}"
    config = uvicorn.Config(
        app, host=host, port=bound, log_config=None, access_log=access_log, timeout_graceful_shutdown=5
    )
    if ready is not None:
        ready(url)
    log.info("serving %s on %s", service.index_dir, url)
    try:
        uvicorn.Server(config).run(sockets=[sock])
    finally:
        sock.close()


# ---------------------------------------------------------------- a child server
class ServerProcess:
    """``lsr serve`` in a child process on a free loopback port; a context manager.

    ``with ServerProcess(index_dir, encoder_dir) as server: server.url``. The child's stderr goes to
    ``log_path``, shown in the error when it fails to start.
    """

    def __init__(
        self,
        index_dir: str | Path,
        encoder_dir: str | Path | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        args: list[str] | None = None,
        startup_timeout: float = 180.0,
    ):
        self.cmd = [sys.executable, "-m", "plugin.cli", "serve", str(index_dir), "--host", host]
        self.cmd += ["--port", str(port), *(args or [])]
        if encoder_dir is not None:
            self.cmd += ["--encoder", str(encoder_dir)]
        self.startup_timeout = startup_timeout
        self.url: str | None = None
        self.proc: subprocess.Popen | None = None
        self._log = tempfile.NamedTemporaryFile(prefix="lsr-serve-", suffix=".log", delete=False)
        self.log_path = Path(self._log.name)
        self.startup_seconds: float | None = None

    @property
    def pid(self) -> int:
        if self.proc is None:
            raise RuntimeError("the server is not started")
        return self.proc.pid

    def start(self) -> ServerProcess:
        start = time.perf_counter()
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self.proc = subprocess.Popen(
            self.cmd, stdout=subprocess.PIPE, stderr=self._log, text=True, cwd=REPO, env=env
        )
        try:
            self.url = self._read_url(start + self.startup_timeout)
            while True:
                try:
                    with urllib.request.urlopen(self.url + "/health", timeout=5) as r:
                        if r.status == 200:
                            break
                except (urllib.error.URLError, ConnectionError, TimeoutError):
                    pass
                self._check_alive(start + self.startup_timeout)
                time.sleep(0.05)
        except BaseException:
            self.stop()
            raise
        self.startup_seconds = time.perf_counter() - start
        return self

    def _read_url(self, deadline: float) -> str:
        with selectors.DefaultSelector() as sel:
            sel.register(self.proc.stdout, selectors.EVENT_READ)
            while True:
                self._check_alive(deadline)
                if sel.select(timeout=0.2):
                    line = self.proc.stdout.readline()
                    if "http://" in line:
                        return line[line.index("http://") :].split()[0]

    def _check_alive(self, deadline: float) -> None:
        if self.proc.poll() is not None:
            raise RuntimeError(f"lsr serve exited with code {self.proc.returncode}:\n{self.log_tail()}")
        if time.perf_counter() > deadline:
            raise TimeoutError(f"lsr serve did not start in {self.startup_timeout:.0f} s:\n{self.log_tail()}")

    def log_tail(self, chars: int = 4000) -> str:
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text(encoding="utf-8", errors="replace")[-chars:]

    def stop(self, timeout: float = 15.0) -> int | None:
        """Terminate (SIGTERM, then SIGKILL after ``timeout``); the exit code."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc.stdout:
            self.proc.stdout.close()
        self._log.close()
        return self.proc.returncode

    def __enter__(self) -> ServerProcess:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
        self.log_path.unlink(missing_ok=True)


def post_json(url: str, body: dict, timeout: float = 30.0) -> tuple[int, dict]:
    """POST ``body`` as JSON; ``(status, decoded JSON body)``, for 4xx/5xx too."""
    req = urllib.request.Request(
        url, data=json.dumps(body).encode("utf-8"), headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"null")
