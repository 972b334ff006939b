"""Index files every index kind shares: checksums, memory-mapped ``.npy`` arrays, and their errors.

The native index (:mod:`indexer.native.format`), its dense store (:mod:`indexer.dense`) and the Lucene
index's metadata (:mod:`indexer.lucene`) record each file's sha256 and each array's shape and dtype
(:func:`array_spec`) when built, and check them when opened (:func:`open_array`); a mismatch is an
:class:`IndexCorruptError` naming the file. Publishing a built directory is :mod:`indexer.atomic`'s.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from pathlib import Path
from typing import BinaryIO

import numpy as np

# The metadata field holding the sha256 of the rest of the metadata (:func:`meta_checksum`).
META_SHA256 = "meta_sha256"


class IndexCorruptError(ValueError):
    """An index file is missing, truncated, inconsistent, or does not match its checksum."""


def sha256_file(file: Path | BinaryIO, chunk: int = 1 << 22) -> str:
    """Hex sha256 of a file, given by path or as an open binary file object (read from its position)."""
    if not isinstance(file, str | os.PathLike):
        h = hashlib.sha256()
        while block := file.read(chunk):
            h.update(block)
        return h.hexdigest()
    with open(file, "rb") as f:
        return sha256_file(f, chunk)


def meta_checksum(meta: dict) -> str:
    """sha256 of ``meta`` without its ``meta_sha256`` field, as canonical JSON (sorted keys, no spaces).

    Floats survive a JSON round trip exactly, so the reader recomputes the writer's digest.
    """
    body = {k: v for k, v in meta.items() if k != META_SHA256}
    try:
        text = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False)
    except ValueError as e:  # NaN or infinity in an edited field
        raise IndexCorruptError(f"meta.json holds a value JSON cannot carry ({e})") from None
    return hashlib.sha256(text.encode("ascii")).hexdigest()


def array_spec(file: Path) -> dict:
    """What metadata records about the ``.npy`` file ``file``: its shape, dtype and sha256
    (what :func:`open_array` checks)."""
    with open(file, "rb") as f:
        shape, _, dtype = _header(f)
        f.seek(0)
        return {"shape": list(shape), "dtype": str(dtype), "sha256": sha256_file(f)}


def open_array(f: BinaryIO, file: Path, spec: dict, verify: bool) -> np.ndarray:
    """The array in the open ``.npy`` file ``f``, memory-mapped and checked against ``spec`` (shape,
    dtype and, with ``verify``, sha256): what every index array goes through when opened.

    Map and checksum read the same open file, so a rebuild swapping the directory cannot pair them
    with different files.
    """
    try:
        arr = memmap_file(f, file)
    except IndexCorruptError:
        raise
    except (ValueError, OSError) as e:
        raise IndexCorruptError(f"{file}: cannot be read as an array ({e})") from None
    if list(arr.shape) != spec["shape"] or str(arr.dtype) != spec["dtype"]:
        raise IndexCorruptError(
            f"{file}: expected shape {spec['shape']} {spec['dtype']}, found {list(arr.shape)} {arr.dtype}"
        )
    if verify:
        f.seek(0)
        if sha256_file(f) != spec["sha256"]:
            raise IndexCorruptError(f"{file}: checksum mismatch (the file is corrupted or was changed)")
    return arr


def _header(f: BinaryIO) -> tuple[tuple[int, ...], bool, np.dtype]:
    """``(shape, fortran_order, dtype)`` from the ``.npy`` header of ``f``, left just past it."""
    version = np.lib.format.read_magic(f)
    if version == (1, 0):
        return np.lib.format.read_array_header_1_0(f)
    if version == (2, 0):
        return np.lib.format.read_array_header_2_0(f)
    raise ValueError(f"unsupported .npy format version {version}")


def memmap_file(f: BinaryIO, where: Path) -> np.ndarray:
    """A read-only memory map of the ``.npy`` array in the open file ``f`` (size checked)."""
    shape, fortran, dtype = _header(f)
    if dtype.hasobject:
        raise ValueError("object arrays are not index arrays")
    expected = f.tell() + math.prod(shape) * dtype.itemsize
    size = os.fstat(f.fileno()).st_size
    if size != expected:
        raise IndexCorruptError(
            f"{where}: cannot be read as an array: {size} bytes, expected {expected} "
            f"for shape {list(shape)} {dtype} (the file is truncated or was changed)"
        )
    return np.memmap(f, dtype=dtype, mode="r", shape=shape, order="F" if fortran else "C", offset=f.tell())
