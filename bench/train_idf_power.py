"""Does a sharper or flatter IDF query side help? Query weights ``idf ** p`` (rescaled so the largest
weight is unchanged), searched exactly over the cached 512-token native indexes that ``bench.train
--doc-length 512`` built; ``p`` is to be chosen on SciFact's train split, the test split only reported.

    .venv/bin/python -m bench.train_idf_power splade-tiny-96e1dd8dbb plain-ensemble-259e2da7ee
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from bench._context import RESULTS, SCIFACT, append_jsonl, record_context, utc_stamp

POWERS = (0.5, 0.75, 1.0, 1.25, 1.5, 2.0)


def main(argv: list[str] | None = None) -> int:
    from indexer.corpus import read_corpus, read_qrels
    from lsr.models import cache_dir
    from lsr.runtime import load_encoder
    from lsr.sparse import SparseBatch
    from plugin.evaluate import evaluate
    from plugin.native import NativeSearcher

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("tags", nargs="+", help="encoder tags under WORK/encoders (MODEL-DIGEST)")
    p.add_argument("--work", type=Path, default=None, help="bench.train's work folder")
    p.add_argument("--out", type=Path, default=RESULTS / "train-idf-power.jsonl")
    a = p.parse_args(argv)
    work = a.work or cache_dir() / "bench-train"
    records = []
    for tag in a.tags:
        for coll in ("scifact", "cranfield", "med"):
            data = SCIFACT.parent / coll
            index = next(iter(sorted((work / "indexes").glob(f"{tag}-{coll}-512*"))), None)
            if index is None:
                continue
            searcher = NativeSearcher(index)
            encoder = load_encoder(work / "encoders" / f"{tag}-{coll}", "query", max_length=64)
            for split in ("train", "test"):
                if not (data / "qrels" / f"{split}.tsv").is_file():
                    continue
                qrels = read_qrels(data / "qrels" / f"{split}.tsv")
                queries = [r for r in read_corpus(data / "queries.jsonl") if r.id in qrels]
                b = encoder.encode([r.text for r in queries])
                top = float(b.weights.max(initial=1.0))
                for power in POWERS:
                    w = (b.weights.astype(np.float64) ** power / top ** (power - 1)).astype(np.float32)
                    hits = searcher.batch_search(SparseBatch(b.indptr, b.term_ids, w, b.vocab), k=100)
                    run = dict(zip([r.id for r in queries], hits, strict=True))
                    ndcg = evaluate(run, qrels, ["ndcg@10"])["ndcg@10"]
                    print(f"{tag:<28}{coll:<11}{split:<6}p={power:<5}{ndcg:.4f}", flush=True)
                    records.append(
                        {"bench": "train-idf-power", "time": utc_stamp(), "model": tag, "collection": coll}
                        | {"split": split, "idf_power": power, "ndcg@10": ndcg, "doc_length": 512}
                        | record_context({})
                    )
    append_jsonl(a.out, records)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
