"""Unit tests for indexer.jsonvector: JsonVectorCollection writing, reading and crash recovery (CPU only)."""

from __future__ import annotations

import gzip
import itertools
import json
import re
import sys

import numpy as np
import pytest

from indexer import jsonvector
from indexer.jsonvector import (
    append_lines,
    escape_term,
    format_lines,
    impact_mode,
    iter_vectors,
    load_batch,
    read_vectors,
    recover,
    unescape_term,
)
from lsr.sparse import SparseBatch

VOCAB = tuple(f"t{i}" for i in range(50))
# Tokens that need JSON escaping or are not ASCII; the rest are plain.
ODD_VOCAB = (
    *VOCAB,
    'say "hi"',
    "back\\slash",
    "##ing",
    '##\\"',
    "café",
    "東京",
    "tab\there",
    "new\nline",
    "line\u2028sep",
    "[CLS]",
    "",
)


# ------------------------------------------------------------------ helpers
def random_batch(seed: int, n_rows: int, vocab=ODD_VOCAB) -> SparseBatch:
    """Random rows (some empty) with float32 weights spanning many magnitudes."""
    rng = np.random.default_rng(seed)
    dicts = []
    for _ in range(n_rows):
        n = int(rng.integers(0, 15))
        ids = rng.choice(len(vocab), n, replace=False)
        weights = (rng.random(n) * 10.0 ** rng.integers(-8, 8, n)).astype(np.float32)
        dicts.append({vocab[i]: max(float(w), 1e-30) for i, w in zip(ids, weights, strict=True)})
    return SparseBatch.from_dicts(dicts, vocab)


def vector_of(batch: SparseBatch, row: int) -> dict[str, np.float32]:
    ids, ws = batch.row(row)
    return {batch.vocab[t]: w for t, w in zip(ids.tolist(), ws, strict=True)}


def as_float32(vector: dict[str, float]) -> dict[str, np.float32]:
    return {t: np.float32(w) for t, w in vector.items()}


def line(rid: str, vector: dict[str, float]) -> bytes:
    return (json.dumps({"id": rid, "contents": "", "vector": vector}) + "\n").encode()


def ids_in(path) -> list[str]:
    return [rid for rid, _ in read_vectors(path)]


# ------------------------------------------------------------ format/read
def test_format_lines_exact_text():
    b = SparseBatch.from_dicts([{"t3": 2.0, "t1": 0.5}, {}, {"t2": 0.1}], VOCAB)
    assert format_lines(["d1", "d2", 'é"3'], b) == [
        '{"id": "d1", "contents": "", "vector": {"t1": 0.5, "t3": 2.0}}\n',
        '{"id": "d2", "contents": "", "vector": {}}\n',
        '{"id": "é\\"3", "contents": "", "vector": {"t2": 0.1}}\n',
    ]


def test_format_lines_needs_one_id_per_row():
    with pytest.raises(ValueError, match="2 ids for 3 vectors"):
        format_lines(["a", "b"], SparseBatch.empty(3, VOCAB))


def test_every_line_is_one_json_object():
    b = random_batch(0, 30)
    lines = format_lines([f"d{i}" for i in range(30)], b)
    for i, text in enumerate(lines):
        assert text.endswith("\n") and text.count("\n") == 1
        obj = json.loads(text)
        assert obj["id"] == f"d{i}" and obj["contents"] == ""
        assert as_float32(obj["vector"]) == vector_of(b, i)


@pytest.mark.parametrize("name", ["vectors.jsonl", "vectors.jsonl.gz"])
def test_round_trip_over_several_appends(tmp_path, name):
    path = tmp_path / name
    batches = [random_batch(seed, n) for seed, n in [(1, 20), (2, 0), (3, 15), (4, 1)]]
    ids, start = [], 0
    for b in batches:
        # Quote, backslash and non-ASCII need JSON escaping; whitespace is not allowed in ids.
        chunk = [f'doc-{start + i}"ü\\' for i in range(len(b))]
        append_lines(path, format_lines(chunk, b))
        ids += chunk
        start += len(b)
    whole = SparseBatch.concat(batches)

    got = list(read_vectors(path))
    assert [rid for rid, _ in got] == ids
    for i, (_, vector) in enumerate(got):
        assert as_float32(vector) == vector_of(whole, i)

    got_ids, loaded = load_batch(path, ODD_VOCAB)
    assert got_ids == ids
    np.testing.assert_array_equal(loaded.indptr, whole.indptr)
    np.testing.assert_array_equal(loaded.term_ids, whole.term_ids)
    np.testing.assert_array_equal(loaded.weights, whole.weights)


def test_gz_appends_are_separate_members(tmp_path):
    path = tmp_path / "v.jsonl.gz"
    b = SparseBatch.from_dicts([{"t1": 1.0}], VOCAB)
    append_lines(path, format_lines(["a"], b))
    first = path.read_bytes()
    append_lines(path, format_lines(["b"], b))
    assert path.read_bytes().startswith(first)
    assert path.read_bytes()[len(first) :][:2] == b"\x1f\x8b"
    assert ids_in(path) == ["a", "b"]


@pytest.mark.parametrize(
    "value",
    [0.1, 1 / 3, 2.5e-8, 1e-45, 1.17549435e-38, 3.4028235e38, 16777217.0, 0.7000000476837158, 123456.789],
)
def test_float32_weights_round_trip_exactly(tmp_path, value):
    w = np.float32(value)
    b = SparseBatch(np.array([0, 1], np.int64), np.array([7], np.int32), np.array([w], np.float32), VOCAB)
    path = tmp_path / "v.jsonl"
    append_lines(path, format_lines(["d"], b))
    ((_, vector),) = read_vectors(path)
    assert np.float32(vector["t7"]) == w
    assert str(w) in path.read_text()  # shortest float32 form, not a float64 expansion


def test_random_float32_weights_round_trip_exactly(tmp_path):
    rng = np.random.default_rng(7)
    bits = rng.integers(0x00000001, 0x7F7FFFFF, 3000, dtype=np.uint32)  # any finite positive float32
    weights = bits.view(np.float32)
    rows = len(weights) // 50  # 60 rows holding every term of the vocabulary
    b = SparseBatch(
        np.arange(0, len(weights) + 1, 50, dtype=np.int64),
        np.tile(np.arange(50, dtype=np.int32), rows),
        weights,
        VOCAB,
    )
    path = tmp_path / "v.jsonl.gz"
    append_lines(path, format_lines([str(i) for i in range(rows)], b))
    _, loaded = load_batch(path, VOCAB)
    np.testing.assert_array_equal(loaded.weights, weights)


def test_load_batch_names_file_on_unknown_token(tmp_path):
    path = tmp_path / "v.jsonl"
    path.write_bytes(line("a", {"t1": 1.0}) + line("b", {"zz": 1.0}))
    with pytest.raises(ValueError, match=re.escape(str(path)) + ": row 1: token 'zz'"):
        load_batch(path, VOCAB)


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        (b'{"id": "x", "vector": {"t1": 1.0\n', "not valid JSON"),
        (b'{"vector": {"t1": 1.0}}\n', "missing field 'id'"),
        (b'["x", {"t1": 1.0}]\n', "missing field 'id'"),
        (b'{"id": "x", "vector": [1.0]}\n', "field 'vector' must be an object"),
        (b'{"id": "x", "contents": ""}\n', "field 'vector' must be an object"),
    ],
)
@pytest.mark.parametrize("name", ["v.jsonl", "v.jsonl.gz"])
def test_read_vectors_bad_line_names_file_and_line(tmp_path, name, bad, message):
    path = tmp_path / name
    data = line("a", {"t1": 1.0}) + b"\n" + bad
    path.write_bytes(gzip.compress(data) if name.endswith(".gz") else data)
    with pytest.raises(ValueError, match=re.escape(f"{path}:3: {message}")):
        list(read_vectors(path))


def test_read_vectors_numeric_id_becomes_str(tmp_path):
    path = tmp_path / "v.jsonl"
    path.write_bytes(line(12, {"t1": 1}))
    assert list(read_vectors(path)) == [("12", {"t1": 1})]


# ----------------------------------------------------------------- recover
def test_recover_missing_file(tmp_path):
    path = tmp_path / "none.jsonl.gz"
    assert recover(path) == set()
    assert not path.exists()


@pytest.mark.parametrize("name", ["v.jsonl", "v.jsonl.gz"])
def test_recover_intact_file_changes_nothing(tmp_path, name):
    path = tmp_path / name
    b = random_batch(5, 6)
    append_lines(path, format_lines(list("abc"), b.take([0, 1, 2])))
    append_lines(path, format_lines(list("def"), b.take([3, 4, 5])))
    before = path.read_bytes()
    assert recover(path) == set("abcdef")
    assert path.read_bytes() == before


@pytest.mark.parametrize(
    "tail",
    [
        b'{"id": "d9", "contents": "", "vec',  # half JSON
        b'{"id": "d9", "contents": "", "vector": {"t1": 1.0}}',  # complete JSON, no newline
        b'{"id": "d9", "cont\xc3',  # cut inside a UTF-8 sequence
        b"\n",  # a newline alone is not a record either
    ],
)
def test_recover_plain_file_cuts_torn_tail(tmp_path, tail):
    path = tmp_path / "v.jsonl"
    good = line("d1", {"t1": 1.0}) + line("d2", {"t2": 0.5, "東京": 2.0})
    path.write_bytes(good + tail)
    assert recover(path) == {"d1", "d2"}
    assert path.read_bytes() == good

    append_lines(path, [line("d9", {"t3": 1.0}).decode(), line("d10", {"t4": 1.0}).decode()])
    assert ids_in(path) == ["d1", "d2", "d9", "d10"]


def test_recover_plain_file_with_only_a_torn_line(tmp_path):
    path = tmp_path / "v.jsonl"
    path.write_bytes(b'{"id": "d1", "con')
    assert recover(path) == set()
    assert path.read_bytes() == b""


def write_members(path, *chunks: list[tuple[str, dict]]) -> list[int]:
    """Append one gzip member per chunk; return the file size after each member."""
    sizes = []
    for chunk in chunks:
        append_lines(path, [line(rid, vec).decode() for rid, vec in chunk])
        sizes.append(path.stat().st_size)
    return sizes


def long_vector(seed: int) -> dict[str, float]:
    """A vector whose JSON barely compresses, so half a gzip member can't hold its whole line."""
    rng = np.random.default_rng(seed)
    return {f"t{i}": float(np.float32(w)) for i, w in zip(range(50), rng.random(50), strict=True)}


@pytest.mark.parametrize("keep", [0.5, 0.1, 0.9])
def test_recover_gz_with_truncated_last_member(tmp_path, keep):
    path = tmp_path / "v.jsonl.gz"
    m1 = [("a", {"t1": 1.0}), ("b", {"t2": 2.0})]
    m2 = [("c", long_vector(1)), ("d", {"東京": 0.25})]
    m3 = [("e", long_vector(2))]
    sizes = write_members(path, m1, m2, m3)
    cut = sizes[1] + int((sizes[2] - sizes[1]) * keep)
    path.write_bytes(path.read_bytes()[:cut])
    with pytest.raises(EOFError):
        gzip.decompress(path.read_bytes())

    assert recover(path) == {"a", "b", "c", "d"}
    assert gzip.decompress(path.read_bytes()).splitlines() == [line(r, v).rstrip() for r, v in m1 + m2]
    assert ids_in(path) == ["a", "b", "c", "d"]

    write_members(path, m3, [("f", {"t5": 1.0})])
    assert ids_in(path) == ["a", "b", "c", "d", "e", "f"]
    assert recover(path) == set("abcdef")


def test_recover_gz_whose_last_member_has_a_torn_line(tmp_path):
    path = tmp_path / "v.jsonl.gz"
    with open(path, "ab") as f:
        f.write(gzip.compress(line("a", {"t1": 1.0})))
        f.write(gzip.compress(line("b", {"t1": 1.0}) + b'{"id": "c", "vec'))
    assert recover(path) == {"a", "b"}
    assert gzip.decompress(path.read_bytes()) == line("a", {"t1": 1.0}) + line("b", {"t1": 1.0})


def test_recover_gz_cut_inside_the_first_member_header(tmp_path):
    path = tmp_path / "v.jsonl.gz"
    write_members(path, [("a", {"t1": 1.0})])
    path.write_bytes(path.read_bytes()[:5])
    assert recover(path) == set()
    assert gzip.decompress(path.read_bytes()) == b""
    write_members(path, [("a", {"t1": 1.0})])
    assert ids_in(path) == ["a"]


# ------------------------------------------------------------ term escaping
# "%" and sequences that spell an escape, raw whitespace of both escape widths, and their mixes.
TRICKY = ("%", "%25", "%0A", "\n", " a b ", "\u3000", "%u3000", "%%0A", "%2525", "%0a", "##%", "50%", "%u30")


def test_escape_round_trips_and_keeps_tricky_terms_apart():
    escaped = [escape_term(t) for t in TRICKY]
    assert [unescape_term(e) for e in escaped] == list(TRICKY)
    assert len(set(escaped)) == len(TRICKY)
    assert not any(re.search(r"\s", e) for e in escaped)
    assert escaped[:7] == ["%", "%2525", "%250A", "%0A", "%20a%20b%20", "%u3000", "%25u3000"]
    # A '%' that reads as no escape, and lower-case hex, stay as they are.
    assert [escape_term(t) for t in ("%", "##%", "50%", "%0a", "%u30", "%41")] == [
        "%",
        "##%",
        "50%",
        "%0a",
        "%u30",
        "%41",
    ]


def test_escape_is_injective_and_inverted_on_every_short_string():
    alphabet = "%25u30A\n \u3000x"
    for n in range(5):
        terms = ["".join(p) for p in itertools.product(alphabet, repeat=n)]
        escaped = [escape_term(t) for t in terms]
        assert len(set(escaped)) == len(terms)
        assert [unescape_term(e) for e in escaped] == terms


def test_every_whitespace_character_fits_the_four_digit_escape():
    spaces = [c for c in map(chr, range(sys.maxunicode + 1)) if c.isspace()]
    assert spaces == [c for c in map(chr, range(sys.maxunicode + 1)) if re.match(r"\s", c)]
    assert max(map(ord, spaces)) < 0x10000
    assert max(map(ord, spaces)) <= jsonvector._LAST_SPACE  # the escape table stops there
    assert [unescape_term(escape_term(c)) for c in spaces] == spaces


def test_bert_vocabulary_escapes_to_itself_and_back(real_model_dir):
    from lsr.tokenize import Tokenizer

    vocab = Tokenizer(real_model_dir / "tokenizer.json").vocab
    assert len(vocab) == 30_522 and {"%", "##%"} <= set(vocab)
    escaped = [escape_term(t) for t in vocab]
    assert escaped == list(vocab)  # Anserini's own encoders and older Lucene indexes see the same terms
    assert [unescape_term(e) for e in escaped] == list(vocab)


def test_an_impact_file_reads_back_raw_terms(tmp_path):
    vocab = ("%", "%0A", "\n", "%25", " ")
    batch = SparseBatch.from_dicts([{t: float(i + 1) for i, t in enumerate(vocab)}], vocab)
    path = tmp_path / "impacts.jsonl"
    path.write_text("".join(format_lines(["a"], batch, impacts=True)), encoding="utf-8")
    assert impact_mode([path]) == "given"
    assert list(next(read_vectors(path))[1]) == ["%", "%250A", "%0A", "%2525", "%20"]
    assert next(read_vectors(path, escaped=True))[1] == {"%": 1, "%0A": 2, "\n": 3, "%25": 4, " ": 5}


def test_an_impact_file_from_before_percent_escapes_reads_as_documented(tmp_path):
    """Old files never escaped '%': a lone one reads back as it was, a literal escape sequence does not."""
    path = tmp_path / "old.jsonl"
    path.write_bytes(line("a", {"%": 1, "##%": 2, "50%": 3, "%0A": 4, "%41": 5}))
    assert next(read_vectors(path, escaped=True))[1] == {"%": 1, "##%": 2, "50%": 3, "\n": 4, "%41": 5}


def test_two_terms_unescaping_alike_name_file_and_line(tmp_path):
    path = tmp_path / "hand.jsonl"
    path.write_bytes(line("a", {"x": 1}) + line("b", {"%": 1, "%25": 2}))
    with pytest.raises(
        ValueError, match=re.escape(f"{path}:2: vector 'b': terms '%' and '%25' both unescape")
    ):
        list(iter_vectors(path, escaped=True))
    assert [v for _, v in read_vectors(path)][1] == {"%": 1, "%25": 2}  # a float reading keeps both


def test_term_length_is_counted_on_the_raw_term_of_an_impact_file(tmp_path):
    # 85 newlines: 255 characters once escaped, at the limit; escaping the escaped form would be 425.
    path = tmp_path / "long.jsonl"
    path.write_bytes(line("a", {escape_term("\n" * 85): 1}))
    assert next(read_vectors(path, escaped=True))[1] == {"\n" * 85: 1}
    with pytest.raises(ValueError, match="over the limit of 255"):
        list(read_vectors(path))
