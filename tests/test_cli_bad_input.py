"""The ``lsr`` command line driven as a user drives it (subprocesses), on every kind of bad input.

Each case checks the exit status (2 on error; 0 where the contract is to warn and go on) and that
stderr names what is wrong and where: file, line, field. Bad vectors must leave a previous index
byte for byte as it was. Then: integrity checks when ``lsr search`` opens a damaged native or Lucene
index, and searching a native index while rebuilds swap new versions of it into place.

Decisions these tests pin down:

- a duplicate id is an error wherever it appears: ``lsr encode`` names both corpus lines
  (``corpus.jsonl:3: duplicate id 'a' (first at line 1)``), ``lsr index`` names both places, across
  files too (``b.jsonl:1: duplicate id 'x' (first at a.jsonl:2)``), on both backends;
- empty or whitespace text encodes to an empty vector (exit 0, counted in a warning with examples),
  bytes that are not UTF-8 are replaced (exit 0, a warning naming the file and first line), an
  oversized document is truncated (exit 0, counted);
- a record without ``text`` is read as its title (a warning names the first line); one with
  Pyserini's ``contents`` instead of ``text`` is an error naming the field.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from indexer.native.format import FORMAT_VERSION
from tests.conftest import java_available, needs_java

REPO = Path(__file__).resolve().parents[1]


def lsr(*args) -> subprocess.CompletedProcess:
    """``python -m plugin.cli ARGS`` from the repository root, as a user's shell runs ``lsr``."""
    return subprocess.run(
        [sys.executable, "-m", "plugin.cli", *map(str, args)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )


def fails(result: subprocess.CompletedProcess, command: str, message: str) -> None:
    """Exit 2 and an error line ``lsr COMMAND: error: MESSAGE...`` (a regex) at the start of a line."""
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr, result.stderr
    pattern = rf"^lsr {command}: error: {message}"
    assert re.search(pattern, result.stderr, re.M), f"{pattern!r} not in stderr:\n{result.stderr}"


def warns(result: subprocess.CompletedProcess, message: str) -> None:
    """Exit 0 and a ``WARNING`` log record matching ``message`` (a regex).

    Not anchored at a line start: a warning logged mid-encode follows the progress bar's text.
    """
    assert result.returncode == 0, (result.returncode, result.stdout, result.stderr)
    pattern = rf"WARNING [\w.]+: {message}"
    assert re.search(pattern, result.stderr), f"{pattern!r} not in stderr:\n{result.stderr}"


def at(path: Path, line: int) -> str:
    """``file:line`` of a message, as a regex."""
    return re.escape(f"{path}:{line}")


def jsonl(path: Path, *records) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def vectors_of(path: Path) -> dict[str, dict]:
    return {r["id"]: r["vector"] for r in map(json.loads, path.read_text().splitlines())}


def snapshot(index: Path) -> dict[str, str]:
    """Every file of an index directory and its sha256: equal snapshots mean an untouched index."""
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(index.iterdir())}


def leftovers(index: Path) -> list[str]:
    """Temporary build folders a failed build left beside ``index`` (there should be none)."""
    return sorted(p.name for p in index.parent.iterdir() if p.name.startswith(f".{index.name}."))


# ======================================================================= lsr encode: the corpus
@pytest.fixture
def encoder_dir(tiny_bert_dir, exported) -> Path:
    return exported(tiny_bert_dir, "splade")


def test_encode_a_line_that_is_not_json_names_file_and_line(encoder_dir, tmp_path):
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text('{"_id": "a", "text": "the cell"}\n\n{"_id": "b", "text": oops}\n')
    out = tmp_path / "v.jsonl"
    fails(lsr("encode", encoder_dir, corpus, out), "encode", at(corpus, 3) + r": not valid JSON \(")
    assert not out.exists() or out.read_text() == ""


@pytest.mark.parametrize(
    ("record", "message"),
    [
        ({"text": "no id"}, "missing field '_id'"),
        ({"_id": None, "text": "null id"}, "missing field '_id'"),
        ({"_id": "", "text": "empty id"}, "empty id"),
        ({"_id": ["b"], "text": "x"}, "field '_id' must be a string, got list"),
        ({"_id": "b", "text": 5}, "field 'text' must be a string, got int"),
        ({"_id": "b", "title": ["t"], "text": "x"}, "field 'title' must be a string, got list"),
        ({"id": "b", "contents": "a tower in paris"}, r"missing field 'text' \(found 'contents'"),
        (["b", "the cell"], "expected a JSON object, got list"),
    ],
    ids=["no-id", "null-id", "empty-id", "list-id", "int-text", "list-title", "pyserini-contents", "array"],
)
def test_encode_a_bad_record_names_file_line_and_field(encoder_dir, tmp_path, record, message):
    corpus = jsonl(tmp_path / "corpus.jsonl", {"_id": "a", "text": "the cell"}, record)
    fails(lsr("encode", encoder_dir, corpus, tmp_path / "v.jsonl"), "encode", at(corpus, 2) + ": " + message)


@pytest.mark.parametrize("name", ["corpus.jsonl", "corpus.tsv"])
def test_encode_duplicate_ids_are_an_error_naming_both_lines(encoder_dir, tmp_path, name):
    corpus = tmp_path / name
    if name.endswith(".tsv"):
        corpus.write_text("a\tthe cell\nb\tthe tower\na\tthe heart\n")
    else:
        jsonl(corpus, *({"_id": i, "text": "the cell"} for i in ("a", "b", "a")))
    out = tmp_path / "v.jsonl"
    result = lsr("encode", encoder_dir, corpus, out)
    fails(result, "encode", at(corpus, 3) + r": duplicate id 'a' \(first at line 1\)")
    assert not out.exists() or out.read_text() == ""


def test_encode_empty_and_whitespace_text_encode_to_empty_vectors_counted_in_a_warning(encoder_dir, tmp_path):
    corpus = jsonl(
        tmp_path / "corpus.jsonl",
        {"_id": "a", "text": "the heart and the blood"},
        {"_id": "b", "title": "", "text": "   \t "},
        {"_id": "c", "title": " ", "text": ""},
        {"_id": "d", "text": None},
    )
    out = tmp_path / "v.jsonl"
    result = lsr("encode", encoder_dir, corpus, out)
    warns(
        result,
        re.escape(f"{corpus}: 3 text(s) encoded to empty vectors")
        + r".*e\.g\. "
        + re.escape(f"b ({corpus}:2), c ({corpus}:3), d ({corpus}:4)"),
    )
    assert "wrote 4" in result.stdout and "3 empty" in result.stdout
    v = vectors_of(out)
    assert list(v) == ["a", "b", "c", "d"]
    assert v["a"] and v["b"] == v["c"] == v["d"] == {}


def test_encode_invalid_utf8_is_replaced_with_a_warning_naming_file_and_first_line(encoder_dir, tmp_path):
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_bytes(
        b'{"_id": "a", "text": "the cell"}\n'
        b'{"_id": "b", "text": "the \xff\xfe tower"}\n'
        b'{"_id": "c", "text": "paris"}\n'
        b'{"_id": "d", "text": "caf\xe9 city"}\n'
    )
    out = tmp_path / "v.jsonl"
    result = lsr("encode", encoder_dir, corpus, out)
    warns(result, re.escape(f"{corpus}: 2 line(s) held bytes that are not UTF-8 (first at line 2)"))
    assert "U+FFFD" in result.stderr
    v = vectors_of(out)
    assert list(v) == ["a", "b", "c", "d"] and all(v.values())


def test_encode_an_oversized_document_is_truncated_and_counted(encoder_dir, tmp_path):
    corpus = jsonl(
        tmp_path / "corpus.jsonl",
        {"_id": "long", "text": "the cell of a mouse " * 50},
        {"_id": "short", "text": "a tower"},
        {"_id": "longer", "text": "blood heart brain " * 200},
    )
    out = tmp_path / "v.jsonl"
    result = lsr("encode", encoder_dir, corpus, out, "--max-length", 16)
    warns(result, re.escape(f"{corpus}: 2 text(s) truncated to 16 tokens"))
    assert "2 truncated" in result.stdout
    assert list(vectors_of(out)) == ["long", "short", "longer"]


def test_encode_a_record_without_text_is_read_as_its_title_with_a_warning(encoder_dir, tmp_path):
    corpus = jsonl(
        tmp_path / "corpus.jsonl",
        {"_id": "a", "text": "the cell"},
        {"_id": "b", "title": "a tower in paris"},
        {"_id": "c"},
    )
    out = tmp_path / "v.jsonl"
    result = lsr("encode", encoder_dir, corpus, out)
    warns(result, re.escape(f"{corpus}: 2 record(s) have no 'text' field (first at line 2)"))
    warns(
        result,
        re.escape(f"{corpus}: 1 text(s) encoded to empty vectors") + ".*" + re.escape(f"c ({corpus}:3)"),
    )
    v = vectors_of(out)
    assert v["b"] and v["c"] == {}


def test_encode_missing_inputs(encoder_dir, tmp_path):
    corpus = jsonl(tmp_path / "corpus.jsonl", {"_id": "a", "text": "the cell"})
    fails(
        lsr("encode", encoder_dir, tmp_path / "nope.jsonl", tmp_path / "v.jsonl"),
        "encode",
        "corpus file not found",
    )
    fails(
        lsr("encode", tmp_path / "nope", corpus, tmp_path / "v.jsonl"),
        "encode",
        ".*nope is not an encoder directory",
    )


# ========================================================================= lsr index: the vectors
JAVA = java_available()
BACKENDS = ["native", pytest.param("lucene", marks=needs_java)]

GOOD = [
    {"id": "d1", "vector": {"paris": 1.5, "tower": 0.5}},
    {"id": "d2", "vector": {"tower": 2.0, "city": 0.25}},
    {"id": "d3", "vector": {"river": 1.0, "paris": 0.75}},
    {"id": "d4", "vector": {"new york": 1.25, "café": 0.5}},
]
TOPICS = [{"id": "q1", "vector": {"paris": 1.0, "tower": 0.5}}, {"id": "q2", "vector": {"café": 2.0}}]


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """``built(backend)`` -> (INDEX_DIR, topics, its TREC run): built and searched once through the CLI."""
    root = tmp_path_factory.mktemp("built")
    good, topics = jsonl(root / "good.jsonl", *GOOD), jsonl(root / "topics.jsonl", *TOPICS)
    cache: dict[str, tuple[Path, Path, str]] = {}

    def get(backend: str) -> tuple[Path, Path, str]:
        if backend not in cache:
            index = root / backend / "idx"
            result = lsr("index", good, index, "--backend", backend)
            assert result.returncode == 0, result.stderr
            run = root / backend / "run.trec"
            result = lsr("search", index, "--topics", topics, "--output", run)
            assert result.returncode == 0, result.stderr
            cache[backend] = (index, topics, run.read_text())
        return cache[backend]

    return get


# (lines after a good first line, line of the error, message after "file:line: ")
VECTOR_CASES = {
    "nan": (
        ['{"id": "x", "vector": {"p": NaN}}'],
        2,
        "document 'x', term 'p': weight nan must be finite and >= 0",
    ),
    "inf": (
        ['{"id": "x", "vector": {"p": Infinity}}'],
        2,
        "document 'x', term 'p': weight inf must be finite",
    ),
    "negative": (
        ['{"id": "x", "vector": {"p": -0.5}}'],
        2,
        "document 'x', term 'p': weight -0.5 must be finite",
    ),
    "string": (
        ['{"id": "x", "vector": {"p": "high"}}'],
        2,
        "document 'x', term 'p': weight 'high' is not a number",
    ),
    "list-vector": (
        ['{"id": "x", "vector": [["p", 1.0]]}'],
        2,
        r"field 'vector' must be an object \{token: weight\}; got a JSON list",
    ),
    "missing-id": (['{"vector": {"p": 1.0}}'], 2, "missing field 'id'"),
    "duplicate": (
        [
            '{"id": "x", "vector": {"p": 1.0}}',
            '{"id": "y", "vector": {"p": 1.0}}',
            '{"id": "x", "vector": {"q": 2.0}}',
        ],
        4,
        r"duplicate id 'x' \(first at {file}:2\)",
    ),
    "not-json": (['{"id": "x", "vector": {"p": 1.0}'], 2, "not valid JSON"),
}
# Parsed by the same code for both backends (indexer.jsonvector): checked on the native one only.
MORE_VECTOR_CASES = {
    "overflow": (
        ['{"id": "x", "vector": {"p": 1e999}}'],
        2,
        "document 'x', term 'p': weight inf must be finite",
    ),
    "boolean": (
        ['{"id": "x", "vector": {"p": true}}'],
        2,
        "document 'x', term 'p': weight True is not a number",
    ),
    "null-weight": (
        ['{"id": "x", "vector": {"p": null}}'],
        2,
        "document 'x', term 'p': weight None is not a number",
    ),
    "empty-term": (['{"id": "x", "vector": {"": 1.0}}'], 2, "document 'x' has an empty term"),
    "no-vector": (
        ['{"id": "x", "contents": "a tower"}'],
        2,
        "field 'vector' must be an object .*; the line has none",
    ),
    "null-id": (['{"id": null, "vector": {"p": 1.0}}'], 2, "field 'id' must be a non-empty string, got null"),
    "empty-id": (
        ['{"id": "", "vector": {"p": 1.0}}'],
        2,
        r"field 'id' must be a non-empty string, got '' \(empty\)",
    ),
    "object-id": (
        ['{"id": {"a": 1}, "vector": {"p": 1.0}}'],
        2,
        "field 'id' must be a non-empty string, got object",
    ),
    "array-line": (
        ['["x", {"p": 1.0}]'],
        2,
        r"missing field 'id' \(the line is a JSON list, not an object\)",
    ),
}


@pytest.fixture(scope="module")
def refused(built, tmp_path_factory):
    """Every bad-vector case through ``lsr index`` onto its own copy of a built index, runs in parallel.

    Returns ``{(backend, case): (result, bad vectors file, INDEX_DIR, snapshot before the run)}``.
    """
    root = tmp_path_factory.mktemp("refused")
    cases = [(b, c) for b in (["native", "lucene"] if JAVA else ["native"]) for c in VECTOR_CASES]
    cases += [("native", c) for c in MORE_VECTOR_CASES]
    setup = {}
    for backend, case in cases:
        lines = {**VECTOR_CASES, **MORE_VECTOR_CASES}[case][0]
        d = root / f"{backend}-{case}"
        index = d / "idx"
        shutil.copytree(built(backend)[0], index)
        bad = d / "bad.jsonl"
        bad.write_text('{"id": "a0", "vector": {"p": 1.5}}\n' + "".join(x + "\n" for x in lines))
        setup[backend, case] = (bad, index, snapshot(index))
    with ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 2)) as pool:
        runs = {
            key: pool.submit(lsr, "index", bad, index, "--backend", key[0])
            for key, (bad, index, _) in setup.items()
        }
        return {key: (runs[key].result(), *setup[key]) for key in setup}


def _check_refused(refused, backend: str, case: str) -> None:
    _, line, message = {**VECTOR_CASES, **MORE_VECTOR_CASES}[case]
    result, bad, index, before = refused[backend, case]
    fails(result, "index", at(bad, line) + ": " + message.replace("{file}", re.escape(str(bad))))
    assert snapshot(index) == before  # the previous index, byte for byte
    assert leftovers(index) == []


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("case", list(VECTOR_CASES))
def test_index_bad_vectors_name_file_and_line_and_keep_the_old_index(refused, backend, case):
    _check_refused(refused, backend, case)


@pytest.mark.parametrize("case", list(MORE_VECTOR_CASES))
def test_index_more_bad_vectors(refused, case):
    _check_refused(refused, "native", case)


@pytest.mark.parametrize("backend", BACKENDS)
def test_index_duplicate_ids_across_files_name_both_places(built, backend, tmp_path):
    index, _, _ = built(backend)
    before = snapshot(index)
    a = jsonl(tmp_path / "a.jsonl", {"id": "w", "vector": {"p": 1.0}}, {"id": "x", "vector": {"p": 2.0}})
    b = jsonl(tmp_path / "b.jsonl", {"id": "x", "vector": {"q": 1.0}})
    result = lsr("index", a, b, index, "--backend", backend)
    fails(result, "index", at(b, 1) + r": duplicate id 'x' \(first at " + at(a, 2) + r"\)")
    assert snapshot(index) == before and leftovers(index) == []


@pytest.mark.parametrize("backend", BACKENDS)
def test_index_after_refused_builds_the_old_index_still_searches_the_same(built, backend, tmp_path):
    index, topics, run = built(backend)
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "a", "vector": {"paris": 1.0}}\n{"id": "b", "vector": {"paris": NaN}}\n')
    assert lsr("index", bad, index, "--backend", backend).returncode == 2
    fails(
        lsr("index", tmp_path / "missing.jsonl", index, "--backend", backend),
        "index",
        "vector file not found",
    )
    out = tmp_path / "run.trec"
    result = lsr("search", index, "--topics", topics, "--output", out)
    assert result.returncode == 0, result.stderr
    assert out.read_text() == run and run.count("\n") == 4


def test_index_empty_vectors_are_skipped_with_a_warning_naming_them(tmp_path):
    v = jsonl(tmp_path / "v.jsonl", {"id": "a", "vector": {"p": 1.0}}, {"id": "b", "vector": {}})
    result = lsr("index", v, tmp_path / "idx")
    warns(result, re.escape("1 document(s) with empty vectors skipped, e.g. b (") + at(v, 2))
    assert "1 documents (1 empty skipped)" in result.stdout


# ==================================================================== lsr search: index integrity
@pytest.fixture
def native_copy(built, tmp_path) -> tuple[Path, Path]:
    """A private copy of the CLI-built native index (to damage) and its topics."""
    index, topics, _ = built("native")
    copy = tmp_path / "idx"
    shutil.copytree(index, copy)
    return copy, topics


def _flip_byte(path: Path, where: int = -1) -> None:
    data = bytearray(path.read_bytes())
    data[where] ^= 0xFF
    path.write_bytes(bytes(data))


def _rewrite_json(path: Path, **changes) -> None:
    data = json.loads(path.read_text())
    data.update(changes)
    path.write_text(json.dumps(data))


def _drop(path: Path, key: str) -> None:
    data = json.loads(path.read_text())
    del data[key]
    path.write_text(json.dumps(data))


NATIVE_DAMAGE = {
    "flipped-byte": (
        lambda ix: _flip_byte(ix / "tail_codes.npy"),
        "{ix}/tail_codes.npy: checksum mismatch",
    ),
    "truncated": (
        lambda ix: (ix / "tail_codes.npy").write_bytes((ix / "tail_codes.npy").read_bytes()[:-3]),
        r"{ix}/tail_codes.npy: cannot be read as an array: \d+ bytes, expected \d+ .*\(the file is truncated",
    ),
    "cut-header": (
        lambda ix: (ix / "block_gap.npy").write_bytes((ix / "block_gap.npy").read_bytes()[:20]),
        r"{ix}/block_gap.npy: cannot be read as an array",
    ),
    "missing-array": (
        lambda ix: (ix / "block_gap.npy").unlink(),
        "{ix}: array file block_gap.npy is missing",
    ),
    "format-version": (
        lambda ix: _rewrite_json(ix / "meta.json", format_version=99),
        rf"{{ix}}: format version 99 is not supported \(this lsr reads {FORMAT_VERSION}\)",
    ),
    "meta-not-json": (
        lambda ix: (ix / "meta.json").write_text('{"format": "lsr-native", '),
        "{ix}/meta.json: not valid JSON",
    ),
    "meta-field": (
        lambda ix: _drop(ix / "meta.json", "vocab_sha256"),
        r"{ix}/meta.json: missing field 'vocab_sha256'",
    ),
    "vocab-changed": (
        lambda ix: (ix / "vocab.json").write_text((ix / "vocab.json").read_text().replace("paris", "rome")),
        r"{ix}/vocab.json: vocabulary does not match its hash in meta.json",
    ),
    "no-meta": (
        lambda ix: (ix / "meta.json").unlink(),
        r"{ix} is not an lsr index: neither lsr-index.json \(Lucene\) nor meta.json \(native\)",
    ),
}


@pytest.mark.parametrize("damage", list(NATIVE_DAMAGE))
def test_search_refuses_a_damaged_native_index_naming_the_file(native_copy, damage, tmp_path):
    index, topics = native_copy
    apply, message = NATIVE_DAMAGE[damage]
    apply(index)
    out = tmp_path / "run.trec"
    result = lsr("search", index, "--topics", topics, "--output", out)
    fails(result, "search", message.replace("{ix}", re.escape(str(index))))
    assert not out.exists()


def test_search_an_index_directory_that_does_not_exist(built, tmp_path):
    _, topics, _ = built("native")
    result = lsr("search", tmp_path / "nope", "--topics", topics, "--output", tmp_path / "run.trec")
    fails(result, "search", "index directory not found: " + re.escape(str(tmp_path / "nope")))


# ------------------------------------------------------------------ Lucene: lsr-index.json checksums
@pytest.fixture
def lucene_copy(built, tmp_path) -> tuple[Path, Path]:
    if not JAVA:
        pytest.skip("Lucene backend unavailable")
    index, topics, _ = built("lucene")
    copy = tmp_path / "idx"
    shutil.copytree(index, copy)
    return copy, topics


def _largest_segment_file(index: Path) -> Path:
    files = [p for p in index.iterdir() if p.name not in ("lsr-index.json", "write.lock")]
    return max(files, key=lambda p: (p.stat().st_size, p.name))


@needs_java
def test_lucene_index_records_size_and_sha256_of_every_file(built):
    from indexer.lucene import LuceneIndexInfo

    index, _, _ = built("lucene")
    info = LuceneIndexInfo.load(index)
    names = {p.name for p in index.iterdir()} - {"lsr-index.json", "write.lock"}
    assert set(info.files) == names and any(n.startswith("segments_") for n in names)
    for name, spec in info.files.items():
        data = (index / name).read_bytes()
        assert spec == {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}


LUCENE_DAMAGE = {
    "flipped-byte": (
        lambda f: _flip_byte(f, f.stat().st_size // 2),
        "{file}: checksum mismatch \\(the file is corrupted",
    ),
    "truncated": (
        lambda f: f.write_bytes(f.read_bytes()[:-5]),
        r"{file}: \d+ bytes, expected \d+ \(the file is truncated",
    ),
    "deleted": (lambda f: f.unlink(), "{ix}: Lucene index file {name} is missing"),
}


@pytest.mark.parametrize("damage", list(LUCENE_DAMAGE))
def test_search_refuses_a_damaged_lucene_index_naming_the_file(lucene_copy, damage, tmp_path):
    index, topics = lucene_copy
    victim = _largest_segment_file(index)
    apply, message = LUCENE_DAMAGE[damage]
    apply(victim)
    result = lsr("search", index, "--topics", topics, "--output", tmp_path / "run.trec")
    message = message.replace("{file}", re.escape(str(victim))).replace("{ix}", re.escape(str(index)))
    fails(result, "search", message.replace("{name}", re.escape(victim.name)))
    assert "JavaException" not in result.stderr


@needs_java
def test_lucene_searcher_verify_flag_and_indexes_without_checksums(lucene_copy):
    from indexer.files import IndexCorruptError
    from lsr.sparse import SparseBatch
    from plugin.lucene import LuceneSearcher

    index, _ = lucene_copy
    query = SparseBatch.from_dicts([{"paris": 1.0}], ("paris",))
    want = LuceneSearcher(index).search(query)
    assert [h.docid for h in want] == ["d1", "d3"]
    segments = next(p for p in index.iterdir() if p.name.startswith("segments_"))
    _flip_byte(segments, 40)
    with pytest.raises(IndexCorruptError, match=re.escape(f"{segments}: checksum mismatch")):
        LuceneSearcher(index)
    _flip_byte(segments, 40)
    # verify=False skips the checksums but still checks that every file is there, whole.
    victim = _largest_segment_file(index)
    victim.rename(victim.with_name("moved"))
    with pytest.raises(IndexCorruptError, match=f"Lucene index file {re.escape(victim.name)} is missing"):
        LuceneSearcher(index, verify=False)
    victim.with_name("moved").rename(victim)
    # An lsr-index.json that predates the checksums is refused: its scale could be anything.
    meta = json.loads((index / "lsr-index.json").read_text())
    del meta["files"], meta["meta_sha256"]
    (index / "lsr-index.json").write_text(json.dumps(meta))
    with pytest.raises(IndexCorruptError, match=r"no meta_sha256 \(built by an older lsr\): rebuild"):
        LuceneSearcher(index)


@needs_java
def test_search_refuses_a_damaged_bm25_index(tmp_path):
    corpus = jsonl(
        tmp_path / "corpus.jsonl", {"_id": "a", "text": "the tower"}, {"_id": "b", "text": "a river"}
    )
    topics = tmp_path / "q.tsv"
    topics.write_text("q1\ttower\n")
    index = tmp_path / "bm25"
    assert lsr("index", corpus, index, "--backend", "bm25").returncode == 0
    assert lsr("search", index, "--topics", topics, "--output", tmp_path / "r.trec").returncode == 0
    victim = _largest_segment_file(index)
    _flip_byte(victim, victim.stat().st_size // 2)
    result = lsr("search", index, "--topics", topics, "--output", tmp_path / "r.trec")
    fails(result, "search", re.escape(f"{victim}: checksum mismatch"))


# ============================================================ searching while a rebuild swaps in
VOCAB = tuple(f"t{i}" for i in range(40))


def _write_docs(path: Path, prefix: str, seed: int, n: int = 80) -> Path:
    rng = np.random.default_rng(seed)
    return jsonl(
        path,
        *(
            {
                "id": f"{prefix}{i}",
                "vector": {
                    VOCAB[j]: round(float(rng.random()) * 2 + 0.1, 2)
                    for j in rng.choice(40, 6, replace=False)
                },
            }
            for i in range(n)
        ),
    )


def _hits(searcher, queries) -> list[list[tuple[str, float]]]:
    return [[(h.docid, h.score) for h in hits] for hits in searcher.batch_search(queries, k=10)]


@pytest.fixture
def two_collections(tmp_path):
    from indexer.native.build import build_native_index
    from lsr.sparse import SparseBatch
    from plugin.native import NativeSearcher

    old, new = _write_docs(tmp_path / "old.jsonl", "old", 1), _write_docs(tmp_path / "new.jsonl", "new", 2)
    rng = np.random.default_rng(3)
    queries = SparseBatch.from_dicts(
        [{VOCAB[j]: 1.0 for j in rng.choice(40, 3, replace=False)} for _ in range(8)], VOCAB
    )
    expected = {}
    for name, path in (("old", old), ("new", new)):
        build_native_index(tmp_path / f"ref-{name}", vector_files=[path])
        expected[name] = _hits(NativeSearcher(tmp_path / f"ref-{name}"), queries)
    assert expected["old"] != expected["new"]
    return {"old": old, "new": new}, queries, expected


def test_an_open_searcher_keeps_its_index_while_a_rebuild_swaps_in(two_collections, tmp_path):
    from indexer.native.build import build_native_index
    from plugin.native import NativeSearcher

    files, queries, expected = two_collections
    index = tmp_path / "idx"
    build_native_index(index, vector_files=[files["old"]])
    before = NativeSearcher(index)
    assert _hits(before, queries) == expected["old"]
    build_native_index(index, vector_files=[files["new"]])
    # (a) the old files are gone from the directory, but their memory maps stay valid
    assert before.index.docid(0).startswith("old") and NativeSearcher(index).index.docid(0).startswith("new")
    assert _hits(before, queries) == expected["old"]
    # (b) a searcher opened now sees the new documents
    assert _hits(NativeSearcher(index), queries) == expected["new"]
    assert leftovers(index) == []


def test_searching_in_a_loop_during_rebuilds_sees_old_or_new_never_an_error(two_collections, tmp_path):
    from indexer.native.build import build_native_index
    from plugin.native import NativeSearcher

    files, queries, expected = two_collections
    index = tmp_path / "idx"
    build_native_index(index, vector_files=[files["old"]])
    held = NativeSearcher(index)
    stop = threading.Event()
    seen = {"old": 0, "new": 0, "held": 0}
    errors: list[str] = []

    def reopen_and_search() -> None:  # (c) a fresh searcher every round, as separate `lsr search` runs do
        while not stop.is_set():
            try:
                got = _hits(NativeSearcher(index), queries)
            except Exception as e:  # any error fails the test below
                errors.append(f"{type(e).__name__}: {e}")
                continue
            kind = next((k for k in ("old", "new") if got == expected[k]), None)
            if kind is None:
                errors.append(f"a result set that is neither the old nor the new one: {got[0]}")
            else:
                seen[kind] += 1

    def keep_searching() -> None:  # an already-open searcher keeps answering from its own files
        while not stop.is_set():
            if _hits(held, queries) != expected["old"]:
                errors.append("the held searcher's results changed")
            seen["held"] += 1

    threads = [threading.Thread(target=reopen_and_search), threading.Thread(target=keep_searching)]
    for t in threads:
        t.start()
    try:
        deadline = time.monotonic() + 60  # both searchers under way before the first rebuild
        while (seen["old"] == 0 or seen["held"] == 0) and not errors and time.monotonic() < deadline:
            time.sleep(0.005)
        for i in range(8):
            build_native_index(index, vector_files=[files["new" if i % 2 == 0 else "old"]])
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=60)
    assert errors == [] and not any(t.is_alive() for t in threads)
    print(f"searches during 8 rebuilds: {seen}")
    assert seen["old"] + seen["new"] > 0 and seen["held"] > 0, seen
    assert _hits(NativeSearcher(index), queries) == expected["old"]  # the last rebuild wrote "old"
    assert leftovers(index) == []


def test_a_swap_in_the_middle_of_opening_is_retried_on_the_new_index(two_collections, tmp_path, monkeypatch):
    """Deterministic version of the race above: the rebuild lands after the first array is mapped."""
    from indexer.native import format as fmt
    from indexer.native.build import build_native_index
    from plugin.native import NativeSearcher

    files, queries, expected = two_collections
    index = tmp_path / "idx"
    build_native_index(index, vector_files=[files["old"]])
    original, calls = fmt.open_array, []

    def open_then_rebuild(f, file, spec, verify):
        calls.append(file.name)
        arr = original(f, file, spec, verify)
        if len(calls) == 1:  # meta.json of the old index is read; now the new one is swapped in
            build_native_index(index, vector_files=[files["new"]])
        return arr

    monkeypatch.setattr(fmt, "open_array", open_then_rebuild)
    searcher = NativeSearcher(index)
    assert _hits(searcher, queries) == expected["new"]
    assert len(calls) > len(fmt.ARRAYS)  # the first attempt failed part way and the open started again
