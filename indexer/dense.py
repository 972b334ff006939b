"""The dense store: document embeddings on disk, row-aligned with a native index's internal doc ids.

    INDEX_DIR/dense/
      dense.json     format, version, rows, dim, dtype, encoder, the sha256 of the index's doc ids
                     in internal order (the alignment key), and per array: shape, dtype, sha256
      vectors.npy    float16 [n_docs, dim] (default), or int8 with ...
      scales.npy     float32 [n_docs]: int8 rows are ``vectors[i] * scales[i]`` (symmetric per-row)

Row ``i`` is internal doc ``i`` of the sparse index next to it, so the candidates of a sparse search
are gathered by position, in ascending order, straight from the memory map: the matrix is never
read whole. The index's ``meta.json`` holds the sha256 of ``dense.json``, so a store cannot be
swapped or edited without the index noticing, and the store holds the sha256 of the doc ids it was
aligned to, so a store copied next to another index is refused.

Input vectors come as JSON lines ``{"id": ..., "vector": [float, ...]}`` (what ``lsr encode`` writes
with a dense encoder, and the shape of Pyserini's dense JSON output), plain or gzipped.
"""

from __future__ import annotations

import hashlib
import json
import logging
import mmap
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
from numpy.typing import NDArray

from indexer.corpus import read_lines
from indexer.files import IndexCorruptError, array_spec, open_array, sha256_file

log = logging.getLogger(__name__)

FORMAT = "lsr-dense"
FORMAT_VERSION = 1
DENSE_DIR = "dense"
DENSE_META = "dense.json"
DenseDtype = Literal["fp16", "int8"]
DENSE_DTYPES: tuple[str, ...] = ("fp16", "int8")


class DenseStoreError(ValueError):
    """A dense store is missing, corrupted, or not aligned with its sparse index."""


def ids_sha256(id_arrays: Mapping[str, NDArray]) -> str:
    """The alignment key: a hash of the external ids in internal-id order, from the native index's id
    arrays by name (:attr:`NativeIndex.id_arrays`); integers hash as int64 whatever their width."""
    h = hashlib.sha256()
    for name in sorted(id_arrays):
        a = id_arrays[name]
        h.update(name.encode("utf-8"))
        h.update(np.ascontiguousarray(a, np.uint8 if a.dtype == np.uint8 else np.int64).tobytes())
    return h.hexdigest()


@dataclass
class DenseVectors:
    """Embeddings with their external ids, in any order; ``vectors`` may be a memory map."""

    ids: list[str]
    vectors: NDArray[np.float32]

    def __post_init__(self) -> None:
        if self.vectors.ndim != 2:
            raise ValueError(f"dense vectors must be a 2-d [n, dim] array, got shape {self.vectors.shape}")
        if len(self.ids) != len(self.vectors):
            raise ValueError(f"{len(self.ids)} ids for {len(self.vectors)} dense vectors")

    @property
    def dim(self) -> int:
        return int(self.vectors.shape[1])


def iter_dense(path: str | Path) -> Iterator[tuple[int, str, list[float]]]:
    """``(line, id, vector)`` for each record of a dense JSON-lines file; bad records name file:line."""
    path = Path(path)
    for lineno, line in read_lines(path):
        where = f"{path}:{lineno}"
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as e:
            raise ValueError(f"{where}: not valid JSON ({e.msg})") from None
        if not isinstance(rec, dict) or "id" not in rec:
            raise ValueError(f"{where}: a dense record needs an 'id' field")
        vector = rec.get("vector")
        if not isinstance(vector, list) or not vector:
            raise ValueError(f"{where}: 'vector' must be a non-empty list of numbers")
        yield lineno, str(rec["id"]), vector


def read_dense_files(paths: Sequence[str | Path], spool_dir: str | Path) -> DenseVectors:
    """Read dense JSON-lines files into a float32 memory map under ``spool_dir`` (bounded memory).

    Every vector must have the first one's dimension and finite values; ids must be unique.
    """
    paths = [Path(p) for p in paths]
    for p in paths:
        if not p.is_file():
            raise FileNotFoundError(f"dense vector file not found: {p}")
    spool = Path(tempfile.mkstemp(prefix="dense-", suffix=".f32", dir=spool_dir)[1])
    ids: list[str] = []
    seen: dict[str, str] = {}
    dim = None
    with open(spool, "wb") as out:
        for path in paths:
            for lineno, rid, vector in iter_dense(path):
                where = f"{path}:{lineno}"
                try:
                    row = np.asarray(vector, np.float32)
                except (TypeError, ValueError):
                    raise ValueError(f"{where}: 'vector' must be a list of numbers") from None
                if dim is None:
                    dim = len(row)
                if row.ndim != 1 or len(row) != dim:
                    raise ValueError(f"{where}: vector has dimension {len(vector)}, the first one had {dim}")
                if not np.isfinite(row).all():
                    raise ValueError(f"{where}: vector of {rid!r} holds NaN or infinity")
                if rid in seen:
                    raise ValueError(f"{where}: duplicate id {rid!r} (first at {seen[rid]})")
                seen[rid] = where
                ids.append(rid)
                out.write(row.tobytes())
    if dim is None:
        raise ValueError(f"no dense vectors in {', '.join(map(str, paths))}")
    matrix = np.memmap(spool, np.float32, mode="r", shape=(len(ids), dim))
    return DenseVectors(ids, matrix)


def write_dense_store(
    out_dir: str | Path,
    doc_ids: Sequence[str],
    alignment: str,
    dense: DenseVectors,
    dtype: DenseDtype = "fp16",
    encoder: str | None = None,
    chunk: int = 65_536,
) -> dict:
    """Write the store for an index whose internal doc ``i`` is ``doc_ids[i]``; returns ``dense.json``.

    Every indexed document needs a dense vector; vectors of documents the index does not hold (for
    example documents whose sparse vector was empty) are left out and counted in a warning.
    """
    if dtype not in DENSE_DTYPES:
        raise ValueError(f"dense dtype must be one of {', '.join(DENSE_DTYPES)}, got {dtype!r}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    position = {rid: i for i, rid in enumerate(dense.ids)}
    rows = np.empty(len(doc_ids), np.int64)
    for i, rid in enumerate(doc_ids):
        row = position.get(rid)
        if row is None:
            raise ValueError(f"document {rid!r} is in the sparse index but has no dense vector")
        rows[i] = row
    unused = len(dense.ids) - len(doc_ids)
    if unused:
        log.warning("%d dense vector(s) of documents the sparse index does not hold were left out", unused)
    n, dim = len(doc_ids), dense.dim
    vectors = np.lib.format.open_memmap(
        out_dir / "vectors.npy", mode="w+", dtype=np.float16 if dtype == "fp16" else np.int8, shape=(n, dim)
    )
    scales = np.zeros(n, np.float32) if dtype == "int8" else None
    for s in range(0, n, chunk):
        # Reading in ascending source order keeps a memory-mapped source sequential-ish.
        take = rows[s : s + chunk]
        order = np.argsort(take, kind="stable")
        block = np.empty((len(take), dim), np.float32)
        block[order] = dense.vectors[take[order]]
        if scales is None:
            vectors[s : s + len(take)] = block.astype(np.float16)
        else:
            q, sc = quantize_int8(block)
            vectors[s : s + len(take)] = q
            scales[s : s + len(take)] = sc
    vectors.flush()
    del vectors
    arrays = {"vectors": out_dir / "vectors.npy"}
    if scales is not None:
        np.save(out_dir / "scales.npy", scales, allow_pickle=False)
        arrays["scales"] = out_dir / "scales.npy"
    meta = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "rows": n,
        "dim": dim,
        "dtype": dtype,
        "encoder": encoder,
        "ids_sha256": alignment,
        "arrays": {name: array_spec(file) for name, file in arrays.items()},
    }
    (out_dir / DENSE_META).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    return meta


def quantize_int8(block: NDArray[np.float32]) -> tuple[NDArray[np.int8], NDArray[np.float32]]:
    """Symmetric per-row int8: ``row ~ q * scale`` with ``scale = max|row| / 127`` (0 rows stay 0)."""
    peak = np.abs(block).max(axis=1)
    scale = np.where(peak > 0, peak / 127.0, 1.0).astype(np.float32)
    q = np.clip(np.rint(block / scale[:, None]), -127, 127).astype(np.int8)
    return q, np.where(peak > 0, scale, 0.0).astype(np.float32)


def store_entry(store_dir: Path, meta: dict) -> dict:
    """What the index's ``meta.json`` records about its store (the checksum ties the two together)."""
    return {
        "dir": DENSE_DIR,
        "rows": meta["rows"],
        "dim": meta["dim"],
        "dtype": meta["dtype"],
        "encoder": meta["encoder"],
        "sha256": sha256_file(store_dir / DENSE_META),
    }


# dense.json "dtype" -> the dtype of vectors.npy.
STORE_DTYPES = {"fp16": "float16", "int8": "int8"}


def _check_dense_meta(meta: dict, meta_path: Path, entry: dict, n_docs: int | None) -> None:
    for field in ("rows", "dim", "dtype", "ids_sha256", "arrays"):
        if field not in meta:
            raise DenseStoreError(f"{meta_path}: missing field {field!r}")
    for field in ("rows", "dim"):
        v = meta[field]
        if not isinstance(v, int) or isinstance(v, bool) or v < 1:
            raise DenseStoreError(f"{meta_path}: field {field!r} must be a positive integer, found {v!r}")
        if entry.get(field) != v:
            raise DenseStoreError(
                f"{meta_path}: field {field!r} is {v} but the index recorded {entry.get(field)!r}"
            )
    if n_docs is not None and meta["rows"] != n_docs:
        raise DenseStoreError(
            f"{meta_path}: field 'rows' is {meta['rows']} but the index holds {n_docs} docs"
        )
    if meta["dtype"] not in STORE_DTYPES:
        raise DenseStoreError(
            f"{meta_path}: field 'dtype' must be one of {', '.join(STORE_DTYPES)}, found {meta['dtype']!r}"
        )
    if not isinstance(meta["arrays"], dict) or not isinstance(meta["ids_sha256"], str):
        raise DenseStoreError(f"{meta_path}: fields 'arrays' and 'ids_sha256' must be an object and a string")


class DenseStore:
    """An opened dense store: a read-only memory map, gathered by internal doc id."""

    def __init__(self, path: Path, meta: dict, vectors: np.ndarray, scales: np.ndarray | None):
        self.path = path
        self.meta = meta
        self.vectors = vectors
        self.scales = scales
        # Scoring kernels read raw codes and decode them through a table: numba has no float16,
        # and numpy's float16 -> float32 conversion costs more than the dot product itself.
        if scales is None:
            self.table = np.arange(1 << 16, dtype=np.uint16).view(np.float16).astype(np.float32)
        else:
            self.table = np.arange(256, dtype=np.uint16).astype(np.uint8).view(np.int8).astype(np.float32)

    @property
    def codes(self) -> np.ndarray:
        """The vectors' raw bit patterns (uint16 for fp16, uint8 for int8), decoded by ``table``."""
        return self.vectors.view(np.uint16 if self.scales is None else np.uint8)

    @property
    def n_docs(self) -> int:
        return int(self.vectors.shape[0])

    @property
    def dim(self) -> int:
        return int(self.vectors.shape[1])

    def size_bytes(self) -> int:
        return sum(f.stat().st_size for f in self.path.iterdir() if f.is_file())

    def check_rows(self, rows: NDArray[np.int64]) -> None:
        if len(rows) and (rows.min() < 0 or rows.max() >= self.n_docs):
            bad = int(rows[(rows < 0) | (rows >= self.n_docs)][0])
            raise IndexError(
                f"candidate doc {bad} is outside the dense store ({self.n_docs} rows, {self.path})"
            )

    def gather(self, rows: NDArray[np.int64]) -> NDArray[np.float32]:
        """The float32 vectors of internal docs ``rows`` (any order), read in ascending row order."""
        rows = np.asarray(rows, np.int64)
        self.check_rows(rows)
        order = np.argsort(rows, kind="stable")
        out = np.empty((len(rows), self.dim), np.float32)
        out[order] = self.vectors[rows[order]]
        if self.scales is not None:
            out *= self.scales[rows][:, None]
        return out

    def prefetch(self, rows: NDArray[np.int64]) -> None:
        """Ask the kernel to read the pages of ``rows`` (ascending) now, all at once.

        Without it, a store that is not in the page cache is read one page fault at a time (the map
        has no readahead): measured on 1M rows, 1,000 cold rows took 58-70 ms faulted one by one and
        10 ms prefetched. Costs about 1 us per row when the pages are already cached.
        """
        mapping = getattr(self.vectors, "_mmap", None)
        if mapping is None or not hasattr(mmap, "MADV_WILLNEED") or not len(rows):
            return
        row = self.dim * self.vectors.itemsize
        base = self.vectors.offset % mmap.ALLOCATIONGRANULARITY  # where the array starts in the map
        first = (base + rows * row) // mmap.PAGESIZE
        last = (base + (rows + 1) * row - 1) // mmap.PAGESIZE
        # One call per run of touching pages.
        breaks = np.flatnonzero(first[1:] > last[:-1] + 1)
        starts = first[np.concatenate([[0], breaks + 1])]
        ends = last[np.concatenate([breaks, [len(rows) - 1]])]
        for a, b in zip(starts.tolist(), ends.tolist(), strict=True):
            mapping.madvise(mmap.MADV_WILLNEED, a * mmap.PAGESIZE, (b - a + 1) * mmap.PAGESIZE)

    @contextmanager
    def sequential(self) -> Iterator[None]:
        """Read-ahead on for a full scan of the map (brute force), back to random access after."""
        mapping = getattr(self.vectors, "_mmap", None)
        advise = mapping is not None and hasattr(mmap, "MADV_SEQUENTIAL")
        if advise:
            mapping.madvise(mmap.MADV_SEQUENTIAL)
        try:
            yield
        finally:
            if advise:
                mapping.madvise(mmap.MADV_RANDOM)

    def block(self, start: int, stop: int) -> NDArray[np.float32]:
        """Rows ``start:stop`` as float32 (the sequential read of a brute-force scan)."""
        out = np.asarray(self.vectors[start:stop], np.float32)
        if self.scales is not None:
            out = out * self.scales[start:stop, None]
        return out


def open_dense_store(
    index_dir: str | Path, entry: dict | None, alignment: str, verify: bool = True, n_docs: int | None = None
) -> DenseStore:
    """Open the store an index's metadata ``entry`` describes; ``alignment`` is the index's ids hash.

    ``dense.json``'s counts are checked against the index's (``n_docs``, ``entry``) and the arrays'
    shapes and dtypes: a mismatch is a :class:`DenseStoreError` naming the file and field.
    """
    index_dir = Path(index_dir)
    if entry is None:
        raise DenseStoreError(
            f"{index_dir} has no dense store: build it with "
            f"`lsr index VECTORS {index_dir} --dense DENSE_VECTORS`"
        )
    if not isinstance(entry, dict) or entry.get("dir", DENSE_DIR) != DENSE_DIR:
        raise DenseStoreError(f"{index_dir}: the index's dense entry must name the folder {DENSE_DIR!r}")
    path = index_dir / DENSE_DIR
    meta_path = path / DENSE_META
    if not meta_path.is_file():
        raise DenseStoreError(f"{index_dir}: the dense store is missing ({meta_path} not found)")
    if sha256_file(meta_path) != entry.get("sha256"):
        raise DenseStoreError(f"{meta_path} does not match the checksum the index recorded for it")
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DenseStoreError(f"{meta_path}: not valid JSON ({e})") from None
    if (
        not isinstance(meta, dict)
        or meta.get("format") != FORMAT
        or meta.get("format_version") != FORMAT_VERSION
    ):
        found = (
            meta if not isinstance(meta, dict) else f"{meta.get('format')!r} v{meta.get('format_version')}"
        )
        raise DenseStoreError(f"{meta_path}: format {found} is not {FORMAT!r} v{FORMAT_VERSION}")
    _check_dense_meta(meta, meta_path, entry, n_docs)
    if meta["ids_sha256"] != alignment:
        raise DenseStoreError(
            f"{path} is not aligned with the index at {index_dir} (it was built for other doc ids)"
        )
    arrays = {}
    for name in ("vectors", "scales") if meta["dtype"] == "int8" else ("vectors",):
        spec = meta["arrays"].get(name)
        if not isinstance(spec, dict) or not {"shape", "dtype", "sha256"} <= spec.keys():
            raise DenseStoreError(f"{meta_path}: no shape, dtype and sha256 for array {name!r}")
        file = path / f"{name}.npy"
        try:
            f = open(file, "rb")  # closed below; the memory map keeps its own reference
        except FileNotFoundError:
            raise IndexCorruptError(f"{path}: dense array {file.name} is missing") from None
        with f:
            arr = open_array(f, file, spec, verify)
        arrays[name] = arr
    rows, dim = meta["rows"], meta["dim"]
    expected = {"vectors": ((rows, dim), STORE_DTYPES[meta["dtype"]]), "scales": ((rows,), "float32")}
    for name, arr in arrays.items():
        shape, dtype = expected[name]
        if arr.shape != shape or str(arr.dtype) != dtype:
            raise DenseStoreError(
                f"{meta_path}: {name}.npy is {list(arr.shape)} {arr.dtype}, but the store's fields say "
                f"{list(shape)} {dtype}"
            )
    # Verification reads scattered rows: no readahead, no fault-around mapping neighbours' pages.
    mapping = getattr(arrays["vectors"], "_mmap", None)
    if mapping is not None and hasattr(mmap, "MADV_RANDOM"):
        mapping.madvise(mmap.MADV_RANDOM)
    # Scales (4 bytes a row) live in memory: read from the map, each candidate would fault a page.
    scales = np.array(arrays["scales"]) if "scales" in arrays else None
    return DenseStore(path, meta, arrays["vectors"], scales)
