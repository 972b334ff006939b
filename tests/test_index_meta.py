"""Index metadata is never trusted: every field of ``meta.json``, ``lsr-index.json`` and ``dense.json``
is checked on open against its range, the arrays and its checksum (an outside probe found that an
edited ``n_docs`` or ``block_size`` made ``lsr search`` segfault and ``scale`` silently changed every
ranking)."""

from __future__ import annotations

import json
import random
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from indexer.dense import DenseStoreError
from indexer.files import META_SHA256, IndexCorruptError, array_spec, meta_checksum, sha256_file
from indexer.lucene import LuceneIndexInfo
from indexer.native.build import build_native_index
from indexer.native.format import open_index
from lsr.sparse import SparseBatch
from plugin.native import NativeSearcher
from tests.conftest import needs_java
from tests.test_cli_bad_input import fails, jsonl, lsr

N_DOCS, N_TERMS = 700, 60


def _vectors(n: int, seed: int) -> list[dict]:
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        terms = rng.choice(N_TERMS, size=int(rng.integers(1, 12)), replace=False)
        rows.append(
            {"id": f"d{i}", "vector": {f"t{t}": round(float(rng.uniform(0.01, 3.0)), 3) for t in terms}}
        )
    return rows


@pytest.fixture(scope="module")
def native(tmp_path_factory):
    """(INDEX_DIR with a dense store, topics file, the unedited index's run): six blocks of 128 docs."""
    root = tmp_path_factory.mktemp("meta")
    vectors = jsonl(root / "docs.jsonl", *_vectors(N_DOCS, 0))
    rng = np.random.default_rng(1)
    dense = root / "dense.jsonl"
    dense.write_text(
        "".join(
            json.dumps({"id": f"d{i}", "vector": rng.normal(size=8).round(4).tolist()}) + "\n"
            for i in range(N_DOCS)
        )
    )
    index = root / "idx"
    build_native_index(index, vector_files=[vectors], dense=[dense])
    topics = jsonl(
        root / "topics.jsonl",
        *[{"id": f"q{i}", **{"vector": r["vector"]}} for i, r in enumerate(_vectors(20, 2))],
    )
    run = root / "run.trec"
    result = lsr("search", index, "--topics", topics, "--output", run, "--k", "20")
    assert result.returncode == 0, result.stderr
    return index, topics, run.read_text()


def _copy(native, tmp_path) -> Path:
    copy = tmp_path / "idx"
    shutil.copytree(native[0], copy)
    return copy


def _edit(index: Path, name: str, value, rechecksum: bool = False) -> None:
    path = index / "meta.json"
    meta = json.loads(path.read_text())
    meta[name] = value
    if rechecksum:
        meta[META_SHA256] = meta_checksum(meta)
    path.write_text(json.dumps(meta))


# The probe's edits. On the old reader the first six segfaulted (exit 139), 10**12 answered nothing with
# exit 0, and block_size 129 and scale 1 changed the run.
PROBE = [
    ("n_docs", 1000),
    ("n_docs", 10),
    ("n_docs", -5),
    ("block_size", 138),
    ("block_size", 256),
    ("n_docs", 10**12),
    ("block_size", 129),
    ("block_size", 64),
    ("scale", 1),
]


@pytest.mark.parametrize(("field", "value"), PROBE, ids=[f"{f}={v}" for f, v in PROBE])
@pytest.mark.parametrize("rechecksum", [False, True], ids=["edited", "edited+rechecksummed"])
def test_search_with_an_edited_meta_field_exits_cleanly_naming_file_and_field(
    native, tmp_path, field, value, rechecksum
):
    index = _copy(native, tmp_path)
    _edit(index, field, value, rechecksum)
    out = tmp_path / "run.trec"
    result = lsr("search", index, "--topics", native[1], "--output", out, "--k", "20")
    if rechecksum and field == "scale":
        # A consistent index that says so: its queries are quantized with scale 1 (a different ranking).
        assert result.returncode == 0, result.stderr
        return
    meta = re.escape(str(index / "meta.json"))
    # The field is named, or (the edits no range or count reveals) the checksum that caught it.
    fails(result, "search", rf"{meta}: .*(field '{field}'|'n_blocks'|checksum|outside its block|past n_docs)")
    assert not out.exists()


def test_serve_with_an_edited_meta_field_exits_cleanly_instead_of_crashing_while_warming_up(native, tmp_path):
    index = _copy(native, tmp_path)
    _edit(index, "n_docs", 1000)
    result = lsr("serve", index, "--port", "0")
    fails(
        result,
        "serve",
        re.escape(str(index / "meta.json")) + ": field 'n_docs' is 1000 but the index holds 700",
    )


def test_an_unedited_index_opens_and_an_informational_edit_with_its_checksum_redone_answers_the_same(
    native, tmp_path
):
    index = _copy(native, tmp_path)
    _edit(index, "build_seconds", 123.0, rechecksum=True)
    out = tmp_path / "run.trec"
    assert lsr("search", index, "--topics", native[1], "--output", out, "--k", "20").returncode == 0
    assert out.read_text() == native[2]


def _numeric_fields(meta: dict, prefix: tuple = ()) -> list[tuple]:
    """Paths to every int or float in ``meta`` (nested objects and lists included)."""
    found = []
    items = meta.items() if isinstance(meta, dict) else enumerate(meta)
    for k, v in items:
        if isinstance(v, bool):
            continue
        if isinstance(v, int | float):
            found.append((*prefix, k))
        elif isinstance(v, dict | list):
            found.extend(_numeric_fields(v, (*prefix, k)))
    return found


def _set(meta, path: tuple, value) -> None:
    for k in path[:-1]:
        meta = meta[k]
    meta[path[-1]] = value


def _get(meta, path: tuple):
    for k in path:
        meta = meta[k]
    return meta


# Fields no reader uses to answer (what the build measured): editing them changes nothing.
INFORMATIONAL = {"build_seconds", "reorder_seconds", "skipped_empty"}


def _answers(index: Path) -> list:
    s = NativeSearcher(index, scan_below=0)  # block-max, not the small-index scan
    ix = s.index
    rng = np.random.default_rng(3)
    indptr, terms, weights = [0], [], []
    for _ in range(12):
        t = np.sort(rng.choice(len(ix.vocab), size=6, replace=False))
        terms.extend(t.tolist())
        weights.extend(rng.uniform(0.1, 2.0, size=6).tolist())
        indptr.append(len(terms))
    q = SparseBatch(np.array(indptr), np.array(terms, np.int32), np.array(weights, np.float32), ix.vocab)
    return [
        [(h.docid, h.score) for hits in s.batch_search(q, k=15, mode=m, alpha=a) for h in hits]
        for m, a in (("exact", 1.0), ("approx", 0.9), ("scan", 1.0))
    ]


def test_fuzz_every_numeric_meta_field_never_crashes_and_never_answers_from_an_inconsistent_index(
    native, tmp_path
):
    """Random edits to every numeric field of meta.json (the dense entry and the arrays' shapes too):
    as edited, each open fails with IndexCorruptError; with the checksum redone (a careful forger), the
    open fails, or the field is one no answer depends on and the answers are the unedited ones."""
    from plugin.verify import BiGranularSearcher

    index = _copy(native, tmp_path)
    original = (index / "meta.json").read_text()
    base = json.loads(original)
    expected = _answers(index)
    rng = random.Random(0)
    paths = _numeric_fields(base)
    assert len(paths) >= 20  # counts, block size, scale, shapes of every array, the dense entry
    opened = 0
    for path in paths:
        v = _get(base, path)
        values = {0, -1, 1, v + 1, v - 1, v * 2, 10**12, 2**63, rng.randint(-1000, 10**6)}
        values |= {0.5, float(v) + 0.5, 1e300} | ({None, "7", True} if rng.random() < 0.5 else set())
        values.discard(v)
        for value in values:
            for rechecksum in (False, True):
                meta = json.loads(original)
                _set(meta, path, value)
                if rechecksum:
                    meta[META_SHA256] = meta_checksum(meta)
                (index / "meta.json").write_text(json.dumps(meta))
                try:
                    NativeSearcher(index, scan_below=0)
                    BiGranularSearcher(index)  # opens the dense store the entry describes
                except (IndexCorruptError, DenseStoreError, ValueError) as e:
                    assert str(index) in str(e), (path, value, e)  # names the index and what is wrong
                    continue
                assert rechecksum, f"{path} = {value!r} opened without its checksum"
                top = path[0]
                assert top in INFORMATIONAL or top == "scale", f"{path} = {value!r} opened"
                if top in INFORMATIONAL:
                    assert _answers(index) == expected, (path, value)
                opened += 1
    (index / "meta.json").write_text(original)
    assert _answers(index) == expected
    assert opened > 0  # the informational edits did open


def test_bi_granular_refuses_a_dense_store_whose_counts_were_edited_with_checksums_redone(native, tmp_path):
    from plugin.verify import BiGranularSearcher

    index = _copy(native, tmp_path)
    BiGranularSearcher(index)
    store = index / "dense" / "dense.json"
    dense = json.loads(store.read_text())
    dense["rows"] = 650
    store.write_text(json.dumps(dense))
    meta = json.loads((index / "meta.json").read_text())
    meta["dense"]["sha256"] = sha256_file(store)
    meta[META_SHA256] = meta_checksum(meta)
    (index / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(DenseStoreError, match=r"dense\.json: field 'rows' is 650 but the index recorded 700"):
        BiGranularSearcher(index)
    meta["dense"]["rows"] = 650
    meta[META_SHA256] = meta_checksum(meta)
    (index / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(IndexCorruptError, match=r"'dense' must describe a store of n_docs \(700\) rows"):
        BiGranularSearcher(index)
    meta["dense"].update(dir="../elsewhere", rows=700)
    meta[META_SHA256] = meta_checksum(meta)
    (index / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(DenseStoreError, match="must name the folder 'dense'"):
        BiGranularSearcher(index)


def test_open_checks_postings_against_the_block_size_only_when_verifying(native, tmp_path):
    # block_size 64 with n_blocks to match (and the checksum redone) passes every count: only a decode of
    # the postings finds the places of 64..127 that a block of 64 cannot hold.
    index = _copy(native, tmp_path)
    meta = json.loads((index / "meta.json").read_text())
    meta.update(block_size=64, n_blocks=-(-N_DOCS // 64))
    meta[META_SHA256] = meta_checksum(meta)
    (index / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(IndexCorruptError, match="outside its block of 64"):
        open_index(index)


def test_a_tie_order_that_is_not_a_permutation_is_refused_naming_the_array(native, tmp_path):
    # The kernels turn tie keys back into internal ids through its inverse, unchecked: a repeated or
    # out-of-range position would rank a wrong document, so opening a searcher refuses it.
    for bad, message in (
        (lambda t: np.concatenate([t[:1], t[:-1]]), "tie_order is not a permutation of 0..699"),
        (lambda t: np.where(t == 0, N_DOCS, t), "tie_order holds a position outside 0..699"),
        (lambda t: t[:-1], r"tie_order holds 699 positions, expected n_docs \(700\)"),
    ):
        index = _copy(native, tmp_path / str(len(message)))
        assert open_index(index).has_tie_order  # 700 documents in blocks of 128: reordered
        tie = np.load(index / "tie_order.npy")
        np.save(index / "tie_order.npy", bad(tie).astype(tie.dtype), allow_pickle=False)
        meta = json.loads((index / "meta.json").read_text())
        meta["arrays"]["tie_order"] = array_spec(index / "tie_order.npy")
        meta[META_SHA256] = meta_checksum(meta)
        (index / "meta.json").write_text(json.dumps(meta))
        with pytest.raises(IndexCorruptError, match=message):
            NativeSearcher(index)


# ------------------------------------------------------------------------- Lucene's lsr-index.json
def _info(**changes) -> LuceneIndexInfo:
    info = LuceneIndexInfo(
        format="lucene-impact", documents=4, skipped_empty=0, quantization="lsr", scale=100.0, threads=1,
        optimized=True, sources=[], anserini_jar="anserini.jar", seconds=1.0,
    )  # fmt: skip
    for k, v in changes.items():
        setattr(info, k, v)
    return info


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("scale", 1.0, "does not match its checksum"),
        ("scale", -1.0, "field 'scale' must be a positive finite number"),
        ("scale", None, "field 'scale' must be a positive finite number"),
        ("documents", -3, "field 'documents' must be a non-negative integer"),
        ("quantization", "float", "field 'quantization' must be one of lsr, given"),
        ("meta_sha256", None, "no meta_sha256 \\(built by an older lsr\\)"),
        ("files", {"../x": {"size": 1, "sha256": "0"}}, "field 'files' must map file names"),
    ],
)
def test_lucene_index_metadata_is_checked_on_load(tmp_path, field, value, message):
    _info().write(tmp_path / "lsr-index.json")
    assert LuceneIndexInfo.load(tmp_path).scale == 100.0
    data = json.loads((tmp_path / "lsr-index.json").read_text())
    data[field] = value
    if field != "scale" or value != 1.0:
        data[META_SHA256] = meta_checksum(data) if field != "meta_sha256" else None
    (tmp_path / "lsr-index.json").write_text(json.dumps(data))
    with pytest.raises(IndexCorruptError, match=message):
        LuceneIndexInfo.load(tmp_path)


@needs_java
def test_search_on_a_lucene_index_with_an_edited_scale_exits_naming_the_file(tmp_path):
    docs = jsonl(tmp_path / "docs.jsonl", *_vectors(50, 4))
    topics = jsonl(tmp_path / "topics.jsonl", *[{"id": "q1", "vector": {"t1": 1.0, "t2": 0.5}}])
    index = tmp_path / "lucene"
    assert lsr("index", docs, index, "--backend", "lucene").returncode == 0
    path = index / "lsr-index.json"
    data = json.loads(path.read_text())
    data["scale"] = 1
    path.write_text(json.dumps(data))
    result = lsr("search", index, "--topics", topics, "--output", tmp_path / "run.trec")
    fails(result, "search", re.escape(str(path)) + ": does not match its checksum")
