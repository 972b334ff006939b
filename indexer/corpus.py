"""Corpus readers: BEIR JSON lines (``_id``, ``title``, ``text``) and TSV (``id<TAB>text``), gzip or not.

Behaviour on bad input, one rule each:

- a line that is not JSON (or nests too deep to parse), lacks an id, or has a non-string
  ``title``/``text``: ``ValueError`` naming file and line;
- an id that is empty or holds whitespace or a control character (it could not be a column of a
  TREC run): ``ValueError`` naming file, line and the id (:func:`check_id`);
- the same id twice: ``ValueError`` naming both lines;
- a directory instead of a file: ``FileNotFoundError`` saying it is a directory;
- a UTF-16 or UTF-32 file (a byte-order mark, or NUL bytes in the first line): ``ValueError``
  naming the encoding; a UTF-8 byte-order mark is skipped;
- bytes that are not UTF-8: replaced by U+FFFD, with one warning per file naming the first line
  and the count (the rest of the text is still worth encoding);
- blank lines: skipped;
- a record whose title and text are empty or whitespace: yielded with ``text == ""`` (it encodes
  to an empty vector, which the encoder counts and reports);
- a record without a ``text`` field: read as its title alone (or as empty text), with one warning
  per file naming the first such line and the count; a record with Pyserini's ``contents`` field
  instead of ``text`` is a ``ValueError`` naming file and line (the wrong corpus layout).
"""

from __future__ import annotations

import gzip
import json
import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

# Whitespace (str.split's, which TREC run readers split on), control characters, lone surrogates.
_BAD_ID_CHAR = re.compile(r"[\s\x00-\x1f\x7f-\x9f\ud800-\udfff]")
_BOMS = (
    (b"\xff\xfe\x00\x00", "UTF-32"),
    (b"\x00\x00\xfe\xff", "UTF-32"),
    (b"\xff\xfe", "UTF-16"),
    (b"\xfe\xff", "UTF-16"),
)
_UTF8_BOM = b"\xef\xbb\xbf"


@dataclass(frozen=True)
class Record:
    id: str
    text: str
    line: int


def open_binary(path: Path):
    return gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")


def corpus_format(path: str | Path) -> str:
    """``"beir"`` for ``.jsonl``/``.json``, ``"tsv"`` for ``.tsv``/``.txt`` (a trailing ``.gz`` ignored)."""
    name = Path(path).name.lower().removesuffix(".gz")
    if name.endswith((".jsonl", ".json")):
        return "beir"
    if name.endswith((".tsv", ".txt")):
        return "tsv"
    raise ValueError(f"{path}: unknown corpus format; expected .jsonl, .json, .tsv or .txt (optionally .gz)")


def read_lines(path: str | Path, what: str = "corpus") -> Iterator[tuple[int, str]]:
    """(line number, decoded line without its newline) for non-blank lines; see module doc on UTF-8.

    ``what`` names the file in errors (``"corpus file not found: ..."``).
    """
    path = Path(path)
    check_file(path, what)
    bad, first_bad, lineno = 0, 0, 0
    try:
        with open_binary(path) as f:
            for lineno, raw in enumerate(f, start=1):
                if lineno == 1:
                    raw = _first_line(path, raw)
                try:
                    line = raw.decode("utf-8")
                except UnicodeDecodeError:
                    line = raw.decode("utf-8", errors="replace")
                    bad += 1
                    first_bad = first_bad or lineno
                line = line.rstrip("\r\n")
                if line.strip():
                    yield lineno, line
    except (EOFError, gzip.BadGzipFile, OSError) as e:
        raise ValueError(f"{path}: cannot read past line {lineno}: {e}") from None
    finally:
        if bad:
            log.warning(
                "%s: %d line(s) held bytes that are not UTF-8 (first at line %d); replaced by U+FFFD",
                path,
                bad,
                first_bad,
            )


def check_file(path: Path, what: str = "corpus") -> None:
    """``FileNotFoundError`` unless ``path`` is a file; a directory is named one."""
    if path.is_dir():
        hint = ""
        if what == "corpus" and (path / "corpus.jsonl").is_file():
            hint = f" (a BEIR folder: pass {path / 'corpus.jsonl'} or {path / 'queries.jsonl'})"
        raise FileNotFoundError(f"{what} file not found: {path} is a directory{hint}")
    if not path.is_file():
        raise FileNotFoundError(f"{what} file not found: {path}")


def _first_line(path: Path, raw: bytes) -> bytes:
    """The first line without a UTF-8 byte-order mark; a UTF-16/32 file is refused, naming it."""
    for bom, name in _BOMS:
        if raw.startswith(bom):
            raise ValueError(
                f"{path}: the file is {name} (it starts with a {name} byte-order mark); lsr reads UTF-8: "
                f"convert it, e.g. iconv -f {name} -t UTF-8"
            )
    if b"\x00" in raw:
        raise ValueError(
            f"{path}:1: NUL bytes: the file looks UTF-16 or UTF-32 without a byte-order mark (or binary); "
            "lsr reads UTF-8: convert it, e.g. iconv -f UTF-16 -t UTF-8"
        )
    return raw.removeprefix(_UTF8_BOM)


def parse_json(path: Path, lineno: int, line: str):
    """``json.loads(line)``; what cannot be read is a ``ValueError`` naming file and line."""
    try:
        return json.loads(line)
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}:{lineno}: not valid JSON ({e.msg} at column {e.colno})") from None
    except RecursionError:
        raise ValueError(f"{path}:{lineno}: JSON nested too deeply to read") from None
    except ValueError as e:  # an integer of more than 4300 digits
        raise ValueError(f"{path}:{lineno}: cannot read this JSON ({e})") from None


def id_problem(rid: str) -> str | None:
    """Why ``rid`` cannot be a column of a TREC run (``None`` when it can): empty, or holding
    whitespace, a control character or a lone surrogate."""
    if not rid:
        return "is empty"
    m = _BAD_ID_CHAR.search(rid)
    if m is None:
        return None
    c = m.group()
    kind = "whitespace" if c.isspace() else "a lone surrogate" if "\ud800" <= c else "a control character"
    return f"holds {kind} ({c!r} at position {m.start()}); TREC runs are split on whitespace"


def check_id(where: str, rid: str) -> None:
    """``ValueError`` naming ``where`` (``file:line``) and the id when :func:`id_problem` finds one."""
    if not rid:
        raise ValueError(f"{where}: empty id")
    problem = id_problem(rid)
    if problem:
        raise ValueError(f"{where}: id {rid!r} {problem}")


def read_corpus(path: str | Path, title: bool = True) -> Iterator[Record]:
    """Records of a BEIR or TSV corpus. BEIR text is ``title + " " + text`` when ``title``."""
    path = Path(path)
    check_file(path)  # before the format: a BEIR folder has no extension to complain about
    fmt = corpus_format(path)
    seen: dict[str, int] = {}
    no_text: list[int] = []
    try:
        for lineno, line in read_lines(path):
            if fmt == "tsv":
                rid, sep, text = line.partition("\t")
                if not sep:
                    raise ValueError(f"{path}:{lineno}: expected 'id<TAB>text'")
                rid = rid.strip()
                text = text.replace("\t", " ")
            else:
                rid, text, has_text = _beir_record(path, lineno, line, title)
                if not has_text:
                    no_text.append(lineno)
            check_id(f"{path}:{lineno}", rid)
            if rid in seen:
                raise ValueError(f"{path}:{lineno}: duplicate id {rid!r} (first at line {seen[rid]})")
            seen[rid] = lineno
            yield Record(rid, text.strip(), lineno)
    finally:
        if no_text:
            log.warning(
                "%s: %d record(s) have no 'text' field (first at line %d); read as their title alone, "
                "or as empty text",
                path,
                len(no_text),
                no_text[0],
            )


def _beir_record(path: Path, lineno: int, line: str, title: bool) -> tuple[str, str, bool]:
    """(id, text, whether the record has a ``text`` field)."""
    obj = parse_json(path, lineno, line)
    if not isinstance(obj, dict):
        raise ValueError(f"{path}:{lineno}: expected a JSON object, got {type(obj).__name__}")
    rid = obj.get("_id", obj.get("id"))
    if rid is None:
        raise ValueError(f"{path}:{lineno}: missing field '_id'")
    if isinstance(rid, bool) or not isinstance(rid, str | int):
        raise ValueError(f"{path}:{lineno}: field '_id' must be a string, got {type(rid).__name__}")
    if "text" not in obj and "contents" in obj:
        raise ValueError(
            f"{path}:{lineno}: missing field 'text' (found 'contents': that is Pyserini's JsonCollection "
            "layout; a BEIR corpus line holds '_id', 'title' and 'text')"
        )
    parts = []
    for field in ("title", "text") if title else ("text",):
        value = obj.get(field, "")
        if value is None:
            value = ""
        if not isinstance(value, str):
            raise ValueError(f"{path}:{lineno}: field {field!r} must be a string, got {type(value).__name__}")
        if value.strip():
            parts.append(value.strip())
    return str(rid), " ".join(parts), "text" in obj


def read_qrels(path: str | Path) -> dict[str, dict[str, int]]:
    """BEIR TSV qrels (``query-id corpus-id score`` with a header) or TREC qrels (``qid 0 docid rel``)."""
    path = Path(path)
    qrels: dict[str, dict[str, int]] = {}
    for lineno, line in read_lines(path, "qrels"):
        cols = line.split()
        if lineno == 1 and cols[:1] == ["query-id"]:
            continue
        if len(cols) == 3:
            qid, did, rel = cols
        elif len(cols) == 4:
            qid, _, did, rel = cols
        else:
            raise ValueError(f"{path}:{lineno}: expected 3 (BEIR) or 4 (TREC) columns, got {len(cols)}")
        try:
            qrels.setdefault(qid, {})[did] = int(rel)
        except ValueError:
            raise ValueError(f"{path}:{lineno}: relevance {rel!r} is not an integer") from None
    return qrels
