"""The HTTP search service behind ``lsr serve``: one index and one query encoder, opened once.

Endpoints (FastAPI; the OpenAPI spec is at ``/openapi.json``, interactive docs at ``/docs`` and
``/redoc`` only with ``docs=True``, ``lsr serve --docs``):

- ``POST /search``: ``{"query": text}`` or ``{"vector": {token: weight}}`` (exactly one), ``k``,
  ``mode`` (``exact``, or ``approx`` / ``scan`` on a native index) and the approx knobs ``alpha`` and
  ``beta``. Returns ``{"hits": [{"docid", "score"}], "took_ms": {"encode", "search"}}``; tokens of a
  vector that the index never saw are ignored, as in ``lsr search``.
- ``GET /health``: ``{"status": "ok"}`` with what the server holds: the index (backend, documents,
  vocabulary size, format and build) and the query encoder (kind, dtype, contract), directories by
  name only; the limits in force and the connection counters.
- ``POST /admin/reload`` (loopback clients only, 403 otherwise): re-open the index directory, e.g.
  after a rebuild swapped a new index in; requests in flight finish on the index they started on.
  ``reload_on_change=True`` (``lsr serve --reload-on-change``) does it when the directory changes.

Errors: 422 when the body breaks the schema (the field in ``detail[].loc``; ``input`` echoes at most
``ECHO_CHARS`` characters), 400 with ``{"detail": "FIELD: message"}`` when a valid body asks what this
server cannot do (a text query with no encoder, ``mode="approx"`` on a Lucene index), 413 for a body
over ``max_body_bytes``, 415 when ``/search`` is not sent ``application/json``. No input is a 500.

Limits (:class:`Limits`): request bodies, query characters and vector terms; open connections (at the
cap the connection waiting longest for its first request is closed, so a flood evicts itself); the
time a request's headers and body may take to arrive (slow-header floods), idle keep-alive and header
size. Warnings the loop
and uvicorn repeat (e.g. ``accept()`` out of file descriptors) are rate-limited in the log.

Concurrency: the endpoints are plain ``def``, so FastAPI runs them on its thread pool; the numba
kernels (``nogil``) and onnxruntime release the GIL, so requests search and encode side by side. The
native searcher is read-only once opened (memory maps; its query-vocabulary cache is thread-safe).
Lucene is reached through pyjnius, whose calls all run on one dedicated thread.

:mod:`plugin.serve_client` runs ``lsr serve`` as a child process (tests, benchmarks, notebooks).
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
import math
import os
import socket
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

try:
    from fastapi import FastAPI, HTTPException, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse
    from pydantic import BaseModel, ConfigDict, Field, create_model, field_validator, model_validator
    from starlette.exceptions import HTTPException as StarletteHTTPException
except ImportError as e:  # pragma: no cover - the extra is missing
    raise ImportError("lsr serve needs FastAPI: pip install 'lsr[serve]'") from e

from indexer.lucene import META as LUCENE_META
from indexer.lucene import LuceneIndexInfo
from indexer.native.format import LIVE_MARKER
from indexer.native.format import META as NATIVE_META
from indexer.shards import MANIFEST as SHARDS_MANIFEST
from plugin.hits import Hit
from plugin.options import DEFAULT_CANDIDATES, MODES, QUERY_MAX_LENGTH, InvalidOption, Mode
from plugin.searcher import FLOAT32_MAX, Searcher

log = logging.getLogger(__name__)

MAX_K = 1000
# Request size limits (defaults of Limits): a query is cut at the encoder's max_length tokens anyway.
MAX_QUERY_CHARS = 20_000
MAX_VECTOR_TERMS = 20_000
# 1 MiB: a 20,000-term vector of typical tokens is ~500 KB of JSON, 20,000 escaped characters ~240 KB.
MAX_BODY_BYTES = 1 << 20
# What a 422 echoes of an offending value, and how many errors it lists.
ECHO_CHARS = 200
MAX_ERRORS = 20
WARMUP_TEXT = "warm up the query encoder"
# Seconds between looks at the index directory with reload_on_change.
RELOAD_POLL_S = 1.0
# Ids in one request's filter allow-list (a longer list belongs in a stored field).
MAX_FILTER_IDS = 100_000
# File descriptors kept free for the server's own files (index opens on reload, pipes, the loop).
FD_RESERVE = 64
# The kernel's queue of connections not yet accepted (capped by net.core.somaxconn), and how many the
# loop accepts in one turn: a flood then holds at most a turn's worth of descriptors beyond the cap,
# and a new connection survives ~max_connections / ACCEPT_BATCH turns of it to send its request.
LISTEN_BACKLOG = 4096
# 16: a turn of the loop under a flood stays short, so established clients' reads interleave with it.
ACCEPT_BATCH = 16
MIN_ACCEPT_BATCH = 4
# Seconds between log lines about the connection cap (a flood evicts thousands a second).
CAP_LOG_EVERY_S = 10.0
# At the cap, connections are evicted at most this fast (a burst of EVICT_BURST, then EVICT_RATE a
# second); past it the loop stops accepting until the budget refills. Accepting and evicting a flood's
# socket costs ~300 us of a core: 2,000 a second took half the machine from the clients being served.
EVICT_RATE = 50.0
EVICT_BURST = 32.0

Weight = Annotated[float, Field(gt=0, le=FLOAT32_MAX, allow_inf_nan=False)]


# ---------------------------------------------------------------- limits
class Limits(BaseModel):
    """What a client may ask of ``lsr serve``; the defaults are the ``lsr serve`` flags' defaults.

    Parameters
    ----------
    max_body_bytes
        A request body above this is a 413: checked from ``Content-Length`` before anything is read,
        and counted while a chunked body streams in. The connection is then closed.
    max_query_chars, max_vector_terms
        Characters of ``query`` text and terms of a ``vector`` (422 above them).
    max_connections
        Open connections. At the cap a new connection closes the one that has waited longest for its
        first request (a half-sent header), else the longest idle keep-alive; when every connection
        has a request in flight the new one gets a 503. Lowered to fit the open-file limit
        (see :func:`serve`).
    read_timeout
        Seconds a request's headers and body may take to arrive, counted from the connection opening
        or the request's first byte; then a 408 and the connection is closed.
    keep_alive_timeout
        Seconds an idle keep-alive connection stays open.
    max_header_bytes
        Request line and headers; above it a 400 (h11's ``max_incomplete_event_size``).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    max_body_bytes: int = Field(MAX_BODY_BYTES, ge=64, description="Request body bytes (413 above).")
    max_query_chars: int = Field(MAX_QUERY_CHARS, ge=1, description="Characters of `query` (422 above).")
    max_vector_terms: int = Field(MAX_VECTOR_TERMS, ge=1, description="Terms of `vector` (422 above).")
    max_connections: int = Field(1024, ge=1, description="Open connections.")
    read_timeout: float = Field(
        10.0, gt=0, allow_inf_nan=False, description="Seconds for a request's headers and body to arrive."
    )
    keep_alive_timeout: float = Field(
        5.0, gt=0, allow_inf_nan=False, description="Seconds an idle keep-alive connection stays open."
    )
    max_header_bytes: int = Field(16 * 1024, ge=1024, description="Request line and header bytes.")


# ---------------------------------------------------------------- the HTTP schema
def _check_unicode(text: str, what: str) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        raise ValueError(f"{what} is not valid Unicode: a lone surrogate at character {e.start}") from None


class SearchFilter(BaseModel):
    """Which documents a search may return; a document must pass both parts given."""

    model_config = ConfigDict(extra="forbid", strict=True)

    ids: list[str] | None = Field(
        None, max_length=MAX_FILTER_IDS, description="An allow-list of external document ids."
    )
    where: dict[str, Any] | None = Field(
        None,
        max_length=64,
        description="Conditions on fields stored with `lsr index --fields`, all to hold: a string or "
        'number (equality), a list (in-set) or `{"gt"|"gte"|"lt"|"lte": number}` (a range).',
        examples=[{"year": {"gte": 2015}, "source": ["pubmed", "arxiv"]}],
    )


class SearchRequest(BaseModel):
    """One query: give exactly one of `query` (text, encoded by the server's encoder) or `vector` (a
    pre-encoded sparse vector). `verify` needs `query`; `alpha` and `beta` apply to mode `approx`."""

    model_config = ConfigDict(
        extra="forbid",
        # k=true is not 1 and k="10" is not 10: JSON types are taken as sent (ints pass as floats).
        strict=True,
        json_schema_extra={
            "oneOf": [
                {"required": ["query"], "properties": {"query": {"type": "string"}}},
                {"required": ["vector"], "properties": {"vector": {"type": "object"}}},
            ],
            # The other rules across fields, as the validator below applies them.
            "allOf": [
                {
                    "if": {"required": ["verify"], "properties": {"verify": {"const": True}}},
                    "then": {"required": ["query"], "properties": {"query": {"type": "string"}}},
                },
                {
                    "if": {"not": {"required": ["mode"], "properties": {"mode": {"const": "approx"}}}},
                    "then": {"properties": {"alpha": {"const": 1}, "beta": {"const": 1}}},
                },
            ],
            "examples": [
                {"query": "what causes heart disease", "k": 10},
                {"vector": {"heart": 1.7, "disease": 1.2}, "k": 5, "mode": "approx", "alpha": 0.9},
            ],
        },
    )

    query: str | None = Field(
        None,
        max_length=MAX_QUERY_CHARS,
        description="Query text, encoded by the server's query encoder. Give exactly one of this or "
        "`vector`.",
    )
    vector: dict[str, Weight] | None = Field(
        None,
        max_length=MAX_VECTOR_TERMS,
        description="A pre-encoded query `{token: weight}`, weights finite, > 0 and within float32's "
        "range; tokens the index never saw are ignored. Give exactly one of this or `query`.",
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
    filter: SearchFilter | None = Field(
        None,
        description="Native indexes: return only documents it allows (exact top-k among them).",
    )

    @field_validator("k", mode="before")
    @classmethod
    def _integral_k(cls, k: Any) -> Any:
        # JSON Schema's integer admits 10.0; strings and booleans stay errors.
        if isinstance(k, float) and k.is_integer():
            return int(k)
        return k

    @field_validator("query")
    @classmethod
    def _query_is_unicode(cls, query: str | None) -> str | None:
        if query is not None:
            _check_unicode(query, "the text")
        return query

    @field_validator("vector")
    @classmethod
    def _tokens_are_unicode(cls, vector: dict[str, float] | None) -> dict[str, float] | None:
        for token in vector or ():
            _check_unicode(token, f"token {token[:40]!r}")
        return vector

    @model_validator(mode="after")
    def _one_query_and_knobs(self) -> SearchRequest:
        if (self.query is None) == (self.vector is None):
            raise ValueError("give exactly one of `query` (text) or `vector` ({token: weight})")
        if self.verify and self.query is None:
            raise ValueError("`verify` needs `query` text (the dense encoder reads it), not a `vector`")
        if self.mode != "approx" and (self.alpha != 1.0 or self.beta != 1.0):
            raise ValueError(f"`alpha` and `beta` apply to mode 'approx' only, not {self.mode!r}")
        return self


def request_model(limits: Limits) -> type[SearchRequest]:
    """:class:`SearchRequest` with the query and vector bounds of ``limits`` (also in its schema)."""
    if (limits.max_query_chars, limits.max_vector_terms) == (MAX_QUERY_CHARS, MAX_VECTOR_TERMS):
        return SearchRequest
    fields = SearchRequest.model_fields
    return create_model(
        "SearchRequest",
        __base__=SearchRequest,
        __doc__=SearchRequest.__doc__,
        query=(
            str | None,
            Field(None, max_length=limits.max_query_chars, description=fields["query"].description),
        ),
        vector=(
            dict[str, Weight] | None,
            Field(None, max_length=limits.max_vector_terms, description=fields["vector"].description),
        ),
    )


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
    hits: list[HitOut] = Field(description="Best first; ties by the document's position in the input.")
    took_ms: TookMs


class ErrorResponse(BaseModel):
    detail: str = Field(description="`FIELD: message`")


class FieldError(BaseModel):
    type: str = Field(description="pydantic's error type, e.g. `missing`, `too_long`, `extra_forbidden`.")
    loc: list[str | int] = Field(description="Where: `body`, then the field (and token) names.")
    msg: str
    input: Any = Field(None, description=f"The offending value, at most {ECHO_CHARS} characters of it.")
    ctx: dict[str, Any] | None = None


class ValidationErrorResponse(BaseModel):
    detail: list[FieldError] = Field(
        description=f"The first {MAX_ERRORS} errors (then one that counts the rest)."
    )


class IndexHealth(BaseModel):
    backend: Literal["native", "lucene"]
    path: str = Field(description="The index directory's name (not its full path).")
    n_docs: int
    vocab_size: int | None = Field(description="Distinct terms (native; null for Lucene).")
    format: str
    format_version: int | None
    build: dict[str, Any] = Field(description="How the index was built (from its metadata; file names only).")


class EncoderHealth(BaseModel):
    path: str = Field(description="The encoder directory's name.")
    kind: str
    dtype: str
    contract: str
    query: str = Field(description="`model` (the graph encodes queries) or `idf` (no model runs).")
    max_length: int


class DenseHealth(BaseModel):
    encoder: str = Field(description="The dense encoder directory's name.")
    dim: int
    dtype: str = Field(description="How the store keeps vectors: fp16 or int8.")
    candidates: int = Field(description="Sparse hits verified per query.")
    fusion: str
    weight: float


class ConnectionsHealth(BaseModel):
    open: int = Field(description="Connections open now.")
    waiting: int = Field(description="Of those, idle or still sending a request's headers.")
    opened: int = Field(description="Connections accepted since start.")
    evicted: int = Field(
        description="Closed at the connection cap: the one waiting longest for its first request, "
        "else the longest idle keep-alive."
    )
    refused: int = Field(description="Turned away with a 503: every connection had a request in flight.")
    timed_out: int = Field(description="Closed because a request did not arrive within `read_timeout`.")
    paused: int = Field(
        description="Times accepting was paused: evictions at the cap ran past their rate (a flood)."
    )


class Health(BaseModel):
    status: Literal["ok"]
    index: IndexHealth
    encoder: EncoderHealth | None
    modes: list[str] = Field(description="Search modes this index supports.")
    dense: DenseHealth | None = Field(description="The dense store and encoder behind `verify`, if any.")
    warmup_seconds: float = Field(description="First encode and search at start-up (JIT, caches).")
    reloads: int = Field(0, description="Times the index was re-opened since start (`/admin/reload`).")
    limits: Limits | None = Field(None, description="The request and connection limits in force.")
    connections: ConnectionsHealth | None = Field(None, description="Connection counters (under uvicorn).")
    shards: dict[str, str] | None = Field(
        None, description="Shards in Ray actors (`lsr serve --ray`): each one's state, `ok` or why not."
    )


class ReloadResponse(BaseModel):
    status: Literal["reloaded"]
    reloads: int = Field(description="Times the index was re-opened since start, this one included.")
    seconds: float = Field(description="Time to open and warm up the index.")
    index: IndexHealth


# ---------------------------------------------------------------- the service
class RequestError(InvalidOption):
    """A valid request this server cannot answer; ``field`` names the request field at fault."""


@dataclass(frozen=True)
class _Opened:
    """One opening of the index directory, swapped whole by :meth:`SearchService.reload`."""

    searcher: Searcher
    info: IndexHealth
    modes: list[str]
    dense_info: DenseHealth | None
    signature: tuple | None


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
        max_length: int = QUERY_MAX_LENGTH,
        threads: int | None = None,
        verify_encoder: str | Path | None = None,
        candidates: int = DEFAULT_CANDIDATES,
        max_segments: int | None = None,
        ray: bool | str | None = None,
    ):
        self.ray = ray
        self.index_dir = Path(index_dir)
        if max_segments is not None and max_segments < 1:
            raise ValueError(f"max_segments must be >= 1, got {max_segments}")
        self.max_segments = max_segments
        self._pool: ThreadPoolExecutor | None = None
        self._reload_lock = threading.Lock()
        self.reloads = 0
        self.candidates = candidates
        self._verify_encoder = None if verify_encoder is None else Path(verify_encoder)
        self._dense_encoder = None  # the verifier's query encoder, loaded once and kept across reloads
        if verify_encoder is not None and not (self.index_dir / NATIVE_META).is_file() and not self.live:
            raise ValueError("--verify needs a native index built with a dense store (lsr index --dense)")
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
                path=Path(encoder_dir).name,
                kind=m.kind,
                dtype=m.dtype,
                contract=m.contract,
                query=m.query,
                max_length=encoder.tokenizer.max_length,
            )
        self._current = self._open()
        self.backend = self._current.info.backend
        self.warmup_seconds = self._warm_up()

    # What the endpoints read, from the index opening in use.
    @property
    def searcher(self):
        return self._current.searcher

    @property
    def index_info(self) -> IndexHealth:
        return self._current.info

    @property
    def modes(self) -> list[str]:
        return self._current.modes

    @property
    def verifier(self):
        return self._current.searcher.verifier

    @property
    def dense_info(self) -> DenseHealth | None:
        return self._current.dense_info

    # ------------------------------------------------------------ opening the index
    @property
    def live(self) -> bool:
        """Whether the index directory holds a live index (segments that change: :mod:`indexer.live`)."""
        return (self.index_dir / LIVE_MARKER).is_file()

    def _signature(self) -> tuple | None:
        """What changes when a rebuild swaps a new index in: the directory and its metadata file (a
        live index: its current generation)."""
        if self.live:
            from indexer.live import current

            try:
                d = os.stat(self.index_dir)
                return (d.st_dev, d.st_ino, current(self.index_dir).number)
            except (OSError, ValueError):
                return None
        try:
            d = os.stat(self.index_dir)
            marker = next(
                (m for m in (NATIVE_META, SHARDS_MANIFEST) if (self.index_dir / m).is_file()), LUCENE_META
            )
            m = os.stat(self.index_dir / marker)
        except OSError:
            return None
        return (d.st_dev, d.st_ino, m.st_ino, m.st_size, m.st_mtime_ns)

    def _open(self) -> _Opened:
        signature = self._signature()  # before the open: a swap during it shows at the next look
        if (
            (self.index_dir / NATIVE_META).is_file()
            or self.live
            or (self.index_dir / SHARDS_MANIFEST).is_file()
        ):
            return self._open_native(signature)
        return self._open_lucene(signature)

    def _open_native(self, signature: tuple | None) -> _Opened:
        # The dense encoder is loaded once and kept across reloads.
        dense = self._dense_encoder if self._dense_encoder is not None else self._verify_encoder
        options = {"candidates": self.candidates, "verify": False} if dense is not None else {}
        if self.ray is not None:
            options["ray"] = self.ray
        searcher = Searcher(self.index_dir, self.encoder, dense, **options)
        if searcher.live:
            info = _live_health(self.index_dir, searcher.native)
        elif searcher.sharded:
            m = searcher.native.manifest
            info = IndexHealth(
                backend="native",
                path=self.index_dir.name,
                n_docs=len(searcher.native),
                vocab_size=len(searcher.native.vocab),
                format=m["format"],
                format_version=m["format_version"],
                build=_redact({k: v for k, v in m.items() if k not in ("format", "format_version")}),
            )
        else:
            native = searcher.native
            meta = native.index.meta
            info = IndexHealth(
                backend="native",
                path=self.index_dir.name,
                n_docs=native.index.n_docs,
                vocab_size=len(native.index.vocab),
                format=meta["format"],
                format_version=meta["format_version"],
                build=_redact(
                    {k: v for k, v in meta.items() if k not in ("arrays", "format", "format_version")}
                ),
            )
        dense_info = None
        if searcher.verifier is not None:
            v = searcher.verifier
            self._dense_encoder = v.encoder
            dense_info = DenseHealth(
                encoder=self._verify_encoder.name,
                dim=v.store.dim,
                dtype=v.store.meta["dtype"],
                candidates=v.candidates,
                fusion=v.fusion,
                weight=v.weight,
            )
        # Mode "float" needs a plain native index that keeps float weights (plugin.native).
        floats = not (searcher.live or searcher.sharded) and searcher.native.index.has_float_weights
        modes = [m for m in MODES if m != "float" or floats]
        return _Opened(searcher, info, modes, dense_info, signature)

    def _open_lucene(self, signature: tuple | None) -> _Opened:
        info = LuceneIndexInfo.load(self.index_dir)
        if info.format != "lucene-impact":
            raise ValueError(
                f"{self.index_dir}: lsr serve searches impact indexes (native or Lucene), not {info.format!r}"
            )
        if self._pool is None:
            # pyjnius attaches each calling thread to the JVM; one long-lived thread makes every call.
            self._pool = ThreadPoolExecutor(1, thread_name_prefix="lsr-lucene")
        searcher = self._pool.submit(Searcher, self.index_dir, self.encoder).result()
        health = IndexHealth(
            backend="lucene",
            path=self.index_dir.name,
            n_docs=info.documents,
            vocab_size=None,
            format=info.format,
            format_version=None,
            build=_redact(
                {
                    "documents": info.documents,
                    "skipped_empty": info.skipped_empty,
                    "quantization": info.quantization,
                    "scale": info.scale,
                    "threads": info.threads,
                    "optimized": info.optimized,
                    "sources": info.sources,
                    "anserini_jar": info.anserini_jar,
                    "build_seconds": info.seconds,
                }
            ),
        )
        return _Opened(searcher, health, ["exact"], None, signature)

    def _warm_up(self) -> float:
        """Encode and search once, so that the first request pays no JIT compilation or cache fill."""
        start = time.perf_counter()
        if self.encoder is not None:
            self.encoder.encode([WARMUP_TEXT])
        self._warm_index(self._current)
        if self.verifier is not None and self.encoder is not None:
            self.search(query=WARMUP_TEXT, k=10, verify=True)
        seconds = time.perf_counter() - start
        log.info("warm-up: %.2f s", seconds)
        return seconds

    def _warm_index(self, opened: _Opened) -> None:
        native = opened.searcher.native
        if native is not None and native.vocab:
            opened.searcher.search({native.vocab[0]: 1.0}, 10)

    def changed(self) -> bool:
        """True when the index directory is no longer the one opened (a rebuild swapped it)."""
        now = self._signature()
        return now is not None and now != self._current.signature

    def reload(self) -> float:
        """Re-open the index directory and answer from it; the seconds it took.

        Requests in flight finish on the index they started on (its memory maps stay valid after a
        swap); on any error the previous index stays in use and the error is raised.
        """
        with self._reload_lock:
            start = time.perf_counter()
            cur = self._current
            signature = self._signature()
            if (
                self.backend == "native"
                and cur.searcher.live
                and self.live
                and signature is not None
                and cur.signature is not None
                and signature[:2] == cur.signature[:2]
            ):
                # A new generation of the same live index: open only the segments that changed. The
                # searcher swaps its segment list in one assignment; a request in flight keeps its own.
                cur.searcher.refresh()
                new = _Opened(
                    cur.searcher,
                    _live_health(self.index_dir, cur.searcher.native),
                    cur.modes,
                    cur.dense_info,
                    signature,
                )
                self._current = new
            elif self.backend == "native":
                if (
                    not any((self.index_dir / m).is_file() for m in (NATIVE_META, SHARDS_MANIFEST))
                    and not self.live
                ):
                    raise FileNotFoundError(f"{self.index_dir.name}: {NATIVE_META} is missing")
                new = self._open_native(signature)
                self._warm_index(new)
                self._current = new  # one reference swap: a request reads it once
            else:
                new = self._open_lucene(self._signature())
                self._pool.submit(self._swap_lucene, new).result()
            self.reloads += 1
            seconds = time.perf_counter() - start
        log.info("re-opened %s (%d docs) in %.2f s", self.index_dir.name, new.info.n_docs, seconds)
        return seconds

    def _swap_lucene(self, new: _Opened) -> None:
        # On the Lucene thread: no search runs between the swap and the old searcher's close.
        old, self._current = self._current, new
        old.searcher.close()

    def health(self) -> Health:
        cur = self._current
        return Health(
            status="ok",
            index=cur.info,
            encoder=self.encoder_info,
            modes=cur.modes,
            dense=cur.dense_info,
            warmup_seconds=self.warmup_seconds,
            reloads=self.reloads,
            shards=cur.searcher.native.health() if hasattr(cur.searcher.native, "actors") else None,
        )

    # ------------------------------------------------------------ queries
    def query(
        self, query: str | None = None, vector: dict[str, float] | None = None
    ) -> str | dict[str, float]:
        """The request's query: its text, or its ``{token: weight}`` vector checked (weights are
        floats here, as the schema types them: an integer ``2`` is the weight 2.0, not an impact)."""
        if (query is None) == (vector is None):
            raise RequestError("query", "give exactly one of `query` or `vector`")
        if query is not None:
            if self.encoder is None and self.backend != "bm25":
                raise RequestError(
                    "query",
                    "this server has no query encoder (start it with --encoder ENCODER_DIR); "
                    "send a pre-encoded `vector` instead",
                )
            return query
        for token, w in vector.items():
            if not (isinstance(w, int | float) and math.isfinite(w) and 0 < w <= FLOAT32_MAX):
                raise RequestError(
                    "vector",
                    f"token {token[:40]!r} has weight {w}; weights must be finite, > 0 and "
                    f"at most {FLOAT32_MAX:.7g} (float32)",
                )
        return {t: float(w) for t, w in vector.items()}

    def search(
        self,
        query: str | None = None,
        vector: dict[str, float] | None = None,
        k: int = 10,
        mode: Mode = "exact",
        alpha: float = 1.0,
        beta: float = 1.0,
        verify: bool = False,
        filter: dict[str, Any] | None = None,
    ) -> tuple[list[Hit], float, float, float | None]:
        """``(hits, encode ms, search ms, verify ms)`` of one text ``query`` or pre-encoded ``vector``;
        verify ms (dense query encoding and verification) is None without ``verify``.

        Raises :class:`RequestError` (a ``ValueError`` naming the field) for what cannot be answered.
        """
        cur = self._current  # read once: a reload meanwhile does not change this request's index
        if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= MAX_K:
            raise RequestError("k", f"must be an integer in [1, {MAX_K}], got {k!r}")
        if mode not in cur.modes:
            if self.backend == "lucene":
                raise RequestError("mode", f"{mode!r} needs a native index; this server searches Lucene")
            raise RequestError("mode", f"must be one of {', '.join(cur.modes)}, got {mode!r}")
        if verify:
            if cur.searcher.verifier is None:
                raise RequestError(
                    "verify", "this server has no dense encoder (start it with --verify DENSE_ENCODER_DIR)"
                )
            if query is None:
                raise RequestError("verify", "needs `query` text (the dense encoder reads it)")
            if mode != "exact":
                raise RequestError("mode", "verify searches its sparse candidates in exact mode")
        q = self.query(query, vector)
        try:
            changes = {"mode": mode, "alpha": alpha, "beta": beta}
            if cur.searcher.verifier is not None:
                changes["verify"] = verify
            searcher = cur.searcher.with_options(**changes)
            t: dict[str, float] = {}
            if filter is not None and self.backend == "lucene":
                raise RequestError("filter", "filters need a native index; this server searches Lucene")
            if self.backend == "lucene":
                # On the Lucene thread, where a reload swaps searchers between two searches.
                hits = self._pool.submit(lambda: self._current.searcher.search(q, k, timings=t)).result()
            else:
                hits = searcher.search(q, k, timings=t, filter=filter)
        except InvalidOption as e:
            raise RequestError(e.field, e.message) from None
        except (TypeError, UnicodeError) as e:
            raise RequestError("query", f"cannot be encoded: {_preview(str(e))}") from None
        except ValueError as e:  # a weight beyond what an impact holds
            raise RequestError("vector" if vector is not None else "query", _preview(str(e))) from None
        encode_ms, search_ms = t.pop("sparse_encode", 0.0), t.pop("sparse_search", 0.0)
        return hits, encode_ms, search_ms, (sum(t.values()) if verify else None)

    def merge_if_needed(self) -> bool:
        """The merge policy: merge the smallest segments of a live index when it holds more than
        ``max_segments`` (True when it merged; the next reload picks the result up)."""
        if self.max_segments is None or not self.live:
            return False
        from indexer import live

        if len(live.current(self.index_dir).segments) <= self.max_segments:
            return False
        change = live.merge(self.index_dir, self.max_segments)
        log.info("merged %s down to %d segment(s)", self.index_dir.name, change.segments)
        return True

    def close(self) -> None:
        if self._pool is not None:
            self._pool.submit(self._current.searcher.close).result()
            self._pool.shutdown()
            self._pool = None


def _live_health(index_dir: Path, searcher) -> IndexHealth:
    """``/health``'s index entry for a live index: its generation and segments."""
    from indexer.live import FORMAT, FORMAT_VERSION

    gen = searcher.generation
    return IndexHealth(
        backend="native",
        path=index_dir.name,
        n_docs=len(searcher),
        vocab_size=len(searcher.vocab),
        format=FORMAT,
        format_version=FORMAT_VERSION,
        build={
            "generation": gen.number,
            "quantization": gen.quantization,
            "scale": gen.scale,
            "fields": searcher.field_names,
            "segments": [
                {"name": s.name, "n_docs": s.n_docs, "n_deleted": s.n_deleted} for s in gen.segments
            ],
        },
    )


def _redact(obj: Any) -> Any:
    """``obj`` with absolute paths cut to their last component (``/health`` shows no file system)."""
    if isinstance(obj, str) and os.path.isabs(obj):
        return Path(obj).name
    if isinstance(obj, dict):
        return {k: _redact(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_redact(v) for v in obj]
    return obj


# ---------------------------------------------------------------- echoing input, bounded
def _clean(text: str) -> str:
    """``text`` as valid UTF-8: a lone surrogate becomes its ``\\udXXX`` escape."""
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _pieces(value: Any) -> Iterator[str]:
    """Compact JSON-like text of ``value``, piece by piece (the caller stops when it has enough)."""
    if isinstance(value, dict):
        yield "{"
        for i, (k, v) in enumerate(value.items()):
            yield (", " if i else "") + json.dumps(str(k), ensure_ascii=False) + ": "
            yield from _pieces(v)
        yield "}"
    elif isinstance(value, list | tuple):
        yield "["
        for i, v in enumerate(value):
            if i:
                yield ", "
            yield from _pieces(v)
        yield "]"
    elif isinstance(value, str):
        yield json.dumps(value[: ECHO_CHARS * 4], ensure_ascii=False)
    else:
        yield json.dumps(value, ensure_ascii=False, default=str)


def _preview(value: Any, chars: int = ECHO_CHARS) -> Any:
    """``value`` safe to echo in an error: JSON-able, valid UTF-8 and at most ``chars`` characters."""
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, int):
        text = str(value)
        return value if len(text) <= chars else text[:chars] + "…"
    if isinstance(value, str):
        return _clean(value if len(value) <= chars else value[:chars] + "…")
    if isinstance(value, BaseException):
        return _preview(str(value), chars)
    out, n = [], 0
    for piece in _pieces(value):
        out.append(piece)
        n += len(piece)
        if n > chars:
            return _clean("".join(out)[:chars] + "…")
    return _clean("".join(out))


def _bounded_errors(errors: list[dict]) -> list[dict]:
    """pydantic's errors, each field bounded (see :func:`_preview`), at most ``MAX_ERRORS`` of them."""
    out = []
    for e in errors[:MAX_ERRORS]:
        item = {
            "type": _preview(str(e.get("type", "")), 60),
            "loc": [x if isinstance(x, int) else _preview(str(x), ECHO_CHARS) for x in e.get("loc", ())],
            "msg": _preview(str(e.get("msg", "")), 2 * ECHO_CHARS),
            "input": _preview(e.get("input")),
        }
        if "ctx" in e:
            item["ctx"] = {_preview(str(k), 40): _preview(v) for k, v in list(e["ctx"].items())[:10]}
        out.append(item)
    if len(errors) > MAX_ERRORS:
        more = len(errors) - MAX_ERRORS
        out.append({"type": "too_many_errors", "loc": ["body"], "msg": f"{more} more errors not shown"})
    return out


class SafeJSONResponse(JSONResponse):
    """JSON that always encodes: lone surrogates escaped, never a UnicodeEncodeError."""

    def render(self, content: Any) -> bytes:
        text = json.dumps(content, ensure_ascii=False, allow_nan=False, separators=(",", ":"), default=str)
        return text.encode("utf-8", "backslashreplace")


# ---------------------------------------------------------------- the request guard
def _error_bytes(detail: str) -> tuple[list[tuple[bytes, bytes]], bytes]:
    body = json.dumps({"detail": _preview(detail, 2 * ECHO_CHARS)}).encode("utf-8")
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"connection", b"close"),  # the unread rest of the body is not drained
    ]
    return headers, body


async def _send_error(send, status: int, detail: str) -> None:
    headers, body = _error_bytes(detail)
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body, "more_body": False})


def _is_json(content_type: str | None) -> bool:
    media = (content_type or "").split(";", 1)[0].strip().lower()
    return media == "application/json" or (media.startswith("application/") and media.endswith("+json"))


class RequestGuard:
    """ASGI middleware: the body limit (413) and, on ``json_paths``, the JSON content type (415).

    A ``Content-Length`` above ``max_body_bytes`` is refused before a byte of the body is read; a
    chunked body is counted as it streams and refused once it passes the limit. Bodies within the
    limit are read whole here and handed on, so the app never sees a partial one. Refusals close the
    connection, so a client cannot make the server read (and discard) the rest of a huge body.
    """

    def __init__(self, app, max_body_bytes: int = MAX_BODY_BYTES, json_paths: frozenset[str] = frozenset()):
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.json_paths = json_paths

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {
            k.lower(): v
            for k, v in scope["headers"]
            if k.lower() in (b"content-length", b"content-type", b"transfer-encoding")
        }
        if scope["path"] in self.json_paths and scope["method"] == "POST":
            ctype = headers.get(b"content-type", b"").decode("latin-1")
            if not _is_json(ctype):
                got = repr(ctype) if ctype else "none"
                await _send_error(
                    send, 415, f"content-type: {scope['path']} takes application/json, got {got}"
                )
                return
        length = headers.get(b"content-length")
        try:
            declared = None if length is None else int(length)
        except ValueError:  # h11 refuses these; another ASGI server might not
            await _send_error(send, 400, f"content-length: not a number: {length[:40]!r}")
            return
        if declared is not None and declared > self.max_body_bytes:
            await _send_error(
                send,
                413,
                f"body: {declared} bytes is over this server's limit of {self.max_body_bytes} "
                "(lsr serve --max-body-bytes)",
            )
            return
        if not declared and b"transfer-encoding" not in headers:
            await self.app(scope, receive, send)
            return
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client left (or its request timed out): nobody to answer
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body_bytes:
                await _send_error(
                    send,
                    413,
                    f"body: over this server's limit of {self.max_body_bytes} bytes "
                    "(lsr serve --max-body-bytes)",
                )
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        replayed = False

        async def replay():
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


# ---------------------------------------------------------------- the app
def _is_loopback(host: str | None) -> bool:
    try:
        ip = ipaddress.ip_address(host or "")
    except ValueError:
        return False
    mapped = getattr(ip, "ipv4_mapped", None)
    return ip.is_loopback or (mapped is not None and mapped.is_loopback)


def create_app(
    service: SearchService,
    limits: Limits | None = None,
    docs: bool = False,
    connections: ConnectionStats | None = None,
) -> FastAPI:
    """The FastAPI app answering from ``service`` (see the module docstring); it closes it at shutdown.

    Parameters
    ----------
    limits
        Request limits (body, query, vector); the connection limits apply under :func:`serve`.
    docs
        Serve the interactive docs at ``/docs`` and ``/redoc`` (``/openapi.json`` is always there:
        it is the machine-readable contract, and the pages load their scripts from a CDN).
    connections
        Counters ``/health`` reports (:func:`serve` passes uvicorn's).
    """
    limits = limits or Limits()

    @asynccontextmanager
    async def lifespan(_app: FastAPI):
        yield
        service.close()

    app = FastAPI(
        title="lsr",
        version=_version(),
        summary="Learned sparse retrieval: search one index with text or sparse query vectors.",
        lifespan=lifespan,
        docs_url="/docs" if docs else None,
        redoc_url="/redoc" if docs else None,
        openapi_url="/openapi.json",
    )
    app.state.service = service
    app.add_middleware(RequestGuard, max_body_bytes=limits.max_body_bytes, json_paths=frozenset({"/search"}))
    error = {"model": ErrorResponse}

    @app.exception_handler(RequestValidationError)
    async def validation_error(_request: Request, exc: RequestValidationError) -> JSONResponse:
        # FastAPI's own handler echoes the whole input (a 50 MB query came back as 52 MB), and a lone
        # surrogate or a NaN in it cannot be encoded (a 500).
        return SafeJSONResponse(status_code=422, content={"detail": _bounded_errors(list(exc.errors()))})

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        detail = _preview(exc.detail if isinstance(exc.detail, str) else str(exc.detail), 2 * ECHO_CHARS)
        return SafeJSONResponse(status_code=exc.status_code, content={"detail": detail}, headers=exc.headers)

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
                None if request.filter is None else request.filter.model_dump(),
            )
        except RequestError as e:
            raise HTTPException(status_code=400, detail=str(e)) from None
        except RuntimeError as e:  # a shard in a Ray actor is down or over its deadline
            if getattr(e, "shard", None) is None:
                raise
            raise HTTPException(status_code=503, detail=str(e)) from None
        return SearchResponse(
            hits=[HitOut(docid=h.docid, score=h.score) for h in hits],
            took_ms=TookMs(encode=encode_ms, search=search_ms, verify=verify_ms),
        )

    # The limits' own model: a string annotation could not name this local class.
    search.__annotations__["request"] = request_model(limits)
    app.post(
        "/search",
        response_model=SearchResponse,
        responses={
            400: {**error, "description": "A valid request this server cannot answer"},
            413: {**error, "description": f"The body is over `max_body_bytes` ({limits.max_body_bytes})"},
            415: {**error, "description": "The body is not sent as application/json"},
            422: {"model": ValidationErrorResponse, "description": "The body breaks the schema"},
        },
        summary="Top-k hits of one query",
    )(search)

    @app.get("/health", response_model=Health, summary="Status and what this server holds")
    def health() -> Health:
        h = service.health()
        h.limits = limits
        h.connections = connections.health() if connections is not None else None
        return h

    @app.post(
        "/admin/reload",
        response_model=ReloadResponse,
        responses={
            403: {**error, "description": "Not from a loopback client"},
            409: {**error, "description": "The index cannot be re-opened; the previous one is still served"},
        },
        summary="Re-open the index directory (loopback clients only)",
    )
    def reload(request: Request) -> ReloadResponse:
        client = request.client.host if request.client else None
        if not _is_loopback(client):
            raise HTTPException(status_code=403, detail="reload: only loopback clients may reload the index")
        try:
            seconds = service.reload()
        except (OSError, ValueError, KeyError, RuntimeError) as e:
            message = str(e).replace(str(service.index_dir.resolve()), service.index_dir.name)
            message = message.replace(str(service.index_dir), service.index_dir.name)
            log.warning("reload failed, still serving the previous index: %s", message)
            raise HTTPException(status_code=409, detail=f"index: cannot re-open: {message}") from None
        return ReloadResponse(
            status="reloaded", reloads=service.reloads, seconds=seconds, index=service.index_info
        )

    return app


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("lsr")
    except PackageNotFoundError:
        return "0+unknown"


# ---------------------------------------------------------------- connections
class ConnectionStats:
    """Counters of the guarded HTTP protocol (:func:`_guarded_protocol`), read by ``/health``."""

    def __init__(self) -> None:
        self.live: set = set()  # connections not yet closed by us or the client
        # Connections waiting for a request's headers, longest first: those that never sent a whole
        # one (new, or a slow-header flood), and idle keep-alives that did.
        self.fresh: OrderedDict = OrderedDict()
        self.idle: OrderedDict = OrderedDict()
        self.opened = self.evicted = self.refused = self.timed_out = self.paused = 0
        self.logged_at = -math.inf  # when the cap was last logged
        # The listening sockets' accept callbacks (loop, fd, callback, args), to pause and resume.
        self.listeners: list[tuple] = []
        self._budget, self._budget_at, self._accepting = EVICT_BURST, time.monotonic(), True

    def listen_on(self, loop: asyncio.AbstractEventLoop, sockets) -> None:
        """Remember ``sockets``' accept callbacks (selector loops only: uvloop hides them)."""
        selector = getattr(loop, "_selector", None)
        if selector is None:
            return
        for sock in sockets:
            try:
                handle = selector.get_key(sock.fileno()).data[0]
            except (KeyError, ValueError, AttributeError, IndexError):
                continue
            # Kept apart from the handle: removing a reader cancels its handle, which drops both.
            self.listeners.append((loop, sock.fileno(), handle._callback, handle._args))

    def closed_at_cap(self) -> None:
        """A connection was evicted or refused at the cap: spend the budget, pause accepting when spent.

        Paused, new connections wait in the kernel's queue (or their SYN is retried) instead of each
        costing a core's ~300 us; the clients already connected keep their share of the machine.
        """
        now = time.monotonic()
        self._budget = min(EVICT_BURST, self._budget + (now - self._budget_at) * EVICT_RATE) - 1
        self._budget_at = now
        if self._budget >= 0 or not self._accepting or not self.listeners:
            return
        self._accepting = False
        self.paused += 1
        for loop, fd, *_ in self.listeners:
            loop.remove_reader(fd)
        self.listeners[0][0].call_later(-self._budget / EVICT_RATE, self._resume)

    def _resume(self) -> None:
        self._accepting = True
        for loop, fd, callback, args in self.listeners:
            loop.add_reader(fd, callback, *args)

    def health(self) -> ConnectionsHealth:
        return ConnectionsHealth(
            open=len(self.live),
            waiting=len(self.fresh) + len(self.idle),
            opened=self.opened,
            evicted=self.evicted,
            refused=self.refused,
            timed_out=self.timed_out,
            paused=self.paused,
        )


_TIMEOUT_408 = b"HTTP/1.1 408 Request Timeout\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
_BUSY = b"all connections are busy; retry shortly"
_REFUSED_503 = (
    b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: text/plain\r\n"
    b"content-length: %d\r\nretry-after: 1\r\nconnection: close\r\n\r\n%s" % (len(_BUSY), _BUSY)
)


def _guarded_protocol(limits: Limits, stats: ConnectionStats) -> type:
    """uvicorn's h11 protocol with a connection cap and a deadline for each request to arrive.

    uvicorn times out only idle keep-alive connections: one that opens and sends half a header (or
    nothing) is kept forever, and ~20,000 of them exhausted the file descriptors. Here a request's
    headers and body must arrive within ``read_timeout`` of its first byte (of the connection opening
    for the first request), and past ``max_connections`` a waiting connection is closed: the one
    waiting longest for its first request, else the longest idle keep-alive, so that a flood of
    half-sent headers evicts itself and not the clients that have been served. uvicorn's own
    ``limit_concurrency`` is not used: it counts idle connections too, so a flood of them would
    turn every real request into a 503.
    """
    import h11
    from uvicorn.protocols.http.h11_impl import H11Protocol

    live, fresh, idle = stats.live, stats.fresh, stats.idle

    class GuardedH11Protocol(H11Protocol):
        _read_timer: asyncio.TimerHandle | None = None
        _served = False  # a whole request header has come in on this connection

        def connection_made(self, transport) -> None:
            super().connection_made(transport)
            live.add(self)
            stats.opened += 1
            if len(live) > limits.max_connections:
                victim = next(iter(fresh), None) or next(iter(idle), None)
                if victim is not None:
                    stats.evicted += 1
                    victim._close()
                else:
                    stats.refused += 1
                    transport.write(_REFUSED_503)
                stats.closed_at_cap()
                self._log_cap()
                if victim is None:
                    self._close()
                    return
            self._waits()
            self._arm()

        def _log_cap(self) -> None:
            # Checked here, not by the log filter: a flood evicts thousands a second.
            now = time.monotonic()
            if now - stats.logged_at >= CAP_LOG_EVERY_S:
                stats.logged_at = now
                log.warning(
                    "connection limit (%d) reached: %d connections closed while waiting for a request, "
                    "%d refused (all busy), so far",
                    limits.max_connections, stats.evicted, stats.refused,
                )  # fmt: skip

        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            self._check_progress()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if self.transport.is_closing():
                return
            if self.conn.their_state is h11.IDLE:
                self._waits()  # an idle keep-alive now; uvicorn's keep-alive timer runs
                if self.conn.trailing_data[0]:
                    self._arm()  # part of a pipelined request is already here
            else:
                self._check_progress()

        def connection_lost(self, exc: Exception | None) -> None:
            self._forget()
            super().connection_lost(exc)

        # -------------------------------------------------------- helpers
        def _check_progress(self) -> None:
            if self.transport.is_closing():
                return
            state = self.conn.their_state
            if state is h11.IDLE:
                if self._read_timer is None:
                    self._arm()  # the first bytes of the next request: its deadline starts now
                return
            # Its headers are in: a request is being served, not evictable.
            fresh.pop(self, None)
            idle.pop(self, None)
            self._served = True
            if state is not h11.SEND_BODY:
                self._disarm()

        def _waits(self) -> None:
            queue = idle if self._served else fresh
            queue[self] = None
            queue.move_to_end(self)

        def _arm(self) -> None:
            self._disarm()
            self._read_timer = self.loop.call_later(limits.read_timeout, self._timed_out)

        def _disarm(self) -> None:
            if self._read_timer is not None:
                self._read_timer.cancel()
                self._read_timer = None

        def _timed_out(self) -> None:
            self._read_timer = None
            if self.transport.is_closing():
                return
            stats.timed_out += 1
            if self.conn.their_state is h11.IDLE and self.conn.our_state is h11.IDLE:
                self.transport.write(_TIMEOUT_408)
            self._close()

        def _forget(self) -> None:
            live.discard(self)
            fresh.pop(self, None)
            idle.pop(self, None)
            self._disarm()

        def _close(self) -> None:
            self._forget()
            self.transport.close()

    return GuardedH11Protocol


def _fit_open_files(max_connections: int) -> tuple[int, int]:
    """``(max_connections, accept batch)`` that fit the open-file limit, raising the soft limit first.

    Each connection holds a descriptor. The loop accepts up to a batch of connections a turn and
    closes those the cap evicts on the next, so a flood can hold ``2 x batch`` more for a moment;
    past the limit ``accept()`` fails with EMFILE and the loop stops accepting for a second.
    """
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = max_connections + 2 * ACCEPT_BATCH + FD_RESERVE
    if soft != resource.RLIM_INFINITY and soft < need:
        target = need if hard == resource.RLIM_INFINITY else min(need, hard)
        if target > soft:
            try:
                resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
                soft = target
            except (ValueError, OSError):
                pass
    if soft == resource.RLIM_INFINITY or soft >= need:
        return max_connections, ACCEPT_BATCH
    room = soft - FD_RESERVE
    batch = max(MIN_ACCEPT_BATCH, min(ACCEPT_BATCH, (room - max_connections) // 2))
    fitted = min(max_connections, room - 2 * batch)
    if fitted < 1:
        raise RuntimeError(
            f"the open-file limit ({soft}) leaves no room for connections; raise it (ulimit -n)"
        )
    if fitted < max_connections:
        log.warning(
            "open-file limit %d: serving at most %d connections (asked for %d)", soft, fitted, max_connections
        )
    return fitted, batch


# ---------------------------------------------------------------- logging
class RateLimitFilter(logging.Filter):
    """Lets the first ``burst`` warnings of each message through per ``window`` seconds.

    The loop logs a traceback for every ``accept()`` that fails for want of file descriptors, and
    uvicorn a line for every malformed request: a flood wrote 93 MB of them. The next message let
    through after a quiet spell says how many were dropped. Records below WARNING always pass.
    """

    def __init__(self, burst: int = 5, window: float = 60.0, clock: Callable[[], float] = time.monotonic):
        super().__init__()
        self.burst, self.window, self.clock = burst, window, clock
        self._seen: dict[tuple[str, str], list] = {}  # (logger, message) -> [window start, passed, dropped]
        self._lock = threading.Lock()

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING:
            return True
        key = (record.name, str(record.msg))
        now = self.clock()
        with self._lock:
            entry = self._seen.get(key)
            if entry is None or now - entry[0] >= self.window:
                dropped = entry[2] if entry else 0
                if len(self._seen) > 1000:  # messages built with f-strings: do not grow without bound
                    self._seen.clear()
                self._seen[key] = [now, 1, 0]
                if dropped and isinstance(record.msg, str):
                    record.msg += f" ({dropped} more like this dropped in the last {self.window:.0f} s)"
                return True
            if entry[1] < self.burst:
                entry[1] += 1
                return True
            entry[2] += 1
            return False


_RATE_LIMITED = ("asyncio", "uvicorn.error", __name__)


def _rate_limit_logs() -> None:
    for name in _RATE_LIMITED:
        logger = logging.getLogger(name)
        if not any(isinstance(f, RateLimitFilter) for f in logger.filters):
            logger.addFilter(RateLimitFilter())


# ---------------------------------------------------------------- serving
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
    sock.listen(LISTEN_BACKLOG)
    sock.set_inheritable(True)
    return sock


def _watch(service: SearchService, stop: threading.Event) -> None:
    """Re-open the index when its directory changes (reload_on_change; always for a live index),
    and keep a live index at ``max_segments`` or fewer (the merge policy), until ``stop``."""
    while not stop.wait(RELOAD_POLL_S):
        if service.changed():
            try:
                service.reload()
            except Exception as e:  # a rebuild half-published or broken: keep the old, look again
                log.warning("the index changed but cannot be re-opened yet: %s", e)
        try:
            service.merge_if_needed()
        except Exception as e:  # e.g. a writer holds the lock: try again at the next look
            log.warning("merge policy: %s", e)


def _server_class(stats: ConnectionStats) -> type:
    import uvicorn

    class _Server(uvicorn.Server):
        async def startup(self, sockets=None) -> None:
            await super().startup(sockets)
            # asyncio listen()ed with the accept batch; the kernel's queue of new connections should
            # be deep, so that a flood's connections wait in it rather than being dropped.
            for sock in sockets or ():
                sock.listen(LISTEN_BACKLOG)
            stats.listen_on(asyncio.get_running_loop(), sockets or ())

    return _Server


def serve(
    service: SearchService,
    host: str = "127.0.0.1",
    port: int = 8080,
    access_log: bool = False,
    ready: Callable[[str], None] | None = None,
    limits: Limits | None = None,
    docs: bool = False,
    reload_on_change: bool = False,
) -> None:
    """Serve ``service`` over HTTP with uvicorn until SIGINT or SIGTERM.

    Open the service (index and encoders, warmed up) before calling, so the socket is bound only
    once it can answer; ``port=0`` takes a free port. ``ready(url)`` is called once the socket
    listens (``lsr serve`` prints the URL).

    Parameters
    ----------
    limits
        Request and connection limits (:class:`Limits`); ``max_connections`` is lowered, with a
        warning, when the open-file limit (raised toward its hard limit first) cannot hold it.
    docs
        Serve ``/docs`` and ``/redoc`` too.
    reload_on_change
        Look at the index directory every ``RELOAD_POLL_S`` seconds and re-open it when a rebuild
        has swapped a new index in.
    """
    import uvicorn

    limits = limits or Limits()
    max_connections, batch = _fit_open_files(limits.max_connections)
    if max_connections != limits.max_connections:
        limits = limits.model_copy(update={"max_connections": max_connections})
    _rate_limit_logs()
    stats = ConnectionStats()
    app = create_app(service, limits, docs=docs, connections=stats)
    sock = _bind(host, port)
    bound = sock.getsockname()[1]
    url = f"http://[{host}]:{bound}" if ":" in host else f"http://{host}:{bound}"
    config = uvicorn.Config(
        app,
        host=host,
        port=bound,
        log_config=None,
        access_log=access_log,
        timeout_graceful_shutdown=5,
        http=_guarded_protocol(limits, stats),
        ws="none",  # an upgraded connection would leave the guarded protocol's accounting
        timeout_keep_alive=limits.keep_alive_timeout,
        h11_max_incomplete_event_size=limits.max_header_bytes,
        backlog=batch,  # asyncio accepts this many a turn, and listen()s with it: see _Server
        # X-Forwarded-For is believed from a proxy on this host only: /admin/reload sees the real client.
        proxy_headers=True,
        forwarded_allow_ips=["127.0.0.1", "::1"],
    )
    stop = threading.Event()
    if reload_on_change or service.live:
        threading.Thread(target=_watch, args=(service, stop), name="lsr-reload", daemon=True).start()
    if ready is not None:
        ready(url)
    log.info("serving %s on %s", service.index_dir.name, url)
    try:
        _server_class(stats)(config).run(sockets=[sock])
    finally:
        stop.set()
        sock.close()
