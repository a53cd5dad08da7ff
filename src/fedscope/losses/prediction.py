"""Next-item prediction loss (the paper's L_pred) with sampled negatives.

Scores are inner products ``y_hat = z_u . z_v`` of (fused) user and item representations,
trained with binary cross-entropy: label 1 for the observed next item, 0 for each sampled
negative. The paper sums over all items of the domain and says negative sampling is applied in
practice; here each target contributes ``-log s(pos) - sum_j log(1 - s(neg_j))`` (the sum over
negatives keeps the paper's form; ``negative_reduction="mean"`` is offered for many negatives),
and targets are *averaged* over the batch so the step size does not depend on the batch size.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from fedscope.models.transformer import tokens_to_items, valid_mask


def sample_negatives(
    positives: Tensor,
    n_items: int,
    n_negatives: int,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Item ids ``[..., n_negatives]`` drawn uniformly (with replacement) from ``0..n_items-1``
    minus the positive of each target.

    Only the positive is avoided, not the whole history: it is one vectorised draw with no
    rejection loop, and a history item drawn as a negative is rare (history length / catalogue
    size) and is a legitimate "not the next item" label for next-item prediction. Padding
    targets (any id outside ``0..n_items-1``, e.g. -1) get valid ids; mask them in the loss.
    """
    if n_items < 2:
        raise ValueError(f"need at least 2 items to sample a negative, got n_items={n_items}")
    draw = torch.randint(
        0,
        n_items - 1,
        (*positives.shape, n_negatives),
        generator=generator,
        device=positives.device,
    )
    # Draw from n_items - 1 values and skip over the positive: exactly uniform over the rest.
    return draw + (draw >= positives.unsqueeze(-1)).long()


def next_item_targets(tokens: Tensor) -> tuple[Tensor, Tensor]:
    """SASRec-style targets for right-padded tokens ``[B, N]``: the item id that follows each
    position (``-1`` where none) and a ``[B, N]`` mask of positions that have one. Position
    ``t``'s hidden state (which only saw items ``0..t``) predicts item ``t + 1``."""
    valid = valid_mask(tokens)
    targets = torch.full_like(tokens, -1)
    targets[:, :-1] = tokens_to_items(tokens[:, 1:])
    mask = torch.zeros_like(valid)
    mask[:, :-1] = valid[:, 1:]
    return targets.masked_fill(~mask, -1), mask


def next_item_bce(
    user: Tensor,
    positive: Tensor,
    negative: Tensor,
    mask: Tensor | None = None,
    negative_reduction: Literal["sum", "mean"] = "sum",
) -> Tensor:
    """Mean BCE over targets.

    Shapes: ``user`` and ``positive`` ``[..., d]`` (e.g. ``[B, d]`` or ``[B, N, d]``);
    ``negative`` either ``[..., n_neg, d]`` (one set per target) or ``[n_neg, d]`` (shared by
    all targets); ``mask`` ``[...]`` bool, False for targets to ignore (padding). Returns a
    scalar; 0 (still attached to the graph) when no target is unmasked.
    """
    if user.shape != positive.shape:
        raise ValueError(
            f"user {tuple(user.shape)} and positive {tuple(positive.shape)} shapes differ"
        )
    positive_logit = (user * positive).sum(dim=-1)
    if negative.dim() == 2:
        negative_logit = user @ negative.transpose(0, 1)
    elif negative.shape[:-2] == user.shape[:-1] and negative.shape[-1] == user.shape[-1]:
        negative_logit = torch.einsum("...d,...nd->...n", user, negative)
    else:
        raise ValueError(
            f"negative {tuple(negative.shape)} must be [n_neg, d] or user's leading shape "
            f"{tuple(user.shape[:-1])} + [n_neg, d]"
        )
    # softplus(-x) = -log sigmoid(x), softplus(x) = -log(1 - sigmoid(x)): stable BCE with logits.
    negative_term = F.softplus(negative_logit)
    negative_term = (
        negative_term.sum(dim=-1) if negative_reduction == "sum" else negative_term.mean(dim=-1)
    )
    per_target = F.softplus(-positive_logit) + negative_term
    if mask is None:
        return per_target.mean()
    if mask.shape != per_target.shape:
        raise ValueError(f"mask {tuple(mask.shape)} must have shape {tuple(per_target.shape)}")
    weights = mask.to(per_target.dtype)
    return (per_target * weights).sum() / weights.sum().clamp(min=1.0)
