"""Tokenization with the Rust ``tokenizers`` library, padded into the arrays the ONNX graphs take."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray
from tokenizers import Encoding
from tokenizers import Tokenizer as _HFTokenizer

from lsr.sparse import as_vocab

# BERT's position table; models with longer tables declare it in their manifest.
DEFAULT_MAX_LENGTH = 512
# A text longer than max_length x 32 characters is tokenized from a prefix (English WordPiece
# averages ~5 characters a token); a prefix that yields too few tokens is doubled.
CHARS_PER_TOKEN = 32
# Where a prefix may end: before ASCII whitespace that follows a non-space character. Tokenizers
# split words there, so such a prefix tokenizes as the whole text begins (Tokenizer.encode checks).
_BREAK = re.compile(r"(?<=\S)[ \t\n\r\f\v]")


@dataclass(frozen=True)
class ModelInputs:
    """Padded model inputs, all int64 ``[batch, seq]``.

    ``pool_mask`` (decoder graphs only) marks the positions whose logits are pooled.
    """

    input_ids: NDArray[np.int64]
    attention_mask: NDArray[np.int64]
    token_type_ids: NDArray[np.int64]
    pool_mask: NDArray[np.int64] | None = None

    def feed(self, names: list[str]) -> dict[str, NDArray[np.int64]]:
        return {n: getattr(self, n) for n in names}


class Tokenizer:
    """A ``tokenizer.json`` with truncation that keeps the closing special token.

    Truncation happens inside ``tokenizers`` before its post-processor adds ``[CLS]``/``[SEP]``,
    so a document cut at ``max_length`` still ends with ``[SEP]`` (Anserini's Java encoders once
    cut the token list after adding it and dropped the ``[SEP]``).
    """

    def __init__(self, path: str | Path, max_length: int = DEFAULT_MAX_LENGTH):
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"tokenizer file not found: {path}")
        self.path = path
        self._tok = _HFTokenizer.from_file(str(path))
        # Model directories sometimes ship fixed padding (all-MiniLM pads to 128): pad ourselves.
        self._tok.no_padding()
        self.max_length = max_length
        self._tok.enable_truncation(max_length)
        size = self._tok.get_vocab_size(with_added_tokens=True)
        by_id = {i: t for t, i in self._tok.get_vocab(with_added_tokens=True).items()}
        self.vocab: tuple[str, ...] = as_vocab([by_id.get(i, f"[unused-id-{i}]") for i in range(size)])
        self.special_ids: tuple[int, ...] = tuple(
            sorted(i for i, t in self._tok.get_added_tokens_decoder().items() if t.special)
        )
        pad = self._tok.token_to_id("[PAD]")
        self.pad_id = 0 if pad is None else pad

    def extend_vocab(self, size: int) -> None:
        """Name the ids a model outputs beyond the tokenizer's vocabulary (padded embedding tables)."""
        if size > len(self.vocab):
            extra = [f"[unused-id-{i}]" for i in range(len(self.vocab), size)]
            self.vocab = as_vocab(self.vocab + tuple(extra))

    def set_max_length(self, max_length: int) -> None:
        if max_length < 2:
            raise ValueError(f"max_length must be >= 2 (room for the special tokens), got {max_length}")
        self.max_length = max_length
        self._tok.enable_truncation(max_length)

    def encode(self, texts: list[str], special_tokens: bool = True) -> list[Encoding]:
        """Encodings of ``texts``, each cut at ``max_length`` tokens (``overflowing`` set when cut).

        A text longer than ``max_length * CHARS_PER_TOKEN`` characters is tokenized from a prefix
        cut before whitespace, so a 50 MB text costs what a short one does. The prefix is kept when
        it yields more than ``max_length`` tokens and a longer prefix yields the same ones (the
        cut did not change them); otherwise it doubles, up to the whole text. The tokens are
        those of the whole text either way.
        """
        texts = list(texts)
        chars = self.max_length * CHARS_PER_TOKEN
        pending = {i: chars for i, t in enumerate(texts) if len(t) > chars}
        if not pending:
            return self._encode_batch(texts, special_tokens)
        out: list[Encoding | None] = [None] * len(texts)
        rest = [i for i in range(len(texts)) if i not in pending]
        for i, e in zip(rest, self._encode_batch([texts[i] for i in rest], special_tokens), strict=True):
            out[i] = e
        while pending:
            jobs: list[tuple[int, int, int]] = []  # (text, prefix end, longer prefix end)
            for i, n in pending.items():
                cut = _cut(texts[i], n)
                # The check prefix runs an eighth further, to the next break.
                check = _next_break(texts[i], cut + max(cut // 8, 64)) if cut < len(texts[i]) else cut
                jobs.append((i, cut, check))
            prefixes = [texts[i][:c] for i, c, _ in jobs] + [texts[i][:d] for i, c, d in jobs if d > c]
            encs = iter(self._encode_batch(prefixes, special_tokens))
            firsts = [next(encs) for _ in jobs]
            pending = {}
            for (i, cut, check), first in zip(jobs, firsts, strict=True):
                if check == cut:  # the whole text
                    out[i] = first
                    continue
                longer = next(encs)
                if check >= len(texts[i]):
                    out[i] = longer
                elif first.overflowing and first.ids == longer.ids:
                    out[i] = first
                else:
                    pending[i] = 2 * check
        return out  # type: ignore[return-value]

    def _encode_batch(self, texts: list[str], special_tokens: bool) -> list[Encoding]:
        return self._tok.encode_batch(texts, add_special_tokens=special_tokens) if texts else []

    def pad(self, encodings: list[Encoding]) -> ModelInputs:
        n = len(encodings)
        width = max((len(e.ids) for e in encodings), default=0)
        ids = np.full((n, width), self.pad_id, np.int64)
        mask = np.zeros((n, width), np.int64)
        types = np.zeros((n, width), np.int64)
        for r, e in enumerate(encodings):
            k = len(e.ids)
            ids[r, :k] = e.ids
            mask[r, :k] = 1
            types[r, :k] = e.type_ids
        return ModelInputs(ids, mask, types)

    def token_ids(self, text: str) -> list[int]:
        """Ids of ``text``'s tokens without special tokens (cut at ``max_length``)."""
        return self.encode([text], special_tokens=False)[0].ids


def _cut(text: str, n: int) -> int:
    """The end of a prefix of ``text`` near ``n`` characters that no tokenizer splits a word at:
    the last break (see ``_BREAK``) at or before ``n``, else the first one after, else the whole text."""
    if len(text) <= n:
        return len(text)
    hi = n + 1
    while hi > 1:
        lo = max(0, hi - 4096)
        starts = [m.start() for m in _BREAK.finditer(text, lo, hi)]
        if starts:
            return starts[-1]
        hi = lo
    return _next_break(text, n)


def _next_break(text: str, n: int) -> int:
    m = _BREAK.search(text, n)
    return m.start() if m else len(text)


# Echo embeddings' prompt (Springer et al. 2024, "Repetition Improves Language Model Embeddings"): the
# text, a repeat cue, the text again. Mistral-SPLADE pools the second copy the same way.
ECHO_TEMPLATE = "Rewrite the sentence: {text}, rewritten sentence: {text}"
TEXT_SLOT = "{text}"


def echo_parts(template: str) -> tuple[str, str]:
    """``(prefix, cue)`` of an echo template: ``prefix {text} cue {text}``, nothing after the second copy
    (a causal model's later tokens cannot reach the pooled copy)."""
    parts = template.split(TEXT_SLOT)
    if len(parts) != 3 or parts[2]:
        raise ValueError(
            f"an echo template holds {TEXT_SLOT} twice and ends with the second one, got {template!r}"
        )
    return parts[0], parts[1]


@dataclass(frozen=True)
class DecoderLayout:
    """How a decoder-only encoder's input is laid out: ``[BOS] text`` or, with echo,
    ``[BOS] prefix text cue text``. Prefix and cue are tokenized on their own, so both copies of the
    text are the same token ids."""

    bos_id: int | None
    echo: bool = False
    prefix_ids: tuple[int, ...] = ()
    cue_ids: tuple[int, ...] = ()
    special_ids: frozenset[int] = frozenset()

    @classmethod
    def from_template(
        cls, tokenizer: Tokenizer, bos_id: int | None, echo: bool, template: str | None
    ) -> DecoderLayout:
        """``template`` ``None`` with echo: the bare repeat ``text text`` (manifests before the cue)."""
        prefix, cue = echo_parts(template) if echo and template is not None else ("", "")
        return cls(
            bos_id,
            echo,
            tuple(tokenizer.token_ids(prefix)) if prefix else (),
            tuple(tokenizer.token_ids(cue)) if cue else (),
            frozenset(tokenizer.special_ids),
        )

    @property
    def overhead(self) -> int:
        """Positions that are not text: BOS, prefix and cue."""
        return (self.bos_id is not None) + (len(self.prefix_ids) + len(self.cue_ids) if self.echo else 0)

    def budget(self, max_length: int) -> int:
        """Text tokens that fit ``max_length`` (each copy)."""
        n = (max_length - self.overhead) // (2 if self.echo else 1)
        if n < 1:
            raise ValueError(
                f"max_length {max_length} leaves no room for text after {self.overhead} prompt tokens"
            )
        return n

    def sequence(self, ids: list[int]) -> tuple[list[int], list[int]]:
        """``(token ids, pool mask)`` of one text already cut to :meth:`budget`: only the last copy
        is pooled, and never a special token (a text may spell one)."""
        head = [] if self.bos_id is None else [self.bos_id]
        if self.echo:
            seq = head + list(self.prefix_ids) + ids + list(self.cue_ids) + ids
        else:
            seq = head + ids
        start = len(seq) - len(ids)
        pooled = [int(i >= start and t not in self.special_ids) for i, t in enumerate(seq)]
        return seq, pooled


def decoder_inputs(
    token_ids: list[list[int]],
    layout: DecoderLayout,
    pad_id: int,
    max_length: int,
    padding_side: str = "right",
) -> ModelInputs:
    """Padded inputs of a decoder-only encoder laid out by ``layout`` (see :class:`DecoderLayout`).

    A causal model's token sees only what precedes it; with echo (Mistral-SPLADE) the second copy
    has read the whole text once, so only the second copy is pooled. Without echo every text
    token is pooled. The text is cut so that the whole sequence fits ``max_length``. Left padding
    gives the same weights: the decoder graphs count positions from the attention mask.
    """
    if padding_side not in ("right", "left"):
        raise ValueError(f"padding_side must be right or left, got {padding_side!r}")
    budget = layout.budget(max_length)
    rows = [layout.sequence(list(ids[:budget])) for ids in token_ids]
    width = max((len(seq) for seq, _ in rows), default=0)
    n = len(rows)
    input_ids = np.full((n, width), pad_id, np.int64)
    mask = np.zeros((n, width), np.int64)
    pool = np.zeros((n, width), np.int64)
    for r, (seq, pooled) in enumerate(rows):
        at = slice(0, len(seq)) if padding_side == "right" else slice(width - len(seq), width)
        input_ids[r, at] = seq
        mask[r, at] = 1
        pool[r, at] = pooled
    return ModelInputs(input_ids, mask, np.zeros_like(input_ids), pool)
