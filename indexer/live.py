"""A live native index: appends, deletes, upserts and merges without a rebuild.

    INDEX_DIR/
      live.json              {"format": "lsr-live", "format_version": 1}: marks the directory
      segments-<N>.json      generation N's manifest; the highest valid N is the current one
      seg-<S>/               a native index (:mod:`indexer.native.format`), never changed once written
      seg-<S>.del-<N>.npy    the segment's deleted documents as of generation N: uint8, one bit per
                             internal doc id (``np.packbits``, little bit order)
      seg-<S>.fields.json    metadata fields stored at build time for filters, when asked for:
                             {"names": [...], "columns": {name: [value per internal doc id]}}, each
                             value a string, a number or null

A manifest lists the segments in order (oldest first) with their document count, the sha256 of their
``meta.json`` and their deletion file (or none) with its sha256 and count, plus the quantization
every segment shares (one global rule, so scores compare across segments) and ``manifest_sha256``.

Every change holds the index's build lock (:func:`indexer.atomic.build_lock`, shared with a full
rebuild), writes new files under new names, and publishes by writing ``segments-<N+1>.json`` to a
temporary name and renaming it (after an fsync): a crash at any point leaves generation N or N+1,
whole. Files no kept generation names (a killed build's leftovers, merged-away segments) are
removed by the next change. Readers open a generation and keep its memory maps (removing a file
does not take it from a process that has it mapped) until they refresh.

Ties across segments: older segment first, then within a segment the order its documents were
appended in (the segment's tie order); a merge feeds documents in that order, so it changes no hit.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import re
import shutil
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from indexer.atomic import build_lock, swap_in
from indexer.dense import DenseVectors, ids_sha256, open_dense_store
from indexer.files import IndexCorruptError
from indexer.native import _kernels as build_kernels
from indexer.native.build import build_native_from_impacts, build_native_index
from indexer.native.format import LIVE_MARKER, META, NativeIndex, open_index

log = logging.getLogger(__name__)

FORMAT = "lsr-live"
FORMAT_VERSION = 1
MANIFEST = re.compile(r"segments-(\d+)\.json")
# Generations whose files survive a change: the new one and the one before it (a reader opening it
# while the change publishes still finds its files).
KEEP = 2


@dataclass(frozen=True)
class Segment:
    """One segment of a generation: its directory name, size and deletions."""

    name: str
    n_docs: int
    meta_sha256: str
    deleted: str | None = None
    deleted_sha256: str | None = None
    n_deleted: int = 0
    fields: str | None = None
    fields_sha256: str | None = None

    @property
    def n_live(self) -> int:
        return self.n_docs - self.n_deleted

    def to_json(self) -> dict:
        return dict(self.__dict__)


@dataclass(frozen=True)
class Generation:
    """A published state of a live index: its number and segments, oldest first."""

    root: Path
    number: int
    segments: tuple[Segment, ...]
    next_segment: int
    quantization: str
    scale: float | None

    @property
    def n_docs(self) -> int:
        return sum(s.n_live for s in self.segments)

    def deleted_mask(self, segment: Segment) -> np.ndarray:
        """``[n_docs]`` bool: True where the segment's document is deleted (checksum verified)."""
        if segment.deleted is None:
            return np.zeros(segment.n_docs, bool)
        path = self.root / segment.deleted
        data = path.read_bytes()
        if hashlib.sha256(data).hexdigest() != segment.deleted_sha256:
            raise IndexCorruptError(f"{path}: does not match its sha256 in segments-{self.number}.json")
        bits = np.load(path, allow_pickle=False)
        mask = np.unpackbits(bits, count=segment.n_docs, bitorder="little").astype(bool)
        if int(mask.sum()) != segment.n_deleted:
            raise IndexCorruptError(
                f"{path}: holds {int(mask.sum())} deletions, the manifest says {segment.n_deleted}"
            )
        return mask

    def fields(self, segment: Segment) -> dict[str, list]:
        """The segment's stored fields: name -> one value per internal doc id (checksum verified)."""
        if segment.fields is None:
            return {}
        path = self.root / segment.fields
        data = path.read_bytes()
        if hashlib.sha256(data).hexdigest() != segment.fields_sha256:
            raise IndexCorruptError(f"{path}: does not match its sha256 in segments-{self.number}.json")
        stored = json.loads(data)
        columns = stored.get("columns") if isinstance(stored, dict) else None
        if not isinstance(columns, dict) or any(
            not isinstance(c, list) or len(c) != segment.n_docs for c in columns.values()
        ):
            raise IndexCorruptError(f"{path}: expected a column of {segment.n_docs} values per field")
        return columns


def is_live(path: str | Path) -> bool:
    """True when ``path`` is a live index directory."""
    return (Path(path) / LIVE_MARKER).is_file()


def _manifest_checksum(manifest: dict) -> str:
    rest = {k: v for k, v in manifest.items() if k != "manifest_sha256"}
    return hashlib.sha256(json.dumps(rest, sort_keys=True).encode("utf-8")).hexdigest()


def _generations(root: Path) -> list[int]:
    found = []
    for p in root.iterdir():
        m = MANIFEST.fullmatch(p.name)
        if m:
            found.append(int(m.group(1)))
    return sorted(found, reverse=True)


def _load(root: Path, number: int) -> Generation:
    path = root / f"segments-{number}.json"
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise IndexCorruptError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise IndexCorruptError(f"{path}: not an {FORMAT} manifest")
    if manifest.get("manifest_sha256") != _manifest_checksum(manifest):
        raise IndexCorruptError(f"{path}: does not match its checksum (manifest_sha256)")
    if manifest.get("generation") != number:
        raise IndexCorruptError(f"{path}: says generation {manifest.get('generation')!r}")
    try:
        segments = tuple(Segment(**s) for s in manifest["segments"])
        return Generation(
            root, number, segments, int(manifest["next_segment"]), manifest["quantization"], manifest["scale"]
        )
    except (KeyError, TypeError, ValueError) as e:
        raise IndexCorruptError(f"{path}: malformed ({e})") from None


def current(root: str | Path) -> Generation:
    """The current generation of live index ``root``: the highest-numbered manifest that is whole.

    Raises
    ------
    FileNotFoundError
        When ``root`` is not a live index.
    IndexCorruptError
        When no manifest is valid.
    """
    root = Path(root)
    if not is_live(root):
        raise FileNotFoundError(f"{root} is not a live lsr index ({LIVE_MARKER} is missing)")
    seen: list[int] | None = None
    while True:
        listed = _generations(root)
        errors, vanished = [], False
        for number in listed:
            try:
                return _load(root, number)
            except FileNotFoundError as e:  # removed by changes published since the listing
                vanished = True
                errors.append(str(e))
            except (OSError, IndexCorruptError) as e:  # a newer one torn by a crash: fall back
                errors.append(str(e))
        if not vanished or listed == seen:
            raise IndexCorruptError(
                f"{root}: no valid segments-N.json manifest ({'; '.join(errors) or 'none'})"
            )
        seen = listed  # list again: newer manifests were published meanwhile


def open_segments(generation: Generation, verify: bool = True) -> list[tuple[NativeIndex, np.ndarray]]:
    """Each segment's opened index and deletion mask, checked against the manifest."""
    out = []
    for seg in generation.segments:
        index = open_index(generation.root / seg.name, verify=verify)
        if index.n_docs != seg.n_docs or index.meta["meta_sha256"] != seg.meta_sha256:
            raise IndexCorruptError(
                f"{index.path}: is not the segment segments-{generation.number}.json names"
            )
        out.append((index, generation.deleted_mask(seg)))
    return out


def read_fields(files: Iterable[str | Path], names: Sequence[str]) -> dict[str, tuple]:
    """Field values per external id from JSON-lines records (``"id"`` or ``"_id"``; each field a
    top-level key or one under ``"metadata"``, as in a BEIR corpus); a missing field is ``None``.

    Raises
    ------
    ValueError
        On a value other than a string, a number or null, naming file, line and field.
    """
    out: dict[str, tuple] = {}
    for path in files:
        path = Path(path)
        with open(path, encoding="utf-8") as f:
            for lineno, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    obj = json.loads(line)
                except json.JSONDecodeError as e:
                    raise ValueError(f"{path}:{lineno}: not valid JSON ({e.msg})") from None
                if not isinstance(obj, dict):
                    continue
                rid = obj.get("id", obj.get("_id"))
                meta = obj.get("metadata") if isinstance(obj.get("metadata"), dict) else {}
                values = []
                for name in names:
                    v = obj.get(name, meta.get(name))
                    if isinstance(v, bool) or not (v is None or isinstance(v, str | int | float)):
                        raise ValueError(
                            f"{path}:{lineno}: field {name!r} of {rid!r} must be a string, a number "
                            f"or null to be stored for filters, got {type(v).__name__}"
                        )
                    if isinstance(v, float) and not math.isfinite(v):
                        raise ValueError(f"{path}:{lineno}: field {name!r} of {rid!r} is {v}")
                    values.append(v)
                out[str(rid)] = tuple(values)
    return out


def _write_fields(root: Path, name: str, index: NativeIndex, names: Sequence[str], values) -> tuple[str, str]:
    """Write ``name.fields.json`` with the columns in ``index``'s internal order; (file, sha256).
    ``values`` maps an external id to its field values (ids it lacks get nulls)."""
    empty = (None,) * len(names)
    rows = [values.get(i, empty) for i in index.docids(range(index.n_docs))]
    columns = {n: [r[j] for r in rows] for j, n in enumerate(names)}
    file = f"{name}.fields.json"
    data = json.dumps({"names": list(names), "columns": columns}, ensure_ascii=False).encode("utf-8")
    _write_durable(root / file, data)
    return file, hashlib.sha256(data).hexdigest()


# ------------------------------------------------------------------ changes
def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_durable(path: Path, data: bytes) -> None:
    """Write ``path`` whole or not at all: a temporary name, fsync, rename, fsync the directory."""
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def _publish(old: Generation, segments: list[Segment], next_segment: int, quantization, scale) -> Generation:
    number = old.number + 1
    manifest = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "generation": number,
        "next_segment": next_segment,
        "quantization": quantization,
        "scale": scale,
        "segments": [s.to_json() for s in segments],
    }
    manifest["manifest_sha256"] = _manifest_checksum(manifest)
    _write_durable(old.root / f"segments-{number}.json", (json.dumps(manifest, indent=2) + "\n").encode())
    new = Generation(old.root, number, tuple(segments), next_segment, quantization, scale)
    try:
        _collect(new)
    except OSError as e:  # published already: a file left behind is removed by the next change
        log.warning("%s: cleaning up after generation %d: %s", old.root, number, e)
    return new


def _collect(generation: Generation) -> None:
    """Remove what no kept generation names: older manifests, merged-away segments, leftovers."""
    root = generation.root
    numbers = _generations(root)
    kept = [n for n in numbers if n <= generation.number][:KEEP]
    names = {LIVE_MARKER}
    for n in kept:
        names.add(f"segments-{n}.json")
        try:
            g = _load(root, n)
        except (OSError, IndexCorruptError):
            continue
        for s in g.segments:
            names.update(n for n in (s.name, s.deleted, s.fields) if n)
    for p in root.iterdir():
        if p.name in names or (MANIFEST.fullmatch(p.name) and int(p.name[9:-5]) > generation.number):
            continue
        if p.is_dir():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)


def _new_live(root: Path) -> Generation:
    """An empty generation 0 in a fresh directory (nothing published yet)."""
    return Generation(root, 0, (), 0, "", None)


def _locked_current(root: Path) -> Generation:
    if is_live(root):
        return current(root)
    return _new_live(root)


def _convert(root: Path) -> None:
    """Turn the plain native index at ``root`` into a live one whose one segment it is (hard links,
    no copy), published with one atomic swap; a missing ``root`` becomes an empty live index."""
    for stale in root.parent.glob(f".{root.name}.live-*"):  # a killed conversion's (we hold the lock)
        shutil.rmtree(stale, ignore_errors=True)
    staged = root.with_name(f".{root.name}.live-{os.getpid()}")
    staged.mkdir()
    segments = []
    quantization, scale = "", None
    if (root / META).is_file():
        index = open_index(root, verify=True)
        seg = staged / "seg-0"
        seg.mkdir()
        for f in root.iterdir():
            if f.is_file():
                try:
                    os.link(f, seg / f.name)
                except OSError:
                    shutil.copy2(f, seg / f.name)
            elif f.is_dir():  # the dense store
                shutil.copytree(f, seg / f.name, copy_function=_link_or_copy)
        segments.append(Segment("seg-0", index.n_docs, index.meta["meta_sha256"]))
        quantization, scale = index.meta["quantization"], index.meta["scale"]
    (staged / LIVE_MARKER).write_text(json.dumps({"format": FORMAT, "format_version": FORMAT_VERSION}) + "\n")
    _publish(Generation(staged, 0, (), 0, "", None), segments, len(segments), quantization, scale)
    if root.exists():
        swap_in(staged, root, META)
    else:
        staged.rename(root)
    _fsync_dir(root.parent)


def _link_or_copy(src: str, dst: str) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def _dense_kind(meta: dict) -> tuple | None:
    """What a segment's dense store must share with the others: (dim, dtype), or None for none."""
    dense = meta.get("dense")
    return None if dense is None else (dense["dim"], dense["dtype"])


def _id_locations(opened, ids: list[str]) -> dict[str, tuple[int, int]]:
    """External id -> (segment position, internal id) of those of ``ids`` that are live (an id lives
    in one segment at most)."""
    where: dict[str, tuple[int, int]] = {}
    for s, (index, deleted) in enumerate(opened):
        found = index.locate(ids)
        for i in np.flatnonzero(found >= 0).tolist():
            if not deleted[found[i]]:
                where[ids[i]] = (s, int(found[i]))
    return where


def _with_deletions(
    generation: Generation, opened, deletions: dict[int, list[int]], number: int
) -> list[Segment]:
    """The generation's segments with ``deletions`` (segment position -> internal ids) added; files
    for generation ``number``. A segment left with no live document is dropped."""
    out = []
    for s, seg in enumerate(generation.segments):
        if s not in deletions:
            out.append(seg)
            continue
        mask = opened[s][1].copy()
        mask[deletions[s]] = True
        n_deleted = int(mask.sum())
        if n_deleted == seg.n_docs:
            continue
        name = f"{seg.name}.del-{number}.npy"
        path = generation.root / name
        tmp = path.with_name(f".{name}.tmp")
        with open(tmp, "wb") as f:
            np.save(f, np.packbits(mask, bitorder="little"), allow_pickle=False)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        out.append(
            Segment(
                seg.name, seg.n_docs, seg.meta_sha256, name, digest, n_deleted, seg.fields, seg.fields_sha256
            )
        )
    return out


@dataclass(frozen=True)
class Change:
    """What one change did: the generation it published and its counts."""

    generation: int
    added: int = 0
    deleted: int = 0
    not_found: int = 0
    segments: int = 0


def append(
    index_dir: str | Path,
    vector_files: list[str | Path],
    upsert: bool = False,
    fields: Sequence[str] = (),
    fields_from: Sequence[str | Path] | None = None,
    dense: Sequence[str | Path] | None = None,
    **build_options,
) -> Change:
    """Add the documents of JsonVectorCollection files to a live index as one new segment.

    A plain native index becomes a live one first (its files hard-linked as segment 0), and a
    missing directory a new live index. With ``upsert`` the live documents with the same ids are
    deleted in the same generation (an update); without it a repeated id is an error.

    Parameters
    ----------
    index_dir : str or Path
        The index directory.
    vector_files : list of path
        JsonVectorCollection files (quantized by the index's rule: the same one as its segments).
    upsert : bool
        Replace documents whose ids are live already.
    fields : list of str
        Metadata fields to store for filters (:func:`read_fields`), read from ``fields_from``
        (JSON-lines records such as a BEIR corpus) or else from the vector files' own records.
    fields_from : list of path, optional
        Where the field values are read.
    dense : list of path, optional
        Dense vectors of the new documents (``lsr index --dense``): the segment gets its own dense
        store. Every segment of a live index has one (the same dim and dtype) or none does.
    **build_options
        ``block_size``, ``reorder``, ``bp_iterations``, ``dense_dtype``, ``dense_encoder`` of
        :func:`build_native_index`.

    Returns
    -------
    Change

    Raises
    ------
    ValueError
        On a repeated id without ``upsert`` (naming it), or vectors quantized otherwise than the index.
    """
    root = Path(index_dir)
    with build_lock(root):
        if not is_live(root):
            _convert(root)
        gen = current(root)
        _collect(gen)
        name = f"seg-{gen.next_segment}"
        options = dict(build_options)
        first = open_index(root / gen.segments[0].name, verify=False) if gen.segments else None
        if first is not None and "forward" not in options:  # appends keep the index's forward store
            options["forward"] = first.has_forward
        if gen.segments and gen.quantization == "lsr":
            given = options.pop("scale", gen.scale)
            if given != gen.scale:
                raise ValueError(
                    f"scale {given}: the segments of {root} are quantized with scale {gen.scale}"
                )
            options["scale"] = gen.scale  # one rule across segments: scores compare
        meta = build_native_index(root / name, vector_files=list(vector_files), dense=dense, **options)
        try:
            if first is not None:
                have = _dense_kind(first.meta)
                if have != _dense_kind(meta):
                    raise ValueError(
                        f"{root}: its segments have dense stores {have or 'none'} (dim, dtype), the new "
                        f"one {_dense_kind(meta) or 'none'}: give every segment the same (--dense) or none"
                    )
            if gen.segments and (meta["quantization"], meta["scale"]) != (gen.quantization, gen.scale):
                raise ValueError(
                    f"{', '.join(map(str, vector_files))}: vectors quantized as {meta['quantization']} "
                    f"(scale {meta['scale']}), the index as {gen.quantization} (scale {gen.scale}); "
                    "integer impacts and float weights cannot share an index"
                )
            new_index = open_index(root / name, verify=False)
            opened = open_segments(gen, verify=False)
            new_ids = new_index.docids(range(new_index.n_docs))
            where = _id_locations(opened, new_ids)
            deletions: dict[int, list[int]] = {}
            for doc in new_ids:
                hit = where.get(doc)
                if hit is None:
                    continue
                if not upsert:
                    raise ValueError(
                        f"{', '.join(map(str, vector_files))}: id {doc!r} is already in {root} "
                        "(use --upsert to replace it)"
                    )
                deletions.setdefault(hit[0], []).append(hit[1])
            segments = _with_deletions(gen, opened, deletions, gen.number + 1)
            stored = (None, None)
            if fields:
                values = read_fields(fields_from or vector_files, fields)
                stored = _write_fields(root, name, new_index, fields, values)
            segments.append(Segment(name, new_index.n_docs, meta["meta_sha256"], None, None, 0, *stored))
            new = _publish(gen, segments, gen.next_segment + 1, meta["quantization"], meta["scale"])
        except BaseException:
            shutil.rmtree(root / name, ignore_errors=True)
            (root / f"{name}.fields.json").unlink(missing_ok=True)
            raise
    n_replaced = sum(len(v) for v in deletions.values())
    return Change(new.number, added=new_index.n_docs, deleted=n_replaced, segments=len(new.segments))


def delete(index_dir: str | Path, ids: Iterable[str]) -> Change:
    """Delete documents by external id (ids not live in the index are counted, not an error).

    Parameters
    ----------
    index_dir : str or Path
        A live index, or a plain native index (which becomes live).
    ids : iterable of str
        External ids.

    Returns
    -------
    Change
        With ``deleted`` and ``not_found`` counts.
    """
    root = Path(index_dir)
    if not is_live(root) and not (root / META).is_file():
        raise FileNotFoundError(f"{root} is not a native lsr index")
    with build_lock(root):
        if not is_live(root):
            _convert(root)
        gen = current(root)
        _collect(gen)
        opened = open_segments(gen, verify=False)
        ids = list(dict.fromkeys(ids))
        where = _id_locations(opened, ids)
        deletions: dict[int, list[int]] = {}
        missing = 0
        for doc in ids:
            hit = where.get(doc)
            if hit is None:
                missing += 1
            else:
                deletions.setdefault(hit[0], []).append(hit[1])
        if not deletions:
            return Change(gen.number, not_found=missing, segments=len(gen.segments))
        segments = _with_deletions(gen, opened, deletions, gen.number + 1)
        new = _publish(gen, segments, gen.next_segment, gen.quantization, gen.scale)
    n = sum(len(v) for v in deletions.values())
    return Change(new.number, deleted=n, not_found=missing, segments=len(new.segments))


def merge(index_dir: str | Path, max_segments: int = 1, **build_options) -> Change:
    """Rewrite the smallest segments into one (deleted documents dropped, documents reordered)
    until at most ``max_segments`` remain. The merged segment takes the place of the oldest one it
    replaces, so the order of the others stays as it was.

    Parameters
    ----------
    index_dir : str or Path
        A live index.
    max_segments : int
        Segments left at most (>= 1).
    **build_options
        ``block_size``, ``reorder``, ``bp_iterations`` of the rebuilt segment.

    Returns
    -------
    Change
        ``segments``: how many remain.
    """
    if max_segments < 1:
        raise ValueError(f"max_segments must be >= 1, got {max_segments}")
    root = Path(index_dir)
    with build_lock(root):
        gen = current(root)
        _collect(gen)
        n_merge = len(gen.segments) - max_segments + 1
        if n_merge < 2 and not (max_segments == 1 and gen.segments and gen.segments[0].n_deleted):
            return Change(gen.number, segments=len(gen.segments))
        by_size = sorted(range(len(gen.segments)), key=lambda s: (gen.segments[s].n_live, s))
        chosen = sorted(by_size[: max(n_merge, 1)])
        opened = open_segments(gen, verify=True)
        ids, rows, vocab = _live_rows([opened[s] for s in chosen])
        name = f"seg-{gen.next_segment}"
        indptr, terms, impacts = rows
        dense = _live_dense([opened[s] for s in chosen], ids)
        if all(opened[s][0].has_forward for s in chosen):
            build_options = {"forward": True, **build_options}  # a forward store is carried
        if dense is not None:
            store_meta = opened[chosen[0]][0].meta["dense"]
            build_options = {"dense_dtype": store_meta["dtype"], **build_options}
        meta = build_native_from_impacts(
            root / name, ids, indptr, terms, impacts, vocab, gen.quantization, gen.scale, dense=dense,
            **build_options,
        )  # fmt: skip
        try:
            stored = (None, None)
            names = sorted({n for s in chosen for n in gen.fields(gen.segments[s])})
            if names:
                values = {}
                for s in chosen:
                    columns = gen.fields(gen.segments[s])
                    index, deleted = opened[s]
                    cols = [columns.get(n, [None] * index.n_docs) for n in names]
                    live = np.flatnonzero(~deleted).tolist()
                    for i, doc in zip(live, index.docids(live), strict=True):
                        values[doc] = tuple(c[i] for c in cols)
                stored = _write_fields(root, name, open_index(root / name, verify=False), names, values)
            merged = Segment(name, len(ids), meta["meta_sha256"], None, None, 0, *stored)
            segments = []
            for s, seg in enumerate(gen.segments):
                if s == chosen[0]:
                    segments.append(merged)
                elif s not in chosen:
                    segments.append(seg)
            new = _publish(gen, segments, gen.next_segment + 1, gen.quantization, gen.scale)
        except BaseException:
            shutil.rmtree(root / name, ignore_errors=True)
            (root / f"{name}.fields.json").unlink(missing_ok=True)
            raise
    return Change(new.number, segments=len(new.segments))


def _live_dense(opened, ids: list[str]) -> DenseVectors | None:
    """The dense vectors of the live documents (in :func:`_live_rows`' order), or None without stores."""
    if _dense_kind(opened[0][0].meta) is None:
        return None
    parts = []
    for index, deleted in opened:
        store = open_dense_store(
            index.path, index.meta["dense"], ids_sha256(index.id_arrays), True, index.n_docs
        )
        parts.append(store.gather(_live_in_order(index, deleted)))
    return DenseVectors(ids, np.concatenate(parts))


def _live_in_order(index: NativeIndex, deleted: np.ndarray) -> np.ndarray:
    """A segment's live internal docs in its tie order: a merge keeps the order ties break in."""
    order = index.input_order
    return order[~deleted[order]]


def _live_rows(opened) -> tuple[list[str], tuple[np.ndarray, np.ndarray, np.ndarray], list[str]]:
    """The live documents of opened segments, in segment then tie order, as CSR rows of
    impacts over the union of their vocabularies (each segment's postings decoded and turned back
    into rows by a counting sort: linear, no sort over all postings)."""
    vocab: list[str] = []
    index_of: dict[str, int] = {}
    ids: list[str] = []
    parts = []
    for index, deleted in opened:
        mapping = np.empty(len(index.vocab), np.int64)
        for i, t in enumerate(index.vocab):
            j = index_of.get(t)
            if j is None:
                j = index_of[t] = len(vocab)
                vocab.append(t)
            mapping[i] = j
        live = _live_in_order(index, deleted)
        new_doc = np.full(index.n_docs, -1, np.int64)
        new_doc[live] = np.arange(len(live))
        offsets, pdocs, pimpacts = index.postings()
        term_order = np.argsort(mapping, kind="stable")
        rows = build_kernels._rows(
            np.asarray(offsets, np.int64), pdocs, pimpacts, term_order, mapping, new_doc, len(live)
        )
        parts.append(rows)
        ids.extend(index.docids(live.tolist()))
    starts = np.cumsum([0, *(p[0][-1] for p in parts)])
    indptr = np.concatenate([[0], *(p[0][1:] + start for p, start in zip(parts, starts, strict=False))])
    terms = np.concatenate([p[1] for p in parts]) if parts else np.zeros(0, np.int32)
    impacts = np.concatenate([p[2] for p in parts]).astype(np.uint16) if parts else np.zeros(0, np.uint16)
    return ids, (indptr.astype(np.int64), terms, impacts), vocab
