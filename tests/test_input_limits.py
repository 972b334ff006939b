"""Limits on what the readers take, from an outside probe of ``lsr``; cases that failed before the fix,
and the boundaries that must keep working:

- a huge text is tokenized from a bounded prefix, once, with the tokens of the whole text;
- ids are TREC run columns: no whitespace or control characters, wherever they are read or written;
- a term over 255 characters once escaped (Lucene would split it) is refused by both backends;
- a weight whose impact exceeds the quantization range is an error, never clipped or dropped;
- thin messages: deep JSON, a directory, UTF-16, an empty corpus, an integer of 5,000 digits.
"""

from __future__ import annotations

import json
import random
import re
from pathlib import Path
from types import SimpleNamespace

import pytest

from indexer import jsonvector
from indexer.jsonvector import read_vectors
from lsr import tokenize
from lsr.tokenize import Tokenizer
from plugin.cli import main
from tests.conftest import TINY_WORDS, needs_java, write_tiny_tokenizer

BACKENDS = ["native", pytest.param("lucene", marks=needs_java)]
HUGE = "the heart of a mouse, and the blood. " * 30_000  # ~1.1 MB
WORDS = TINY_WORDS[:40]


def jsonl(path: Path, *records) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    return path


def fails(rc: int, capsys, message: str) -> str:
    """Exit 2 and ``message`` (a regex) in the error line; returns stderr."""
    err = capsys.readouterr().err
    assert rc == 2, err
    assert re.search(message, err), f"{message!r} not in stderr:\n{err}"
    return err


@pytest.fixture
def encoder_dir(tiny_bert_dir, exported) -> Path:
    return exported(tiny_bert_dir, "splade")


class _Spy:
    """Stands in for a ``tokenizers.Tokenizer`` and records the length of every text it is given."""

    def __init__(self, tok):
        self._tok = tok
        self.lengths: list[int] = []

    def encode_batch(self, texts, **kwargs):
        self.lengths += [len(t) for t in texts]
        return self._tok.encode_batch(texts, **kwargs)

    def encode(self, text, **kwargs):
        self.lengths.append(len(text))
        return self._tok.encode(text, **kwargs)

    def __getattr__(self, name):
        return getattr(self._tok, name)


def _byte_level_bpe(directory: Path) -> Path:
    """A GPT-2 style byte-level BPE (SmolLM2's kind), trained here on a few sentences."""
    from tokenizers import Tokenizer as HF
    from tokenizers import models, pre_tokenizers, trainers

    tok = HF(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.train_from_iterator(
        [HUGE[:5000], "café au lait, 東京 tower"] * 3, trainers.BpeTrainer(vocab_size=300)
    )
    path = directory / "bpe.json"
    tok.save(str(path))
    return path


def _metaspace_bpe(directory: Path) -> Path:
    """A Llama/Mistral style BPE: merges learnt word by word, applied over the whole text at once."""
    from tokenizers import Tokenizer as HF
    from tokenizers import models, normalizers, pre_tokenizers, trainers

    tok = HF(models.BPE(byte_fallback=True, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.train_from_iterator([HUGE[:5000]] * 3, trainers.BpeTrainer(vocab_size=300, special_tokens=["<unk>"]))
    tok.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    tok.pre_tokenizer = pre_tokenizers.Metaspace(prepend_scheme="never", split=False)
    path = directory / "metaspace.json"
    tok.save(str(path))
    return path


def _cross_word_bpe(directory: Path) -> Path:
    """A BPE whose tokens span words (``▁a▁mouse▁and``): a cut before a space can change tokens."""
    from tokenizers import Tokenizer as HF
    from tokenizers import models, normalizers, trainers

    rng = random.Random(0)
    train = [" ".join(rng.choices(WORDS, k=rng.randint(2, 6))) for _ in range(3000)]
    tok = HF(models.BPE(byte_fallback=True, unk_token="<unk>"))
    tok.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    tok.train_from_iterator(train, trainers.BpeTrainer(vocab_size=400, special_tokens=["<unk>"]))
    path = directory / "cross.json"
    tok.save(str(path))
    return path


TOKENIZERS = {
    "wordpiece": write_tiny_tokenizer,
    "byte-level": _byte_level_bpe,
    "metaspace": _metaspace_bpe,
    "cross-word": _cross_word_bpe,
}


# ============================================================ 5. a huge text: a bounded prefix, once
@pytest.mark.parametrize("kind", ["wordpiece", "byte-level", "metaspace"])
@pytest.mark.parametrize("special", [True, False])
def test_a_huge_text_is_tokenized_from_a_bounded_prefix_with_the_whole_texts_tokens(tmp_path, kind, special):
    tok = Tokenizer(TOKENIZERS[kind](tmp_path), max_length=64)
    texts = [HUGE, "a tower", HUGE.replace(" ", "  "), "x" * 5000 + " " + HUGE[:3000]]
    whole = tok._tok.encode_batch(texts, add_special_tokens=special)  # today's: every character tokenized
    spy = tok._tok = _Spy(tok._tok)
    got = tok.encode(texts, special_tokens=special)
    assert [e.ids for e in got] == [e.ids for e in whole]
    assert [e.offsets for e in got] == [e.offsets for e in whole]
    assert [bool(e.overflowing) for e in got] == [True, False, True, True]
    # The prefix and its check: about 64 tokens x CHARS_PER_TOKEN (2,048) characters, not 1.1 MB.
    assert max(spy.lengths) < 10_000
    if not special:
        assert tok.token_ids(HUGE) == whole[0].ids


@pytest.mark.parametrize("kind", list(TOKENIZERS))
def test_prefixes_cut_close_to_the_kept_tokens_still_give_the_whole_texts_tokens(tmp_path, kind, monkeypatch):
    # One character a token: cuts land right after the tokens kept, where a cut could change them.
    monkeypatch.setattr(tokenize, "CHARS_PER_TOKEN", 1, raising=False)
    rng = random.Random(1)
    texts = [
        rng.choice([" ", "  ", "\n", " \t "]).join(
            rng.choices(WORDS + ["x" * 120, "東京", "a.b"], k=rng.randint(5, 90))
        )
        for _ in range(60)
    ]
    for max_length in (2, 5, 16):
        tok = Tokenizer(TOKENIZERS[kind](tmp_path), max_length=max_length)
        for special in (True, False):
            got = tok.encode(texts, special_tokens=special)
            whole = tok._tok.encode_batch(texts, add_special_tokens=special)
            assert [e.ids for e in got] == [e.ids for e in whole]
            assert [bool(e.overflowing) for e in got] == [bool(e.overflowing) for e in whole]


def test_a_prefix_without_enough_tokens_grows_to_the_whole_text(tmp_path):
    tok = Tokenizer(write_tiny_tokenizer(tmp_path), max_length=16)
    # WordPiece reads a word over 100 characters as one [UNK]: the first prefix holds too few tokens.
    text = " ".join(["y" * 150] * 40) + " the cell of a mouse" * 5
    (got,) = tok.encode([text])
    assert got.ids == tok._tok.encode(text).ids and got.overflowing


def test_encode_corpus_tokenizes_a_huge_document_once_from_a_prefix(encoder_dir, tmp_path, monkeypatch):
    from indexer.encode import encode_corpus
    from lsr.runtime import load_encoder

    corpus = jsonl(
        tmp_path / "corpus.jsonl", {"_id": "huge", "text": HUGE}, {"_id": "short", "text": "a cell"}
    )
    encoder = load_encoder(encoder_dir, "doc", max_length=32)
    spy = encoder.tokenizer._tok = _Spy(encoder.tokenizer._tok)
    stats = encode_corpus(encoder, corpus, tmp_path / "v.jsonl", show_progress=False)
    assert stats.truncated == 1 and stats.written == 2
    # Once (the truncation count no longer tokenizes again), from a prefix of about 32 x 32 characters.
    assert sum(spy.lengths) < 4_000

    # The vectors are today's, when the whole text was tokenized.
    monkeypatch.setattr(tokenize, "CHARS_PER_TOKEN", 10**9, raising=False)
    encode_corpus(encoder, corpus, tmp_path / "whole.jsonl", show_progress=False)
    got, want = dict(read_vectors(tmp_path / "v.jsonl")), dict(read_vectors(tmp_path / "whole.jsonl"))
    assert got.keys() == want.keys() and all(got[k] == pytest.approx(want[k], rel=1e-6) for k in got)
    assert max(spy.lengths) > 1_000_000  # the reference did tokenize the whole text


# ======================================================= 6. ids are columns of a TREC run
BAD_IDS = ["d\n1", "d\t1", "d 1", " d1", "d1\r", "d\x001", "d\x7f", "d\u00a01", "d\u20281", "d\x85"]


@pytest.mark.parametrize("rid", BAD_IDS, ids=[ascii(r) for r in BAD_IDS])
def test_encode_refuses_an_id_a_trec_run_cannot_hold(encoder_dir, tmp_path, capsys, rid):
    corpus = jsonl(
        tmp_path / "corpus.jsonl", {"_id": "a", "text": "the cell"}, {"_id": rid, "text": "a tower"}
    )
    out = tmp_path / "v.jsonl"
    rc = main(["encode", str(encoder_dir), str(corpus), str(out)])
    fails(rc, capsys, re.escape(f"{corpus}:2: id {rid!r} holds "))
    assert not out.exists() or "a tower" not in out.read_text()


def test_a_tsv_id_with_inner_whitespace_is_refused(tmp_path):
    from indexer.corpus import read_corpus

    path = tmp_path / "q.tsv"
    path.write_text(" q1 \tpadding around an id is stripped\nq 2\tbut not inside\n", encoding="utf-8")
    with pytest.raises(
        ValueError, match=re.escape(f"{path}:2: id 'q 2' holds whitespace (' ' at position 1)")
    ):
        list(read_corpus(path))
    assert next(iter(read_corpus(path))).id == "q1"


@pytest.mark.parametrize("rid", ["d\n1", "d 1", "d\x1f", "\ud800"], ids=ascii)
def test_vector_files_refuse_ids_a_trec_run_cannot_hold(tmp_path, capsys, rid):
    vectors = tmp_path / "v.jsonl"
    vectors.write_text(
        '{"id": "a", "vector": {"p": 1.0}}\n' + json.dumps({"id": rid, "vector": {"p": 2.0}}) + "\n"
    )
    with pytest.raises(ValueError, match=re.escape(f"{vectors}:2: id {rid!r} holds ")):
        list(read_vectors(vectors))
    rc = main(["index", str(vectors), str(tmp_path / "idx")])
    fails(rc, capsys, re.escape(f"{vectors}:2: id {rid!r}"))
    assert not (tmp_path / "idx").exists()


def test_pre_encoded_topics_refuse_such_ids(tiny_index, tmp_path, capsys):
    topics = jsonl(tmp_path / "topics.jsonl", {"id": "q\t1", "vector": {"heart": 1.0}})
    run = tmp_path / "run.trec"
    rc = main(["search", str(tiny_index["index"]), "--topics", str(topics), "--output", str(run)])
    fails(rc, capsys, re.escape(f"{topics}:1: id 'q\\t1' holds whitespace"))
    assert not run.exists()


@pytest.mark.parametrize(
    ("run", "tag", "message"),
    [
        ({"q 1": [("d1", 1.0)]}, "lsr", "query id 'q 1'"),
        ({"q1": [("d1", 1.0), ("d\n2", 0.5)]}, "lsr", "document id 'd\\n2'"),
        ({"q1": [("d1", 1.0)]}, "my run", "tag 'my run'"),
        ({"": [("d1", 1.0)]}, "lsr", "query id '' to a TREC run: it is empty"),
    ],
)
def test_write_run_refuses_ids_that_would_break_its_columns(tmp_path, run, tag, message):
    from plugin.evaluate import write_run
    from plugin.hits import Hit

    path = tmp_path / "run.trec"
    hits = {q: [Hit(d, s) for d, s in hs] for q, hs in run.items()}
    with pytest.raises(ValueError, match=re.escape(f"{path}: cannot write {message}")):
        write_run(path, hits, tag=tag)
    assert not path.exists()  # checked before anything is written


# ============================================== 7. terms over 255 characters, the same on both backends
@pytest.mark.parametrize(
    ("term", "length"),
    [
        ("a" * 255, 255),
        ("é" * 255, 255),
        ("😀" * 127, 254),  # above U+FFFF: two UTF-16 code units a character, as Lucene counts
        ("w" * 42, 42),
        ("b" * 256, 256),
        ("😀" * 128, 256),
        ("a b" * 64, 64 * 3 + 64 * 2),  # each space escapes to %20
        ("c" * 10_000, 10_000),
    ],
    ids=["255", "255-accented", "127-emoji", "short", "256", "128-emoji", "escaped-spaces", "10k"],
)
def test_term_length_counts_as_lucene_does_and_the_limit_is_enforced_on_read(tmp_path, term, length):
    path = jsonl(tmp_path / "v.jsonl", {"id": "a", "vector": {"p": 1.0}}, {"id": "x", "vector": {term: 1.0}})
    if length <= 255:
        assert dict(read_vectors(path))["x"] == {term: 1.0}
    else:
        with pytest.raises(
            ValueError, match=rf"{re.escape(str(path))}:2: vector 'x', term .*: {length} char"
        ):
            list(read_vectors(path))
    assert jsonvector.MAX_TERM_LENGTH == 255 and jsonvector.term_length(term) == length


@pytest.mark.parametrize("backend", BACKENDS)
def test_index_refuses_a_term_lucene_would_split_on_both_backends(tmp_path, capsys, backend):
    vectors = jsonl(
        tmp_path / "v.jsonl",
        {"id": "d1", "vector": {"paris": 1.0}},
        {"id": "d2", "vector": {"paris": 0.5, "c" * 10_000: 2.0}},
    )
    rc = main(["index", str(vectors), str(tmp_path / "idx"), "--backend", backend])
    err = fails(
        rc, capsys, re.escape(f"{vectors}:2: vector 'd2', term 'cccc") + r".*\(10000 characters\): 10000 char"
    )
    assert "over the limit of 255" in err and len(err) < 1000  # the term is not printed whole
    assert not (tmp_path / "idx").exists()


@needs_java
def test_lucene_keeps_a_term_of_exactly_the_limit_whole(tmp_path):
    from indexer.lucene import build_lucene_index
    from lsr.sparse import SparseBatch
    from plugin.lucene import LuceneSearcher

    terms = {"d1": "a" * 255, "d2": "é" * 255, "d3": "😀" * 127 + "x"}  # 255 UTF-16 code units each
    vectors = jsonl(tmp_path / "v.jsonl", *({"id": d, "vector": {t: 1.0}} for d, t in terms.items()))
    build_lucene_index([vectors], tmp_path / "idx")
    searcher = LuceneSearcher(tmp_path / "idx")

    def hits(term: str) -> list[str]:
        return [h.docid for h in searcher.search(SparseBatch.from_dicts([{term: 1.0}], (term,)), 10)]

    assert [hits(t) for t in terms.values()] == [["d1"], ["d2"], ["d3"]]
    assert hits("a" * 254) == hits("😀" * 127) == []  # whole terms: no piece of one to match


def test_pre_encoded_topics_refuse_a_term_over_the_limit(tiny_index, tmp_path, capsys):
    topics = jsonl(tmp_path / "topics.jsonl", {"id": "q1", "vector": {"heart": 1.0, "h" * 300: 1.0}})
    rc = main(["search", str(tiny_index["index"]), "--topics", str(topics), "--output", str(tmp_path / "r")])
    fails(rc, capsys, re.escape(f"{topics}:1: vector 'q1', term 'hhh"))


# =================================================== 8. weights beyond the impact range
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(
    ("weights", "message"),
    [
        # All integers: impacts as given. 1e20 once overflowed int64 and the term was dropped.
        ('{"p": 3, "q": 100000000000000000000}', "integer impact 100000000000000000000 exceeds 65535"),
        ('{"p": 3, "q": 65536}', "integer impact 65536 exceeds 65535"),
        ('{"p": 3, "q": ' + "9" * 400 + "}", r"integer impact 99999999\.\.\. \(400 digits\) exceeds 65535"),
        # Floats, quantized at scale 100: 1e38 was clipped to 65535 without a word.
        (
            '{"p": 0.5, "q": 1e38}',
            r"weight 1e\+38 is too large: at scale 100 impacts above 65535",
        ),
        ('{"p": 0.5, "q": 655.36}', "weight 655.36 is too large"),
    ],
    ids=["int-1e20", "int-65536", "int-400-digits", "float-1e38", "float-655.36"],
)
def test_index_refuses_a_weight_beyond_the_impact_range(tmp_path, capsys, backend, weights, message):
    first = '{"p": 1, "q": 2}' if "." not in weights and "e" not in weights else '{"p": 1.5}'
    vectors = tmp_path / "v.jsonl"
    vectors.write_text(f'{{"id": "a", "vector": {first}}}\n{{"id": "x", "vector": {weights}}}\n')
    rc = main(["index", str(vectors), str(tmp_path / "idx"), "--backend", backend])
    fails(rc, capsys, re.escape(f"{vectors}:2: document 'x', term 'q': ") + message)
    assert not (tmp_path / "idx").exists()


def test_the_largest_impacts_still_index(tmp_path, capsys):
    from plugin.native import NativeSearcher

    given = jsonl(tmp_path / "given.jsonl", {"id": "a", "vector": {"p": 65535, "q": 1}})
    floats = jsonl(tmp_path / "floats.jsonl", {"id": "a", "vector": {"p": 655.35, "q": 0.01}})
    for v in (given, floats):
        assert main(["index", str(v), str(tmp_path / v.stem)]) == 0, capsys.readouterr().err
        assert len(NativeSearcher(tmp_path / v.stem)) == 1
    # A smaller scale takes what scale 100 refuses.
    big = jsonl(tmp_path / "big.jsonl", {"id": "a", "vector": {"p": 1e4}})
    assert main(["index", str(big), str(tmp_path / "big"), "--scale", "1"]) == 0


def test_a_query_weight_beyond_the_impact_range_is_an_error(tiny_index, tmp_path, capsys):
    topics = jsonl(tmp_path / "topics.jsonl", {"id": "q1", "vector": {"heart": 1e38}})
    rc = main(["search", str(tiny_index["index"]), "--topics", str(topics), "--output", str(tmp_path / "r")])
    fails(rc, capsys, r"1 weight\(s\) beyond the impact range, e\.g\. weight 1e\+38 is too large")


def test_encode_impacts_refuses_a_weight_beyond_the_range_naming_the_record(tmp_path):
    from indexer.encode import encode_corpus
    from lsr.sparse import SparseBatch

    class HugeEncoder:
        """Encodes ``boom`` to a weight of 1e6, everything else to 1.5."""

        truncated = 0
        vocab = ("t", "boom")
        # What the old truncation count read: one token each, never cut.
        tokenizer = SimpleNamespace(
            max_length=8, encode=lambda texts: [SimpleNamespace(ids=[0], overflowing=[])] * len(texts)
        )

        def encode(self, texts, batch_size=32):
            return SparseBatch.from_dicts(
                [{"boom": 1e6} if "boom" in t else {"t": 1.5} for t in texts], self.vocab
            )

    corpus = jsonl(tmp_path / "c.jsonl", {"_id": "a", "text": "fine"}, {"_id": "b", "text": "boom"})
    with pytest.raises(
        ValueError, match=re.escape(f"{corpus}:2: document 'b', term 'boom': weight 1e+06 is too large")
    ):
        encode_corpus(HugeEncoder(), corpus, tmp_path / "v.jsonl", impact_scale=100.0, show_progress=False)


# ========================================================= 11. messages that name what is wrong
@pytest.mark.parametrize(
    ("line", "message"),
    [
        ('{"_id": "b", "text": ' + "[" * 100_000 + "]" * 100_000 + "}", "JSON nested too deeply to read"),
        (
            '{"_id": ' + "7" * 5000 + ', "text": "x"}',
            r"cannot read this JSON \(Exceeds the limit \(4300 digits\)",
        ),
    ],
    ids=["deep", "5000-digits"],
)
def test_json_a_parser_cannot_take_names_file_and_line(encoder_dir, tmp_path, capsys, line, message):
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text('{"_id": "a", "text": "the cell"}\n' + line + "\n")
    rc = main(["encode", str(encoder_dir), str(corpus), str(tmp_path / "v.jsonl")])
    fails(rc, capsys, re.escape(f"{corpus}:2: ") + message)
    vectors = tmp_path / "v2.jsonl"
    vectors.write_text('{"id": "a", "vector": {"p": 1.0}}\n' + line.replace('"_id"', '"id"') + "\n")
    rc = main(["index", str(vectors), str(tmp_path / "idx")])
    fails(rc, capsys, re.escape(f"{vectors}:2: ") + message)


def test_topics_a_parser_cannot_take_name_file_and_line(tmp_path, capsys):
    vectors = jsonl(tmp_path / "v.jsonl", {"id": "a", "vector": {"p": 1.0}})
    assert main(["index", str(vectors), str(tmp_path / "idx")]) == 0
    capsys.readouterr()
    topics = tmp_path / "topics.jsonl"
    topics.write_text('{"id": "q", "vector": ' + "[" * 100_000 + "}\n")
    rc = main(
        ["search", str(tmp_path / "idx"), "--topics", str(topics), "--output", str(tmp_path / "r.trec")]
    )
    fails(rc, capsys, re.escape(f"{topics}:1: ") + "JSON nested too deeply to read")


def test_a_directory_given_as_corpus_is_named_a_directory(encoder_dir, tmp_path, capsys):
    beir = tmp_path / "scifact"
    beir.mkdir()
    jsonl(beir / "corpus.jsonl", {"_id": "a", "text": "the cell"})
    rc = main(["encode", str(encoder_dir), str(beir), str(tmp_path / "v.jsonl")])
    fails(rc, capsys, re.escape(f"{beir} is a directory (a BEIR folder: pass {beir / 'corpus.jsonl'}"))
    rc = main(["eval", str(beir), str(beir / "corpus.jsonl")])
    fails(rc, capsys, re.escape(f"run file not found: {beir} is a directory"))


@pytest.mark.parametrize(
    ("encoding", "name"),
    [("utf-16", "UTF-16"), ("utf-16-be", "UTF-16"), ("utf-16-le", "UTF-16"), ("utf-32", "UTF-32")],
)
@pytest.mark.parametrize("suffix", [".jsonl", ".tsv"])
def test_a_utf16_file_is_named_utf16(encoder_dir, tmp_path, capsys, encoding, name, suffix):
    corpus = tmp_path / f"corpus{suffix}"
    text = '{"_id": "a", "text": "the cell"}\n' if suffix == ".jsonl" else "a\tthe cell\n"
    corpus.write_bytes(text.encode(encoding))
    rc = main(["encode", str(encoder_dir), str(corpus), str(tmp_path / "v.jsonl")])
    fails(rc, capsys, re.escape(str(corpus)) + ".*" + name)


def test_a_utf8_byte_order_mark_is_skipped(encoder_dir, tmp_path, capsys):
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text('{"_id": "a", "text": "the cell"}\n', encoding="utf-8-sig")
    tsv = tmp_path / "corpus.tsv"
    tsv.write_text("a\tthe cell\n", encoding="utf-8-sig")
    for c in (corpus, tsv):
        out = tmp_path / f"{c.suffix[1:]}.jsonl"
        assert main(["encode", str(encoder_dir), str(c), str(out)]) == 0, capsys.readouterr().err
        assert list(dict(read_vectors(out))) == ["a"]


@pytest.mark.parametrize("content", ["", "\n\n  \n"], ids=["empty", "blank-lines"])
def test_encode_an_empty_corpus_fails(encoder_dir, tmp_path, capsys, content):
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text(content)
    out = tmp_path / "v.jsonl"
    rc = main(["encode", str(encoder_dir), str(corpus), str(out)])
    fails(rc, capsys, re.escape(f"{corpus}: no records to encode"))
    assert not out.exists()


def test_resuming_a_finished_encode_is_not_an_empty_corpus(encoder_dir, tmp_path, capsys):
    corpus = jsonl(tmp_path / "corpus.jsonl", {"_id": "a", "text": "the cell"})
    out = tmp_path / "v.jsonl"
    assert main(["encode", str(encoder_dir), str(corpus), str(out)]) == 0
    assert main(["encode", str(encoder_dir), str(corpus), str(out)]) == 0
    assert "wrote 0, kept 1" in capsys.readouterr().out
