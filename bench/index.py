"""Indexing throughput of the Lucene impact backend (:func:`indexer.lucene.build_lucene_index`).

What it measures, per corpus, with ``--threads`` Anserini indexing threads:

- ``scifact``: the 5,183 SciFact documents encoded with the real SPLADE model, the cached vectors of
  :func:`plugin.prepare.prepare` (encoded once, about a minute, the first time);
- ``synthetic``: ``--docs`` documents from a topical generator (below) over BERT's WordPiece vocabulary,
  written as a float JsonVectorCollection with :func:`indexer.jsonvector.format_lines`. Generation is
  timed and reported apart; with ``--work`` the file is kept and reused by a run with the same parameters.

Every build is the whole of :func:`build_lucene_index`: staging a clean collection in Python (parsing,
checking, quantizing to integer impacts), Anserini's ``IndexCollection`` in a Java subprocess
(``-optimize`` merges to one segment unless ``--no-optimize``), and the rename into place. It runs in a
fresh (spawned) child process, so that the peak RSS of that process's children (``RUSAGE_CHILDREN``) is
the Java indexer's. On Linux a child's ``ru_maxrss`` starts from its parent's peak at exec time, so the
figure is max(Java, the building Python process at launch), an upper bound; the Python process's own
peak (``VmHWM``, the imports plus staging) is reported beside it.

Reported per corpus: documents, postings (non-zero impacts after quantization), build seconds (wall
around the call, and the ``seconds`` it records), docs/s and postings/s on the wall time, index size on
disk, bytes per posting, the input file's size (and uncompressed, for ``.gz``), the peak RSS of Java
and of the building Python process, and the sum and mean of the integer impacts: Anserini's impact
indexing turns each term into that many tokens, so Java's time follows the impact sum (and so the
quantization scale) more than the postings. Unless ``--no-stage-timing``, ``stage_collection`` is then
timed alone on the same input, which splits the build into staging and (by difference) Java with JVM
start-up and the final rename. One JSON line per corpus, with the machine, the versions (Python,
numpy, Java, the Anserini jar) and the git state, is appended to ``--out``.

Synthetic documents come from :class:`bench.synthetic.TopicalCollection` (the generator the search
benchmark uses too): topics over BERT's WordPiece vocabulary plus a Zipf background, ~120 distinct terms
per document, lognormal weights in (0, 3]. Fully determined by ``--seed`` and ``--docs``.

Run from the repository root::

    .venv/bin/python -m bench.index                          # scifact + 200,000 synthetic docs, 2 threads
    .venv/bin/python -m bench.index --quick                  # 20,000 synthetic docs
    .venv/bin/python -m bench.index --corpora synthetic --docs 1000000 --threads 4 --work /tmp/lsr-bench
"""

from __future__ import annotations

import argparse
import concurrent.futures
import dataclasses
import hashlib
import json
import logging
import multiprocessing
import platform
import shutil
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from bench._context import (
    MB,
    add_data_argument,
    add_output_arguments,
    append_jsonl,
    children_peak_rss_bytes,
    dir_bytes,
    package_version,
    peak_rss_bytes,
    positive_int,
    print_fixed_table,
    record_context,
    scifact_missing,
    setup_logging,
    utc_stamp,
    work_dir,
)

log = logging.getLogger("bench.index")

CORPORA = ("scifact", "synthetic")
DEFAULT_DOCS = 200_000
QUICK_DOCS = 20_000

# The synthetic generator's version; change it when its output changes, so that kept files are not reused.
GENERATOR = 2


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m bench.index",
        description="Indexing throughput of the Lucene impact backend on SciFact and synthetic vectors.",
    )
    p.add_argument(
        "--corpora",
        nargs="+",
        choices=CORPORA,
        default=list(CORPORA),
        help="corpora to index, in order (default: %(default)s)",
    )
    p.add_argument(
        "--docs",
        type=positive_int,
        default=None,
        help=f"synthetic documents (default: {DEFAULT_DOCS}, or {QUICK_DOCS} with --quick)",
    )
    p.add_argument("--quick", action="store_true", help=f"{QUICK_DOCS} synthetic documents, a short check")
    p.add_argument("--seed", type=int, default=0, help="synthetic generator seed (default: %(default)s)")
    p.add_argument(
        "--threads", type=positive_int, default=2, help="Anserini indexing threads (default: %(default)s)"
    )
    p.add_argument("--no-optimize", action="store_true", help="skip the merge to one segment")
    p.add_argument("--heap", default=None, help="Java -Xmx, e.g. 4g (default: the JVM's own)")
    p.add_argument(
        "--stage-timing",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also time stage_collection alone, to split the build into Python and Java (default: on)",
    )
    add_data_argument(p)
    add_output_arguments(p, "index", "directory for synthetic vectors and indexes, kept between runs")
    args = p.parse_args(argv)
    if args.docs is None:
        args.docs = QUICK_DOCS if args.quick else DEFAULT_DOCS
    args.corpora = list(dict.fromkeys(args.corpora))
    return args


# ------------------------------------------------------------------ synthetic corpus
@dataclasses.dataclass
class VectorFile:
    """A JsonVectorCollection to index, with what we know of it before indexing."""

    path: Path
    docs: int
    nnz: int  # float weights in the file
    postings: int  # of them, those whose integer impact is > 0 (what Lucene indexes)
    impact_sum: int  # the sum of those impacts: Anserini indexes each term as that many tokens
    uncompressed_bytes: int
    seconds: float = 0.0  # to produce it in this run (0 when reused)
    reused: bool = False
    params: dict | None = None


def synthetic_params(docs: int, seed: int) -> dict:
    from bench.synthetic import TopicalCollection

    fields = {
        f.name: f.default for f in dataclasses.fields(TopicalCollection) if f.name not in ("vocab", "seed")
    }
    return {"generator": GENERATOR, "docs": docs, "seed": seed, **fields}


def synthetic_corpus(work: Path, docs: int, seed: int, vocab: tuple[str, ...]) -> VectorFile:
    """The synthetic collection in ``work``: reused when a file with the same parameters is there."""
    from indexer.jsonvector import append_lines, format_lines
    from indexer.quantize import IMPACT_SCALE, quantize

    params = synthetic_params(docs, seed)
    params["vocab_sha1"] = hashlib.sha1("\n".join(vocab).encode()).hexdigest()
    digest = hashlib.sha1(json.dumps(params, sort_keys=True).encode()).hexdigest()[:10]
    path = work / f"synthetic-{docs}-{digest}.jsonl"
    meta = path.with_name(path.name + ".meta.json")
    if path.is_file() and meta.is_file():
        kept = json.loads(meta.read_text(encoding="utf-8"))
        if kept.get("params") == params and kept.get("bytes") == path.stat().st_size:
            log.info("reusing %s (generated earlier in %.1f s)", path, kept["seconds"])
            counts = [kept[k] for k in ("docs", "nnz", "postings", "impact_sum", "bytes")]
            return VectorFile(path, *counts, reused=True, params=params)

    from bench.synthetic import TopicalCollection

    start = time.perf_counter()
    tmp = path.with_name(path.name + ".tmp")
    tmp.unlink(missing_ok=True)
    nnz = postings = impact_sum = 0
    for ids, batch in TopicalCollection(vocab, seed=seed).documents(docs):
        append_lines(tmp, format_lines(ids, batch))
        nnz += batch.nnz
        impacts = quantize(batch.weights, IMPACT_SCALE)
        postings += int(np.count_nonzero(impacts))
        impact_sum += int(impacts.sum(dtype=np.int64))
    seconds = time.perf_counter() - start
    size = tmp.stat().st_size
    record = {"params": params, "docs": docs, "nnz": nnz, "postings": postings, "impact_sum": impact_sum}
    record["bytes"] = size
    meta.write_text(json.dumps({**record, "seconds": seconds}) + "\n", encoding="utf-8")
    tmp.rename(path)
    log.info("generated %d documents, %d terms, %.0f MB in %.1f s", docs, nnz, size / MB, seconds)
    return VectorFile(path, docs, nnz, postings, impact_sum, size, seconds=seconds, params=params)


# ------------------------------------------------------------------ scifact
def count_vectors(path: Path) -> tuple[int, int, int, int, int]:
    """(documents, non-zero weights, of them those with an impact > 0, impact sum, uncompressed bytes)."""
    from indexer.corpus import open_binary
    from indexer.quantize import IMPACT_SCALE, quantize

    docs = nnz = postings = impact_sum = size = 0
    with open_binary(path) as f:
        for raw in f:
            size += len(raw)
            if not raw.strip():
                continue
            weights = list(json.loads(raw)["vector"].values())
            docs += 1
            nnz += sum(1 for w in weights if w)
            impacts = quantize(np.asarray(weights, np.float64), IMPACT_SCALE)
            postings += int(np.count_nonzero(impacts))
            impact_sum += int(impacts.sum(dtype=np.int64))
    return docs, nnz, postings, impact_sum, size


def scifact_corpus(data: Path) -> VectorFile:
    from plugin.prepare import prepare

    start = time.perf_counter()
    prepared = prepare(data)
    seconds = time.perf_counter() - start
    log.info("SciFact vectors %s (prepare: %.1f s)", prepared.vectors, seconds)
    return VectorFile(prepared.vectors, *count_vectors(prepared.vectors), seconds=seconds)


# ------------------------------------------------------------------ building
def build_in_child(
    files: list[str], index_dir: str, threads: int, optimize: bool, heap: str | None, verbose: bool
) -> dict:
    """Runs in a fresh process: one timed :func:`build_lucene_index`, and the peak RSS figures."""
    setup_logging(verbose)
    from indexer.java import anserini_jar, find_java
    from indexer.lucene import build_lucene_index

    find_java(), anserini_jar()  # cached per process; `java --list-modules` stays out of the timing
    start = time.perf_counter()
    info = build_lucene_index(files, index_dir, threads=threads, optimize=optimize, heap=heap)
    wall = time.perf_counter() - start
    return {
        "info": dataclasses.asdict(info),
        "wall_s": wall,
        "java_peak_rss_bytes": children_peak_rss_bytes(),
        "python_peak_rss_bytes": peak_rss_bytes(),
    }


def stage_timing(vf: VectorFile, work: Path) -> dict:
    """``stage_collection`` alone on the same input: the Python part of a build."""
    from indexer.lucene import stage_collection

    out = work / f".stage-{vf.path.name}.jsonl"
    start = time.perf_counter()
    try:
        written, empty, _ = stage_collection([vf.path], out)
        seconds = time.perf_counter() - start
        size = out.stat().st_size
    finally:
        out.unlink(missing_ok=True)
    return {"stage_s": seconds, "staged_docs": written, "staged_empty": len(empty), "staged_bytes": size}


def index_corpus(name: str, vf: VectorFile, work: Path, args: argparse.Namespace) -> dict:
    index_dir = work / f"index-{name}"
    spawn = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(1, mp_context=spawn) as pool:
        job = pool.submit(
            build_in_child,
            [str(vf.path)],
            str(index_dir),
            args.threads,
            not args.no_optimize,
            args.heap,
            args.verbose,
        )
        built = job.result()
    try:
        index_size = dir_bytes(index_dir)
        files = sum(1 for f in index_dir.iterdir() if f.is_file())
    finally:
        shutil.rmtree(index_dir, ignore_errors=True)
    info = built["info"]
    wall = built["wall_s"]
    fig = {
        "documents": info["documents"],
        "skipped_empty": info["skipped_empty"],
        "input_docs": vf.docs,
        "nnz": vf.nnz,
        "postings": vf.postings,
        "mean_postings_per_doc": vf.postings / max(info["documents"], 1),
        "impact_sum": vf.impact_sum,
        "mean_impact": vf.impact_sum / max(vf.postings, 1),
        "build_wall_s": wall,
        "build_info_s": info["seconds"],
        "docs_per_s": info["documents"] / wall,
        "postings_per_s": vf.postings / wall,
        "index_bytes": index_size,
        "index_files": files,
        "bytes_per_posting": index_size / max(vf.postings, 1),
        "input_path": str(vf.path),
        "input_bytes": vf.path.stat().st_size,
        "input_bytes_uncompressed": vf.uncompressed_bytes,
        "java_peak_rss_bytes": built["java_peak_rss_bytes"],
        "build_python_peak_rss_bytes": built["python_peak_rss_bytes"],
        "quantization": info["quantization"],
        "scale": info["scale"],
        "anserini_jar": info["anserini_jar"],
    }
    if args.stage_timing:
        fig.update(stage_timing(vf, work))
        fig["java_s_est"] = wall - fig["stage_s"]
    return fig


# ------------------------------------------------------------------ context
def versions() -> dict:
    from indexer.java import anserini_jar, find_java

    java = find_java()
    pyserini = package_version("pyserini")
    return {
        "python": platform.python_version(),
        "numpy": np.__version__,
        "java": java.version,
        "java_home": str(java.home),
        "java_vector_module": java.has_vector_module,
        "anserini_jar": anserini_jar().name,
        "pyserini": pyserini,
    }


# ------------------------------------------------------------------ main
def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    setup_logging(args.verbose)
    if "scifact" in args.corpora and scifact_missing(args.data, log):
        return 2
    try:
        from indexer.java import anserini_jar, find_java

        find_java(), anserini_jar()
    except RuntimeError as e:  # no Java 21+ or no pyserini: say so before generating anything
        log.error("%s", e)
        return 2
    with work_dir(args.work, "lsr-bench-") as work:
        return run(args, work)


def run(args: argparse.Namespace, work: Path) -> int:
    from lsr.models import fetch
    from lsr.tokenize import Tokenizer

    figures: dict[str, dict] = {}
    inputs: dict[str, VectorFile] = {}
    for name in args.corpora:
        if name == "scifact":
            try:
                vf = scifact_corpus(args.data)
            except FileNotFoundError as e:
                log.error("%s", e)
                return 2
        else:
            vocab = Tokenizer(fetch() / "tokenizer.json").vocab
            vf = synthetic_corpus(work, args.docs, args.seed, vocab)
        inputs[name] = vf
        log.info(
            "indexing %s: %d documents, %d postings, %d threads", name, vf.docs, vf.postings, args.threads
        )
        figures[name] = index_corpus(name, vf, work, args)
        log.info("%s: %.1f s", name, figures[name]["build_wall_s"])

    java = versions()
    print(
        f"index benchmark: Lucene impact index, {args.threads} threads, optimize={not args.no_optimize}, "
        f"heap={args.heap or 'JVM default'}, Java {java['java']}, {java['anserini_jar']}"
    )
    for name, vf in inputs.items():
        if name == "scifact":
            how = f"prepared (plugin.prepare.prepare) in {vf.seconds:.1f} s"
        else:
            how = "reused" if vf.reused else f"generated in {vf.seconds:.1f} s"
        print(f"{name}: {vf.docs} docs, {vf.nnz} terms, {how}: {vf.path}")
    print_fixed_table(
        (
            "corpus<10 | docs>9 | postings>12 | wall s>8 | info s>8 | docs/s>9 | post/s>11 | index MB>10"
            " | B/post>8 | input MB>10 | java RSS MB>12"
        ),
        (
            [
                name,
                f["documents"],
                f["postings"],
                f"{f['build_wall_s']:.1f}",
                f"{f['build_info_s']:.1f}",
                f"{f['docs_per_s']:.0f}",
                f"{f['postings_per_s']:.3g}",
                f"{f['index_bytes'] / MB:.1f}",
                f"{f['bytes_per_posting']:.2f}",
                f"{f['input_bytes'] / MB:.1f}",
                f"{f['java_peak_rss_bytes'] / MB:.0f}",
            ]
            for name, f in figures.items()
        ),
        rule=False,
    )
    for name, f in figures.items():
        extra = ""
        if "stage_s" in f:
            share = f["stage_s"] / f["build_wall_s"]
            extra = (
                f"; staging alone {f['stage_s']:.1f} s ({share:.0%} of the build, "
                f"{f['staged_bytes'] / MB:.0f} MB staged), Java and the rest ~{f['java_s_est']:.1f} s"
            )
        print(
            f"{name}: input {f['input_bytes_uncompressed'] / MB:.0f} MB uncompressed, "
            f"{f['mean_postings_per_doc']:.0f} postings/doc, mean impact {f['mean_impact']:.1f}, "
            f"{f['skipped_empty']} empty skipped, "
            f"build process peak RSS {f['build_python_peak_rss_bytes'] / MB:.0f} MB{extra}"
        )

    stamp = utc_stamp()
    context = record_context(java)
    records = []
    for name, f in figures.items():
        vf = inputs[name]
        record = {
            "bench": "index",
            "time": stamp,
            "corpus": name,
            "threads": args.threads,
            "optimize": not args.no_optimize,
            "heap": args.heap,
            "quick": args.quick,
            "input_seconds": vf.seconds,
            "input_reused": vf.reused,
            "synthetic": vf.params,
            **f,
            **context,
        }
        records.append(record)
    append_jsonl(args.out, records)
    print(f"appended {len(records)} line(s) to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
