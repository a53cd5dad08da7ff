"""Coupled InfoNCE and sequence augmentation, for the dual-contrastive baseline (FedCSR-style).

IIDCL (:mod:`fedscope.losses.iidcl`) splits InfoNCE into separately weighted alignment and
uniformity terms; the baselines it is compared with use the ordinary, coupled form

    loss(a) = -log( exp(sim(a, p) / tau) / sum_{c in candidates(a)} exp(sim(a, c) / tau) )

where the candidates are the positive and the anchor's negatives. Kept apart from IIDCL so the
two can never drift into one another.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

_EXCLUDED = -1e9  # finite, so rows with a single candidate keep a finite gradient


def info_nce(
    anchors: Tensor, candidates: Tensor, positive: Tensor, allowed: Tensor, temperature: float
) -> Tensor:
    """Mean coupled InfoNCE over anchors with a positive and at least one negative.

    ``anchors`` ``[A, d]``, ``candidates`` ``[C, d]``; ``positive`` ``[A]`` is the candidate index
    of each anchor's positive; ``allowed`` ``[A, C]`` bool marks the candidates that count (the
    positive must be allowed). Similarities are cosine. Returns a 0 attached to the graph when
    no anchor qualifies.
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    if anchors.shape[0] == 0 or candidates.shape[0] == 0:
        return anchors.sum() * 0.0 + candidates.sum() * 0.0
    logits = F.normalize(anchors, dim=1) @ F.normalize(candidates, dim=1).T / temperature
    rows = torch.arange(anchors.shape[0], device=anchors.device)
    if not bool(allowed[rows, positive].all()):
        raise ValueError("every anchor's positive must be an allowed candidate")
    # an anchor whose only candidate is its positive has nothing to contrast against
    usable = allowed.sum(dim=1) >= 2
    if not bool(usable.any()):
        return logits.sum() * 0.0
    logits = logits.masked_fill(~allowed, _EXCLUDED)
    per_anchor = torch.logsumexp(logits, dim=1) - logits[rows, positive]
    return per_anchor[usable].mean()


def drop_items(tokens: Tensor, drop: float, generator: torch.Generator) -> Tensor:
    """A right-padded ``[B, N]`` token matrix with each real item dropped with probability
    ``drop`` (order kept, re-packed to the left); every non-empty row keeps at least one item,
    its most recent."""
    if not 0 <= drop < 1:
        raise ValueError(f"drop must be in [0, 1), got {drop}")
    real = tokens > 0
    keep = real & (torch.rand(tokens.shape, generator=generator) >= drop)
    lengths = real.sum(dim=1)
    last = (lengths - 1).clamp(min=0)
    rows = torch.arange(tokens.shape[0])
    keep[rows, last] |= lengths > 0
    # stable sort puts kept items first, in their original order
    order = torch.sort((~keep).to(torch.int8), dim=1, stable=True).indices
    packed = tokens.gather(1, order)
    return packed * keep.gather(1, order).to(packed.dtype)
