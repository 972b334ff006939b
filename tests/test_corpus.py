"""Unit tests for indexer.corpus: BEIR/TSV corpus reading, bad-input errors and qrels (CPU only)."""

from __future__ import annotations

import gzip
import json
import logging
import re

import pytest

from indexer.corpus import Record, corpus_format, read_corpus, read_lines, read_qrels


# ------------------------------------------------------------------ helpers
def write(path, content: str | bytes):
    """Write ``content`` to ``path``, gzip-compressed when the name ends in ``.gz``."""
    data = content.encode("utf-8") if isinstance(content, str) else content
    if path.name.endswith(".gz"):
        data = gzip.compress(data)
    path.write_bytes(data)
    return path


def jsonl(*objs) -> str:
    return "".join(json.dumps(o) + "\n" for o in objs)


def at(path, line: int) -> str:
    """The ``file:line`` prefix of an error message, as a regex."""
    return re.escape(f"{path}:{line}")


def read(path, **kw) -> list[tuple[str, str, int]]:
    return [(r.id, r.text, r.line) for r in read_corpus(path, **kw)]


BEIR = jsonl(
    {"_id": "d1", "title": "Eiffel Tower", "text": "A wrought-iron tower.", "metadata": {}},
    {"_id": 7, "title": "", "text": "No title here."},
    {"_id": "d3", "text": "  padded text  "},
    {"_id": "d4", "title": "Only a title", "text": None},
)
BEIR_RECORDS = [
    ("d1", "Eiffel Tower A wrought-iron tower.", 1),
    ("7", "No title here.", 2),
    ("d3", "padded text", 3),
    ("d4", "Only a title", 4),
]


# ------------------------------------------------------------------ formats
@pytest.mark.parametrize("name", ["corpus.jsonl", "corpus.jsonl.gz", "corpus.json", "CORPUS.JSONL.GZ"])
def test_beir_title_and_text_joined(tmp_path, name):
    assert read(write(tmp_path / name, BEIR)) == BEIR_RECORDS


def test_beir_records_are_record_objects(tmp_path):
    first = next(read_corpus(write(tmp_path / "c.jsonl", BEIR)))
    assert first == Record("d1", "Eiffel Tower A wrought-iron tower.", 1)
    assert isinstance(first.id, str)


def test_beir_without_title(tmp_path):
    path = write(tmp_path / "c.jsonl", BEIR)
    assert [t for _, t, _ in read(path, title=False)] == [
        "A wrought-iron tower.",
        "No title here.",
        "padded text",
        "",
    ]


@pytest.mark.parametrize("name", ["queries.jsonl", "queries.jsonl.gz"])
def test_beir_query_file(tmp_path, name):
    path = write(
        tmp_path / name,
        jsonl({"_id": 1, "text": "what is a tower?", "metadata": {}}, {"_id": "q2", "text": "x"}),
    )
    assert read(path) == [("1", "what is a tower?", 1), ("q2", "x", 2)]
    assert read(path, title=False) == read(path)


def test_beir_plain_id_field_is_accepted(tmp_path):
    assert read(write(tmp_path / "c.jsonl", jsonl({"id": "x1", "text": "t"}))) == [("x1", "t", 1)]


@pytest.mark.parametrize("name", ["corpus.tsv", "corpus.tsv.gz", "corpus.txt", "corpus.txt.gz"])
def test_tsv(tmp_path, name):
    path = write(tmp_path / name, "d1\thello world\n d2 \tsecond\ttabbed part\r\nd3\t\n")
    assert read(path) == [("d1", "hello world", 1), ("d2", "second tabbed part", 2), ("d3", "", 3)]


@pytest.mark.parametrize(
    ("name", "fmt"),
    [("a.jsonl", "beir"), ("a.json.gz", "beir"), ("A.TSV", "tsv"), ("dir.x/a.txt.gz", "tsv")],
)
def test_corpus_format(name, fmt):
    assert corpus_format(name) == fmt


@pytest.mark.parametrize("name", ["corpus.csv", "corpus.gz", "corpus.jsonl.bz2", "corpus"])
def test_unknown_extension(tmp_path, name):
    path = write(tmp_path / name, BEIR)
    with pytest.raises(ValueError, match="unknown corpus format"):
        list(read_corpus(path))


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"nope\.jsonl"):
        list(read_corpus(tmp_path / "nope.jsonl"))
    with pytest.raises(FileNotFoundError):
        read_qrels(tmp_path / "nope.tsv")


# ---------------------------------------------------------------- bad input
@pytest.mark.parametrize("name", ["c.jsonl", "c.jsonl.gz"])
def test_line_that_is_not_json_names_file_and_line(tmp_path, name):
    path = write(tmp_path / name, jsonl({"_id": "a", "text": "ok"}) + '{"_id": "b", "text": \n')
    with pytest.raises(ValueError, match=at(path, 2) + ": not valid JSON"):
        list(read_corpus(path))


def test_json_that_is_not_an_object(tmp_path):
    path = write(tmp_path / "c.jsonl", '["d1", "text"]\n')
    with pytest.raises(ValueError, match=at(path, 1) + ": expected a JSON object"):
        list(read_corpus(path))


@pytest.mark.parametrize("obj", [{"text": "no id"}, {"_id": None, "text": "null id"}])
def test_missing_id_names_file_line_and_field(tmp_path, obj):
    path = write(tmp_path / "c.jsonl", jsonl({"_id": "a", "text": "ok"}, obj))
    with pytest.raises(ValueError, match=at(path, 2) + ".*'_id'"):
        list(read_corpus(path))


def test_non_scalar_id(tmp_path):
    path = write(tmp_path / "c.jsonl", jsonl({"_id": ["a"], "text": "x"}))
    with pytest.raises(ValueError, match=at(path, 1) + ": field '_id' must be a string, got list"):
        list(read_corpus(path))


@pytest.mark.parametrize(
    ("obj", "field", "kind"),
    [
        ({"_id": "a", "text": 5}, "text", "int"),
        ({"_id": "a", "title": ["t"], "text": "x"}, "title", "list"),
        ({"_id": "a", "title": "t", "text": {"x": 1}}, "text", "dict"),
    ],
)
def test_non_string_text_names_field(tmp_path, obj, field, kind):
    path = write(tmp_path / "c.jsonl", "\n" + jsonl(obj))
    with pytest.raises(ValueError, match=at(path, 2) + f": field '{field}' must be a string, got {kind}"):
        list(read_corpus(path))


@pytest.mark.parametrize(
    ("name", "content"),
    [
        ("c.jsonl", jsonl({"_id": "a", "text": "1"}, {"_id": "b", "text": "2"}, {"_id": "a", "text": "3"})),
        ("c.jsonl", jsonl({"_id": 5, "text": "1"}, {"_id": "b", "text": "2"}, {"_id": "5", "text": "3"})),
        ("c.tsv", "a\t1\nb\t2\na \t3\n"),
    ],
)
def test_duplicate_id_names_both_lines(tmp_path, name, content):
    path = write(tmp_path / name, content)
    with pytest.raises(ValueError, match=at(path, 3) + r": duplicate id .* \(first at line 1\)"):
        list(read_corpus(path))


def test_duplicate_id_error_comes_after_the_earlier_records(tmp_path):
    path = write(tmp_path / "c.tsv", "a\t1\nb\t2\na\t3\n")
    it = read_corpus(path)
    assert [next(it).id, next(it).id] == ["a", "b"]
    with pytest.raises(ValueError, match="duplicate"):
        next(it)


@pytest.mark.parametrize(
    ("content", "message"),
    [("a\t1\nno tab here\n", "expected 'id<TAB>text'"), ("a\t1\n  \tsome text\n", "empty id")],
)
def test_bad_tsv_line(tmp_path, content, message):
    path = write(tmp_path / "c.tsv", content)
    with pytest.raises(ValueError, match=at(path, 2) + ": " + re.escape(message)):
        list(read_corpus(path))


def test_empty_beir_id(tmp_path):
    path = write(tmp_path / "c.jsonl", jsonl({"_id": "", "text": "x"}))
    with pytest.raises(ValueError, match=at(path, 1) + ": empty id"):
        list(read_corpus(path))


def test_blank_lines_are_skipped_but_counted(tmp_path):
    a, b = jsonl({"_id": "a", "text": "1"}), jsonl({"_id": "b", "text": "2"})
    content = "\n" + a + "   \n\t\r\n" + b + "\n"
    path = write(tmp_path / "c.jsonl", content)
    assert read(path) == [("a", "1", 2), ("b", "2", 5)]
    write(path, content + "\n\nnot json\n")
    with pytest.raises(ValueError, match=at(path, 9)):
        list(read_corpus(path))


def test_read_lines_numbers_physical_lines(tmp_path):
    path = write(tmp_path / "x.txt.gz", "one\n\ntwo\r\n \nthree")
    assert list(read_lines(path)) == [(1, "one"), (3, "two"), (5, "three")]


@pytest.mark.parametrize(
    ("name", "line"),
    [
        ("c.jsonl", b'{"_id": "d2", "title": "Caf\xe9", "text": "au lait \xff\xfe"}\n'),
        ("c.jsonl.gz", b'{"_id": "d2", "title": "Caf\xe9", "text": "au lait \xff\xfe"}\n'),
        ("c.tsv", b"d2\tCaf\xe9 au lait \xff\xfe\n"),
    ],
)
def test_non_utf8_bytes_are_replaced_and_logged(tmp_path, caplog, name, line):
    first = b"d1\tfine\n" if name.endswith(".tsv") else jsonl({"_id": "d1", "text": "fine"}).encode()
    path = write(tmp_path / name, first + line + first.replace(b"d1", b"d3"))
    with caplog.at_level(logging.WARNING, logger="indexer.corpus"):
        records = read(path)
    assert records == [("d1", "fine", 1), ("d2", "Caf\ufffd au lait \ufffd\ufffd", 2), ("d3", "fine", 3)]
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    message = warnings[0].getMessage()
    assert str(path) in message
    assert "1 line(s)" in message and "first at line 2" in message


def test_non_utf8_lines_give_one_warning_per_file(tmp_path, caplog):
    content = b"a\tok\n\nb\t\xe9\nc\tok\nd\t\xe9\xe9\n"
    path = write(tmp_path / "c.tsv", content)
    with caplog.at_level(logging.WARNING, logger="indexer.corpus"):
        assert [r.id for r in read_corpus(path)] == ["a", "b", "c", "d"]
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 1
    assert "2 line(s)" in messages[0] and "first at line 3" in messages[0]


def test_clean_file_logs_nothing(tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="indexer.corpus"):
        read(write(tmp_path / "c.jsonl", BEIR))
    assert caplog.records == []


@pytest.mark.parametrize(
    ("name", "content"),
    [
        ("c.jsonl", jsonl({"_id": "a", "title": " ", "text": "\t  "})),
        ("c.jsonl", jsonl({"_id": "a", "text": ""})),
        ("c.jsonl", jsonl({"_id": "a"})),
        ("c.jsonl", jsonl({"_id": "a", "title": None, "text": None})),
        ("c.tsv", "a\t   \n"),
        ("c.tsv", "a\t\t\n"),
    ],
)
def test_empty_or_whitespace_text_is_yielded_as_empty(tmp_path, name, content):
    assert read(write(tmp_path / name, content)) == [("a", "", 1)]


def test_truncated_gzip_names_file_and_last_line(tmp_path):
    data = gzip.compress(jsonl(*({"_id": f"d{i}", "text": f"text {i} " * 40} for i in range(50))).encode())
    path = tmp_path / "c.jsonl.gz"
    path.write_bytes(data[: len(data) // 2])
    got = []
    with pytest.raises(ValueError, match=re.escape(str(path)) + ": cannot read past line"):
        got.extend(r.id for r in read_corpus(path))
    assert got == [f"d{i}" for i in range(len(got))]


# -------------------------------------------------------------------- qrels
def test_read_qrels_beir_tsv_with_header(tmp_path):
    path = write(tmp_path / "test.tsv", "query-id\tcorpus-id\tscore\nq1\td1\t1\nq1\td2\t0\n2\td1\t2\n")
    assert read_qrels(path) == {"q1": {"d1": 1, "d2": 0}, "2": {"d1": 2}}


@pytest.mark.parametrize("name", ["qrels.txt", "qrels.txt.gz"])
def test_read_qrels_trec(tmp_path, name):
    path = write(tmp_path / name, "q1 0 d1 1\nq1 0 d2 2\n\nq2 Q0 d1 0\n")
    assert read_qrels(path) == {"q1": {"d1": 1, "d2": 2}, "q2": {"d1": 0}}


QRELS_COLUMNS = "expected 3 (BEIR) or 4 (TREC) columns"


@pytest.mark.parametrize(
    ("content", "line", "message"),
    [
        ("query-id\tcorpus-id\tscore\nq1\td1\t1\nq1\td2\n", 3, f"{QRELS_COLUMNS}, got 2"),
        ("q1 0 d1 1\n\nq1 0 d2 1 extra\n", 3, f"{QRELS_COLUMNS}, got 5"),
        ("q1\td1\t1\nq1\td2\thigh\n", 2, "relevance 'high' is not an integer"),
        ("q1\td1\t1\nquery-id\tcorpus-id\tscore\n", 2, "relevance 'score' is not an integer"),
    ],
)
def test_read_qrels_bad_line_names_file_and_line(tmp_path, content, line, message):
    path = write(tmp_path / "qrels.tsv", content)
    with pytest.raises(ValueError, match=at(path, line) + ": " + re.escape(message)):
        read_qrels(path)
