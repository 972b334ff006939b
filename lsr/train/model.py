"""The trainable sparse encoder: a Hugging Face MLM (or causal LM) with SPLADE max pooling.

``w(d) = log(1 + relu(max_t logits[t]))`` over the pooled positions, exactly what
:mod:`lsr.export` puts in the graph. The vocabulary projection dominates the cost of a step
(``[positions, hidden] x [hidden, vocab]``), so :class:`MaxPooledProjection` computes it in vocab
chunks that never materialise the ``[batch, seq, vocab]`` logits, and its backward touches only
the (position, term) pairs that won the max with a positive value: a document has ~250 of 30,522.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import torch

from lsr.export import check_model_dir
from lsr.manifest import TOKENIZER
from lsr.tokenize import Tokenizer

log = logging.getLogger(__name__)

# 512 vocab rows a chunk: the [positions, 512] block stays in cache (32 docs x 256 tokens:
# 0.78 s against 1.24 s for one [positions, vocab] product per document).
VOCAB_CHUNK = 512


class MaxPooledProjection(torch.autograd.Function):
    """``max over pooled positions of (h @ W.T + b)``: ``[batch, vocab]``, ``-inf`` where nothing is pooled.

    Inputs: ``h`` ``[batch, seq, hidden]``, ``W`` ``[vocab, hidden]``, ``b`` ``[vocab]``, ``pool``
    bool ``[batch, seq]``. The gradient flows only through each (row, term)'s arg-max position.
    """

    @staticmethod
    def forward(ctx, h, weight, bias, pool):
        n, seq, hidden = h.shape
        vocab = weight.shape[0]
        flat = h.reshape(n * seq, hidden)
        out = torch.empty(n, vocab, dtype=h.dtype)
        arg = torch.empty(n, vocab, dtype=torch.long)
        blocked = (~pool).unsqueeze(-1)
        for s in range(0, vocab, VOCAB_CHUNK):
            logits = torch.addmm(bias[s : s + VOCAB_CHUNK], flat, weight[s : s + VOCAB_CHUNK].t())
            logits = logits.view(n, seq, -1).masked_fill_(blocked, float("-inf"))
            out[:, s : s + VOCAB_CHUNK], arg[:, s : s + VOCAB_CHUNK] = logits.max(dim=1)
        ctx.save_for_backward(h, weight, arg)
        return out

    @staticmethod
    def backward(ctx, grad):
        h, weight, arg = ctx.saved_tensors
        rows, terms = torch.nonzero(grad, as_tuple=True)
        g = grad[rows, terms].unsqueeze(-1)
        pos = arg[rows, terms]
        grad_h = torch.zeros_like(h)
        grad_h.view(-1, h.shape[-1]).index_add_(0, rows * h.shape[1] + pos, g * weight[terms])
        grad_w = torch.zeros_like(weight).index_add_(0, terms, g * h[rows, pos])
        grad_b = torch.zeros(weight.shape[0], dtype=grad.dtype).index_add_(0, terms, g.squeeze(-1))
        return grad_h, grad_w, grad_b, None


def splade_pool(h, weight, bias, pool, vocab_keep):
    """``log(1 + relu(max logits)) * vocab_keep``; zero where a row pools nothing."""
    top = MaxPooledProjection.apply(h, weight, bias, pool)
    return torch.log1p(torch.relu(top)) * vocab_keep


def reference_pool(h, weight, bias, pool, vocab_keep):
    """The plain-torch twin of :func:`splade_pool` (full logits), for tests."""
    logits = h @ weight.t() + bias
    logits = logits.masked_fill((~pool).unsqueeze(-1), float("-inf"))
    return torch.log1p(torch.relu(logits.max(dim=1).values)) * vocab_keep


def keep_top_k(rep: torch.Tensor, k: int) -> torch.Tensor:
    """Each row's ``k`` heaviest weights, the rest zero (``SparseBatch.prune("top_k", k)`` in torch:
    the gradient reaches only the kept weights). Training then scores what a ``top_k`` encode serves."""
    if k >= rep.shape[1]:
        return rep
    values, idx = rep.topk(k, dim=1)
    return torch.zeros_like(rep).scatter(1, idx, values)


class _PassThrough(torch.nn.Module):
    # Stands in for the output projection, so the model returns the hidden states the head reads.
    def forward(self, x):
        return x


class SparseEncoder(torch.nn.Module):
    """A masked (or causal) LM whose logits are max-pooled into a ``[batch, vocab]`` sparse vector.

    Parameters
    ----------
    model : a ``transformers`` ``*ForMaskedLM`` (or ``*ForCausalLM``) whose output embeddings are
        the vocabulary projection.
    tokenizer : the model's tokenizer; its special tokens are never pooled nor weighted.
    """

    def __init__(self, model: torch.nn.Module, tokenizer: Tokenizer, causal: bool = False):
        super().__init__()
        self.model = model
        self.causal = causal
        self.tokenizer = tokenizer
        self.projection: torch.nn.Linear = model.get_output_embeddings()
        name = next(n for n, m in model.named_modules() if m is self.projection)
        parent, _, self._attr = name.rpartition(".")
        self._parent = model.get_submodule(parent)
        setattr(self._parent, self._attr, _PassThrough())
        vocab = self.projection.weight.shape[0]
        keep = torch.ones(vocab)
        keep[[i for i in tokenizer.special_ids if i < vocab]] = 0.0
        self.register_buffer("vocab_keep", keep, persistent=False)
        self.register_buffer("special", torch.tensor(list(tokenizer.special_ids) or [-1]), persistent=False)

    @property
    def vocab_size(self) -> int:
        return int(self.projection.weight.shape[0])

    def forward(self, input_ids, attention_mask, token_type_ids=None, pool_mask=None):
        """Sparse vectors ``[batch, vocab]`` float32 of a padded batch."""
        kwargs = {"input_ids": input_ids, "attention_mask": attention_mask}
        if token_type_ids is not None:
            kwargs["token_type_ids"] = token_type_ids
        if self.causal:  # as lsr.export.DecoderPooling counts them: from the mask
            kwargs["position_ids"] = (attention_mask.cumsum(dim=1) - 1).clamp(min=0)
        hidden = self.model(**kwargs).logits  # the pass-through: hidden states before the projection
        if pool_mask is None:
            pool_mask = self.pool_mask(input_ids, attention_mask)
        bias = self.projection.bias
        if bias is None:
            bias = torch.zeros(self.vocab_size)
        return splade_pool(hidden, self.projection.weight, bias, pool_mask.bool(), self.vocab_keep)

    def pool_mask(self, input_ids, attention_mask):
        """The positions pooled by default: real tokens that are not special ones."""
        return attention_mask.bool() & ~(input_ids.unsqueeze(-1) == self.special).any(-1)

    def save(self, out_dir: str | Path) -> None:
        """Write a Hugging Face model directory (config, safetensors, tokenizer) that exports as is;
        a LoRA-wrapped model writes its peft adapter directory (``lsr export`` merges it)."""
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        setattr(self._parent, self._attr, self.projection)
        try:
            self.model.save_pretrained(out_dir)  # a PeftModel writes adapter_config.json + weights
        finally:
            setattr(self._parent, self._attr, _PassThrough())
        data = json.loads(self.tokenizer.path.read_text(encoding="utf-8"))
        (out_dir / TOKENIZER).write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")


def _add_mlm_head(model) -> None:
    # A head trained from nothing: its transform starts as the identity, so the first logits are the
    # dot products of the contextual states with the (tied) word embeddings, not noise.
    head = getattr(getattr(model, "cls", None), "predictions", None)
    transform = getattr(head, "transform", None)
    if transform is None:
        return
    with torch.no_grad():
        transform.dense.weight.copy_(torch.eye(transform.dense.weight.shape[0]))
        transform.dense.bias.zero_()
        head.bias.zero_()


@torch.no_grad()
def calibrate_head_bias(encoder: SparseEncoder, texts: list[str], target_nnz: int, max_length: int) -> float:
    """Set an added head's bias to ``-tau`` so that ``texts`` average ``target_nnz`` non-zero terms.

    A head tied to the word embeddings gives every term a positive max-pooled logit (all-MiniLM:
    30,517 of 30,522 terms a document), and FLOPS then wipes out the documents before the ranking
    loss can shape them; a threshold at the start keeps each document's ``target_nnz`` strongest
    terms. ``tau`` is the ``len(texts) * target_nnz``-th largest max-pooled logit. Returns ``tau``.
    """
    bias = encoder.projection.bias
    if bias is None:
        raise ValueError("the model's output projection has no bias to calibrate")
    bias.zero_()
    tok = encoder.tokenizer
    tok.set_max_length(max_length)
    was_training = encoder.training
    encoder.eval()
    maxima = []
    for s in range(0, len(texts), 8):
        inputs = tok.pad(tok.encode(texts[s : s + 8]))
        ids, mask = torch.from_numpy(inputs.input_ids), torch.from_numpy(inputs.attention_mask)
        hidden = encoder.model(input_ids=ids, attention_mask=mask).logits
        top = MaxPooledProjection.apply(hidden, encoder.projection.weight, bias, encoder.pool_mask(ids, mask))
        maxima.append(top.masked_fill(encoder.vocab_keep == 0, float("-inf")))
    encoder.train(was_training)
    flat = torch.cat(maxima).flatten()
    k = min(max(1, len(texts) * target_nnz), flat.numel())
    tau = float(torch.topk(flat, k).values[-1])
    bias.fill_(-tau)
    return tau


def lm_kind(model_dir: str | Path) -> str:
    """``causal`` for a decoder-only LM directory (``*ForCausalLM``, ``*LMHeadModel``), else ``mlm``."""
    path = Path(model_dir) / "config.json"
    if not path.is_file():  # loading names what the directory lacks
        return "mlm"
    config = json.loads(path.read_text(encoding="utf-8"))
    archs = config.get("architectures") or []
    return "causal" if any(a.endswith(("ForCausalLM", "LMHeadModel")) for a in archs) else "mlm"


def load_sparse_encoder(model_dir: str | Path, kind: str = "mlm") -> tuple[SparseEncoder, dict]:
    """A :class:`SparseEncoder` from a Hugging Face model directory, and what loading it found.

    ``kind`` is ``"mlm"`` (BERT family) or ``"causal"``. A BERT-family directory without an MLM head
    (a sentence-transformers model such as all-MiniLM-L6-v2) gets one whose output projection is
    tied to the word embeddings; the returned info says so (``added_mlm_head``).
    """
    import transformers

    model_dir = Path(model_dir).resolve()  # a LoRA adapter names its base by this path
    check_model_dir(model_dir)
    tokenizer = Tokenizer(model_dir / TOKENIZER)
    auto = transformers.AutoModelForMaskedLM if kind == "mlm" else transformers.AutoModelForCausalLM
    model, info = auto.from_pretrained(model_dir, output_loading_info=True)
    added = kind == "mlm" and any(k.startswith(("cls.", "lm_head.", "vocab_")) for k in info["missing_keys"])
    if added:
        _add_mlm_head(model)
        model.config.architectures = [type(model).__name__]
        log.info("%s has no MLM head: added one tied to the word embeddings", model_dir)
    tokenizer.extend_vocab(model.get_output_embeddings().weight.shape[0])
    return SparseEncoder(model, tokenizer, causal=kind == "causal"), {
        "added_mlm_head": added,
        "architecture": type(model).__name__,
    }


def add_lora(encoder: SparseEncoder, r: int, alpha: int, dropout: float) -> dict:
    """Wrap ``encoder``'s LM in a peft LoRA adapter of rank ``r`` on every linear layer but the
    projection to the vocabulary (tied to the input embeddings in most LMs); the base is frozen.
    Returns what was wrapped."""
    from peft import LoraConfig, get_peft_model
    from transformers.pytorch_utils import Conv1D

    targets = sorted(
        {
            name.rpartition(".")[2]
            for name, m in encoder.model.named_modules()
            if isinstance(m, torch.nn.Linear | Conv1D) and m is not encoder.projection
        }
    )
    if not targets:
        raise ValueError("the model has no linear layers for LoRA")
    config = LoraConfig(
        r=r,
        lora_alpha=alpha,
        lora_dropout=dropout,
        target_modules=targets,
        fan_in_fan_out=any(isinstance(m, Conv1D) for m in encoder.model.modules()),
    )
    encoder.model = get_peft_model(encoder.model, config)
    encoder.projection.requires_grad_(False)  # outside the wrapped model when not tied: frozen too
    trainable = sum(p.numel() for p in encoder.model.parameters() if p.requires_grad)
    return {"r": r, "alpha": alpha, "targets": targets, "trainable_parameters": int(trainable)}
