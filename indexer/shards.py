"""A sharded native index: documents split by a stable hash of their external id, one native index
per shard, built in parallel, and a manifest over them published last.

    INDEX_DIR/
      shards.json          {"format": "lsr-sharded", "format_version": 1, "rule", "n_shards",
                           "quantization", "scale", "n_docs", "shards": [{"name", "n_docs",
                           "meta_sha256", "ordinals_sha256"}], "manifest_sha256"}
      shard-<i>/           a native index (:mod:`indexer.native.format`) of the documents of shard i
      shard-<i>/ordinals.npy  int64 [n_docs]: each internal doc's position in the input (the tie order)

The rule (``blake2b-64 mod n``): a document goes to shard ``int.from_bytes(blake2b(id, digest_size=8),
"little") % n_shards``, the id encoded as UTF-8 — never Python's ``hash()``, which differs between
processes. Quantization is one global rule: float weights are quantized with the same scale in every
shard, and integer impacts are taken as given in every shard, so scores compare across shards.

Ties across shards go to the document that came first in the input (its ordinal), so a sharded
exact search returns what one index built from the same input without reordering returns, hit for
hit (``lsr index --reorder none``; a reordered one breaks ties by its own order: the same scores).
The whole directory is built beside the target and swapped in at once (:mod:`indexer.atomic`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from indexer.atomic import atomic_build
from indexer.dense import iter_dense
from indexer.files import IndexCorruptError, array_spec, open_array
from indexer.jsonvector import escape_term, impact_mode, iter_vectors
from indexer.native.build import build_native_index
from indexer.native.format import NativeIndex, open_index
from indexer.quantize import IMPACT_SCALE, check_scale

log = logging.getLogger(__name__)

FORMAT = "lsr-sharded"
FORMAT_VERSION = 1
MANIFEST = "shards.json"
RULE = "blake2b-64 mod n"
ORDINALS = "ordinals.npy"


def shard_of(doc_id: str, n_shards: int) -> int:
    """The shard of external id ``doc_id`` among ``n_shards`` (the module's rule)."""
    digest = hashlib.blake2b(doc_id.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "little") % n_shards


def is_sharded(path: str | Path) -> bool:
    return (Path(path) / MANIFEST).is_file()


def _checksum(manifest: dict) -> str:
    rest = {k: v for k, v in manifest.items() if k != "manifest_sha256"}
    return hashlib.sha256(json.dumps(rest, sort_keys=True).encode("utf-8")).hexdigest()


def build_sharded_index(
    index_dir: str | Path,
    vector_files: Sequence[str | Path],
    n_shards: int,
    threads: int = 1,
    scale: float = IMPACT_SCALE,
    ray: bool | str | None = None,
    dense: Sequence[str | Path] | None = None,
    **build_options,
) -> dict:
    """Build a sharded native index from JsonVectorCollection files.

    Parameters
    ----------
    index_dir : str or Path
        Where the sharded index is published (atomically, as a whole).
    vector_files : list of path
        The documents; their order is the input order (the tie order).
    n_shards : int
        Shards (>= 1).
    threads : int
        Shards built at once (the reordering kernel releases the GIL).
    ray : bool or str, optional
        Build the shards as Ray tasks instead (one CPU each): ``True`` on a local Ray (started and
        stopped here unless one runs), or a cluster address. ``INDEX_DIR``'s parent must be on a
        file system every node sees.
    dense : list of path, optional
        Dense vectors (``{"id", "vector": [...]}`` lines), split by the same rule: each shard gets its
        own dense store (``lsr index --dense``), for bi-granular search across shards.
    scale : float
        The quantization scale of float weights, the same in every shard.
    **build_options
        ``block_size``, ``reorder``, ``bp_iterations``, ``forward`` of each shard's
        :func:`indexer.native.build.build_native_index`.

    Returns
    -------
    dict
        The manifest.

    Raises
    ------
    ValueError
        On a bad ``n_shards`` or ``threads``, a repeated id (naming both places) or bad input (as
        :func:`build_native_index`).
    """
    if isinstance(n_shards, bool) or not isinstance(n_shards, int) or n_shards < 1:
        raise ValueError(f"n_shards must be an integer >= 1, got {n_shards!r}")
    if threads < 1:
        raise ValueError(f"threads must be >= 1, got {threads}")
    scale = check_scale(scale)
    files = [Path(p) for p in vector_files]
    for p in files:
        if not p.is_file():
            raise FileNotFoundError(f"vector file not found: {p}")
    mode = impact_mode(files)
    start = time.perf_counter()
    with atomic_build(Path(index_dir), MANIFEST) as (work, out):
        out.mkdir()
        parts = [work / f"part-{i}.jsonl" for i in range(n_shards)]
        ordinal: dict[str, int] = {}
        where: dict[str, str] = {}
        part_ids: list[list[str]] = [[] for _ in range(n_shards)]
        handles = [open(p, "w", encoding="utf-8") for p in parts]
        try:
            given = mode == "given"
            for path in files:
                # Terms checked raw; a part file holds them as its source did (escaped when given).
                for lineno, rid, vector in iter_vectors(path, escaped=given):
                    if rid in ordinal:
                        raise ValueError(f"{path}:{lineno}: duplicate id {rid!r} (first at {where[rid]})")
                    ordinal[rid] = len(ordinal)
                    where[rid] = f"{path}:{lineno}"
                    # Weights written as the global mode reads them: a float file's whole numbers
                    # must not make one shard look pre-quantized.
                    cast = int if given else float
                    record = {
                        "id": rid,
                        "vector": {escape_term(t) if given else t: cast(w) for t, w in vector.items()},
                    }
                    shard = shard_of(rid, n_shards)
                    handles[shard].write(json.dumps(record, ensure_ascii=False) + "\n")
                    part_ids[shard].append(rid)
        finally:
            for f in handles:
                f.close()
        del where
        dense_parts: list[Path | None] = [None] * n_shards
        if dense:
            dense_parts = [work / f"dense-{i}.jsonl" for i in range(n_shards)]
            outs = [open(p, "w", encoding="utf-8") for p in dense_parts]
            try:
                for path in dense:
                    for _, rid, vector in iter_dense(path):
                        if rid in ordinal:
                            outs[shard_of(rid, n_shards)].write(
                                json.dumps({"id": rid, "vector": vector}) + "\n"
                            )
            finally:
                for f in outs:
                    f.close()

        ordinals = [np.array([ordinal[d] for d in part_ids[i]], np.int64) for i in range(n_shards)]
        jobs = [
            (out / f"shard-{i}", parts[i], ordinals[i], part_ids[i], dense_parts[i]) for i in range(n_shards)
        ]
        del ordinal, part_ids
        if ray is not None:
            shards = _on_ray(jobs, scale, build_options, None if ray is True else ray)
        else:
            with ThreadPoolExecutor(min(threads, n_shards)) as pool:
                shards = list(pool.map(lambda job: _build_shard(*job, scale, build_options), jobs))
        if not any(s["n_docs"] for s in shards):
            raise ValueError("no document has a non-empty vector: nothing to index")
        manifest = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "rule": RULE,
            "n_shards": n_shards,
            "quantization": mode,
            "scale": None if mode == "given" else scale,
            "n_docs": sum(s["n_docs"] for s in shards),
            "sources": [str(p.resolve()) for p in files],
            "build_seconds": round(time.perf_counter() - start, 3),
            "shards": shards,
        }
        manifest["manifest_sha256"] = _checksum(manifest)
        (out / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    log.info("sharded index at %s: %d documents in %d shards", index_dir, manifest["n_docs"], n_shards)
    return manifest


def _build_shard(
    shard: Path, part: Path, ordinals, ids: list[str], dense: Path | None, scale: float, options: dict
) -> dict:
    """Build one shard from its part file; its entry in the manifest (also a Ray task's body)."""
    if not ids:
        return {"name": shard.name, "n_docs": 0, "meta_sha256": None, "ordinals_sha256": None}
    extra = {"dense": [dense]} if dense is not None else {}
    meta = build_native_index(shard, vector_files=[part], scale=scale, **options, **extra)
    index = open_index(shard, verify=False)
    line = {d: j for j, d in enumerate(ids)}  # the part file is in input order
    at = np.array([line[d] for d in index.docids(range(index.n_docs))], np.int64)
    np.save(shard / ORDINALS, np.asarray(ordinals)[at], allow_pickle=False)
    return {
        "name": shard.name,
        "n_docs": meta["n_docs"],
        "meta_sha256": meta["meta_sha256"],
        "ordinals_sha256": array_spec(shard / ORDINALS)["sha256"],
    }


def _on_ray(jobs, scale: float, options: dict, address: str | None) -> list[dict]:
    """:func:`_build_shard` of every job as a Ray task (one CPU each)."""
    try:
        import ray
    except ImportError as e:
        raise ImportError("pip install 'lsr[ray]'") from e
    started = not ray.is_initialized()
    if started:
        ray.init(address=address, include_dashboard=False, log_to_driver=False)
    try:
        task = ray.remote(num_cpus=1, max_retries=2)(_build_shard)
        return ray.get([task.remote(*job, scale, options) for job in jobs])
    finally:
        if started:
            ray.shutdown()


def open_sharded(
    index_dir: str | Path, verify: bool = True
) -> tuple[dict, list[tuple[NativeIndex, np.ndarray] | None]]:
    """The manifest and each shard's opened index and ordinals (``None`` for an empty shard), all
    checked against the manifest.

    Raises
    ------
    FileNotFoundError
        When ``index_dir`` holds no ``shards.json``.
    IndexCorruptError
        When the manifest or a shard does not match.
    """
    root = Path(index_dir)
    path = root / MANIFEST
    if not path.is_file():
        raise FileNotFoundError(f"{root} is not a sharded lsr index ({MANIFEST} is missing)")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise IndexCorruptError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise IndexCorruptError(f"{path}: not an {FORMAT} manifest")
    if manifest.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"{path}: format version {manifest.get('format_version')} is not supported")
    if manifest.get("manifest_sha256") != _checksum(manifest):
        raise IndexCorruptError(f"{path}: does not match its checksum (manifest_sha256)")
    opened: list[tuple[NativeIndex, np.ndarray] | None] = []
    for spec in manifest["shards"]:
        if not spec["n_docs"]:
            opened.append(None)
            continue
        index = open_index(root / spec["name"], verify=verify)
        if index.n_docs != spec["n_docs"] or index.meta["meta_sha256"] != spec["meta_sha256"]:
            raise IndexCorruptError(f"{index.path}: is not the shard {MANIFEST} names")
        file = index.path / ORDINALS
        with open(file, "rb") as f:
            ordinals = open_array(
                f,
                file,
                {"shape": [index.n_docs], "dtype": "int64", "sha256": spec["ordinals_sha256"]},
                verify,
            )
        opened.append((index, np.asarray(ordinals)))
    return manifest, opened
