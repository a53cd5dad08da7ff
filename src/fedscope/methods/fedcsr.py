"""A FedCSR-style dual-contrastive federated baseline (the paper's strongest federated rival).

FedCSR (Zheng et al., COLING 2025) trains a cross-domain sequential recommender federatedly with
two contrastive objectives and no semantic enrichment. We do not have its code or full text, so
this is *our reading* of that design, built from the same parts as FedSCOPE so that the
comparison isolates the objectives:

* the same per-domain Transformer encoders and aggregated cross-domain sequence, no fusion MLP
  and no semantic features;
* a **sequence-level** contrast within each domain: a user's representation against the
  representation of an augmented view of the same history (each item dropped with probability
  ``loss.augment_drop``), the other users of the batch as negatives;
* a **cross-domain** contrast: a user's representation in one domain against the same user's
  representation in every other domain, the other users' as negatives;
* both in the ordinary coupled InfoNCE form (:func:`fedscope.losses.infonce.info_nce`), where
  FedSCOPE's IIDCL decouples alignment and uniformity.

Weights reuse FedSCOPE's keys so one sensitivity grid covers both: ``loss.alpha`` scales both
terms, ``loss.lambda_intra``/``loss.tau_intra`` the sequence-level one,
``loss.lambda_inter``/``loss.tau_inter`` the cross-domain one.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from fedscope.losses.infonce import drop_items, info_nce
from fedscope.methods.base import register
from fedscope.methods.sequential import SequentialMethod
from fedscope.models.cross_domain import CrossDomainRecommender
from fedscope.training.batching import TrainBatch


@register
class FedCSRStyle(SequentialMethod):
    name = "fedcsr"
    description = (
        "FedCSR-style baseline (our reading): Transformer per domain + cross-domain sequence, "
        "sequence-level and cross-domain InfoNCE, no semantics"
    )
    fusion = False
    intra_uses_bank = False

    def _contrastive_terms(
        self,
        model: CrossDomainRecommender,
        batch: TrainBatch,
        last: Tensor,
        bank: Tensor | None,
        bank_present: Tensor | None,
        gen: torch.Generator,
        inter_view: tuple[Tensor, Tensor],
    ) -> tuple[Callable[[int], Tensor], Callable[[], Tensor]]:
        loss = self.config.loss
        reps, present = inter_view
        views: dict[int, Tensor] = {}

        def augmented(d: int, rows: Tensor) -> Tensor:
            # one augmented view per domain and batch, drawn only when the term is used
            if d not in views:
                mixed = None
                if model.cross_encoder is not None:
                    mixed = drop_items(batch.mixed[rows], loss.augment_drop, gen)
                domain = drop_items(batch.domain[d][rows], loss.augment_drop, gen)
                views[d] = model.user_states(d, domain, mixed)
            return views[d]

        def sequence_term(d: int) -> Tensor:
            rows = batch.present[d].nonzero().squeeze(1)
            if rows.numel() < 2:
                return last.sum() * 0.0
            anchors = last[d][rows]
            view = augmented(d, rows)
            n = rows.numel()
            allowed = torch.ones(n, n, dtype=torch.bool)
            return info_nce(anchors, view, torch.arange(n), allowed, loss.tau_intra)

        def cross_term() -> Tensor:
            n_domains = reps.shape[0]
            per_domain = []
            for i in range(n_domains):
                terms = []
                for j in range(n_domains):
                    if i == j:
                        continue
                    both = (present[i] & present[j]).nonzero().squeeze(1)
                    candidates = present[j].nonzero().squeeze(1)
                    if both.numel() == 0 or candidates.numel() < 2:
                        continue
                    # position of each anchor's own row among the candidates
                    slot = torch.full((reps.shape[1],), -1, dtype=torch.long)
                    slot[candidates] = torch.arange(candidates.numel())
                    allowed = torch.ones(both.numel(), candidates.numel(), dtype=torch.bool)
                    terms.append(
                        info_nce(
                            reps[i][both], reps[j][candidates], slot[both], allowed, loss.tau_inter
                        )
                    )
                per_domain.append(torch.stack(terms).mean() if terms else last.sum() * 0.0)
            return torch.stack(per_domain)

        return sequence_term, cross_term
