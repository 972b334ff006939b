"""The ENCODER_DIR manifest: what an exported graph computes and how to feed it.

An ENCODER_DIR holds ``manifest.json``, ``tokenizer.json``, the ONNX graph (absent for a
model-free query side) and, for inference-free encoders, ``idf.json``.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
TOKENIZER = "tokenizer.json"
IDF = "idf.json"

Kind = Literal["splade", "inference-free", "decoder", "dense"]
Contract = Literal["vocab", "anserini", "dense"]
Dtype = Literal["fp32", "fp16", "int8"]
KINDS: tuple[str, ...] = ("splade", "inference-free", "decoder", "dense")
CONTRACTS: tuple[str, ...] = ("vocab", "anserini")
DTYPES: tuple[str, ...] = ("fp32", "fp16", "int8")

# Output names of each contract, fixed here once.
OUTPUTS: dict[str, tuple[str, ...]] = {
    "vocab": ("weights",),
    "anserini": ("output_idx", "output_weights", "output_batch"),
    "dense": ("embeddings",),
}


@dataclass
class Manifest:
    kind: Kind
    contract: Contract
    dtype: Dtype
    onnx: str | None
    inputs: list[str]
    outputs: list[str]
    pooling: str
    max_length: int
    vocab_size: int
    dim: int | None = None
    opset: int | None = None
    special_token_ids: list[int] = field(default_factory=list)
    query: Literal["model", "idf"] = "model"
    echo: bool = False
    bos_token_id: int | None = None
    # With echo: ``prefix {text} cue {text}`` (lsr.tokenize.echo_parts); None is the bare repeat.
    echo_template: str | None = None
    # The graph's weights, beside it, when they pass what one protobuf holds (lsr.export.EXTERNAL_DATA_BYTES).
    external_data: str | None = None
    source: dict = field(default_factory=dict)
    format_version: int = FORMAT_VERSION

    def save(self, directory: Path) -> None:
        (directory / MANIFEST).write_text(json.dumps(asdict(self), indent=2) + "\n", encoding="utf-8")

    @classmethod
    def load(cls, directory: str | Path) -> Manifest:
        directory = Path(directory)
        path = directory / MANIFEST
        if not path.is_file():
            raise FileNotFoundError(
                f"{directory} is not an encoder directory: {MANIFEST} is missing (make one with `lsr export`)"
            )
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}: not valid JSON ({e})") from None
        version = data.get("format_version")
        if version != FORMAT_VERSION:
            raise ValueError(
                f"{path}: format_version {version!r} is not supported (expected {FORMAT_VERSION})"
            )
        try:
            m = cls(**data)
        except TypeError as e:
            raise ValueError(f"{path}: {e}") from None
        if m.kind not in KINDS:
            raise ValueError(f"{path}: kind {m.kind!r} is not one of {', '.join(KINDS)}")
        needed = (
            [TOKENIZER] + [n for n in (m.onnx, m.external_data) if n] + ([IDF] if m.query == "idf" else [])
        )
        missing = [n for n in needed if not (directory / n).is_file()]
        if missing:
            raise FileNotFoundError(f"encoder directory {directory} lacks {', '.join(missing)}")
        return m
