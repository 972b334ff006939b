"""Encode a corpus on a Ray cluster into a folder of JsonVectorCollection shards, resumably.

    OUT_DIR/
      encode.json        the settings the shards were made with (a rerun must match them)
      part-00000.jsonl   block 0: documents 0 .. B-1 of the corpus, in file order
      part-00001.jsonl   block 1: documents B .. 2B-1
      ...

Block ``i`` always holds documents ``i*B`` to ``(i+1)*B - 1`` of the corpus (``B`` = ``block_docs``),
whatever the number of workers, so a part file's name says what it holds. Sparse encoders write
JsonVectorCollection lines (:func:`indexer.jsonvector.format_lines`), dense encoders
``{"id", "vector": [...]}`` lines (:mod:`indexer.dense`), as :func:`indexer.encode.encode_corpus`
writes them: the parts, concatenated in block order, are byte for byte its output with
``chunk_size=block_docs`` (the same length-bucketed batches); with another chunking the padding of
a batch differs, and a weight can differ in its last float32 bit. The part files are inputs to
``lsr index`` as they are (:func:`part_files`: block order, also past ``part-99999``).

A worker writes a part file whole or not at all: into a hidden temporary name holding its pid
(``.part-00003.jsonl.tmp-PID``), fsynced, then renamed over. So after a crash (a worker killed, the
driver killed, a node lost) every part file holds its whole block, a rerun skips the blocks whose
part file is whole (its line count and its first and last ids match the block) and encodes the
rest, and no document is written twice or lost. Leftover temporary files are removed at the start
of a run. Writing a block again is harmless: it writes the same lines under the same name.

How the work is spread, and why not Ray Data's ``read_json(...).map_batches(...)``:

- the driver reads the corpus once, streaming, with :func:`indexer.corpus.read_corpus`: the same
  checks (ids, duplicates, UTF-8, ``title + text``) as the single-process path, so both encode the
  same texts. Ray Data's readers split files by bytes and size blocks dynamically, so their
  block boundaries (and a resumed run's) would depend on file layout and cluster size, and their
  writers name files after task ids: neither gives "part ``i`` is documents ``i*B..``";
- a fixed pool of plain Ray actors (:class:`EncodeWorker`), each loading the onnxruntime session
  once, takes whole blocks; the driver keeps at most two blocks in flight per worker (one running,
  one queued), so memory stays bounded on a corpus of any size, and a block whose part file is
  already whole is never sent. Ray is only started once a block needs encoding: a rerun of a
  finished encode touches no cluster;
- a worker that dies is restarted by Ray and its blocks retried (``max_retries`` times, Ray's
  ``max_restarts`` / ``max_task_retries``); past that, or with ``max_retries=0``, the run fails
  naming the block, keeping every finished block for the rerun;
- on a cluster with GPUs each worker asks for one (a share of one when there are more workers than
  GPUs; ``gpus_per_worker`` overrides), and the session runs on CUDA when the cluster's
  onnxruntime has it; otherwise each worker takes ``threads_per_worker`` CPUs.

Without ``address`` a local Ray is started (and shut down at the end); with one, the driver
connects to that cluster, whose nodes need lsr installed, and OUT_DIR must be a filesystem every
node sees (a part file a worker wrote that the driver cannot see is an error). Where Ray is already
initialised in this process, that connection is used as it is.

Only ``ray`` (core) is needed, not ``ray[data]``: ``pip install 'lsr[ray]'``.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from indexer.atomic import locked_file
from indexer.corpus import Record, check_file, read_corpus

log = logging.getLogger(__name__)

FORMAT = "lsr-ray-encode"
FORMAT_VERSION = 1
SETTINGS = "encode.json"
PART_GLOB = "part-*.jsonl"
_TMP_GLOB = ".part-*.jsonl.tmp-*"
# Blocks in flight per worker: one encoding, one queued behind it, so a worker never waits on the driver.
IN_FLIGHT_PER_WORKER = 2


def part_name(block: int) -> str:
    """The part file of block ``block``: ``part-00042.jsonl``."""
    return f"part-{block:05d}.jsonl"


def part_files(out_dir: str | Path) -> list[Path]:
    """The part files of an OUT_DIR in block order (the vector files to index)."""
    return sorted(Path(out_dir).glob(PART_GLOB), key=lambda p: (len(p.name), p.name))


def _import_ray():
    try:
        import ray
    except ImportError:
        raise ImportError("pip install 'lsr[ray]'") from None
    return ray


def write_part(path: Path, lines: list[str]) -> None:
    """Write ``lines`` to ``path`` whole or not at all: a temporary name, fsync, rename, fsync the folder."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            f.write("".join(lines).encode("utf-8"))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def part_is_whole(path: Path, records: list[Record]) -> bool:
    """Whether ``path`` holds exactly the block ``records``: one complete line each, first and last ids
    matching. A part file is written whole (:func:`write_part`); this also catches one left by an
    encode of another corpus or block size."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return False
    if not data.endswith(b"\n") or data.count(b"\n") != len(records):
        return False
    first, _, _ = data.partition(b"\n")
    last = data[data.rfind(b"\n", 0, len(data) - 1) + 1 :]
    try:
        return json.loads(first)["id"] == records[0].id and json.loads(last)["id"] == records[-1].id
    except (ValueError, KeyError, TypeError):
        return False


def iter_blocks(corpus: Path, block_docs: int) -> Iterator[tuple[int, list[Record]]]:
    """(block number, its records): ``block_docs`` records a block, in file order, the last one shorter."""
    block: list[Record] = []
    number = 0
    for record in read_corpus(corpus):
        block.append(record)
        if len(block) == block_docs:
            yield number, block
            number, block = number + 1, []
    if block:
        yield number, block


class EncodeWorker:
    """A Ray actor: loads the encoder once, then encodes whole blocks into their part files."""

    def __init__(
        self,
        encoder_dir: str,
        side: str,
        max_length: int | None,
        threads: int | None,
        batch_size: int,
        prune: tuple[str, float] | None,
        impact_scale: float | None,
        out_dir: str,
    ):
        from lsr.runtime import load_encoder

        self.encoder = load_encoder(encoder_dir, side, threads=threads, max_length=max_length)
        self.dense = self.encoder.manifest.kind == "dense"
        self.batch_size = batch_size
        self.prune = prune
        self.impact_scale = impact_scale
        self.out_dir = Path(out_dir)

    def encode_block(self, number: int, records: list[Record], corpus: str) -> dict:
        """Encode ``records`` and write them as block ``number``; returns the block's counts."""
        import ray

        from indexer.encode import _check_impacts, dense_lines
        from indexer.jsonvector import format_lines
        from indexer.quantize import quantize_batch

        start = time.perf_counter()
        ids = [r.id for r in records]
        before = self.encoder.truncated
        batch = self.encoder.encode([r.text for r in records], batch_size=self.batch_size)
        empty: list[str] = []
        if self.dense:
            lines = dense_lines(ids, batch)
        else:
            if self.prune is not None:
                batch = batch.prune(*self.prune)
            if self.impact_scale is not None:
                _check_impacts(batch, self.impact_scale, records, Path(corpus))
                batch = quantize_batch(batch, self.impact_scale)
            empty = [
                f"{r.id} ({corpus}:{r.line})"
                for r, n in zip(records, batch.row_nnz().tolist(), strict=True)
                if n == 0
            ]
            lines = format_lines(ids, batch, impacts=self.impact_scale is not None)
        write_part(self.out_dir / part_name(number), lines)
        return {
            "block": number,
            "docs": len(records),
            "empty": len(empty),
            "empty_examples": empty[:5],
            "truncated": self.encoder.truncated - before,
            "seconds": time.perf_counter() - start,
            "pid": os.getpid(),
            "node": ray.util.get_node_ip_address(),
        }


def encode_corpus_ray(
    encoder_dir: str | Path,
    corpus: str | Path,
    out_dir: str | Path,
    side: str = "doc",
    batch_size: int = 8,
    max_length: int | None = None,
    prune: tuple[str, float] | None = None,
    block_docs: int = 1000,
    workers: int = 2,
    address: str | None = None,
    threads_per_worker: int = 1,
    impact_scale: float | None = None,
    gpus_per_worker: float | None = None,
    max_retries: int = 3,
    progress: Callable[[dict], None] | None = None,
    show_progress: bool = False,
) -> dict:
    """Encode ``corpus`` with a pool of Ray actors into ``out_dir/part-NNNNN.jsonl``, resumably.

    Parameters
    ----------
    encoder_dir : str or Path
        An ENCODER_DIR (:mod:`lsr.runtime`); each worker loads it once.
    corpus : str or Path
        BEIR ``corpus.jsonl`` / ``queries.jsonl`` or ``id<TAB>text`` TSV, gzipped or not
        (:func:`indexer.corpus.read_corpus`).
    out_dir : str or Path
        The folder of part files (module doc); created if missing. A folder holding anything else
        is refused, and so is a rerun with other settings (block size, encoder, corpus...).
    side : {"doc", "query"}
        The encoder side.
    batch_size : int
        Texts per onnxruntime call inside a block (length-bucketed).
    max_length : int, optional
        Tokens per text (default: the model's limit); longer texts are truncated and counted.
    prune : (str, float), optional
        Sparse pruning, e.g. ``("top_k", 64)`` (:meth:`lsr.sparse.SparseBatch.prune`).
    block_docs : int
        Documents per block, so per part file: the unit of work, of retry and of resumption.
    workers : int
        Ray actors, each with its own onnxruntime session.
    address : str, optional
        A Ray cluster to connect to (``"auto"``, ``"HOST:PORT"``, ``"ray://HOST:10001"``). Without
        one a local Ray is started with ``workers * threads_per_worker`` CPUs and shut down at the end.
    threads_per_worker : int
        onnxruntime intra-op threads of each worker, and the CPUs each worker reserves.
    impact_scale : float, optional
        Write integer impacts under the quantization contract (:mod:`indexer.quantize`), as
        ``lsr encode --impacts`` does.
    gpus_per_worker : float, optional
        GPUs each worker reserves; by default one where the cluster has a GPU for every worker, an
        equal share where it has fewer, none where it has none.
    max_retries : int
        How many times a dead worker is restarted and its blocks retried before the run fails.
    progress : callable, optional
        Called in the driver with each finished block's counts (``block``, ``docs``, ``empty``,
        ``truncated``, ``seconds``, ``pid``, ``node``) as it finishes.
    show_progress : bool
        A tqdm bar over documents.

    Returns
    -------
    dict
        ``blocks`` (in the corpus), ``skipped_blocks`` (whole from an earlier run), ``encoded_blocks``,
        ``documents`` (in the corpus), ``encoded`` (this run), ``empty``, ``truncated``, ``seconds``,
        ``docs_per_s`` (documents encoded this run per second of the run, Ray start included),
        ``ray_start_seconds`` (of those, starting or connecting to Ray; 0 when no block needed it),
        ``workers``, ``out_dir``.

    Raises
    ------
    ImportError
        Ray is not installed.
    ValueError
        A bad argument, a corpus without records, a dense encoder with ``prune`` or
        ``impact_scale``, settings that differ from the ones ``out_dir`` was encoded with, or an
        error of a block (a weight beyond the impact range, named by record).
    RuntimeError
        A worker died more than ``max_retries`` times, or wrote a part file the driver cannot see.
    """
    from lsr.manifest import Manifest
    from lsr.runtime import SIDES

    # Absolute paths: a worker on another node (or in another folder) reads and writes the same files.
    encoder_dir, corpus, out_dir = (
        Path(encoder_dir).resolve(),
        Path(corpus).resolve(),
        Path(out_dir).resolve(),
    )
    for name, value in (("block_docs", block_docs), ("workers", workers), ("batch_size", batch_size)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    if threads_per_worker < 1 or max_retries < 0:
        raise ValueError("threads_per_worker must be >= 1 and max_retries >= 0")
    if side not in SIDES:
        raise ValueError(f"side must be one of {', '.join(SIDES)}, got {side!r}")
    manifest = Manifest.load(encoder_dir)  # a bad ENCODER_DIR fails here, before any cluster starts
    if max_length is not None and not 1 <= max_length <= manifest.max_length:
        raise ValueError(f"max_length must be 1..{manifest.max_length} (the model's limit), got {max_length}")
    if manifest.kind == "dense" and (prune is not None or impact_scale is not None):
        raise ValueError("pruning and integer impacts apply to sparse encoders, not to a dense one")
    check_file(corpus)
    ray = _import_ray()
    if out_dir.exists() and not out_dir.is_dir():
        raise FileExistsError(f"{out_dir} exists and is not a directory (OUT_DIR is a folder of part files)")
    out_dir.mkdir(parents=True, exist_ok=True)
    settings = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "corpus": str(corpus),
        "encoder": str(encoder_dir),
        "kind": manifest.kind,
        "side": side,
        "block_docs": block_docs,
        "max_length": max_length,
        "prune": list(prune) if prune is not None else None,
        "impact_scale": impact_scale,
    }

    def busy(_f) -> None:
        log.warning("%s: another process is encoding into it; waiting for it to finish", out_dir)

    with locked_file(out_dir.with_name(f".{out_dir.name}.lock"), busy):
        _check_settings(out_dir, settings)
        for tmp in out_dir.glob(_TMP_GLOB):  # a killed worker's; no live one can own it (we hold the lock)
            tmp.unlink(missing_ok=True)
        pool = _Pool(
            ray, address, workers, threads_per_worker, gpus_per_worker, max_retries,
            (str(encoder_dir), side, max_length, threads_per_worker, batch_size, prune, impact_scale,
             str(out_dir)),
        )  # fmt: skip
        try:
            return _run(pool, corpus, out_dir, block_docs, workers, progress, show_progress)
        finally:
            pool.close()


def _check_settings(out_dir: Path, settings: dict) -> None:
    """Write ``encode.json`` into a new OUT_DIR; in an existing one, refuse other settings."""
    path = out_dir / SETTINGS
    if not path.is_file():
        foreign = [p.name for p in out_dir.iterdir() if not p.name.startswith(".")]
        if foreign:
            raise FileExistsError(
                f"{out_dir} is not empty and holds no {SETTINGS} (it is not a Ray encode's output): "
                f"found {', '.join(sorted(foreign)[:3])}; pick a new OUT_DIR"
            )
        tmp = out_dir / f".{SETTINGS}.tmp"
        tmp.write_text(json.dumps(settings, indent=2) + "\n", encoding="utf-8")
        os.replace(tmp, path)
        return
    try:
        old = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as e:
        raise ValueError(f"{path}: not valid JSON ({e}); pick a new OUT_DIR") from None
    differ = [k for k in settings if not isinstance(old, dict) or old.get(k) != settings[k]]
    if differ:
        shown = ", ".join(
            f"{k}: {old.get(k) if isinstance(old, dict) else None!r} -> {settings[k]!r}" for k in differ
        )
        raise ValueError(
            f"{out_dir} was encoded with other settings ({shown}); rerun with the same ones to resume, "
            "or pick a new OUT_DIR"
        )


class _Pool:
    """The workers, started on the first block that needs encoding (Ray included)."""

    def __init__(self, ray, address, workers, threads, gpus_per_worker, max_retries, worker_args):
        self.ray, self.address, self.workers, self.threads = ray, address, workers, threads
        self.gpus_per_worker, self.max_retries, self.worker_args = gpus_per_worker, max_retries, worker_args
        self.actors: list = []
        self.load: list[int] = []
        self.started_ray = False
        self.start_seconds = 0.0  # connecting to (or starting) Ray and asking for the workers

    def start(self) -> None:
        ray = self.ray
        began = time.perf_counter()
        if not ray.is_initialized():
            if self.address:
                ray.init(address=self.address, logging_level=logging.WARNING)
            else:
                ray.init(  # "local": a new instance, even where another one runs on this machine
                    address="local",
                    num_cpus=self.workers * self.threads,
                    include_dashboard=False,
                    logging_level=logging.WARNING,
                )
            self.started_ray = True
        gpus = float(ray.cluster_resources().get("GPU", 0))
        num_gpus = self.gpus_per_worker
        if num_gpus is None:
            num_gpus = min(1.0, gpus / self.workers) if gpus else 0
        actor = ray.remote(EncodeWorker).options(
            num_cpus=self.threads,
            num_gpus=num_gpus,
            max_restarts=self.max_retries,
            max_task_retries=self.max_retries,
        )
        self.actors = [actor.remote(*self.worker_args) for _ in range(self.workers)]
        self.load = [0] * self.workers
        self.start_seconds = time.perf_counter() - began
        log.info(
            "ray encode: %d workers, %s CPU and %s GPU each, on a cluster of %s",
            self.workers, self.threads, num_gpus, ray.cluster_resources(),
        )  # fmt: skip

    def submit(self, number: int, records: list[Record], corpus: Path):
        """Send a block to the least busy worker; returns (ref, worker)."""
        if not self.actors:
            self.start()
        w = min(range(self.workers), key=self.load.__getitem__)
        self.load[w] += 1
        return self.actors[w].encode_block.remote(number, records, str(corpus)), w

    def kill(self, in_flight: list = ()) -> None:
        """Kill the workers, then wait (30 s at most) until the ``in_flight`` blocks have settled:
        ray.kill is asynchronous, and a block mid-write would otherwise land after the run returned."""
        for a in self.actors:
            try:
                self.ray.kill(a)
            except Exception:  # already dead or the cluster gone: nothing left to stop
                pass
        self.actors = []
        if in_flight:
            try:
                self.ray.wait(in_flight, num_returns=len(in_flight), timeout=30)
            except Exception:  # the cluster went away: nothing can write any more
                pass

    def close(self) -> None:
        self.kill()
        if self.started_ray:
            self.ray.shutdown()
            self.started_ray = False


def _run(pool: _Pool, corpus: Path, out_dir: Path, block_docs: int, workers: int, progress, show_progress):
    from tqdm.auto import tqdm

    ray = pool.ray
    start = time.perf_counter()
    totals = {"blocks": 0, "skipped_blocks": 0, "encoded_blocks": 0, "documents": 0, "encoded": 0}
    empty, truncated, examples = 0, 0, []
    pending: dict = {}  # ref -> (block number, worker)
    bar = tqdm(desc=f"encode {corpus.name}", unit="doc", disable=not show_progress)

    def collect() -> None:
        nonlocal empty, truncated
        ready, _ = ray.wait(list(pending), num_returns=1)
        for ref in ready:
            number, w = pending.pop(ref)
            pool.load[w] -= 1
            try:
                done = ray.get(ref)
            except ray.exceptions.RayTaskError as e:  # the block's own error (bad weight...): as it is
                cause = getattr(e, "cause", None)
                if isinstance(cause, Exception):
                    raise cause from None
                raise
            except ray.exceptions.RayActorError as e:
                lines = [line for line in str(e).splitlines() if line.strip()]
                if "creation task" in str(e):  # the worker could not load the encoder: say why
                    raise RuntimeError(f"the encode workers could not start: {lines[-1]}") from None
                raise RuntimeError(
                    f"block {number} ({part_name(number)}): its encode worker died and was not restarted "
                    f"(max_retries={pool.max_retries}); finished blocks are kept: rerun to encode the rest "
                    f"({type(e).__name__}: {lines[0] if lines else ''})"
                ) from None
            if not (out_dir / part_name(number)).is_file():
                raise RuntimeError(
                    f"block {number}: worker pid {done['pid']} on {done['node']} wrote {part_name(number)} "
                    f"but {out_dir} does not hold it: OUT_DIR must be a filesystem every Ray node sees"
                )
            totals["encoded_blocks"] += 1
            totals["encoded"] += done["docs"]
            empty += done["empty"]
            truncated += done["truncated"]
            examples.extend(done["empty_examples"][: 5 - len(examples)])
            bar.update(done["docs"])
            if progress is not None:
                progress(done)

    try:
        for number, records in iter_blocks(corpus, block_docs):
            totals["blocks"] += 1
            totals["documents"] += len(records)
            if part_is_whole(out_dir / part_name(number), records):
                totals["skipped_blocks"] += 1
                bar.update(len(records))
                continue
            while len(pending) >= IN_FLIGHT_PER_WORKER * workers:
                collect()
            ref, w = pool.submit(number, records, corpus)
            pending[ref] = (number, w)
        while pending:
            collect()
    except BaseException:
        pool.kill(list(pending))
        raise
    finally:
        bar.close()
    for tmp in out_dir.glob(_TMP_GLOB):  # a worker's killed by the run, since retried
        tmp.unlink(missing_ok=True)
    if totals["blocks"] == 0:
        raise ValueError(f"{corpus}: no records to encode (the file is empty or holds only blank lines)")
    for stale in part_files(out_dir):  # beyond the corpus's last block: an earlier, longer corpus's
        number = stale.name.removeprefix("part-").removesuffix(".jsonl")
        if number.isdigit() and int(number) >= totals["blocks"]:
            log.warning(
                "%s: removing %s, beyond the corpus's %d blocks", out_dir, stale.name, totals["blocks"]
            )
            stale.unlink()
    if truncated:
        log.warning("%s: %d text(s) truncated to the encoder's max_length", corpus, truncated)
    if empty:
        log.warning(
            "%s: %d text(s) encoded to empty vectors (empty text or nothing the model weights), e.g. %s",
            corpus, empty, ", ".join(examples),
        )  # fmt: skip
    seconds = time.perf_counter() - start
    return {
        **totals,
        "empty": empty,
        "truncated": truncated,
        "seconds": round(seconds, 3),
        "docs_per_s": round(totals["encoded"] / seconds, 1) if seconds > 0 else 0.0,
        "ray_start_seconds": round(pool.start_seconds, 3),
        "workers": workers,
        "out_dir": str(out_dir),
    }
