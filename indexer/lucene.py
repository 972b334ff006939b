"""Lucene impact indexes built by Anserini's ``IndexCollection -impact -pretokenized``.

We stage a clean JsonVectorCollection (integer impacts under the quantization contract, escaped
terms), run the Anserini jar in a subprocess, check what it says it indexed (it exits 0 even when
it drops a whole file on a bad line), write ``lsr-index.json`` beside Lucene's files, and rename the
finished index into place: a build that fails midway leaves the previous index, or nothing.
``lsr-index.json`` records the size and sha256 of every Lucene file; searchers check them when they
open the index (:func:`verify_index`), so a corrupted, truncated or missing file is named up front
instead of surfacing as a Java exception or, for a flipped byte inside postings, as wrong scores.

Terms are escaped because ``-pretokenized`` splits the text Anserini builds on whitespace: each
whitespace character inside a term becomes ``%XX`` (``%uXXXX`` above U+00FF), and a ``%`` that would
read as such an escape becomes ``%25`` (:func:`indexer.jsonvector.escape_term`, one-to-one). Every
other character, WordPiece ``##`` pieces, a lone ``%`` and non-ASCII tokens included, passes
unchanged, so for BERT's vocabulary the escape is the identity and Anserini's own query encoders see
our terms. The escape is not idempotent: terms are raw in memory (an integer-impact file's are
unescaped as it is read) and escaped exactly once, here for documents and in :func:`impact_vectors`
for queries (our searchers and Pyserini adapters send those).
"""

from __future__ import annotations

import json
import logging
import re
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np

from indexer.atomic import atomic_build
from indexer.files import META_SHA256, IndexCorruptError, meta_checksum, sha256_file
from indexer.java import anserini_jar, java_command, run_java
from indexer.jsonvector import check_weights, escape_term, impact_mode, iter_vectors
from indexer.native.format import META as NATIVE_META
from indexer.quantize import IMPACT_SCALE, check_scale, quantize, to_impacts
from lsr.sparse import SparseBatch

log = logging.getLogger(__name__)

META = "lsr-index.json"
FORMAT = "lucene-impact"
FORMATS = ("lucene-impact", "lucene-bm25")
# "lsr": float weights quantized here (scale recorded); "given": integer impacts as written.
QUANTIZATIONS = {"lucene-impact": ("lsr", "given"), "lucene-bm25": ("none",)}
# Lucene's lock file: empty, not index data, and harmless to lose; left out of the checksums.
LOCK = "write.lock"


def impact_vectors(batch: SparseBatch, scale: float = IMPACT_SCALE) -> list[dict[str, int]]:
    """Rows as ``{escaped term: integer impact}``, the form Anserini indexes and searches (zeros dropped)."""
    impacts = quantize(batch.weights, scale)
    vocab = batch.vocab
    out = []
    for i in range(len(batch)):
        s, e = batch.indptr[i], batch.indptr[i + 1]
        terms = batch.term_ids[s:e].tolist()
        out.append({escape_term(vocab[t]): q for t, q in zip(terms, impacts[s:e].tolist(), strict=True) if q})
    return out


@dataclass
class LuceneIndexInfo:
    format: str
    documents: int
    skipped_empty: int
    quantization: str  # "lsr" (float weights quantized here) or "given" (integer impacts as written)
    scale: float | None
    threads: int
    optimized: bool
    sources: list[str]
    anserini_jar: str
    seconds: float
    empty_examples: list[str] = field(default_factory=list)
    # Lucene file name -> {"size": bytes, "sha256": hex}; empty for indexes built before lsr kept it.
    files: dict[str, dict] = field(default_factory=dict)
    # sha256 of the other fields (indexer.files.meta_checksum); None before lsr kept it.
    meta_sha256: str | None = None

    def write(self, path: Path) -> None:
        """Write as ``lsr-index.json`` with its checksum (the last step of a build, before the swap)."""
        data = asdict(self)
        data[META_SHA256] = self.meta_sha256 = meta_checksum(data)
        path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")

    @classmethod
    def load(cls, index_dir: str | Path) -> LuceneIndexInfo:
        index_dir = Path(index_dir)
        if not index_dir.is_dir():
            raise FileNotFoundError(f"index directory not found: {index_dir}")
        path = index_dir / META
        if not path.is_file():
            if (index_dir / NATIVE_META).is_file():
                raise FileNotFoundError(f"{index_dir} is a native lsr index, not a Lucene one (no {META})")
            raise FileNotFoundError(
                f"{index_dir} is not an lsr index: neither {META} (Lucene) nor {NATIVE_META} (native) found"
            )
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise IndexCorruptError(f"{path}: not valid JSON ({e})") from None
        names = {f.name for f in fields(cls)}
        if not isinstance(data, dict) or not names >= data.keys():
            unknown = sorted(data.keys() - names) if isinstance(data, dict) else []
            raise IndexCorruptError(f"{path}: not lsr Lucene index metadata (unknown fields {unknown})")
        try:
            info = cls(**data)
        except TypeError as e:
            raise IndexCorruptError(f"{path}: not lsr Lucene index metadata ({e})") from None
        info.check(path)
        return info

    def check(self, path: Path) -> None:
        """Types and ranges of the fields, then the checksum: the scale reaches every query's impacts."""

        def bad(name: str, why: str) -> IndexCorruptError:
            return IndexCorruptError(f"{path}: field {name!r} {why}, found {getattr(self, name)!r}")

        if self.format not in FORMATS:
            raise bad("format", f"must be one of {', '.join(FORMATS)}")
        for name in ("documents", "skipped_empty", "threads"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 0:
                raise bad(name, "must be a non-negative integer")
        if self.quantization not in QUANTIZATIONS[self.format]:
            raise bad("quantization", f"must be one of {', '.join(QUANTIZATIONS[self.format])}")
        scale = self.scale
        if self.quantization == "lsr":
            if isinstance(scale, bool) or not isinstance(scale, int | float) or not 0 < scale < float("inf"):
                raise bad("scale", "must be a positive finite number")
        elif scale is not None:
            raise bad("scale", f"must be null for quantization {self.quantization!r}")
        if not isinstance(self.files, dict) or not all(
            isinstance(v, dict)
            and isinstance(v.get("size"), int)
            and isinstance(v.get("sha256"), str)
            and "/" not in k
            and k not in ("", ".", "..")
            for k, v in self.files.items()
        ):
            raise IndexCorruptError(f"{path}: field 'files' must map file names to their size and sha256")
        if self.meta_sha256 is None:
            raise IndexCorruptError(
                f"{path}: no {META_SHA256} (built by an older lsr): rebuild the index with `lsr index`"
            )
        if meta_checksum(asdict(self)) != self.meta_sha256:
            raise IndexCorruptError(
                f"{path}: does not match its checksum ({META_SHA256}): a field was changed after the build"
            )


def is_current(index_dir: str | Path) -> bool:
    """True when ``index_dir`` holds a Lucene index whose metadata this lsr reads and trusts."""
    try:
        LuceneIndexInfo.load(index_dir)
    except (OSError, ValueError):
        return False
    return True


def index_files(index_dir: Path) -> dict[str, dict]:
    """``{name: {"size", "sha256"}}`` of every Lucene file in ``index_dir`` (not ``lsr-index.json``)."""
    return {
        f.name: {"size": f.stat().st_size, "sha256": sha256_file(f)}
        for f in sorted(index_dir.iterdir())
        if f.is_file() and f.name not in (META, LOCK)
    }


def verify_index(index_dir: str | Path, info: LuceneIndexInfo, checksums: bool = True) -> None:
    """Check that every Lucene file recorded in ``info`` is there, whole and unchanged.

    Sizes are always compared, sha256 checksums when ``checksums``. Raises
    :class:`~indexer.files.IndexCorruptError` naming the first bad file. An index built
    before lsr recorded its files is only logged as unverified.
    """
    index_dir = Path(index_dir)
    if not info.files:
        log.warning("%s: built without file checksums (an older lsr); not verified", index_dir)
        return
    for name, spec in info.files.items():
        file = index_dir / name
        if not file.is_file():
            raise IndexCorruptError(f"{index_dir}: Lucene index file {name} is missing")
        size = file.stat().st_size
        if size != spec["size"]:
            raise IndexCorruptError(
                f"{file}: {size} bytes, expected {spec['size']} (the file is truncated or was changed)"
            )
        if checksums and sha256_file(file) != spec["sha256"]:
            raise IndexCorruptError(f"{file}: checksum mismatch (the file is corrupted or was changed)")


def stage_collection(
    vector_files: list[Path], out: Path, scale: float = IMPACT_SCALE
) -> tuple[int, list[str], str]:
    """Write the collection Anserini indexes; returns (documents written, ids of empty ones, mode)."""
    mode = impact_mode(vector_files)
    seen: dict[str, str] = {}
    empty: list[str] = []
    n = 0
    with open(out, "w", encoding="utf-8") as f:
        for path in vector_files:
            # Raw terms in, each escaped once on the way out (an impact file's are escaped already).
            for lineno, rid, vector in iter_vectors(path, escaped=mode == "given"):
                where = f"{path}:{lineno}"
                if rid in seen:
                    raise ValueError(f"{where}: duplicate id {rid!r} (first at {seen[rid]})")
                seen[rid] = where
                check_weights(where, rid, vector, scale, given=mode == "given")
                tokens = list(vector)
                weights = np.array([vector[t] for t in tokens], np.float64)
                impacts = to_impacts(weights, scale, given=mode == "given")
                kept = {escape_term(t): int(i) for t, i in zip(tokens, impacts, strict=True) if i > 0}
                if not kept:
                    empty.append(f"{rid} ({path}:{lineno})")
                    continue
                f.write(json.dumps({"id": rid, "contents": "", "vector": kept}, ensure_ascii=False) + "\n")
                n += 1
    return n, empty, mode


_COUNTER = re.compile(r"\b(indexed|unindexable|empty|skipped|errors):\s+([\d,]+)")


def build_lucene_index(
    vector_files: list[str | Path],
    index_dir: str | Path,
    threads: int = 1,
    scale: float = IMPACT_SCALE,
    optimize: bool = True,
    heap: str | None = None,
) -> LuceneIndexInfo:
    """Build a Lucene impact index at ``index_dir`` from JsonVectorCollection files, atomically.

    Float weights are quantized with ``scale`` (:mod:`indexer.quantize`); files whose weights are
    all integers are indexed as given. Documents whose vectors are empty (or quantize to nothing)
    cannot match any query and are skipped, counted in the metadata and logged.
    """
    files = [Path(p) for p in vector_files]
    if not files:
        raise ValueError("no vector files given")
    for p in files:
        if not p.is_file():
            raise FileNotFoundError(f"vector file not found: {p}")
    scale = check_scale(scale)
    if threads < 1:
        raise ValueError(f"threads must be >= 1, got {threads}")
    index_dir = Path(index_dir)
    start = time.perf_counter()
    with atomic_build(index_dir, META) as (work, staged):
        (work / "collection").mkdir()
        n, empty, mode = stage_collection(files, work / "collection" / "docs.jsonl", scale)
        if empty:
            log.warning(
                "%d document(s) with empty vectors skipped, e.g. %s", len(empty), ", ".join(empty[:5])
            )
        if n == 0:
            raise ValueError("no document has a non-empty vector: nothing to index")
        args = ["-impact", "-pretokenized"]
        _index_collection(
            "JsonVectorCollection", work / "collection", staged, n, threads, optimize, heap, args
        )
        info = LuceneIndexInfo(
            format=FORMAT,
            documents=n,
            skipped_empty=len(empty),
            quantization=mode,
            scale=None if mode == "given" else scale,
            threads=threads,
            optimized=optimize,
            sources=[str(p.resolve()) for p in files],
            anserini_jar=anserini_jar().name,
            seconds=round(time.perf_counter() - start, 3),
            empty_examples=empty[:5],
            files=index_files(staged),
        )
        info.write(staged / META)
    log.info("Lucene index at %s: %d documents in %.1fs", index_dir, n, info.seconds)
    return info


def _index_collection(
    collection: str,
    input_dir: Path,
    index_dir: Path,
    expected: int,
    threads: int,
    optimize: bool,
    heap: str | None,
    extra: list[str],
) -> None:
    """Run Anserini's IndexCollection and check that it indexed ``expected`` documents."""
    args = ["-collection", collection, "-input", str(input_dir), "-index", str(index_dir)]
    args += ["-generator", "DefaultLuceneDocumentGenerator", "-threads", str(threads), *extra]
    args += ["-optimize"] if optimize else []
    log.info("indexing %d documents with Anserini (%s, %d threads)", expected, collection, threads)
    result = run_java(java_command("io.anserini.index.IndexCollection", *args, heap=heap))
    output = result.stdout + result.stderr
    counters = {k: int(v.replace(",", "")) for k, v in _COUNTER.findall(output)}
    errors = [line for line in output.splitlines() if " ERROR " in line or "Exception" in line]
    if result.returncode != 0 or errors or counters.get("indexed") != expected:
        tail = "\n".join((errors or output.splitlines())[-15:])
        raise RuntimeError(
            f"Anserini IndexCollection failed (exit {result.returncode}, indexed "
            f"{counters.get('indexed')} of {expected}):\n{tail}"
        )


def build_bm25_index(
    corpus: str | Path,
    index_dir: str | Path,
    threads: int = 1,
    optimize: bool = True,
    heap: str | None = None,
) -> LuceneIndexInfo:
    """A BM25 text index of a BEIR/TSV corpus (title and text as one field, Anserini's "flat"), atomically."""
    from indexer.corpus import read_corpus

    corpus, index_dir = Path(corpus), Path(index_dir)
    start = time.perf_counter()
    with atomic_build(index_dir, META) as (work, staged):
        (work / "collection").mkdir()
        n = 0
        with open(work / "collection" / "docs.jsonl", "w", encoding="utf-8") as f:
            for r in read_corpus(corpus):
                f.write(json.dumps({"id": r.id, "contents": r.text}, ensure_ascii=False) + "\n")
                n += 1
        _index_collection("JsonCollection", work / "collection", staged, n, threads, optimize, heap, [])
        info = LuceneIndexInfo(
            format="lucene-bm25",
            documents=n,
            skipped_empty=0,
            quantization="none",
            scale=None,
            threads=threads,
            optimized=optimize,
            sources=[str(corpus.resolve())],
            anserini_jar=anserini_jar().name,
            seconds=round(time.perf_counter() - start, 3),
            files=index_files(staged),
        )
        info.write(staged / META)
    return info
