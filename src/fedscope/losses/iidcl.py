"""Intra- and Inter-Domain Decoupled Contrastive Learning (IIDCL), as written in the paper.

For an anchor ``u`` with positive set ``P`` and negative set ``N`` (cosine similarities ``sim``)

    loss(u) = -lambda_a * mean_{p in P} sim(u, p) / tau + lambda_u * log sum_{n in N} exp(sim(u, n) / tau)

i.e. the alignment and uniformity parts of InfoNCE, decoupled and separately weighted.

* Intra-domain (:func:`intra_domain_loss`): in one domain, ``P`` = the Top-K users of a
  comparison pool most cosine-similar to the anchor (the anchor itself excluded), with
  ``K = min(K_max, floor(rho * |U_d|))`` (at least 1) for the domain's user count ``|U_d|``;
  ``N`` = ``M`` users drawn uniformly without replacement from the rest of the pool.
* Inter-domain (:func:`inter_domain_loss`): for user ``u`` in domain ``d_i``, ``P`` = the same
  user's representations in the other domains, ``N`` = the other users' representations in those
  domains.

Degenerate cases, all without NaN: an anchor with no positives contributes no alignment term, an
anchor with no negatives contributes no uniformity term, an anchor with neither is left out of
the mean, and a loss with no anchor left is 0 (a zero that is still attached to the graph, so
``backward`` works). A pool smaller than ``K + M + 1`` yields fewer positives/negatives per
anchor, never an error.

:func:`joint_objective` combines per-domain prediction losses with the two contrastive terms as
``sum_d L_pred + alpha * (lambda_intra * L_intra + lambda_inter * L_inter)``; a zero weight does
not call the term at all.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

# Entries that must not count in a logsumexp. A large finite value rather than -inf keeps the
# backward pass finite for rows where every entry is excluded (exp(-inf - -inf) is NaN).
_EXCLUDED = -1e9
# Random sort key given to pool members that cannot be drawn as negatives (draws are in [0, 1)).
_NOT_DRAWABLE = 2.0
# Anchor rows per block in the no-grad selection, sized so a block of similarities stays near
# 16M floats (64 MiB) whatever the pool size.
_SELECTION_BLOCK_ELEMENTS = 1 << 24


@dataclass(frozen=True)
class DecoupledWeights:
    """Weights of one decoupled contrastive term. The paper gives no values for the
    temperature or for the alignment/uniformity weights; these defaults are ours."""

    align: float = 1.0  # lambda^a
    uniform: float = 1.0  # lambda^u
    temperature: float = 0.2  # tau

    def __post_init__(self) -> None:
        if self.temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}")
        if self.align < 0 or self.uniform < 0:
            raise ValueError(f"weights must be >= 0, got align={self.align} uniform={self.uniform}")


def intra_domain_k(n_domain_users: int, rho: float = 0.02, k_max: int = 50) -> int:
    """``K = min(K_max, floor(rho * |U_d|))``, at least 1."""
    if n_domain_users < 0:
        raise ValueError(f"n_domain_users must be >= 0, got {n_domain_users}")
    # The epsilon keeps float products such as 0.29 * 100 = 28.999999999999996 from flooring to 28.
    return max(1, min(k_max, math.floor(rho * n_domain_users + 1e-9)))


def decoupled_contrastive_terms(
    positive_sims: Tensor,
    positive_mask: Tensor,
    negative_sims: Tensor,
    negative_mask: Tensor,
    weights: DecoupledWeights,
) -> tuple[Tensor, Tensor]:
    """Per-anchor losses ``[A]`` and a ``[A]`` bool mask of anchors that had anything to
    compare, from cosine similarities ``[A, P]`` / ``[A, M]`` and masks of the entries that count."""
    # Zeros that stay attached to the graph, so a loss with both weights at 0 still backprops.
    loss = positive_sims[:, :0].sum(dim=1)
    has_positive = positive_mask.any(dim=1)
    has_negative = negative_mask.any(dim=1)
    if weights.align != 0:
        counted = positive_mask.to(positive_sims.dtype)
        mean_sim = (positive_sims * counted).sum(dim=1) / counted.sum(dim=1).clamp(min=1.0)
        loss = loss - weights.align * mean_sim / weights.temperature
    if weights.uniform != 0:
        logits = (negative_sims / weights.temperature).masked_fill(~negative_mask, _EXCLUDED)
        spread = torch.logsumexp(logits, dim=1)
        loss = loss + weights.uniform * torch.where(has_negative, spread, torch.zeros_like(spread))
    return loss, has_positive | has_negative


def _masked_mean(values: Tensor, mask: Tensor) -> Tensor:
    counted = mask.to(values.dtype)
    # Multiplying (not indexing) keeps a graph-attached zero when nothing counts.
    return (values * counted).sum() / counted.sum().clamp(min=1.0)


@dataclass(frozen=True)
class IntraPairs:
    """Pool rows chosen for each anchor; masks are False on unused slots."""

    positive_index: Tensor  # [A, K] long
    positive_mask: Tensor  # [A, K] bool
    negative_index: Tensor  # [A, M] long
    negative_mask: Tensor  # [A, M] bool


@torch.no_grad()
def select_intra_pairs(
    anchors: Tensor,
    pool: Tensor,
    anchor_pool_index: Tensor,
    k: int,
    n_negatives: int,
    generator: torch.Generator | None = None,
) -> IntraPairs:
    """Top-K positives and ``n_negatives`` uniform negatives per anchor.

    Runs under ``no_grad`` on detached similarities: Top-K is a discrete choice with no gradient,
    and keeping the full ``[A, |pool|]`` similarity matrix out of the autograd graph is what makes
    large pools affordable; the loss recomputes only the chosen similarities with gradients.
    ``anchor_pool_index[a]`` is anchor ``a``'s row in ``pool`` (excluded from both sets) or -1.
    Negatives are drawn without replacement from the pool minus the positives and the anchor;
    when fewer remain, all of them are used.
    """
    n_anchors, pool_size = anchors.shape[0], pool.shape[0]
    n_pos = min(k, pool_size)
    n_neg = min(n_negatives, pool_size)
    device = anchors.device
    positive_index = torch.zeros(n_anchors, n_pos, dtype=torch.long, device=device)
    positive_mask = torch.zeros(n_anchors, n_pos, dtype=torch.bool, device=device)
    negative_index = torch.zeros(n_anchors, n_neg, dtype=torch.long, device=device)
    negative_mask = torch.zeros(n_anchors, n_neg, dtype=torch.bool, device=device)
    if n_anchors == 0 or pool_size == 0:
        return IntraPairs(positive_index, positive_mask, negative_index, negative_mask)
    anchors_unit = F.normalize(anchors.detach(), dim=1)
    pool_unit = F.normalize(pool.detach(), dim=1)
    block = max(1, _SELECTION_BLOCK_ELEMENTS // pool_size)
    for start in range(0, n_anchors, block):
        stop = min(start + block, n_anchors)
        rows = torch.arange(stop - start, device=device)
        self_index = anchor_pool_index[start:stop]
        in_pool = self_index >= 0
        self_col = self_index.clamp(min=0)
        sims = anchors_unit[start:stop] @ pool_unit.T
        sims[rows[in_pool], self_col[in_pool]] = -math.inf
        top_sims, top_index = sims.topk(n_pos, dim=1)
        chosen_pos = top_sims > -math.inf  # a pool of one (the anchor) has no positive
        positive_index[start:stop] = top_index
        positive_mask[start:stop] = chosen_pos
        keys = torch.rand(sims.shape, generator=generator, device=device, dtype=sims.dtype)
        keys.scatter_(
            1, top_index, torch.where(chosen_pos, _NOT_DRAWABLE, keys.gather(1, top_index))
        )
        keys[rows[in_pool], self_col[in_pool]] = _NOT_DRAWABLE
        # The n_neg smallest uniform keys are a uniform draw without replacement.
        low_keys, low_index = keys.topk(n_neg, dim=1, largest=False)
        negative_index[start:stop] = low_index
        negative_mask[start:stop] = low_keys < _NOT_DRAWABLE
    return IntraPairs(positive_index, positive_mask, negative_index, negative_mask)


def intra_domain_loss(
    anchors: Tensor,
    pool: Tensor,
    anchor_pool_index: Tensor,
    n_domain_users: int,
    weights: DecoupledWeights | None = None,
    rho: float = 0.02,
    k_max: int = 50,
    n_negatives: int = 100,
    generator: torch.Generator | None = None,
    pairs: IntraPairs | None = None,
) -> Tensor:
    """L_intra of one domain (scalar), averaged over anchors.

    ``anchors`` ``[A, d]``: fused user representations of the batch (with gradients).
    ``pool`` ``[P, d]``: fused representations of the users to compare with (e.g. the client's
    users in this domain; may be a detached memory bank, or contain the anchors themselves).
    ``anchor_pool_index`` ``[A]``: each anchor's row in ``pool``, or -1 if it is not there (an
    anchor that *is* in the pool but is given -1 would pick itself as its closest positive).
    ``n_domain_users``: ``|U_d|`` used for K. ``pairs`` overrides the sampled selection (tests,
    or reuse across calls). Gradients flow through the recomputed similarities into both the
    anchors and (unless detached by the caller) the pool.
    """
    if anchors.dim() != 2 or pool.dim() != 2 or anchors.shape[1] != pool.shape[1]:
        raise ValueError(
            f"anchors {tuple(anchors.shape)} and pool {tuple(pool.shape)} must be [*, d] alike"
        )
    if anchor_pool_index.shape != (anchors.shape[0],):
        raise ValueError(
            f"anchor_pool_index must have shape ({anchors.shape[0]},), "
            f"got {tuple(anchor_pool_index.shape)}"
        )
    if anchor_pool_index.numel() and (
        int(anchor_pool_index.min()) < -1 or int(anchor_pool_index.max()) >= pool.shape[0]
    ):
        raise ValueError(
            f"anchor_pool_index must be -1 or a row of the pool (0..{pool.shape[0] - 1}), got "
            f"values in [{int(anchor_pool_index.min())}, {int(anchor_pool_index.max())}]"
        )
    weights = weights or DecoupledWeights()
    if pairs is None:
        k = intra_domain_k(n_domain_users, rho, k_max)
        pairs = select_intra_pairs(anchors, pool, anchor_pool_index, k, n_negatives, generator)
    anchors_unit = F.normalize(anchors, dim=1)
    pool_unit = F.normalize(pool, dim=1)
    positive_sims = torch.einsum("ad,akd->ak", anchors_unit, pool_unit[pairs.positive_index])
    if weights.uniform != 0:
        negative_sims = torch.einsum("ad,amd->am", anchors_unit, pool_unit[pairs.negative_index])
    else:
        negative_sims = anchors_unit.new_zeros(pairs.negative_index.shape)
    per_anchor, counted = decoupled_contrastive_terms(
        positive_sims, pairs.positive_mask, negative_sims, pairs.negative_mask, weights
    )
    return _masked_mean(per_anchor, counted)


def inter_domain_loss(
    representations: Tensor,
    present: Tensor,
    weights: DecoupledWeights | None = None,
    n_negatives: int | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    """L_inter per domain, ``[D]``.

    ``representations`` ``[D, B, d]``: fused representations of the same ``B`` users (column
    ``u`` is one user in every domain) in ``D`` domains; ``present`` ``[D, B]`` bool says which
    exist (a user without history in a domain has none there). Anchors of domain ``i`` are the
    users present in ``i`` and in at least one other domain; positives are their own
    representations in the other domains, negatives every present representation of another
    user in another domain (``n_negatives=None``) or ``n_negatives`` of those drawn uniformly
    without replacement. A domain with no such anchor, e.g. when no user of the batch is present
    in two domains (no overlap, or no PSI alignment), gets loss 0.
    """
    if representations.dim() != 3 or present.shape != representations.shape[:2]:
        raise ValueError(
            f"representations {tuple(representations.shape)} must be [D, B, d] and present "
            f"{tuple(present.shape)} must be [D, B]"
        )
    weights = weights or DecoupledWeights()
    n_domains, n_users, dim = representations.shape
    device = representations.device
    present = present.bool()
    overlap = present & (present.sum(dim=0, keepdim=True) >= 2)
    anchor_rows = overlap.reshape(-1).nonzero().squeeze(1)  # flat index i * B + u
    if anchor_rows.numel() == 0:
        return representations.sum() * 0.0 + representations.new_zeros(n_domains)
    flat_unit = F.normalize(representations.reshape(-1, dim), dim=1)
    anchor_domain = anchor_rows // n_users
    anchor_user = anchor_rows % n_users
    column_domain = torch.arange(n_domains, device=device).repeat_interleave(n_users)
    column_user = torch.arange(n_users, device=device).repeat(n_domains)
    other_domain = anchor_domain.unsqueeze(1) != column_domain.unsqueeze(0)
    same_user = anchor_user.unsqueeze(1) == column_user.unsqueeze(0)
    column_present = present.reshape(-1).unsqueeze(0)
    positive_mask = other_domain & same_user & column_present
    negative_mask = other_domain & ~same_user & column_present
    sims = flat_unit[anchor_rows] @ flat_unit.T  # [A, D*B]
    if n_negatives is not None:
        with torch.no_grad():
            keys = torch.rand(sims.shape, generator=generator, device=device, dtype=sims.dtype)
            keys = keys.masked_fill(~negative_mask, _NOT_DRAWABLE)
            low_keys, low_index = keys.topk(min(n_negatives, keys.shape[1]), dim=1, largest=False)
        negative_sims = sims.gather(1, low_index)
        negative_mask = low_keys < _NOT_DRAWABLE
    else:
        negative_sims = sims
    per_anchor, counted = decoupled_contrastive_terms(
        sims, positive_mask, negative_sims, negative_mask, weights
    )
    total = representations.new_zeros(n_domains).index_add(
        0, anchor_domain, per_anchor * counted.to(per_anchor.dtype)
    )
    count = torch.bincount(anchor_domain[counted], minlength=n_domains).to(total.dtype)
    return total / count.clamp(min=1.0)


@dataclass(frozen=True)
class JointLoss:
    total: Tensor  # the scalar to back-propagate
    prediction: float  # sum over domains, for logging
    intra: float  # sum over domains of L_intra (0.0 when switched off)
    inter: float  # sum over domains of L_inter (0.0 when switched off)


def joint_objective(
    prediction: Sequence[Tensor],
    intra: Callable[[int], Tensor] | None,
    inter: Callable[[], Tensor] | None,
    alpha: float,
    lambda_intra: float,
    lambda_inter: float,
) -> JointLoss:
    """``sum_d ( L_pred^d + alpha * (lambda_intra * L_intra^d + lambda_inter * L_inter^d) )``.

    ``prediction[d]`` is L_pred of domain ``d``; ``intra(d)`` computes L_intra of domain ``d``;
    ``inter()`` computes the ``[D]`` vector of L_inter (:func:`inter_domain_loss`). A term whose
    weight (``alpha * lambda``) is 0, or whose callable is None, is never computed.
    """
    if not prediction:
        raise ValueError("joint_objective needs at least one domain's prediction loss")
    total = torch.stack(list(prediction)).sum()
    prediction_sum = float(total.detach())
    intra_sum = 0.0
    inter_sum = 0.0
    if intra is not None and alpha * lambda_intra != 0:
        intra_total = torch.stack([intra(d) for d in range(len(prediction))]).sum()
        total = total + alpha * lambda_intra * intra_total
        intra_sum = float(intra_total.detach())
    if inter is not None and alpha * lambda_inter != 0:
        inter_per_domain = inter()
        if inter_per_domain.shape != (len(prediction),):
            raise ValueError(
                f"inter() returned shape {tuple(inter_per_domain.shape)}, "
                f"expected ({len(prediction)},)"
            )
        inter_total = inter_per_domain.sum()
        total = total + alpha * lambda_inter * inter_total
        inter_sum = float(inter_total.detach())
    return JointLoss(total=total, prediction=prediction_sum, intra=intra_sum, inter=inter_sum)
