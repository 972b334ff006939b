"""Anserini's JsonVectorCollection: one ``{"id", "contents", "vector": {token: weight}}`` per line.

Float weights are written in their shortest float32 form; integer impacts as integers, with terms
escaped (:func:`escape_term`) as Anserini's ``-pretokenized`` indexing needs. So a file whose weights
are all integers (:func:`impact_mode` ``"given"``) holds escaped terms, and every reader of one
unescapes them (:func:`iter_vectors` with ``escaped=True``): in memory and in the native index terms
are always raw, and they are escaped once, at the Lucene boundary (staged collection, query terms).
Files ending in ``.gz`` are gzip; appends add a gzip member, which every gzip reader follows.

What a vector file may hold, checked where it is read (documents for either backend, and
pre-encoded queries), each breach a ``ValueError`` naming file, line and the id or term:

- ids: non-empty, without whitespace or control characters (they are columns of TREC runs);
- terms: at most ``MAX_TERM_LENGTH`` = 255 characters once escaped, counted as Lucene counts
  them (UTF-16 code units: a character above U+FFFF counts two). Lucene's whitespace tokenizer
  silently cuts longer tokens into 255-character pieces: its own query would not find such a
  term, and a query for its first 255 characters would. The native index refuses it too, so both
  backends hold the same terms; a pre-encoded query file holding one is refused the same way
  (a query term that long could match nothing on either backend);
- weights: finite numbers >= 0 whose impact fits the quantization range (:mod:`indexer.quantize`;
  :func:`check_weights`).
"""

from __future__ import annotations

import gzip
import json
import math
import os
import re
from collections.abc import Iterator, Sequence
from itertools import islice
from pathlib import Path

from indexer.corpus import check_id, parse_json, read_lines
from indexer.quantize import is_beyond_range, range_message
from lsr.sparse import SparseBatch

# Lucene's WhitespaceTokenizer (CharTokenizer's default): longer tokens are split into pieces.
MAX_TERM_LENGTH = 255
# Terms this short fit whatever they hold: an escape is at most 6 code units a character.
_SHORT_TERM = MAX_TERM_LENGTH // 6


def _escape_of(char: str) -> str:
    code = ord(char)
    return f"%{code:02X}" if code < 0x100 else f"%u{code:04X}"


# Every escape escape_term writes -> its character: whitespace (U+3000 is the last, so four hex
# digits do; tests/test_jsonvector.py checks both) and "%25" for a '%' that would otherwise read as one.
_LAST_SPACE = 0x3000
_ESCAPES = {_escape_of(c): c for c in map(chr, range(_LAST_SPACE + 1)) if c.isspace() or c == "%"}
_ESCAPE = re.compile(r"\s|%(?=" + "|".join(e[1:] for e in _ESCAPES) + ")")
_UNESCAPE = re.compile("|".join(_ESCAPES))


def escape_term(term: str) -> str:
    """``term`` as Anserini's ``-pretokenized`` indexing can hold it: no whitespace, one-to-one.

    Each whitespace character becomes ``%XX`` (``%uXXXX`` above U+00FF), and a ``%`` that would
    otherwise read as the start of such an escape or of ``%25`` (``"%0A"``, ``"%20"``, ``"%25"``,
    ``"%u3000"``) becomes ``%25``; everything else, a lone ``%`` included, is kept. So the escape is
    injective (a ``"%0A"`` piece and ``"\n"`` stay two terms; :func:`unescape_term` is its inverse)
    and not idempotent: escape a term exactly once. BERT's WordPiece vocabulary (``%``, ``##%``,
    ``##`` pieces, non-ASCII tokens), SmolLM2's byte-level BPE and sentencepiece vocabularies hold no
    whitespace and no such sequence, so for them it is the identity: Anserini's own query encoders
    and Lucene indexes built before the ``%25`` rule see the same terms.

    Parameters
    ----------
    term : str
        A raw vocabulary piece.

    Returns
    -------
    str
        The escaped term.
    """
    return _ESCAPE.sub(lambda m: _escape_of(m.group()), term)


def unescape_term(term: str) -> str:
    """The inverse of :func:`escape_term`: ``unescape_term(escape_term(t)) == t`` for every string.

    Only the sequences :func:`escape_term` writes are read (``%25`` and the escapes of whitespace
    characters, upper-case hex); any other ``%`` is kept as it is. An impact file written before
    ``%25`` existed (``%`` was never escaped) reads back unchanged except for a term that held such a
    sequence literally: a ``"%0A"`` or ``"%20"`` piece there reads as ``"\n"`` or ``" "`` (that file
    had merged the two already), and a literal ``"%25"`` before ``0A`` and the like reads as ``%``.

    Parameters
    ----------
    term : str
        A term as an integer-impact file or a Lucene index holds it.

    Returns
    -------
    str
        The raw term.
    """
    return _UNESCAPE.sub(lambda m: _ESCAPES[m.group()], term) if "%" in term else term


def term_length(term: str) -> int:
    """The length Lucene sees: UTF-16 code units of the escaped term (see module doc)."""
    escaped = escape_term(term)
    return len(escaped) if escaped.isascii() else len(escaped.encode("utf-16-le")) // 2


def format_lines(ids: Sequence[str], batch: SparseBatch, impacts: bool = False) -> list[str]:
    """JsonVectorCollection lines (with newline) for the rows of ``batch``.

    With ``impacts`` the weights (already quantized, see :mod:`indexer.quantize`) are written as
    integers and the terms escaped (:func:`escape_term`), as Anserini indexes them; readers take
    them back with ``iter_vectors(path, escaped=True)``.
    """
    if len(ids) != len(batch):
        raise ValueError(f"{len(ids)} ids for {len(batch)} vectors")
    vocab = [escape_term(t) for t in batch.vocab] if impacts else batch.vocab
    tokens = [json.dumps(t, ensure_ascii=False) for t in vocab] if len(vocab) < 200_000 else None
    lines = []
    for rid, (term_ids, weights) in zip(ids, batch, strict=True):
        values = [str(int(w)) for w in weights] if impacts else [str(w) for w in weights]
        names = [tokens[t] if tokens else json.dumps(vocab[t], ensure_ascii=False) for t in term_ids.tolist()]
        body = ", ".join(f"{n}: {v}" for n, v in zip(names, values, strict=True))
        lines.append(
            f'{{"id": {json.dumps(rid, ensure_ascii=False)}, "contents": "", "vector": {{{body}}}}}\n'
        )
    return lines


def append_lines(path: Path, lines: list[str]) -> None:
    """Append and fsync, so a crash after return never loses these lines."""
    data = "".join(lines).encode("utf-8")
    if path.suffix == ".gz":
        with open(path, "ab") as raw:
            with gzip.GzipFile(fileobj=raw, mode="wb") as gz:
                gz.write(data)
            raw.flush()
            os.fsync(raw.fileno())
    else:
        with open(path, "ab") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())


def read_vectors(path: str | Path, escaped: bool = False) -> Iterator[tuple[str, dict[str, float]]]:
    """(id, {token: weight}) per line; a malformed line raises ``ValueError`` naming file and line.

    The id must be a non-empty string (an integer is taken as its decimal string); ``null``, ``""``,
    booleans, lists and objects are refused rather than indexed as ``"None"`` and the like, and so
    are ids holding whitespace or control characters and terms over ``MAX_TERM_LENGTH`` (module doc).
    With ``escaped`` (an integer-impact file) the terms come back unescaped (:func:`iter_vectors`).
    """
    for _, rid, vector in iter_vectors(path, escaped):
        yield rid, vector


def iter_vectors(path: str | Path, escaped: bool = False) -> Iterator[tuple[int, str, dict[str, float]]]:
    """(line number, id, {token: weight}) per non-blank line (see :func:`read_vectors`).

    Ids and term lengths are checked here (module doc); weights by :func:`check_weights`. With
    ``escaped`` the file's terms are escaped (an integer-impact file, :func:`format_lines` with
    ``impacts``) and come back raw (:func:`unescape_term`); two terms of one line that read as the
    same raw term (possible only in a file not written by :func:`format_lines`) are an error.
    """
    path = Path(path)
    for lineno, rid, vector in _records(path):
        if escaped:
            vector = _unescaped(path, lineno, rid, vector)
        for tok in vector:
            if len(tok) > _SHORT_TERM and term_length(tok) > MAX_TERM_LENGTH:
                shown = repr(tok) if len(tok) <= 60 else f"{tok[:40]!r}... ({len(tok)} characters)"
                raise ValueError(
                    f"{path}:{lineno}: vector {rid!r}, term {shown}: {term_length(tok)} characters "
                    f"once escaped, over the limit of {MAX_TERM_LENGTH} (Lucene would split it)"
                )
        yield lineno, rid, vector


def _records(path: Path) -> Iterator[tuple[int, str, dict]]:
    """(line number, id, vector) per non-blank line, the id and the vector's type checked."""
    for lineno, line in read_lines(path, "vector"):
        obj = parse_json(path, lineno, line)
        if not isinstance(obj, dict):
            raise ValueError(
                f"{path}:{lineno}: missing field 'id' (the line is a JSON {_kind(obj)}, not an object)"
            )
        if "id" not in obj:
            raise ValueError(f"{path}:{lineno}: missing field 'id'")
        rid = obj["id"]
        if isinstance(rid, bool) or not isinstance(rid, str | int) or rid == "":
            raise ValueError(f"{path}:{lineno}: field 'id' must be a non-empty string, got {_kind(rid)}")
        rid = str(rid)
        check_id(f"{path}:{lineno}", rid)
        vector = obj.get("vector")
        if not isinstance(vector, dict):
            got = "the line has none" if "vector" not in obj else f"got a JSON {_kind(vector)}"
            raise ValueError(f"{path}:{lineno}: field 'vector' must be an object {{token: weight}}; {got}")
        yield lineno, rid, vector


def _unescaped(path: Path, lineno: int, rid: str, vector: dict) -> dict:
    raw = {unescape_term(tok): w for tok, w in vector.items()}
    if len(raw) < len(vector):
        first: dict[str, str] = {}
        for tok in vector:
            term = unescape_term(tok)
            if term in first:
                raise ValueError(
                    f"{path}:{lineno}: vector {rid!r}: terms {first[term]!r} and {tok!r} both unescape "
                    f"to {term!r} (an integer-impact file holds terms escaped by escape_term)"
                )
            first[term] = tok
    return raw


def _kind(value) -> str:
    """How a JSON value reads in an error message: ``null``, ``list``, ``'' (empty)``..."""
    if value is None:
        return "null"
    if value == "":
        return "'' (empty)"
    return {dict: "object", list: "list", str: "string", bool: "boolean", float: "number"}.get(
        type(value), type(value).__name__
    )


def check_weights(
    where: str, rid: str, vector: dict, scale: float | None = None, given: bool = False
) -> None:
    """Every term non-empty, every weight a finite number >= 0; ``ValueError`` naming ``where`` otherwise.

    With ``scale`` (float weights to be quantized) or ``given`` (integer impacts indexed as they
    are), a weight whose impact would exceed the range of :mod:`indexer.quantize` is refused too.
    """
    for tok, w in vector.items():
        if not tok:
            raise ValueError(f"{where}: document {rid!r} has an empty term")
        if isinstance(w, bool) or not isinstance(w, int | float):
            raise ValueError(f"{where}: document {rid!r}, term {tok!r}: weight {w!r} is not a number")
        # An int is finite, and math.isfinite cannot take one beyond 1e308.
        if (isinstance(w, float) and not math.isfinite(w)) or w < 0:
            raise ValueError(f"{where}: document {rid!r}, term {tok!r}: weight {w} must be finite and >= 0")
        if (given or scale is not None) and is_beyond_range(w, scale, given):
            raise ValueError(f"{where}: document {rid!r}, term {tok!r}: {range_message(w, scale, given)}")


def impact_mode(paths: Sequence[Path]) -> str:
    """``"given"`` when every weight of every file is a JSON integer (pre-quantized, Anserini's
    convention), ``"lsr"`` when none of the files is; mixing the two is an error (two scales)."""
    integer = {Path(p): _all_integer(Path(p)) for p in paths}
    if len(set(integer.values())) > 1:
        given = [str(p) for p, flag in integer.items() if flag]
        raise ValueError(
            f"mixing pre-quantized (integer) and float vector files: {', '.join(given)} hold integers only"
        )
    return "given" if all(integer.values()) else "lsr"


def _all_integer(path: Path) -> bool:
    # Terms are checked by the pass that reads them (escaped or not, which this decides).
    return all(
        isinstance(w, int) and not isinstance(w, bool) for _, _, vec in _records(path) for w in vec.values()
    )


def load_batch(path: str | Path, vocab: Sequence[str]) -> tuple[list[str], SparseBatch]:
    """A whole JsonVectorCollection file as ids and one :class:`SparseBatch` over ``vocab``."""
    ids, vectors = [], []
    for rid, vec in read_vectors(path):
        ids.append(rid)
        vectors.append(vec)
    try:
        return ids, SparseBatch.from_dicts(vectors, vocab)
    except (KeyError, ValueError) as e:
        raise ValueError(f"{path}: {e.args[0]}") from None


def recover(path: Path) -> set[str]:
    """Ids already complete in an output file being resumed; a torn tail is cut off first.

    A crash can leave a half-written last line (plain) or a truncated gzip member: everything
    up to the last complete, parseable line is kept and the rest removed, atomically for gzip.
    """
    if not path.exists():
        return set()
    gz = path.suffix == ".gz"
    done: list[str] = []
    good_bytes = 0
    torn = False
    try:
        with (gzip.open if gz else open)(path, "rb") as f:
            for raw in f:
                rid = _complete_id(raw)
                if rid is None:
                    torn = True
                    break
                done.append(rid)
                good_bytes += len(raw)
    except (EOFError, gzip.BadGzipFile, OSError):
        if not gz:
            raise
        torn = True
    if torn and gz:
        # A gzip stream cannot be cut short in place: the good lines go to a new member.
        tmp = path.with_name(path.name + ".recover")
        with gzip.open(path, "rb") as src, gzip.open(tmp, "wb") as dst:
            dst.writelines(islice(src, len(done)))
        os.replace(tmp, path)
    elif torn:
        with open(path, "r+b") as f:
            f.truncate(good_bytes)
    return set(done)


def _complete_id(raw: bytes) -> str | None:
    if not raw.endswith(b"\n"):
        return None
    try:
        obj = json.loads(raw)
        return str(obj["id"])
    except (ValueError, KeyError, TypeError, RecursionError):
        return None
