"""Building the native index: stream documents in, reorder, write arrays, swap into place.

Documents arrive in chunks (JsonVectorCollection files or ``(ids, SparseBatch)`` pairs) and are
quantized by the contract (:mod:`indexer.quantize`) and appended to raw files on disk, so input
size never has to fit in memory twice. The forward index is then loaded, documents are
reordered (recursive graph bisection puts documents sharing terms in the same blocks, which
is what lets block-max search skip), and the block-partitioned postings are derived from it.
Everything is written to a temporary directory and renamed into place: a build that fails or
is killed leaves the previous index, or nothing.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Literal

import numpy as np

from indexer.atomic import atomic_build
from indexer.dense import (
    DENSE_DIR,
    DenseDtype,
    DenseVectors,
    ids_sha256,
    read_dense_files,
    store_entry,
    write_dense_store,
)
from indexer.files import META_SHA256, array_spec, meta_checksum
from indexer.jsonvector import check_weights, impact_mode, iter_vectors
from indexer.native import _kernels
from indexer.native.format import (
    ARRAYS,
    FORMAT,
    FORMAT_VERSION,
    GAP_MASK,
    ID_ARRAYS,
    LIVE_MARKER,
    LOCAL_BITS,
    MAX_BLOCK_SIZE,
    META,
    SINGLE,
    VOCAB,
    encode_ids,
    offsets_dtype,
    vocab_hash,
)
from indexer.quantize import IMPACT_SCALE, check_scale, quantize, to_impacts
from lsr.sparse import SparseBatch

log = logging.getLogger(__name__)

Reorder = Literal["bp", "none"]
REORDERS: tuple[str, ...] = ("bp", "none")
# Measured at 1M topical docs: 128 is as fast as 64 and has 16% fewer entries; 32 is slower.
DEFAULT_BLOCK_SIZE = 128


class _Spool:
    """Appends documents (term ids in the index vocabulary, impacts) to raw files in ``work``; with
    ``floats`` also every document's float weights as given (those that round to 0 included)."""

    def __init__(self, work: Path, vocab: list[str] | None, floats: bool = False):
        self.work = work
        self.floats = floats
        self.vocab: list[str] = list(vocab) if vocab is not None else []
        self.index = {t: i for i, t in enumerate(self.vocab)}
        self.fixed_vocab = vocab is not None
        self.lengths: list[np.ndarray] = []
        self.seen: dict[str, str] = {}
        self.ids: list[str] = []
        self.empty: list[str] = []
        self._terms = open(work / "terms.bin", "wb")
        self._impacts = open(work / "impacts.bin", "wb")
        self.float_lengths: list[np.ndarray] = []
        self._files = [self._terms, self._impacts]
        if floats:
            self._float_terms = open(work / "float_terms.bin", "wb")
            self._float_weights = open(work / "float_weights.bin", "wb")
            self._files += [self._float_terms, self._float_weights]

    def _write(self, f, array: np.ndarray) -> None:
        try:
            f.write(memoryview(np.ascontiguousarray(array)))
        except OSError as e:
            raise _named(e, Path(f.name)) from None

    def term_id(self, token: str, where: str) -> int:
        tid = self.index.get(token)
        if tid is None:
            if self.fixed_vocab:
                raise KeyError(f"{where}: term {token!r} is not in the index vocabulary")
            tid = self.index[token] = len(self.vocab)
            self.vocab.append(token)
        return tid

    def add(self, ids: list[str], wheres: list[str], indptr, term_ids, impacts, floats=None) -> None:
        """Spool a chunk: CSR rows of impacts (> 0) and, when the spool keeps them, ``floats``:
        ``(indptr, term_ids, weights)`` CSR rows of the same documents' float weights."""
        lengths = np.diff(indptr)
        for rid, where, n in zip(ids, wheres, lengths.tolist(), strict=True):
            if rid in self.seen:
                raise ValueError(f"{where}: duplicate id {rid!r} (first at {self.seen[rid]})")
            self.seen[rid] = where
            if n == 0:
                self.empty.append(f"{rid} ({where})")
        keep = lengths > 0
        self.ids.extend(r for r, k in zip(ids, keep.tolist(), strict=True) if k)
        self.lengths.append(lengths[keep])
        # Not ndarray.tofile: on a full disk it says only "N requested and M written".
        self._write(self._terms, np.asarray(term_ids, np.int32))
        self._write(self._impacts, np.asarray(impacts, np.uint16))
        if self.floats:
            f_indptr, f_terms, f_weights = (np.asarray(a) for a in floats)
            # A document with no impact is not indexed at all: its float row goes too.
            f_lengths = np.diff(f_indptr)[keep]
            _, gather = _gather_rows(f_indptr[:-1][keep], f_lengths)
            self.float_lengths.append(f_lengths)
            self._write(self._float_terms, f_terms[gather].astype(np.int32))
            self._write(self._float_weights, f_weights[gather].astype(np.float32))

    def close(self) -> None:
        for f in self._files:
            try:
                f.close()  # flushes: a full disk may show only here
            except OSError as e:
                raise _named(e, Path(f.name)) from None


def _named(e: OSError, path: Path) -> OSError:
    """``e`` naming ``path`` and the reason (``No space left on device``): a failed write names no file."""
    if e.filename is not None or (e.errno is None and type(e) is not OSError):
        return e  # names its file already, or is one of our messages (FileNotFoundError(...))
    if e.errno is None:  # numpy's "N requested and M written"
        return OSError(f"{path}: write failed ({e}); is the disk full?")
    return OSError(e.errno, os.strerror(e.errno), str(path))


class _Chunks:
    """A file numpy writes ``.npy`` data to in chunks: on a real file it calls C ``fwrite``, whose
    failure on a full disk names neither the file nor the reason; Python's ``write`` raises the errno."""

    def __init__(self, f):
        self.write = f.write


def _save(file: Path, array: np.ndarray) -> None:
    """``np.save(file, array)`` (the same bytes), with failures naming ``file`` and the reason."""
    try:
        with open(file, "wb") as f:
            np.lib.format.write_array(_Chunks(f), array, allow_pickle=False)
    except OSError as e:
        raise _named(e, file) from None


def _write_text(file: Path, text: str) -> None:
    try:
        file.write_text(text, encoding="utf-8")
    except OSError as e:
        raise _named(e, file) from None


def _from_files(files: list[Path], spool: _Spool, scale: float, chunk: int = 10_000) -> str:
    mode = impact_mode(files)
    integer = mode == "given"
    for path in files:
        batch: list[tuple[int, str, dict]] = []
        # An integer-impact file holds escaped terms (indexer.jsonvector); the index holds raw ones.
        for item in iter_vectors(path, escaped=integer):
            batch.append(item)
            if len(batch) >= chunk:
                _spool_dicts(path, batch, spool, scale, integer)
                batch = []
        _spool_dicts(path, batch, spool, scale, integer)
    return mode


def _spool_dicts(path: Path, batch, spool: _Spool, scale: float, integer: bool) -> None:
    ids, wheres, indptr, terms, weights = [], [], [0], [], []
    f_indptr, f_terms, f_weights = [0], [], []
    for lineno, rid, vector in batch:
        where = f"{path}:{lineno}"
        row = []
        check_weights(where, rid, vector, scale, given=integer)
        for tok, w in vector.items():
            row.append((spool.term_id(tok, where), w))
        row.sort()
        ids.append(rid)
        wheres.append(where)
        w = np.array([x for _, x in row], np.float64)
        impacts = to_impacts(w, scale, given=integer)
        keep = impacts > 0
        terms.extend(np.array([t for t, _ in row], np.int64)[keep].tolist())
        weights.extend(impacts[keep].tolist())
        indptr.append(len(terms))
        if spool.floats:
            f_terms.extend(t for t, x in row if x > 0)
            f_weights.extend(x for _, x in row if x > 0)
            f_indptr.append(len(f_terms))
    floats = None
    if spool.floats:
        floats = (np.asarray(f_indptr), np.asarray(f_terms, np.int64), np.asarray(f_weights, np.float64))
    spool.add(ids, wheres, np.asarray(indptr), terms, weights, floats)


def _from_batches(batches: Iterable[tuple[list[str], SparseBatch]], spool: _Spool, scale: float) -> str:
    mapping: np.ndarray | None = None
    for n, (ids, batch) in enumerate(batches):
        if len(ids) != len(batch):
            raise ValueError(f"chunk {n}: {len(ids)} ids for {len(batch)} vectors")
        if mapping is None or len(mapping) != len(batch.vocab):
            mapping = np.array([spool.term_id(t, f"chunk {n}") for t in batch.vocab], np.int64)
        impacts = quantize(batch.weights, scale)
        keep = impacts > 0
        kept_before = np.concatenate([[0], np.cumsum(keep, dtype=np.int64)])
        terms = mapping[batch.term_ids[keep]]
        indptr = kept_before[batch.indptr]
        # Rows stay sorted by term id when the mapping is monotone (the usual case: same vocabulary).
        monotone = not (np.diff(mapping) <= 0).any()
        if len(terms) and not monotone:
            terms, order_impacts = _sort_rows(indptr, terms, impacts[keep])
        else:
            order_impacts = impacts[keep]
        floats = None
        if spool.floats:
            positive = batch.weights > 0
            f_before = np.concatenate([[0], np.cumsum(positive, dtype=np.int64)])
            f_indptr, f_terms = f_before[batch.indptr], mapping[batch.term_ids[positive]]
            f_weights = batch.weights[positive]
            if len(f_terms) and not monotone:
                f_terms, f_weights = _sort_rows(f_indptr, f_terms, f_weights)
            floats = (f_indptr, f_terms, f_weights)
        spool.add(
            [str(i) for i in ids],
            [f"chunk {n} row {i}" for i in range(len(ids))],
            indptr,
            terms,
            order_impacts,
            floats,
        )
    return "lsr"


def _sort_rows(indptr, terms, impacts):
    rows = np.repeat(np.arange(len(indptr) - 1), np.diff(indptr))
    order = np.lexsort((terms, rows))
    return terms[order], impacts[order]


def build_native_index(
    index_dir: str | Path,
    vector_files: list[str | Path] | None = None,
    batches: Iterable[tuple[list[str], SparseBatch]] | None = None,
    vocab: list[str] | tuple[str, ...] | None = None,
    scale: float = IMPACT_SCALE,
    block_size: int = DEFAULT_BLOCK_SIZE,
    reorder: Reorder = "bp",
    bp_iterations: int = 8,
    dense: DenseVectors | Sequence[str | Path] | None = None,
    dense_dtype: DenseDtype = "fp16",
    dense_encoder: str | None = None,
    forward: bool = False,
    float_weights: bool = False,
) -> dict:
    """Build a native index at ``index_dir`` from vector files or ``(ids, SparseBatch)`` chunks.

    Returns the index metadata. Float weights are quantized with ``scale``; JsonVectorCollection
    files whose weights are all integers are taken as given. Empty vectors are skipped and counted.
    ``dense`` (embeddings, or dense JSON-lines files) adds a dense store aligned with the final doc
    ids (:mod:`indexer.dense`), published with the index in the same atomic swap. ``forward`` also
    stores each document's own terms and impacts (~4 bytes a posting more), with which a selective
    filter scores its few allowed documents directly instead of searching the blocks.
    ``float_weights`` also keeps every document's float weights as given (~8 bytes a weight more), for
    search exact under the float scores (``mode="float"``: :mod:`plugin.native`); it needs float
    vectors, not integer impacts.
    """
    if (vector_files is None) == (batches is None):
        raise ValueError("give vector_files or batches, not both")
    scale = check_scale(scale)
    files = [Path(p) for p in vector_files or []]
    for p in files:
        if not p.is_file():
            raise FileNotFoundError(f"vector file not found: {p}")

    def fill(spool: _Spool) -> str:
        return _from_files(files, spool, scale) if files else _from_batches(batches, spool, scale)

    return _build(
        Path(index_dir), fill, vocab, scale, block_size, reorder, bp_iterations, dense, dense_dtype,
        dense_encoder, [str(p.resolve()) for p in files], forward, float_weights,
    )  # fmt: skip


def build_native_from_impacts(
    index_dir: str | Path,
    ids: list[str],
    indptr: np.ndarray,
    term_ids: np.ndarray,
    impacts: np.ndarray,
    vocab: list[str] | tuple[str, ...],
    quantization: Literal["lsr", "given"],
    scale: float | None,
    block_size: int = DEFAULT_BLOCK_SIZE,
    reorder: Reorder = "bp",
    bp_iterations: int = 8,
    dense: DenseVectors | None = None,
    dense_dtype: DenseDtype = "fp16",
    dense_encoder: str | None = None,
    forward: bool = False,
) -> dict:
    """Build a native index from integer impacts that are already quantized (a merge of segments).

    Parameters
    ----------
    index_dir : str or Path
        Where the index is published (atomically, as :func:`build_native_index`).
    ids : list of str
        ``[n_docs]`` external ids, unique.
    indptr : NDArray[np.int64]
        ``[n_docs + 1]`` CSR rows over ``term_ids`` and ``impacts``.
    term_ids : NDArray[np.int32]
        ``[nnz]`` positions in ``vocab``, ascending within a row.
    impacts : NDArray[np.uint16]
        ``[nnz]`` impacts, all > 0.
    vocab : list of str
        The index vocabulary.
    quantization : {"lsr", "given"}
        How the impacts were made (kept in ``meta.json``), with ``scale`` (``None`` for "given").
    block_size, reorder, bp_iterations, dense, dense_dtype, dense_encoder, forward
        As in :func:`build_native_index`.

    Returns
    -------
    dict
        The index metadata.
    """
    if len(ids) != len(indptr) - 1:
        raise ValueError(f"{len(ids)} ids for {len(indptr) - 1} rows")
    if quantization not in ("lsr", "given"):
        raise ValueError(f"quantization must be 'lsr' or 'given', got {quantization!r}")

    def fill(spool: _Spool) -> str:
        spool.add(list(ids), [f"row {i}" for i in range(len(ids))], indptr, term_ids, impacts)
        return quantization

    return _build(
        Path(index_dir), fill, vocab, scale or IMPACT_SCALE, block_size, reorder, bp_iterations, dense,
        dense_dtype, dense_encoder, [], forward,
    )  # fmt: skip


def _build(
    index_dir: Path, fill, vocab, scale, block_size, reorder, bp_iterations, dense, dense_dtype,
    dense_encoder, sources: list[str], forward: bool = False, float_weights: bool = False,
) -> dict:  # fmt: skip
    """Build and publish a native index: ``fill(spool)`` adds the documents and returns the quantization."""
    if not 1 <= block_size <= MAX_BLOCK_SIZE:
        raise ValueError(f"block_size must be in 1..{MAX_BLOCK_SIZE}, got {block_size}")
    if reorder not in REORDERS:
        raise ValueError(f"reorder must be one of {', '.join(REORDERS)}, got {reorder!r}")
    start = time.perf_counter()
    with atomic_build(index_dir, (META, LIVE_MARKER)) as (work, out):
        spool = _Spool(work, list(vocab) if vocab is not None else None, float_weights)
        try:
            mode = fill(spool)
        finally:
            spool.close()
        if float_weights and mode == "given":
            raise ValueError(
                "float_weights: the vectors are integer impacts already (Anserini's convention); "
                "there are no float weights to keep"
            )
        if spool.empty:
            log.warning(
                "%d document(s) with empty vectors skipped, e.g. %s",
                len(spool.empty),
                ", ".join(spool.empty[:5]),
            )
        if not spool.ids:
            raise ValueError("no document has a non-empty vector: nothing to index")
        out.mkdir()
        meta, doc_ids, arrays = _write_index(
            out, work, spool, block_size, reorder, bp_iterations, forward, float_weights
        )
        if dense is not None:
            store = out / DENSE_DIR
            try:
                if not isinstance(dense, DenseVectors):
                    dense = read_dense_files(dense, work)
                alignment = ids_sha256({name: arrays[name] for name in ID_ARRAYS[meta["docids"]]})
                store_meta = write_dense_store(store, doc_ids, alignment, dense, dense_dtype, dense_encoder)
            except OSError as e:
                raise _named(e, store) from None
            meta["dense"] = store_entry(store, store_meta)
        meta.update(
            quantization=mode,
            scale=None if mode == "given" else scale,
            skipped_empty=len(spool.empty),
            empty_examples=spool.empty[:5],
            sources=sources,
            build_seconds=round(time.perf_counter() - start, 3),
        )
        meta[META_SHA256] = meta_checksum(meta)
        _write_text(out / META, json.dumps(meta, indent=2) + "\n")
    log.info("native index at %s: %d documents in %.1fs", index_dir, meta["n_docs"], meta["build_seconds"])
    return meta


def _write_index(
    out: Path,
    work: Path,
    spool: _Spool,
    block_size: int,
    reorder: str,
    iterations: int,
    forward: bool = False,
    float_weights: bool = False,
) -> tuple[dict, list[str], dict[str, np.ndarray]]:
    lengths = np.concatenate(spool.lengths) if spool.lengths else np.zeros(0, np.int64)
    n_docs, n_terms = len(lengths), len(spool.vocab)
    offsets = np.zeros(n_docs + 1, np.int64)
    np.cumsum(lengths, out=offsets[1:])
    terms = np.fromfile(work / "terms.bin", np.int32)
    impacts = np.fromfile(work / "impacts.bin", np.uint16)
    t0 = time.perf_counter()
    if reorder == "bp" and n_docs > block_size:
        order = _kernels._graph_bisection(n_docs, offsets, terms, n_terms, block_size, iterations)
    else:
        order = np.arange(n_docs, dtype=np.int64)
    reorder_s = time.perf_counter() - t0
    fwd_offsets, gather = _gather_rows(offsets[:-1][order], lengths[order])
    fwd_terms, fwd_impacts = terms[gather], impacts[gather]
    del terms, impacts, gather
    post_offsets, post_docs, post_impacts = _kernels._invert(fwd_offsets, fwd_terms, fwd_impacts, n_terms)
    stored_forward = {}
    if forward:
        stored_forward = {
            "fwd_offsets": fwd_offsets.astype(offsets_dtype(int(fwd_offsets[-1]))),
            "fwd_terms": fwd_terms.astype(np.uint16 if n_terms <= 1 << 16 else np.int32),
            "fwd_impacts": fwd_impacts,
        }
    del fwd_terms, fwd_impacts
    if float_weights:
        stored_forward.update(_float_store(work, spool, order, n_terms))
    reordered = reorder == "bp" and n_docs > block_size
    if reordered:
        # Ties break by the input position, as in a Lucene index of the same files.
        stored_forward["tie_order"] = order.astype(offsets_dtype(n_docs - 1))
    arrays = _block_postings(post_offsets, post_docs, post_impacts, block_size)
    arrays.update(stored_forward)
    ids = [spool.ids[i] for i in order.tolist()]
    docids, id_arrays = encode_ids(ids)
    arrays.update(id_arrays)
    specs = {}
    for name in (*id_arrays, *ARRAYS, *stored_forward):
        file = out / f"{name}.npy"
        _save(file, arrays[name])
        specs[name] = array_spec(file)
    _write_text(out / VOCAB, json.dumps(spool.vocab, ensure_ascii=False))
    meta = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "n_docs": n_docs,
        "n_terms": n_terms,
        "nnz": int(fwd_offsets[-1]),
        "block_size": block_size,
        "n_blocks": (n_docs + block_size - 1) // block_size,
        "n_entries": len(arrays["block_gap"]),
        "reorder": "bp" if reordered else "none",
        "reorder_seconds": round(reorder_s, 3),
        "vocab_sha256": vocab_hash(spool.vocab),
        "docids": docids,
        "arrays": specs,
    }
    if forward:
        meta["forward"] = True
    if float_weights:
        meta["float_weights"] = True
    if reordered:
        meta["tie_order"] = True
    return meta, ids, arrays


def _gather_rows(starts: np.ndarray, lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """CSR rows taken out of a flat array, in the given order: ``(offsets, positions)``, with
    ``offsets`` the new rows' ``[n + 1]`` bounds and ``positions`` where each entry comes from."""
    lengths = np.asarray(lengths, np.int64)
    offsets = np.zeros(len(lengths) + 1, np.int64)
    np.cumsum(lengths, out=offsets[1:])
    return offsets, np.repeat(np.asarray(starts, np.int64) - offsets[:-1], lengths) + np.arange(offsets[-1])


def _float_store(work: Path, spool: _Spool, order: np.ndarray, n_terms: int) -> dict[str, np.ndarray]:
    """The spooled float rows in the final doc order: :data:`indexer.native.format.FLOAT_ARRAYS`."""
    lengths = np.concatenate(spool.float_lengths) if spool.float_lengths else np.zeros(0, np.int64)
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
    new_offsets, gather = _gather_rows(starts[order], lengths[order])
    terms = np.fromfile(work / "float_terms.bin", np.int32)[gather]
    return {
        "flt_offsets": new_offsets.astype(offsets_dtype(int(new_offsets[-1]))),
        "flt_terms": terms.astype(np.uint16 if n_terms <= 1 << 16 else np.int32),
        "flt_weights": np.fromfile(work / "float_weights.bin", np.float32)[gather],
    }


def _block_postings(post_offsets, post_docs, post_impacts, block_size: int) -> dict:
    """The term-major postings (ascending docs) cut into per-block entries and coded (format.py)."""
    n_terms = len(post_offsets) - 1
    term_blocks, blocks, first = _kernels._groups(post_offsets, post_docs, block_size)
    counts = np.diff(np.append(first, len(post_docs)))  # postings are contiguous from term to term
    blocks = blocks.astype(np.int64)
    gaps = np.diff(blocks, prepend=-1)
    has = np.diff(term_blocks) > 0
    starts = term_blocks[:-1][has]
    gaps[starts] = blocks[starts] + 1  # each term's ids restart from -1
    long = gaps > GAP_MASK
    single = counts == 1
    entry_terms = np.repeat(np.arange(n_terms), np.diff(term_blocks))

    def per_term(mask):
        offsets = np.zeros(n_terms + 1, np.int64)
        np.cumsum(np.bincount(entry_terms[mask], minlength=n_terms), out=offsets[1:])
        return offsets.astype(offsets_dtype(int(offsets[-1])))

    top = int(post_impacts.max(initial=0))
    code_type = np.uint16 if top < 1 << (16 - LOCAL_BITS) else np.uint32
    codes = (post_impacts.astype(code_type) << LOCAL_BITS) | (post_docs % block_size).astype(code_type)
    _kernels._order_entries(first, counts, codes)  # an entry's head is its block's bound
    tails = np.ones(len(codes), bool)
    tails[first] = False
    return {
        "term_blocks": term_blocks.astype(offsets_dtype(int(term_blocks[-1]))),
        "block_gap": (np.where(long, 0, gaps) | np.where(single, SINGLE, 0)).astype(np.uint8),
        "long_offsets": per_term(long),
        "block_long": gaps[long].astype(np.int32),
        "head_codes": codes[first],
        "term_multis": per_term(~single),
        "multi_count": np.append(counts[~single], 0).astype(np.uint8),  # the 0: see format.py
        "term_tails": _tail_offsets(post_offsets, term_blocks),
        "tail_codes": codes[tails],
    }


def _tail_offsets(post_offsets, term_blocks) -> np.ndarray:
    """Each term's start among the tail postings: its postings before it minus its entries (heads)."""
    offsets = np.asarray(post_offsets, np.int64) - np.asarray(term_blocks, np.int64)
    return offsets.astype(offsets_dtype(int(offsets[-1])))


def iter_batches(
    ids: list[str], batch: SparseBatch, chunk: int = 50_000
) -> Iterator[tuple[list[str], SparseBatch]]:
    """Split one big batch into ``(ids, SparseBatch)`` chunks for :func:`build_native_index`."""
    for s in range(0, len(batch), chunk):
        rows = np.arange(s, min(s + chunk, len(batch)))
        yield ids[s : s + chunk], batch.take(rows)
