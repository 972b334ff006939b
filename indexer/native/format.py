"""The native index on disk: ``meta.json`` plus memory-mapped ``.npy`` arrays.

    meta.json          format, version, counts, quantization, block size, reordering, vocabulary
                       hash, how external ids are stored, per array: shape, dtype, sha256, and
                       "meta_sha256": the sha256 of the rest (:func:`indexer.files.meta_checksum`)
    vocab.json         the term strings, index term id = position
    external ids, one of two ways (meta "docids"):
      "numbered": every id is one prefix and a decimal number without leading zeros ("doc17",
                  "4983"): about 4 bytes an id
    docid_prefix.npy   uint8                the prefix, UTF-8
    docid_numbers.npy  uint32 [n_docs]      the numbers (int64 past 2**32 - 1)
      "utf8": any other ids
    docid_offsets.npy  uint32 [n_docs + 1]  external ids as UTF-8 slices of docid_bytes
    docid_bytes.npy    uint8
    term_blocks.npy    uint32 [n_terms + 1] each term's entries, one per block (block_size docs) it
                                            occurs in, ascending:
    block_gap.npy      uint8                ... bit 7 set: the term has one posting in the block; bits
                                            0-6: the block id minus the term's previous one (the
                                            first: id + 1), 0 when that is 128 or more: then it is
                                            the term's next block_long value
    long_offsets.npy   uint32 [n_terms + 1] each term's long gaps ...
    block_long.npy     int32                ... in entry order
    head_codes.npy     uint16 [entries]     each entry's posting with the highest impact (the block's
                                            bound; ties by lower place), coded impact << 7 | (doc -
                                            block x block_size); uint32 when an impact passes 511
    term_multis.npy    uint32 [n_terms + 1] each term's entries of two or more postings ...
    multi_count.npy    uint8                ... their posting counts (2 .. block_size), then a 0 (the
                                            kernels read one count ahead instead of branching)
    term_tails.npy     uint32 [n_terms + 1] each term's other postings, entry after entry ...
    tail_codes.npy     uint16               ... coded the same way
    with meta "forward" (``lsr index --forward``), the documents' own terms, for scoring a few
    documents directly (a selective filter):
    fwd_offsets.npy    uint32 [n_docs + 1]  each internal doc's terms ...
    fwd_terms.npy      uint16 [nnz]         ... term ids ascending (int32 past 65,536 terms)
    fwd_impacts.npy    uint16 [nnz]         ... and their impacts
    with meta "float_weights" (``lsr index --float-weights``), every document's float weights as
    given, those that round to impact 0 included, for search exact under the float scores:
    flt_offsets.npy    uint32 [n_docs + 1]  each internal doc's weights ...
    flt_terms.npy      uint16               ... term ids ascending (int32 past 65,536 terms)
    flt_weights.npy    float32              ... and their weights (all > 0)
    with meta "tie_order" (every reordered index), the order ties are broken in:
    tie_order.npy      uint32 [n_docs]      each internal doc's position in the input (int64 past
                                            2**32 - 1): a permutation of 0 .. n_docs - 1

Offsets are uint32 when their largest value fits, int64 otherwise. Internal doc ids are positions
after reordering; every ranking breaks ties by the lower position in the input (``tie_order``; the
internal id itself in an index never reordered), which is the internal doc id of a Lucene index of
the same files: exact backends agree hit for hit, ties included. The postings are partitioned by
block: search bounds whole blocks from one byte and one posting code per term and block, read in
order, and scores a visited block from the query's own postings there, so neither a forward index
nor a document's other terms are ever read.

Nothing in ``meta.json`` is trusted: on open every field is checked against its type and range and
against the arrays (counts, offsets' ends, dtypes), then against ``meta_sha256``; with ``verify``
the arrays' checksums and a decode of every entry's block and place (:func:`check_postings`) follow.
The kernels index memory with these numbers, unchecked: a wrong ``n_docs`` or ``block_size`` would be
a segfault or a silently wrong ranking, so any mismatch is an :class:`IndexCorruptError`.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import os
import stat
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from indexer.files import META_SHA256, IndexCorruptError, meta_checksum, open_array

FORMAT = "lsr-native"
# Bumped when the layout changes, so older indexes say "rebuild" (history: bench/results/constants.md).
FORMAT_VERSION = 6
META = "meta.json"
# The marker of a live index (segments of native indexes: indexer/live.py); a full build may replace one.
LIVE_MARKER = "live.json"
VOCAB = "vocab.json"
# The external ids' arrays, by meta "docids".
ID_ARRAYS = {"numbered": ("docid_prefix", "docid_numbers"), "utf8": ("docid_offsets", "docid_bytes")}
# The postings' arrays, in every index.
ARRAYS = (
    "term_blocks",
    "block_gap",
    "long_offsets",
    "block_long",
    "head_codes",
    "term_multis",
    "multi_count",
    "term_tails",
    "tail_codes",
)
# The optional forward store's arrays (meta "forward": true).
FORWARD_ARRAYS = ("fwd_offsets", "fwd_terms", "fwd_impacts")
# The optional float store's arrays (meta "float_weights": true).
FLOAT_ARRAYS = ("flt_offsets", "flt_terms", "flt_weights")
# The optional tie order (meta "tie_order": true): each internal doc's position in the input.
TIE_ARRAYS = ("tie_order",)
# A posting code's low bits: the doc's place in its block, so blocks hold at most 128 docs.
LOCAL_BITS = 7
MAX_BLOCK_SIZE = 1 << LOCAL_BITS
# block_gap: the flag of a one-posting entry, and the gap bits (0: a long gap).
SINGLE = 0x80
GAP_MASK = 0x7F


def offsets_dtype(largest: int) -> type:
    """uint32 for offsets up to 2**32 - 1 (half the bytes), int64 past that."""
    return np.uint32 if largest < 1 << 32 else np.int64


def vocab_hash(vocab: list[str] | tuple[str, ...]) -> str:
    return hashlib.sha256("\n".join(vocab).encode("utf-8")).hexdigest()


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
    def has_forward(self) -> bool:
        """Whether the index stores its documents' own terms (:data:`FORWARD_ARRAYS`)."""
        return bool(self.meta.get("forward"))

    @property
    def has_float_weights(self) -> bool:
        """Whether the index keeps its documents' float weights (:data:`FLOAT_ARRAYS`)."""
        return bool(self.meta.get("float_weights"))

    @property
    def has_tie_order(self) -> bool:
        """Whether ties break by a stored input order (:data:`TIE_ARRAYS`) rather than internal id."""
        return bool(self.meta.get("tie_order"))

    @functools.cached_property
    def tie_arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """The kernels' ``(tie, inv)``: ``[n_docs]`` int64 each internal doc's position in the input and
        its inverse (the internal ids in input order), checked to be a permutation (O(n_docs)); both
        empty without a tie order (ties by internal id)."""
        if not self.has_tie_order:
            return np.zeros(0, np.int64), np.zeros(0, np.int64)
        n = self.n_docs
        tie = np.asarray(self.arrays["tie_order"], np.int64)
        if len(tie) and (int(tie.min()) < 0 or int(tie.max()) >= n):
            raise IndexCorruptError(f"{self.path}: tie_order holds a position outside 0..{n - 1}")
        inv = np.full(n, -1, np.int64)
        inv[tie] = np.arange(n, dtype=np.int64)
        if (inv < 0).any():
            raise IndexCorruptError(f"{self.path}: tie_order is not a permutation of 0..{n - 1}")
        return tie, inv

    @property
    def input_order(self) -> np.ndarray:
        """``[n_docs]`` int64 internal ids in the order of the input (ascending tie key)."""
        return self.tie_arrays[1] if self.has_tie_order else np.arange(self.n_docs, dtype=np.int64)

    def locate(self, ids) -> np.ndarray:
        """Internal ids of external ``ids`` (any iterable of str), -1 where the index lacks one.

        Numbered ids are looked up in a sorted copy of the numbers (made once, ~4 bytes a document),
        any others in a dict of every id (made once).
        """
        ids = list(ids)
        if self.meta["docids"] == "numbered":
            cached = self.__dict__.get("_sorted_ids")
            if cached is None:
                numbers = np.asarray(self.arrays["docid_numbers"], np.int64)
                order = np.argsort(numbers, kind="stable")
                cached = (str(bytes(self.arrays["docid_prefix"]), "utf-8"), numbers[order], order)
                object.__setattr__(self, "_sorted_ids", cached)
            prefix, numbers, order = cached
            wanted = np.full(len(ids), -1, np.int64)
            for i, doc in enumerate(ids):
                digits = doc[len(prefix) :] if doc.startswith(prefix) else ""
                if (
                    digits.isascii()
                    and digits.isdigit()
                    and digits == str(int(digits))
                    and int(digits) < 1 << 63
                ):
                    wanted[i] = int(digits)
            at = np.searchsorted(numbers, wanted)
            found = (wanted >= 0) & (at < len(numbers))
            found[found] = numbers[at[found]] == wanted[found]
            return np.where(found, order[np.minimum(at, len(order) - 1)], -1).astype(np.int64)
        table = self.__dict__.get("_id_table")
        if table is None:
            table = {d: i for i, d in enumerate(self.docids(range(self.n_docs)))}
            object.__setattr__(self, "_id_table", table)
        return np.fromiter((table.get(i, -1) for i in ids), np.int64, len(ids))

    def __getattr__(self, name: str) -> np.ndarray:
        arrays = self.__dict__.get("arrays", {})
        if name in arrays:
            return arrays[name]
        raise AttributeError(name)

    def postings(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(post_offsets, post_docs, post_impacts): each term's docs and impacts, decoded once and cached
        (:func:`decode_postings`; ~6 bytes a posting in memory: for tools and tests, search never uses it)."""
        cached = self.__dict__.get("_postings")
        if cached is None:
            a = self.arrays
            cached = decode_postings(
                a["block_gap"], a["block_long"], a["multi_count"], a["term_blocks"], a["head_codes"],
                a["tail_codes"], self.block_size,
            )  # fmt: skip
            object.__setattr__(self, "_postings", cached)
        return cached

    def document_frequencies(self) -> np.ndarray:
        """Postings per term (int64): its entries (heads) plus its tail postings."""
        heads = np.diff(np.asarray(self.arrays["term_blocks"], np.int64))
        return heads + np.diff(np.asarray(self.arrays["term_tails"], np.int64))

    @property
    def id_arrays(self) -> dict[str, np.ndarray]:
        """The arrays that hold the external ids (:data:`ID_ARRAYS`)."""
        return {name: self.arrays[name] for name in ID_ARRAYS[self.meta["docids"]]}

    def docid(self, internal: int) -> str:
        return self.docids([internal])[0]

    def docids(self, internal) -> list[str]:
        """External ids of internal doc ids (any iterable of ints)."""
        view = self.__dict__.get("_docids")
        if view is None:
            # Plain views: slicing a memmap object costs ~1.5 us a hit, these ~0.2 us.
            a = self.arrays
            if self.meta["docids"] == "numbered":
                view = (str(bytes(a["docid_prefix"]), "utf-8"), np.asarray(a["docid_numbers"]))
            else:
                view = (np.asarray(a["docid_offsets"]), memoryview(np.asarray(a["docid_bytes"])))
            object.__setattr__(self, "_docids", view)
        if self.meta["docids"] == "numbered":
            prefix, numbers = view
            return [prefix + str(n) for n in numbers[np.fromiter(internal, np.int64)].tolist()]
        offsets, data = view
        return [str(data[offsets[i] : offsets[i + 1]], "utf-8") for i in internal]

    def size_bytes(self) -> int:
        return sum(f.stat().st_size for f in self.path.iterdir() if f.is_file())


def encode_ids(ids: list[str]) -> tuple[str, dict[str, np.ndarray]]:
    """How to store external ids (in internal order): ``("numbered", arrays)`` when every id is one
    prefix followed by an ASCII decimal number without leading zeros, below 2**63, so that prefix +
    str(number) gives the id back; ``("utf8", arrays)`` for any other ids."""
    prefix = ids[0].rstrip("0123456789") if ids else ""
    numbers = []
    for i in ids:
        digits = i[len(prefix) :]
        if not (
            i.startswith(prefix) and digits.isascii() and digits.isdigit() and digits == str(int(digits))
        ):
            break
        numbers.append(int(digits))
    else:
        largest = max(numbers, default=0)
        if largest < 1 << 63:
            return "numbered", {
                "docid_prefix": np.frombuffer(prefix.encode("utf-8"), np.uint8),
                "docid_numbers": np.array(numbers, np.uint32 if largest < 1 << 32 else np.int64),
            }
    encoded = [i.encode("utf-8") for i in ids]
    offsets = np.zeros(len(ids) + 1, np.int64)
    np.cumsum([len(e) for e in encoded], out=offsets[1:])
    return "utf8", {
        "docid_offsets": offsets.astype(offsets_dtype(int(offsets[-1]))),
        "docid_bytes": np.frombuffer(b"".join(encoded), np.uint8),
    }


def entry_counts(block_gap, multi_count) -> np.ndarray:
    """Each entry's posting count (int64): 1 where flagged, else the next multi_count, in order."""
    counts = np.ones(len(block_gap), np.int64)
    multi = (np.asarray(block_gap) & SINGLE) == 0
    counts[multi] = multi_count[: int(multi.sum())]  # the trailing 0 is not a count
    return counts


def block_ids(block_gap, block_long, term_blocks) -> np.ndarray:
    """Each entry's block id (int64), from the byte gaps and the long ones."""
    gaps = np.asarray(block_gap, np.int64) & GAP_MASK
    gaps[gaps == 0] = block_long  # long gaps are stored in entry order, term after term
    term_blocks = np.asarray(term_blocks, np.int64)
    terms = np.repeat(np.arange(len(term_blocks) - 1), np.diff(term_blocks))
    ids = np.cumsum(gaps)
    has = np.diff(term_blocks) > 0
    starts = term_blocks[:-1][has]
    # Each term's gaps restart from -1: subtract the running total before its first entry.
    base = np.zeros(len(term_blocks) - 1, np.int64)
    base[has] = ids[starts] - gaps[starts] + 1
    return ids - base[terms]


def decode_postings(
    block_gap, block_long, multi_count, term_blocks, head_codes, tail_codes, block_size
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(post_offsets, post_docs, post_impacts): each term's range, and every posting's doc id (int32)
    and impact (the codes' unsigned dtype: cast before multiplying), term after term, entry after
    entry, each entry's head first (numpy, not a search path)."""
    blocks = block_ids(block_gap, block_long, term_blocks)
    counts = entry_counts(block_gap, multi_count)
    heads = np.concatenate([[0], np.cumsum(counts)[:-1]])
    codes = np.empty(int(counts.sum()), np.asarray(head_codes).dtype)
    codes[heads] = head_codes
    tails = np.ones(len(codes), bool)
    tails[heads] = False
    codes[tails] = tail_codes
    docs = np.repeat(blocks * block_size, counts) + (codes & (MAX_BLOCK_SIZE - 1))
    offsets = np.concatenate([[0], np.cumsum(counts)])[np.asarray(term_blocks, np.int64)]
    return offsets, docs.astype(np.int32), codes >> LOCAL_BITS


def is_current(path: str | Path) -> bool:
    """True when ``path`` holds a native index this lsr reads (a cache of an older format is not)."""
    try:
        meta = json.loads((Path(path) / META).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    if not isinstance(meta, dict):
        return False
    return meta.get("format") == FORMAT and meta.get("format_version") == FORMAT_VERSION


def open_index(path: str | Path, verify: bool = True) -> NativeIndex:
    """Open a native index; shapes and dtypes are always checked, sha256 checksums when ``verify``.

    Every file is read through one handle on the directory, so an index rebuilt at ``path`` while
    this runs (:func:`indexer.atomic.swap_in`) is seen whole, old or new, never a mix; when the old
    directory's files vanish under us mid-open, the open starts again on the new index.
    """
    path = Path(path)
    for attempt in range(_OPEN_ATTEMPTS):
        with _Directory(path) as directory:
            try:
                return _open(path, directory, verify)
            except (FileNotFoundError, ValueError):  # IndexCorruptError is a ValueError
                if attempt + 1 < _OPEN_ATTEMPTS and directory.replaced():
                    continue  # an atomic rebuild swapped the directory while we read it
                raise
    raise AssertionError("unreachable")


# Opens retried when the directory was swapped mid-open (each swap is one rebuild finishing).
_OPEN_ATTEMPTS = 5
_DIR_FD = os.open in os.supports_dir_fd and hasattr(os, "O_DIRECTORY")


class _Directory:
    """The index directory as one open handle (where the platform allows), files opened relative to it."""

    def __init__(self, path: Path):
        self.path = path
        self.fd: int | None = None

    def __enter__(self) -> _Directory:
        if not self.path.is_dir():
            raise FileNotFoundError(f"{self.path} is not a native lsr index ({META} is missing)")
        if _DIR_FD:
            self.fd = os.open(self.path, os.O_RDONLY | os.O_DIRECTORY)
        return self

    def __exit__(self, *exc) -> None:
        if self.fd is not None:
            os.close(self.fd)

    def open(self, name: str):
        """A binary file object; ``IndexCorruptError`` when ``name`` is not there (any more)."""
        try:
            if self.fd is None:
                return open(self.path / name, "rb")
            return os.fdopen(os.open(name, os.O_RDONLY, dir_fd=self.fd), "rb")
        except FileNotFoundError:
            raise IndexCorruptError(f"{self.path}: {name} is missing") from None

    def is_file(self, name: str) -> bool:
        try:
            st = os.stat(name, dir_fd=self.fd) if self.fd is not None else (self.path / name).stat()
        except OSError:
            return False
        return stat.S_ISREG(st.st_mode)

    def replaced(self) -> bool:
        """True when ``path`` now names another directory than the one this handle holds."""
        if self.fd is None:
            return False
        try:
            now = os.stat(self.path)
        except OSError:
            return False
        held = os.fstat(self.fd)
        return (now.st_dev, now.st_ino) != (held.st_dev, held.st_ino)


def _read_json(directory: _Directory, name: str):
    with directory.open(name) as f:
        data = f.read()
    try:
        return json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise IndexCorruptError(f"{directory.path / name}: not valid JSON ({e})") from None


def _open(path: Path, directory: _Directory, verify: bool) -> NativeIndex:
    meta_path = path / META
    if not directory.is_file(META):
        raise FileNotFoundError(f"{path} is not a native lsr index ({META} is missing)")
    meta = _read_json(directory, META)
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        found = meta.get("format") if isinstance(meta, dict) else None
        raise ValueError(f"{path}: format {found!r} is not {FORMAT!r}")
    if meta.get("format_version") != FORMAT_VERSION:
        raise ValueError(
            f"{path}: format version {meta.get('format_version')} is not supported "
            f"(this lsr reads {FORMAT_VERSION})"
        )
    for field in (*META_FIELDS, "vocab_sha256", "docids", "arrays", META_SHA256):
        if field not in meta:
            raise IndexCorruptError(f"{meta_path}: missing field {field!r}")
    check_meta_fields(meta, meta_path)
    arrays = {}
    forward = FORWARD_ARRAYS if meta.get("forward") is True else ()
    forward += FLOAT_ARRAYS if meta.get("float_weights") is True else ()
    forward += TIE_ARRAYS if meta.get("tie_order") is True else ()
    for name in (*ID_ARRAYS[meta["docids"]], *ARRAYS, *forward):
        spec = meta["arrays"].get(name)
        if not _is_spec(spec):
            raise IndexCorruptError(f"{meta_path}: no valid shape, dtype and sha256 for array {name!r}")
        file = path / f"{name}.npy"
        if not directory.is_file(file.name):
            raise IndexCorruptError(f"{path}: array file {file.name} is missing")
        with directory.open(file.name) as f:
            arrays[name] = open_array(f, file, spec, verify)
    vocab_path = path / VOCAB
    if not directory.is_file(VOCAB):
        raise IndexCorruptError(f"{path}: {VOCAB} is missing")
    vocab = _read_json(directory, VOCAB)
    if not isinstance(vocab, list) or not all(isinstance(t, str) for t in vocab):
        raise IndexCorruptError(f"{vocab_path}: expected a JSON list of term strings")
    vocab = tuple(vocab)
    if vocab_hash(vocab) != meta["vocab_sha256"]:
        raise IndexCorruptError(f"{vocab_path}: vocabulary does not match its hash in {META}")
    check_structure(meta, arrays, len(vocab), meta_path)
    if meta_checksum(meta) != meta[META_SHA256]:
        raise IndexCorruptError(
            f"{meta_path}: does not match its checksum ({META_SHA256}): a field was changed after the build"
        )
    if verify:
        check_postings(meta, arrays, meta_path)
    return NativeIndex(path, meta, vocab, arrays)


# Numeric fields of meta.json: (minimum, whether null is allowed). Counts are ints, never bools.
META_FIELDS = ("n_docs", "n_terms", "nnz", "block_size", "n_blocks", "n_entries", "scale", "quantization")
QUANTIZATIONS = ("lsr", "given")
# dtypes each array may have (the writer picks the narrower where the values fit).
ARRAY_DTYPES = {
    "term_blocks": ("uint32", "int64"),
    "block_gap": ("uint8",),
    "long_offsets": ("uint32", "int64"),
    "block_long": ("int32",),
    "head_codes": ("uint16", "uint32"),
    "term_multis": ("uint32", "int64"),
    "multi_count": ("uint8",),
    "term_tails": ("uint32", "int64"),
    "tail_codes": ("uint16", "uint32"),
    "docid_prefix": ("uint8",),
    "docid_numbers": ("uint32", "int64"),
    "docid_offsets": ("uint32", "int64"),
    "docid_bytes": ("uint8",),
    "fwd_offsets": ("uint32", "int64"),
    "fwd_terms": ("uint16", "int32"),
    "fwd_impacts": ("uint16",),
    "flt_offsets": ("uint32", "int64"),
    "flt_terms": ("uint16", "int32"),
    "flt_weights": ("float32",),
    "tie_order": ("uint32", "int64"),
}


def _is_count(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 0


def _is_spec(spec) -> bool:
    return (
        isinstance(spec, dict)
        and {"shape", "dtype", "sha256"} <= spec.keys()
        and isinstance(spec["shape"], list)
        and all(_is_count(n) for n in spec["shape"])
        and isinstance(spec["dtype"], str)
        and isinstance(spec["sha256"], str)
    )


def check_meta_fields(meta: dict, meta_path: Path) -> None:
    """Types and ranges of ``meta.json``'s own fields (before any array is opened)."""

    def bad(field: str, why: str) -> IndexCorruptError:
        return IndexCorruptError(f"{meta_path}: field {field!r} {why}, found {meta.get(field)!r}")

    for field in ("n_docs", "n_terms", "nnz", "n_blocks", "n_entries"):
        if not _is_count(meta[field]):
            raise bad(field, "must be a non-negative integer")
    if meta["n_docs"] < 1:
        raise bad("n_docs", "must be at least 1 (a build refuses an empty index)")
    bs = meta["block_size"]
    if not _is_count(bs) or not 1 <= bs <= MAX_BLOCK_SIZE:
        raise bad("block_size", f"must be an integer in 1..{MAX_BLOCK_SIZE}")
    if meta["quantization"] not in QUANTIZATIONS:
        raise bad("quantization", f"must be one of {', '.join(QUANTIZATIONS)}")
    scale = meta["scale"]
    if meta["quantization"] == "given":
        if scale is not None:
            raise bad("scale", "must be null for an index of given integer impacts")
    elif isinstance(scale, bool) or not isinstance(scale, int | float) or not 0 < scale < math.inf:
        raise bad("scale", "must be a positive finite number")
    if meta["docids"] not in ID_ARRAYS:
        raise bad("docids", f"must be one of {', '.join(ID_ARRAYS)}")
    if not isinstance(meta["arrays"], dict):
        raise bad("arrays", "must be an object")
    for field in ("vocab_sha256", META_SHA256):
        if not isinstance(meta[field], str):
            raise bad(field, "must be a hex string")


def check_structure(meta: dict, arrays: dict[str, np.ndarray], n_vocab: int, meta_path: Path) -> None:
    """The counts of ``meta.json`` against the arrays, and the arrays' ends against each other.

    O(terms): offsets are checked for their first and last value and for never decreasing, so every
    range a kernel reads lies inside its array. What lies inside the ranges is :func:`check_postings`.
    """

    def bad(what: str) -> IndexCorruptError:
        return IndexCorruptError(f"{meta_path}: {what} (the index is inconsistent: rebuild it)")

    for name, arr in arrays.items():
        if str(arr.dtype) not in ARRAY_DTYPES[name] or arr.ndim != 1:
            expected = " or ".join(ARRAY_DTYPES[name])
            raise bad(f"array {name!r} is {arr.ndim}-d {arr.dtype}, expected 1-d {expected}")
    n_docs, n_terms = meta["n_docs"], meta["n_terms"]
    if n_terms != n_vocab:
        raise bad(f"field 'n_terms' is {n_terms} but {VOCAB} holds {n_vocab} terms")
    if meta["docids"] == "numbered":
        ids = len(arrays["docid_numbers"])
    else:
        ids = len(arrays["docid_offsets"]) - 1
        _check_offsets(arrays["docid_offsets"], "docid_offsets", len(arrays["docid_bytes"]), bad)
    if ids != n_docs:
        raise bad(f"field 'n_docs' is {n_docs} but the index holds {ids} document ids")
    n_blocks = -(-n_docs // meta["block_size"])
    if meta["n_blocks"] != n_blocks:
        raise bad(f"field 'n_blocks' is {meta['n_blocks']}, expected ceil(n_docs / block_size) = {n_blocks}")
    entries = len(arrays["block_gap"])
    if meta["n_entries"] != entries or len(arrays["head_codes"]) != entries:
        raise bad(
            f"field 'n_entries' is {meta['n_entries']}, block_gap holds {entries} entries and head_codes "
            f"{len(arrays['head_codes'])}"
        )
    if arrays["head_codes"].dtype != arrays["tail_codes"].dtype:
        raise bad("head_codes and tail_codes have different dtypes")
    n_multi = len(arrays["multi_count"]) - 1
    if n_multi < 0 or arrays["multi_count"][-1] != 0:
        raise bad("multi_count must end with a 0")
    targets = {
        "term_blocks": entries,
        "long_offsets": len(arrays["block_long"]),
        "term_multis": n_multi,
        "term_tails": len(arrays["tail_codes"]),
    }
    for name, end in targets.items():
        if len(arrays[name]) != n_terms + 1:
            raise bad(f"{name} holds {len(arrays[name])} offsets, expected n_terms + 1 = {n_terms + 1}")
        _check_offsets(arrays[name], name, end, bad)
    dense = meta.get("dense")
    if dense is not None and not (
        isinstance(dense, dict)
        and dense.get("rows") == n_docs
        and _is_count(dense.get("dim"))
        and dense["dim"] > 0
        and dense.get("dtype") in ("fp16", "int8")
        and isinstance(dense.get("sha256"), str)
    ):
        raise bad(f"field 'dense' must describe a store of n_docs ({n_docs}) rows, found {dense!r}")
    if meta["nnz"] != entries + len(arrays["tail_codes"]):
        raise bad(f"field 'nnz' is {meta['nnz']} but the postings hold {entries + len(arrays['tail_codes'])}")
    if meta.get("forward") not in (None, False, True):
        raise bad(f"field 'forward' must be true or false, found {meta['forward']!r}")
    if meta.get("forward"):
        if len(arrays["fwd_offsets"]) != n_docs + 1:
            raise bad(f"fwd_offsets holds {len(arrays['fwd_offsets'])} offsets, expected n_docs + 1")
        _check_offsets(arrays["fwd_offsets"], "fwd_offsets", meta["nnz"], bad)
        if len(arrays["fwd_terms"]) != meta["nnz"] or len(arrays["fwd_impacts"]) != meta["nnz"]:
            raise bad("fwd_terms and fwd_impacts must hold nnz values each")
    if meta.get("float_weights") not in (None, False, True):
        raise bad(f"field 'float_weights' must be true or false, found {meta['float_weights']!r}")
    if meta.get("float_weights"):
        if len(arrays["flt_offsets"]) != n_docs + 1:
            raise bad(f"flt_offsets holds {len(arrays['flt_offsets'])} offsets, expected n_docs + 1")
        _check_offsets(arrays["flt_offsets"], "flt_offsets", len(arrays["flt_terms"]), bad)
        if len(arrays["flt_weights"]) != len(arrays["flt_terms"]):
            raise bad("flt_terms and flt_weights must hold as many values")
    if meta.get("tie_order") not in (None, False, True):
        raise bad(f"field 'tie_order' must be true or false, found {meta['tie_order']!r}")
    if meta.get("tie_order") and len(arrays["tie_order"]) != n_docs:
        raise bad(f"tie_order holds {len(arrays['tie_order'])} positions, expected n_docs ({n_docs})")


def _check_offsets(offsets: np.ndarray, name: str, end: int, bad) -> None:
    o = np.asarray(offsets, np.int64)
    if len(o) == 0 or o[0] != 0 or o[-1] != end or (len(o) > 1 and np.any(o[1:] < o[:-1])):
        raise bad(f"{name} must rise from 0 to {end} without decreasing")


def check_postings(meta: dict, arrays: dict[str, np.ndarray], meta_path: Path) -> None:
    """Every entry's block id inside ``n_blocks``, every posting's place inside its block and below
    ``n_docs``, and each term's long gaps, multi-posting entries and tail postings where its offsets
    say: what the kernels read without bounds checks. O(entries) numpy, run with ``verify``."""

    def bad(what: str) -> IndexCorruptError:
        return IndexCorruptError(f"{meta_path}: {what} (the index does not match its metadata: rebuild it)")

    n_docs, bs = meta["n_docs"], meta["block_size"]
    gap = np.asarray(arrays["block_gap"])
    term_blocks = np.asarray(arrays["term_blocks"], np.int64)
    terms = np.repeat(np.arange(len(term_blocks) - 1), np.diff(term_blocks))
    n_terms = len(term_blocks) - 1
    if meta.get("forward") and len(arrays["fwd_terms"]):
        fwd_terms = np.asarray(arrays["fwd_terms"])
        if int(fwd_terms.min()) < 0 or int(fwd_terms.max()) >= n_terms:
            raise bad(f"fwd_terms holds a term id outside 0..{n_terms - 1}")
        if not np.asarray(arrays["fwd_impacts"]).all():
            raise bad("fwd_impacts holds an impact of 0")
    if meta.get("float_weights") and len(arrays["flt_terms"]):
        flt_terms, flt_weights = np.asarray(arrays["flt_terms"]), np.asarray(arrays["flt_weights"])
        if int(flt_terms.min()) < 0 or int(flt_terms.max()) >= n_terms:
            raise bad(f"flt_terms holds a term id outside 0..{n_terms - 1}")
        if not (np.isfinite(flt_weights).all() and (flt_weights > 0).all()):
            raise bad("flt_weights holds a weight that is not a positive finite number")

    def per_term(mask) -> np.ndarray:
        return np.bincount(terms[mask], minlength=n_terms)

    long = (gap & GAP_MASK) == 0
    if not np.array_equal(per_term(long), np.diff(np.asarray(arrays["long_offsets"], np.int64))):
        raise bad("the long gaps in block_gap do not match long_offsets")
    if len(arrays["block_long"]) and int(np.min(arrays["block_long"])) <= GAP_MASK:
        raise bad(f"block_long holds a gap below {GAP_MASK + 1}")
    multi = (gap & SINGLE) == 0
    if not np.array_equal(per_term(multi), np.diff(np.asarray(arrays["term_multis"], np.int64))):
        raise bad("the multi-posting entries in block_gap do not match term_multis")
    counts = np.asarray(arrays["multi_count"][:-1], np.int64)
    if len(counts) and (counts.min() < 2 or counts.max() > bs):
        raise bad(f"multi_count holds a count outside 2..block_size ({bs})")
    tails = np.zeros(len(gap), np.int64)
    tails[multi] = counts - 1
    if not np.array_equal(
        np.bincount(terms, weights=tails, minlength=n_terms).astype(np.int64),
        np.diff(np.asarray(arrays["term_tails"], np.int64)),
    ):
        raise bad("the tail postings of the entries do not match term_tails")
    blocks = block_ids(gap, arrays["block_long"], term_blocks)
    n_blocks = -(-n_docs // bs)
    if len(blocks) and (blocks.min() < 0 or blocks.max() >= n_blocks):
        raise bad(f"an entry lies in block {int(blocks.max())}, past the index's {n_blocks} blocks")
    place = MAX_BLOCK_SIZE - 1
    head_places = np.asarray(arrays["head_codes"], np.int64) & place
    tail_places = np.asarray(arrays["tail_codes"]) & place
    for places in (head_places, tail_places):
        if len(places) and int(places.max()) >= bs:
            raise bad(f"a posting lies outside its block of {bs} documents")
    if len(blocks) and int((blocks * bs + head_places).max()) >= n_docs:
        raise bad(f"a posting lies past n_docs ({n_docs})")
    # Tails of the last block only can pass n_docs inside their block.
    last = np.flatnonzero(blocks == n_blocks - 1)
    if len(last):
        starts = np.concatenate([[0], np.cumsum(tails)[:-1]])
        take = np.concatenate([np.arange(s, s + n) for s, n in zip(starts[last], tails[last], strict=True)])
        limit = n_docs - (n_blocks - 1) * bs
        if len(take) and int(tail_places[take].max()) >= limit:
            raise bad(f"a posting lies past n_docs ({n_docs})")
