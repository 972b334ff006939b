"""Losses for sparse encoders: FLOPS and IDF-aware FLOPS, InfoNCE, KL and margin-MSE distillation,
and the ensemble teacher of Geng et al. 2024 ("Towards Competitive Search Relevance for
Inference-Free Learned Sparse Retrievers", arXiv 2411.04403).

Shapes: a batch of ``Q`` queries, each with ``G`` documents (its positive first, then its hard
negatives), so document representations are ``[Q * G, vocab]`` in query order. Scores are
``[Q, G]`` (each query against its own group) or ``[Q, Q * G]`` (against every document in the
batch, for in-batch negatives).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def flops(rep: torch.Tensor, min_nnz: int | None = None) -> torch.Tensor:
    """FLOPS (Paria et al. 2020): ``sum_t (mean_i |w_it|)^2`` over a batch ``rep`` ``[N, vocab]``.

    With ``min_nnz`` (the L0 mask of OpenSearch's tuning code, ``flops_threshold``) only rows with
    more than ``min_nnz`` non-zero weights are penalised; the mean still divides by all ``N`` rows.
    """
    w = rep.abs()
    if min_nnz is not None:
        w = w * ((w > 0).sum(dim=1, keepdim=True) > min_nnz).to(w.dtype)
    return (w.mean(dim=0) ** 2).sum()


def idf_flops(doc_rep: torch.Tensor, min_nnz: int | None = None) -> torch.Tensor:
    """IDF-aware FLOPS (Geng et al. 2024, section 3.2; OpenSearch's tuning code ``flops_value``).

    The inference-free score is ``s(q, d) = sum_{t in q} idf_t * w_t(d)``: the query is its tokens
    weighted by IDF. The regulariser is FLOPS on the *document* weights ``w`` alone,

        L_FLOPS = sum_t ( (1/N) sum_i |w_t(d_i)| )^2,

    while the ranking loss sees ``idf_t * w_t(d)``: its gradient on ``w_t`` scales with ``idf_t``,
    so the same penalty weighs little against an informative token and much against a frequent
    one. That is the paper's IDF-aware penalty; "plain" FLOPS is the same regulariser with the
    query tokens weighted 1 in the score (see :func:`query_weights`).
    """
    return flops(doc_rep, min_nnz)


def flops_weight(lam: float, step: int, warmup_steps: int) -> float:
    """The regulariser's weight at ``step`` (0-based): ``lam * min(1, ((step + 1) / T)^2)``."""
    if warmup_steps <= 0:
        return lam
    return lam * min(1.0, ((step + 1) / warmup_steps) ** 2)


def query_weights(token_mask: torch.Tensor, idf: torch.Tensor | None) -> torch.Tensor:
    """Inference-free query vectors ``[Q, vocab]``: each distinct token weighs ``relu(idf_t)``, or 1."""
    if idf is None:
        return token_mask
    return token_mask * torch.relu(idf)


def group_scores(q_rep: torch.Tensor, d_rep: torch.Tensor) -> torch.Tensor:
    """``[Q, G]``: each query against its own ``G`` documents."""
    n = q_rep.shape[0]
    return torch.bmm(d_rep.view(n, -1, d_rep.shape[-1]), q_rep.unsqueeze(-1)).squeeze(-1)


def infonce(q_rep: torch.Tensor, d_rep: torch.Tensor, in_batch: bool = True) -> torch.Tensor:
    """Cross-entropy of each query's positive (its group's first document) against its hard
    negatives and, with ``in_batch``, every other document of the batch."""
    n = q_rep.shape[0]
    group = d_rep.shape[0] // n
    if in_batch:
        scores = q_rep @ d_rep.t()  # [Q, Q * G]
        target = torch.arange(n) * group
    else:
        scores = group_scores(q_rep, d_rep)
        target = torch.zeros(n, dtype=torch.long)
    return F.cross_entropy(scores, target)


def kl_distill(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """``KL(softmax(teacher) || softmax(student))`` over each row ``[Q, G]``, averaged over rows."""
    return F.kl_div(
        F.log_softmax(student, dim=1), F.log_softmax(teacher, dim=1), log_target=True, reduction="batchmean"
    )


def margin_mse(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """MSE between student and teacher margins ``s(q, d+) - s(q, d-)`` (column 0 is ``d+``)."""
    return F.mse_loss(student[:, :1] - student[:, 1:], teacher[:, :1] - teacher[:, 1:])


def ensemble_scores(teachers: list[torch.Tensor], scale: float = 30.0) -> torch.Tensor:
    """Geng et al.'s heterogeneous ensemble: each teacher's ``[Q, G]`` scores min-max normalised per
    query over its candidates, averaged over teachers, times ``scale`` (the paper's 30).

    A row whose scores are all equal normalises to 0 (no preference), not to NaN.
    """
    if not teachers:
        raise ValueError("ensemble_scores needs at least one teacher")
    normed = []
    for s in teachers:
        lo = s.min(dim=1, keepdim=True).values
        span = s.max(dim=1, keepdim=True).values - lo
        normed.append(torch.where(span > 0, (s - lo) / span.clamp(min=1e-12), torch.zeros_like(s)))
    return torch.stack(normed).mean(dim=0) * scale
