"""Corpus readers: BEIR JSON lines (``_id``, ``title``, ``text``) and TSV (``id<TAB>text``), gzip or not.

Behaviour on bad input, one rule each:

- a line that is not JSON, lacks an id, or has a non-string ``title``/``text``: ``ValueError``
  naming file and line;
- the same id twice: ``ValueError`` naming both lines;
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
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)


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


def read_lines(path: str | Path) -> Iterator[tuple[int, str]]:
    """(line number, decoded line without its newline) for non-blank lines; see module doc on UTF-8."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"corpus file not found: {path}")
    bad, first_bad, lineno = 0, 0, 0
    try:
        with open_binary(path) as f:
            for lineno, raw in enumerate(f, start=1):
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


def read_corpus(path: str | Path, title: bool = True) -> Iterator[Record]:
    """Records of a BEIR or TSV corpus. BEIR text is ``title + " " + text`` when ``title``."""
    path = Path(path)
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
            if not rid:
                raise ValueError(f"{path}:{lineno}: empty id")
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
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}:{lineno}: not valid JSON ({e.msg} at column {e.colno})") from None
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
    for lineno, line in read_lines(path):
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
