"""Weight averaging of fine-tuned models ("model soups", Wortsman et al. 2022, arXiv 2203.05482).

Runs fine-tuned from the same start (other seeds, schedules or regularisers) often sit in one basin
of the loss, and their element-wise average ranks better than any of them. :func:`average_models`
writes that average as an ``lsr train`` output: ``model.safetensors`` the (weighted) mean of the
ingredients', ``idf.json`` the mean of their IDF tables (a token missing from one counts 0 there),
the config and tokenizer of the first, and a ``training.json`` naming the ingredients. Which
ingredients to take is a model-selection choice: make it on a dev split, never on the test one.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from lsr.idf import load_idf, save_idf
from lsr.manifest import IDF
from lsr.tokenize import Tokenizer

WEIGHTS = "model.safetensors"
SHARED_FILES = ("config.json", "tokenizer.json")


def average_models(
    model_dirs: Sequence[str | Path], out_dir: str | Path, weights: Sequence[float] | None = None
) -> Path:
    """Write the weighted mean of ``model_dirs`` (fully fine-tuned ``lsr train`` outputs) to ``out_dir``.

    Parameters
    ----------
    model_dirs : sequence of path
        Model directories of one architecture: the same ``config.json`` and tensor names and shapes.
    out_dir : path
        Replaced atomically (written beside it, then renamed into place).
    weights : sequence of float, optional
        One non-negative weight an ingredient (normalised to sum 1); default uniform.

    Returns
    -------
    Path
        ``out_dir``.

    Raises
    ------
    ValueError
        When there is no ingredient, a weight is negative or the weights sum to 0, an ingredient
        is a LoRA adapter or lacks ``model.safetensors``, or two ingredients differ in config, a
        tensor's name, shape or dtype.
    """
    dirs = [Path(d) for d in model_dirs]
    if not dirs:
        raise ValueError("a soup needs at least one model directory")
    w = [1.0] * len(dirs) if weights is None else [float(x) for x in weights]
    if len(w) != len(dirs) or any(x < 0 for x in w) or sum(w) <= 0:
        raise ValueError(f"weights {list(w)} must be {len(dirs)} non-negative numbers, not all 0")
    w = [x / sum(w) for x in w]
    for d in dirs:
        if (d / "adapter_config.json").is_file():
            raise ValueError(f"{d} is a LoRA adapter: merge it first (lsr export) or average its base runs")
        if not (d / WEIGHTS).is_file():
            raise ValueError(f"{d} has no {WEIGHTS}: not a fully fine-tuned model directory")
    config = _read_json(dirs[0] / "config.json")
    total: dict[str, torch.Tensor] = {}
    dtypes: dict[str, torch.dtype] = {}
    for d, share in zip(dirs, w, strict=True):
        if _read_json(d / "config.json") != config:
            raise ValueError(f"{d / 'config.json'} differs from {dirs[0] / 'config.json'}")
        tensors = load_file(str(d / WEIGHTS))
        if total and set(tensors) != set(total):
            odd = sorted(set(tensors) ^ set(total))[:3]
            raise ValueError(f"{d / WEIGHTS}: tensor names differ from {dirs[0] / WEIGHTS}, e.g. {odd}")
        for name, t in tensors.items():
            if name in total and (t.shape != total[name].shape or t.dtype != dtypes[name]):
                raise ValueError(
                    f"{d / WEIGHTS}: tensor {name} is {t.dtype} {tuple(t.shape)}, "
                    f"not {dtypes[name]} {tuple(total[name].shape)} as in {dirs[0] / WEIGHTS}"
                )
            dtypes.setdefault(name, t.dtype)
            part = t.to(torch.float64) * share
            total[name] = part if name not in total else total[name] + part
    averaged = {n: t.to(dtypes[n]).contiguous() for n, t in total.items()}
    idfs = [d / IDF for d in dirs]
    if any(p.is_file() for p in idfs) and not all(p.is_file() for p in idfs):
        raise ValueError(f"only some ingredients have {IDF}: {[str(p) for p in idfs if p.is_file()]}")
    idf = None
    if idfs[0].is_file():
        vocab = Tokenizer(dirs[0] / "tokenizer.json").vocab
        mean = sum(share * load_idf(p, vocab) for p, share in zip(idfs, w, strict=True))
        idf = {tok: float(mean[i]) for i, tok in enumerate(vocab) if mean[i] > 0}
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        save_file(averaged, str(tmp / WEIGHTS), metadata={"format": "pt"})
        for name in SHARED_FILES:
            if (dirs[0] / name).is_file():
                shutil.copyfile(dirs[0] / name, tmp / name)
        if idf is not None:
            save_idf(idf, tmp / IDF)
        first = _read_json(dirs[0] / "training.json") if (dirs[0] / "training.json").is_file() else {}
        summary = {
            "soup": {"ingredients": [str(d.resolve()) for d in dirs], "weights": w},
            "config": first.get("config"),  # the first ingredient's: kind, teachers, lengths
            "model_dir": first.get("model_dir"),
        }
        (tmp / "training.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
        old = out_dir.with_name(f".{out_dir.name}.old")
        if out_dir.exists():
            shutil.rmtree(old, ignore_errors=True)
            os.replace(out_dir, old)
        os.replace(tmp, out_dir)
        shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"{path}: {e}") from e
