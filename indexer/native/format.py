"""The native index on disk: ``meta.json`` plus memory-mapped ``.npy`` arrays.

    meta.json          format, version, counts, quantization, block size, reordering, vocabulary
                       hash, and per array: shape, dtype, sha256
    vocab.json         the term strings, index term id = position
    docid_offsets.npy  int64 [n_docs + 1]   external ids as UTF-8 slices of docid_bytes
    docid_bytes.npy    uint8
    fwd_offsets.npy    int64 [n_docs + 1]   forward index: each doc's terms ...
    fwd_terms.npy      uint16 [nnz]         ... ascending term ids (int32 past 65,536 terms)
    fwd_impacts.npy    uint16 [nnz]         ... and integer impacts
    bm_offsets.npy     int64 [n_terms + 1]  block maxima: each term's blocks ...
    bm_blocks.npy      int32                ... ascending block ids (doc // block_size)
    bm_max.npy         uint16               ... and its largest impact there
    sbm_offsets.npy    int64 [n_terms + 1]  superblock maxima (superblock = superblock_size blocks) ...
    sbm_blocks.npy     int32                ... ascending superblock ids
    sbm_max.npy        uint16               ... the term's largest impact in each
    sbm_first.npy      int64                ... and where its blocks start in the term's bm_* entries

Internal doc ids are positions after reordering; every ranking breaks ties by the lower one.
Postings (term -> docs) are not stored: block-max search reads the forward index; the exhaustive
scan baseline inverts it in memory on first use (:meth:`NativeIndex.postings`).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

FORMAT = "lsr-native"
FORMAT_VERSION = 1
META = "meta.json"
VOCAB = "vocab.json"
ARRAYS = (
    "docid_offsets",
    "docid_bytes",
    "fwd_offsets",
    "fwd_terms",
    "fwd_impacts",
    "bm_offsets",
    "bm_blocks",
    "bm_max",
    "sbm_offsets",
    "sbm_blocks",
    "sbm_max",
    "sbm_first",
)


def sha256_file(path: Path, chunk: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def vocab_hash(vocab: list[str] | tuple[str, ...]) -> str:
    return hashlib.sha256("\n".join(vocab).encode("utf-8")).hexdigest()


class IndexCorruptError(ValueError):
    """An index file is missing, truncated, or does not match its checksum."""


@dataclass(frozen=True)
class NativeIndex:
    """An opened native index; arrays are read-only memory maps."""

    path: Path
    meta: dict
    vocab: tuple[str, ...]
    arrays: dict[str, np.ndarray]

    @property
    def n_docs(self) -> int:
        return int(self.meta["n_docs"])

    @property
    def block_size(self) -> int:
        return int(self.meta["block_size"])

    @property
    def superblock_size(self) -> int:
        return int(self.meta["superblock_size"])

    @property
    def scale(self) -> float:
        return float(self.meta["scale"] or 1.0)

    def __getattr__(self, name: str) -> np.ndarray:
        arrays = self.__dict__.get("arrays", {})
        if name in arrays:
            return arrays[name]
        raise AttributeError(name)

    def postings(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(post_offsets, post_docs, post_impacts), inverted from the forward index once and cached."""
        cached = self.__dict__.get("_postings")
        if cached is None:
            from indexer.native._kernels import _invert

            cached = _invert(self.fwd_offsets, self.fwd_terms, self.fwd_impacts, len(self.vocab))
            object.__setattr__(self, "_postings", cached)
        return cached

    def docid(self, internal: int) -> str:
        o = self.arrays["docid_offsets"]
        return bytes(self.arrays["docid_bytes"][o[internal] : o[internal + 1]]).decode("utf-8")

    def size_bytes(self) -> int:
        return sum(f.stat().st_size for f in self.path.iterdir() if f.is_file())


def open_index(path: str | Path, verify: bool = True) -> NativeIndex:
    """Open a native index; shapes and dtypes are always checked, sha256 checksums when ``verify``."""
    path = Path(path)
    meta_path = path / META
    if not meta_path.is_file():
        raise FileNotFoundError(f"{path} is not a native lsr index ({META} is missing)")
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise IndexCorruptError(f"{meta_path}: not valid JSON ({e})") from None
    if meta.get("format") != FORMAT:
        raise ValueError(f"{path}: format {meta.get('format')!r} is not {FORMAT!r}")
    if meta.get("format_version") != FORMAT_VERSION:
        raise ValueError(
            f"{path}: format version {meta.get('format_version')} is not supported "
            f"(this lsr reads {FORMAT_VERSION})"
        )
    arrays = {}
    for name in ARRAYS:
        spec = meta["arrays"][name]
        file = path / f"{name}.npy"
        if not file.is_file():
            raise IndexCorruptError(f"{path}: array file {file.name} is missing")
        if verify and sha256_file(file) != spec["sha256"]:
            raise IndexCorruptError(f"{file}: checksum mismatch (the file is corrupted or was changed)")
        try:
            arr = np.load(file, mmap_mode="r", allow_pickle=False)
        except (ValueError, OSError) as e:
            raise IndexCorruptError(f"{file}: cannot be read as an array ({e})") from None
        if list(arr.shape) != spec["shape"] or str(arr.dtype) != spec["dtype"]:
            raise IndexCorruptError(
                f"{file}: expected shape {spec['shape']} {spec['dtype']}, found {list(arr.shape)} {arr.dtype}"
            )
        arrays[name] = arr
    vocab_path = path / VOCAB
    if not vocab_path.is_file():
        raise IndexCorruptError(f"{path}: {VOCAB} is missing")
    vocab = tuple(json.loads(vocab_path.read_text(encoding="utf-8")))
    if vocab_hash(vocab) != meta["vocab_sha256"]:
        raise IndexCorruptError(f"{vocab_path}: vocabulary does not match its hash in {META}")
    return NativeIndex(path, meta, vocab, arrays)
