"""Install an lsr ENCODER_DIR where Anserini's own Java SPLADE query encoders look for theirs.

What Anserini 1.7.1 does (read from the bytecode of the fatjar that ``pyserini==1.6.0`` bundles):

- ``SearchCollection -encoder X`` loads the class ``io.anserini.encoder.sparse.XEncoder`` through
  its no-argument constructor. The classes whose graph takes our inputs (``input_ids``,
  ``token_type_ids``, ``attention_mask``) and outputs (``output_idx``, ``output_weights``) are the
  ``SpladeEncoder`` subclasses in :data:`ENCODERS`; ``UniCoil`` feeds ``inputIds`` and reads output 0.
- ``OnnxEncoder`` reads ``<user.home>/.cache/pyserini/encoders/<model file>`` and ``<vocab file>``
  (the folder is fixed; Java's ``user.home``, not ``$HOME``). A file that exists is used as is; an
  absent one is downloaded from Hugging Face, so offline both must be in place.
- Tokenization: DJL's ``BertFullTokenizer(vocab, lowerCase=true)`` over ``vocab.txt`` (one token a
  line, in id order, each line trimmed, empty lines skipped), ``[UNK]`` for unknown words. It does not
  split CJK characters into words and keeps format characters (zero-width space, soft hyphen) that
  ``tokenizers``' BertNormalizer removes. ``[CLS]`` + tokens cut at 510 + ``[SEP]``: 511 tokens at most.
- Output: ``output_idx`` entries other than ids 0, 101 and 102, as ``{token: weight}``; each weight
  quantized as ``Math.round(w / 5 * 256)`` in float32 (round half up, scale 51.2, zeros kept in the
  map). ``SearchCollection`` turns the map into a string with each token repeated weight times
  (``SparseEncoder.flatten``), which ``-pretokenized`` (whitespace analysis) and
  ``BagOfWordsQueryGenerator`` turn back into ``TermQuery`` clauses boosted by their counts; with
  ``-impact`` a document scores ``sum(q_impact * d_impact)``. Without ``-pretokenized`` the default
  English analyzer stems the tokens.
"""

from __future__ import annotations

import argparse
import filecmp
import json
import logging
import os
import pwd
import shutil
import tempfile
from pathlib import Path

from lsr.manifest import OUTPUTS, TOKENIZER, Manifest

log = logging.getLogger(__name__)

# -encoder NAME -> (model file, vocab file) under the cache folder (SpladeEncoder subclasses).
ENCODERS: dict[str, tuple[str, str]] = {
    "SpladePlusPlusEnsembleDistil": ("splade-pp-ed-optimized.onnx", "splade-pp-ed-vocab.txt"),
    "SpladePlusPlusSelfDistil": ("splade-pp-sd-optimized.onnx", "splade-pp-sd-vocab.txt"),
    "SpladeV3": ("splade-v3-optimized.onnx", "splade-v3-vocab.txt"),
}
DEFAULT_NAME = "SpladePlusPlusEnsembleDistil"
# SpladeEncoder's WEIGHT_RANGE and QUANT_RANGE: impact = Math.round(w / 5 * 256).
WEIGHT_RANGE = 5
QUANT_RANGE = 256
SCALE = QUANT_RANGE / WEIGHT_RANGE
# SpladeEncoder cuts [CLS] + tokens at 510 and appends [SEP].
MAX_QUERY_TOKENS = 511
# SpladeEncoder drops these output ids from every query: BERT's [PAD], [CLS] and [SEP].
DROPPED_IDS = (0, 101, 102)
_INPUTS = ["input_ids", "token_type_ids", "attention_mask"]
# What Java's String.trim removes, and Utils.readLines' line ends.
_JAVA_TRIM = "".join(map(chr, range(33)))
_EXPORT_HINT = "lsr export MODEL_DIR OUT_DIR --kind splade --contract anserini"


def default_cache() -> Path:
    """The folder Anserini's encoders read: ``<user.home>/.cache/pyserini/encoders``.

    Java's ``user.home`` comes from the password database, not ``$HOME``; a JVM started with
    ``-Duser.home=DIR`` reads ``DIR/.cache/pyserini/encoders`` instead.

    Returns
    -------
    Path
        The folder (it may not exist yet).
    """
    try:
        home = Path(pwd.getpwuid(os.getuid()).pw_dir)
    except KeyError:  # no password entry (some containers): Java falls back to $HOME too
        home = Path.home()
    return home / ".cache" / "pyserini" / "encoders"


def cache_for_home(home: str | Path) -> Path:
    """The encoder folder of a JVM started with ``-Duser.home=home``."""
    return Path(home) / ".cache" / "pyserini" / "encoders"


def class_name(name: str) -> str:
    """The Java class ``-encoder name`` loads, e.g. ``io.anserini.encoder.sparse.SpladeV3Encoder``."""
    _check_name(name)
    return f"io.anserini.encoder.sparse.{name}Encoder"


def vocab_lines(encoder_dir: str | Path) -> list[str]:
    """The ``vocab.txt`` lines DJL's tokenizer needs: the WordPiece vocabulary in id order.

    Parameters
    ----------
    encoder_dir : str or Path
        An ENCODER_DIR whose ``tokenizer.json`` is a lowercasing BERT WordPiece tokenizer.

    Returns
    -------
    list[str]
        Token ``i`` on line ``i``.

    Raises
    ------
    ValueError
        When Anserini's tokenizer cannot reproduce this one: not WordPiece with ``##`` pieces, not
        lowercasing, no ``[CLS]``/``[SEP]``/``[UNK]``, or a token that a text line cannot hold
        (empty, surrounded by whitespace, or holding a line break).
    """
    path = Path(encoder_dir) / TOKENIZER
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON ({e})") from None
    model = data.get("model") or {}
    if model.get("type") != "WordPiece" or model.get("continuing_subword_prefix", "##") != "##":
        raise ValueError(
            f"{path}: Anserini's encoders tokenize with BERT WordPiece ('##' pieces); this tokenizer is "
            f"{model.get('type')!r}"
        )
    normalizer = data.get("normalizer") or {}
    if normalizer.get("type") != "BertNormalizer" or not normalizer.get("lowercase", True):
        raise ValueError(
            f"{path}: Anserini's encoders lowercase and strip accents (DJL BertFullTokenizer); this "
            "tokenizer does not (a cased model cannot be served by them)"
        )
    if normalizer.get("strip_accents") is False:
        raise ValueError(f"{path}: keeps accents, which Anserini's tokenizer strips")
    by_id: dict[int, str] = {int(i): t for t, i in model.get("vocab", {}).items()}
    for added in data.get("added_tokens", []):
        by_id.setdefault(int(added["id"]), added["content"])
    if sorted(by_id) != list(range(len(by_id))):
        raise ValueError(f"{path}: vocabulary ids are not 0..{len(by_id) - 1} (vocab.txt is positional)")
    lines = [by_id[i] for i in range(len(by_id))]
    missing = [t for t in ("[CLS]", "[SEP]", "[UNK]") if t not in model.get("vocab", {})]
    if missing:
        raise ValueError(f"{path}: the vocabulary lacks {', '.join(missing)}, which Anserini's encoders use")
    for i, token in enumerate(lines):
        if not token or token != token.strip(_JAVA_TRIM) or "\n" in token or "\r" in token:
            raise ValueError(f"{path}: token {i} ({token!r}) cannot be a line of vocab.txt (DJL trims lines)")
    return lines


def check_encoder_dir(encoder_dir: str | Path) -> Manifest:
    """The manifest of an ENCODER_DIR that Anserini's SPLADE encoders can load.

    Parameters
    ----------
    encoder_dir : str or Path
        An ENCODER_DIR made by ``lsr export ... --contract anserini``.

    Returns
    -------
    Manifest
        Its manifest.

    Raises
    ------
    FileNotFoundError
        When ``encoder_dir`` is not an encoder directory or lacks its files.
    ValueError
        When it is not a model-side SPLADE graph with the Anserini contract; the message names the fix.
    """
    m = Manifest.load(encoder_dir)
    if m.kind not in ("splade", "inference-free") or m.query != "model":
        raise ValueError(
            f"{encoder_dir}: a {m.kind} encoder with a {m.query!r} query side; Anserini's SPLADE "
            f"encoders run a SPLADE graph on the query: `{_EXPORT_HINT}`"
        )
    if m.contract != "anserini" or not set(OUTPUTS["anserini"][:2]) <= set(m.outputs):
        raise ValueError(
            f"{encoder_dir}: exported with the {m.contract!r} contract (outputs {m.outputs}); Anserini reads "
            f"output_idx and output_weights: re-export with `{_EXPORT_HINT}`"
        )
    if m.inputs != _INPUTS:
        raise ValueError(
            f"{encoder_dir}: graph inputs {m.inputs}, Anserini feeds {_INPUTS}: `{_EXPORT_HINT}`"
        )
    return m


def install(
    encoder_dir: str | Path,
    name: str = DEFAULT_NAME,
    cache: str | Path | None = None,
    force: bool = False,
) -> dict:
    """Put an ENCODER_DIR's graph and vocabulary where Anserini's ``-encoder name`` reads them.

    Anserini then runs lsr's encoder under that class name (``SearchCollection -impact
    -pretokenized -encoder name``, or the class itself through :mod:`plugin.jvm`). Files are
    written to a temporary name and renamed into place.

    Parameters
    ----------
    encoder_dir : str or Path
        An ENCODER_DIR exported with ``--contract anserini`` (see :func:`check_encoder_dir`).
    name : str
        The ``-encoder`` name to take over, one of :data:`ENCODERS`.
    cache : str or Path, optional
        The folder to write to; default :func:`default_cache` (for a JVM started with
        ``-Duser.home=HOME``, pass :func:`cache_for_home` of it).
    force : bool
        Replace files that differ from ours (e.g. the real SPLADE++ that Anserini downloaded);
        without it they are a ``FileExistsError``.

    Returns
    -------
    dict
        ``name``, ``class`` (the Java class), ``cache``, ``onnx`` and ``vocab`` (the paths written),
        ``scale`` (Anserini's query scale, 51.2), ``dropped_terms`` (tokens Anserini drops from every
        query because they sit at ids 0, 101 or 102 without being special; empty for BERT) and
        ``search_args`` (the ``SearchCollection`` flags).

    Raises
    ------
    ValueError
        For an unknown ``name`` or an ENCODER_DIR Anserini cannot run (names the fix).
    FileExistsError
        When a different file is in place and ``force`` is false.
    """
    _check_name(name)
    encoder_dir = Path(encoder_dir)
    manifest = check_encoder_dir(encoder_dir)
    lines = vocab_lines(encoder_dir)
    if manifest.vocab_size > len(lines):
        raise ValueError(
            f"{encoder_dir}: the graph outputs {manifest.vocab_size} vocabulary ids but the tokenizer names "
            f"{len(lines)}; Anserini maps ids to tokens through vocab.txt"
        )
    # The graph zeroes its special tokens; any other token at a dropped id is lost to Anserini.
    dropped = [lines[i] for i in DROPPED_IDS if i < len(lines) and i not in manifest.special_token_ids]
    if dropped:
        log.warning(
            "%s: Anserini drops output ids %s from every query, here the tokens %s",
            encoder_dir,
            DROPPED_IDS,
            dropped,
        )
    cache = Path(cache) if cache is not None else default_cache()
    cache.mkdir(parents=True, exist_ok=True)  # OnnxEncoder uses File.mkdir: parents must exist
    onnx_name, vocab_name = ENCODERS[name]
    onnx, vocab = cache / onnx_name, cache / vocab_name
    text = "\n".join(lines) + "\n"
    staged_vocab = _staged(cache, vocab_name, lambda p: p.write_text(text, encoding="utf-8", newline="\n"))
    try:
        graph = encoder_dir / str(manifest.onnx)
        staged_onnx = _staged(cache, onnx_name, lambda p: shutil.copyfile(graph, p))
    except BaseException:
        staged_vocab.unlink(missing_ok=True)
        raise
    try:
        for staged, target in ((staged_onnx, onnx), (staged_vocab, vocab)):
            if target.exists() and not force and not filecmp.cmp(staged, target, shallow=False):
                raise FileExistsError(
                    f"{target} exists and differs from {encoder_dir}'s (Anserini's own {name} model?); "
                    "pass force=True (--force) to replace it, or install under another name"
                )
        for staged, target in ((staged_onnx, onnx), (staged_vocab, vocab)):
            os.replace(staged, target)
    finally:
        staged_onnx.unlink(missing_ok=True)
        staged_vocab.unlink(missing_ok=True)
    log.info("installed %s as Anserini's %s encoder in %s", encoder_dir, name, cache)
    return {
        "name": name,
        "class": class_name(name),
        "cache": str(cache),
        "onnx": str(onnx),
        "vocab": str(vocab),
        "scale": SCALE,
        "dropped_terms": dropped,
        "search_args": ["-impact", "-pretokenized", "-encoder", name],
    }


def _check_name(name: str) -> None:
    if name not in ENCODERS:
        raise ValueError(f"Anserini encoder name must be one of {', '.join(ENCODERS)}, got {name!r}")


def _staged(folder: Path, name: str, write) -> Path:
    fd, tmp = tempfile.mkstemp(prefix=f".{name}.", dir=folder)
    os.close(fd)
    path = Path(tmp)
    try:
        write(path)
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    return path


def add_parser(sub) -> argparse.ArgumentParser:
    """Add ``lsr anserini install ENCODER_DIR [--name NAME] [--cache DIR] [--force]`` to ``sub``.

    Parameters
    ----------
    sub : argparse._SubParsersAction
        The ``lsr`` parser's subcommands.

    Returns
    -------
    argparse.ArgumentParser
        The ``anserini`` parser; :func:`run` handles its parsed arguments.
    """
    p = sub.add_parser(
        "anserini",
        help="Run lsr encoders inside Anserini.",
        description="Run lsr encoders inside Anserini (SearchCollection -encoder NAME).",
    )
    actions = p.add_subparsers(dest="anserini_command", required=True)
    i = actions.add_parser(
        "install",
        help="Install an ENCODER_DIR (--contract anserini) as Anserini's -encoder NAME.",
        description="Install an ENCODER_DIR (--contract anserini) as Anserini's -encoder NAME.",
    )
    i.add_argument("encoder_dir", type=Path)
    i.add_argument("--name", default=DEFAULT_NAME, choices=list(ENCODERS))
    i.add_argument("--cache", type=Path, default=None, help="default: ~/.cache/pyserini/encoders")
    i.add_argument("--force", action="store_true", help="replace a different model of that name")
    return p


def run(args: argparse.Namespace) -> int:
    """Carry out a parsed ``lsr anserini ...`` command; prints the paths and the search flags."""
    if args.anserini_command != "install":
        raise ValueError(f"unknown anserini command {args.anserini_command!r}; choose install")
    info = install(args.encoder_dir, name=args.name, cache=args.cache, force=args.force)
    print(f"{info['class']}: {info['onnx']}")
    print(f"{info['class']}: {info['vocab']}")
    print(f"search with: SearchCollection {' '.join(info['search_args'])} (query scale {info['scale']:g})")
    return 0
