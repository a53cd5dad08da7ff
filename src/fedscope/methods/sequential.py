"""The shared implementation of sequence-encoder methods (FedSCOPE and its baselines).

FedSCOPE, its "w/o IIDCL" ablation, SASRec and GRU4Rec differ only in the
switches below; sharing one implementation keeps the comparison fair (same
batching, same negatives, same optimiser, same scorer).

IIDCL choices the paper leaves open, and what we do:

* **Which users an anchor is compared with (intra-domain).** The client's own
  users in the domain: a client cannot see other clients' users. Their fused
  representations live in a *bank* of detached vectors, computed once at the
  start of the client step and refreshed for every batch's users as they are
  trained; anchors (the batch's users) carry gradients, the bank does not.
  ``|U_d|`` in ``K = min(K_max, floor(rho |U_d|))`` is the number of the
  client's users with items in domain d.
* **How Top-K is found.** Exactly, by one matrix product of the anchors against
  the bank under ``no_grad`` (the bank is a client's users: thousands at most),
  see :func:`fedscope.losses.iidcl.select_intra_pairs`.
* **Inter-domain.** Positives: the same user's representations in the other
  domains, within the batch; negatives: M other users' representations in
  those domains, within the batch. With ``federation.exchange_representations``
  a user's domains held by other clients are filled in from the partners'
  exchanged representations (:mod:`fedscope.federation.exchange`): fixed
  vectors, so the gradient reaches only this client's own representations.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import ClassVar

import numpy as np
import torch
from torch import Tensor, nn

from fedscope.data.dataset import CrossDomainDataset
from fedscope.data.partition import ClientData, ClientPartition
from fedscope.evaluation.evaluator import EvalBatch
from fedscope.losses import (
    DecoupledWeights,
    inter_domain_loss,
    intra_domain_loss,
    joint_objective,
    next_item_bce,
    sample_negatives,
)
from fedscope.methods.base import Method, StepContext, scheduled_lr
from fedscope.models.cross_domain import CrossDomainRecommender, ModelShape
from fedscope.models.transformer import pad_sequences
from fedscope.training.batching import ClientExamples, TrainBatch

BANK_BATCH_ROWS = 64  # users per forward pass when the representation bank is built


class SequentialMethod(Method):
    encoder: ClassVar[str] = "transformer"
    cross_domain: ClassVar[bool] = True
    fusion: ClassVar[bool] = True
    contrastive: ClassVar[bool] = True
    # IIDCL's intra-domain positives come from a bank of the client's user representations
    intra_uses_bank: ClassVar[bool] = True

    def model_shape(self) -> ModelShape:
        m = self.config.model
        return ModelShape(
            domain_offsets=self.shape.domain_offsets,
            domain_sizes=self.shape.domain_sizes,
            dim=m.dim,
            n_layers=m.n_layers,
            n_heads=m.n_heads,
            dropout=m.dropout,
            max_len=m.max_len,
            encoder=self.encoder,
            cross_domain=self.cross_domain and m.cross_domain_sequence,
            fusion=self.fusion and m.fusion,
            fusion_residual=m.fusion_residual,
            item_init_std=m.item_init_std,
            item_semantic_dim=self.shape.item_semantic_dim if self.fusion and m.fusion else 0,
            user_semantic_dim=self.shape.user_semantic_dim if self.fusion and m.fusion else 0,
        )

    def build_model(self, seed: int) -> nn.Module:
        torch.manual_seed(seed)
        return CrossDomainRecommender(self.model_shape())

    def prepare_client(
        self, dataset: CrossDomainDataset, users: np.ndarray, domains: tuple[int, ...]
    ) -> ClientExamples:
        view = ClientData(dataset, ClientPartition(-1, np.asarray(users), domains))
        pairs = view.train_sequences()
        return ClientExamples.build(
            [u for u, _ in pairs],
            [s for _, s in pairs],
            dataset.domain_of,
            dataset.n_domains,
            self.config.model.max_len,
        )

    # --- the client step -------------------------------------------------------------------
    def _weights(self) -> tuple[float, float, float]:
        loss = self.config.loss
        if not self.contrastive:
            return 0.0, 0.0, 0.0
        return loss.alpha, loss.lambda_intra, loss.lambda_inter

    @torch.no_grad()
    def _bank(self, model: CrossDomainRecommender, ex: ClientExamples) -> tuple[Tensor, Tensor]:
        """Every row's representation per domain ``[D, U, dim]`` and presence ``[D, U]``."""
        was_training = model.training
        model.eval()
        reps = torch.zeros(len(self.shape.domain_sizes), ex.n_users, model.shape.dim)
        present = torch.zeros(len(self.shape.domain_sizes), ex.n_users, dtype=torch.bool)
        # Rows sorted by length in small batches: in row order nearly every batch holds one
        # long sequence and is padded to it. For a titled Food-Kitchen client (median length 5,
        # longest 49) that made the bank 5x slower, with bit-identical vectors
        # (`bench/speed.py bank`, BENCHMARKS.md "Speed").
        for batch in ex.all_rows(BANK_BATCH_ROWS, by_length=True):
            _, last = model.forward_train(batch)
            reps[:, batch.rows] = last
            present[:, batch.rows] = batch.present
        model.train(was_training)
        return reps, present

    def client_step(
        self, model: nn.Module, client_data: object, ctx: StepContext
    ) -> dict[str, float]:
        assert isinstance(model, CrossDomainRecommender) and isinstance(client_data, ClientExamples)
        ex = client_data
        cfg = self.config
        torch.manual_seed(ctx.seed)
        gen = torch.Generator().manual_seed(ctx.seed)
        rng = np.random.default_rng(ctx.seed)
        alpha, lam_intra, lam_inter = self._weights()
        use_intra = alpha * lam_intra > 0
        use_inter = alpha * lam_inter > 0
        # See TrainConfig.optimizer: coupled L2 (Adam) erodes untouched item rows by ~lr per step.
        optimiser_class = torch.optim.AdamW if cfg.train.optimizer == "adamw" else torch.optim.Adam
        optimiser = optimiser_class(
            model.parameters(),
            lr=scheduled_lr(cfg, ctx.progress),
            weight_decay=cfg.train.weight_decay,
            # One fused kernel instead of a chain of elementwise ops: the dense item table
            # makes the step a large share of a small client's time (about 9x faster for
            # the Food-Kitchen model on one CPU thread; deterministic, equal to the unfused
            # step within float rounding).
            fused=True,
        )
        needs_bank = use_intra and self.intra_uses_bank
        bank, bank_present = self._bank(model, ex) if needs_bank else (None, None)
        partner_reps, partner_present = self._partner_bank(ex, ctx, model)
        model.train()
        sums = {"loss": 0.0, "pred": 0.0, "intra": 0.0, "inter": 0.0}
        n_batches = 0
        bucketed = cfg.train.length_buckets
        expected = (
            torch.from_numpy(
                ex.mean_targets_per_batch(cfg.train.batch_size, len(self.shape.domain_sizes))
            )
            if bucketed
            else None
        )
        for _ in range(ctx.epochs):
            for batch in ex.batches(cfg.train.batch_size, rng, by_length=bucketed):
                states, last = model.forward_train(batch)
                pred = self._prediction_losses(
                    model, batch.target, batch.target_domain, states, gen
                )
                if expected is not None:
                    pred = _reweight_by_targets(pred, batch.target_domain, expected)
                if not bool((batch.target >= 0).any()):
                    continue
                inter_view = self._inter_view(last, batch, partner_reps, partner_present)
                intra, inter = self._contrastive_terms(
                    model, batch, last, bank, bank_present, gen, inter_view
                )
                joint = joint_objective(
                    pred,
                    intra if use_intra else None,
                    inter if use_inter else None,
                    alpha,
                    lam_intra,
                    lam_inter,
                )
                optimiser.zero_grad(set_to_none=True)
                joint.total.backward()
                optimiser.step()
                if bank is not None:
                    bank[:, batch.rows] = last.detach()
                sums["loss"] += float(joint.total.detach())
                sums["pred"] += joint.prediction
                sums["intra"] += joint.intra
                sums["inter"] += joint.inter
                n_batches += 1
        return {k: v / max(n_batches, 1) for k, v in sums.items()} | {"batches": float(n_batches)}

    def _partner_bank(
        self, ex: ClientExamples, ctx: StepContext, model: CrossDomainRecommender
    ) -> tuple[Tensor | None, Tensor | None]:
        """Partners' representations by example row ``[D, U, dim]``, with presence ``[D, U]``
        (None without any): where several partners hold a user's domain, the last wins."""
        partners = ctx.partners
        if partners is None or partners.size == 0:
            return None, None
        row_of = {int(u): r for r, u in enumerate(ex.users)}
        n_domains, dim = partners.reps.shape[0], model.shape.dim
        if partners.reps.shape[2] != dim or n_domains != len(self.shape.domain_sizes):
            raise ValueError(
                f"client {ctx.client_id}: partners' representations have shape "
                f"{partners.reps.shape}, expected ({len(self.shape.domain_sizes)}, P, {dim})"
            )
        reps = torch.zeros(n_domains, ex.n_users, dim)
        present = torch.zeros(n_domains, ex.n_users, dtype=torch.bool)
        for p, user in enumerate(partners.users):
            row = row_of.get(int(user))
            if row is None:  # a shared user with no training sequence here
                continue
            for d in np.nonzero(partners.present[:, p])[0]:
                reps[d, row] = torch.from_numpy(partners.reps[d, p])
                present[d, row] = True
        return reps, present

    @staticmethod
    def _inter_view(
        last: Tensor, batch: TrainBatch, partner_reps: Tensor | None, partner_present: Tensor | None
    ) -> tuple[Tensor, Tensor]:
        """The batch's representations for the cross-domain term: this client's own where it
        holds the domain, the partners' (fixed) elsewhere."""
        if partner_reps is None or partner_present is None:
            return last, batch.present
        theirs = partner_present[:, batch.rows] & ~batch.present
        reps = torch.where(theirs.unsqueeze(2), partner_reps[:, batch.rows], last)
        return reps, batch.present | theirs

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
        """The within-domain term of domain d and the cross-domain term (a ``[D]`` vector) of
        this batch, as callables so that a term weighted 0 is never computed. IIDCL here; a
        method with other contrastive objectives overrides this. ``inter_view`` is what the
        cross-domain term sees (:meth:`_inter_view`)."""
        loss = self.config.loss
        intra_w = DecoupledWeights(loss.intra_align, loss.intra_uniform, loss.tau_intra)
        inter_w = DecoupledWeights(loss.inter_align, loss.inter_uniform, loss.tau_inter)

        def intra(d: int) -> Tensor:
            return self._intra(d, last, batch.rows, batch.present, bank, bank_present, intra_w, gen)

        def inter() -> Tensor:
            reps, present = inter_view
            return inter_domain_loss(reps, present, inter_w, loss.m_negatives, gen)

        return intra, inter

    def _prediction_losses(
        self,
        model: CrossDomainRecommender,
        target: Tensor,
        target_domain: Tensor,
        states: Tensor,
        gen: torch.Generator,
    ) -> list[Tensor]:
        """L_pred of every domain, in domain order (an attached 0 where the batch has no
        target of that domain), so that index d is domain d for the joint objective."""
        losses = []
        for d, (offset, size) in enumerate(
            zip(self.shape.domain_offsets, self.shape.domain_sizes, strict=True)
        ):
            sel = target_domain == d
            if not bool(sel.any()) or size < 2:
                losses.append(states.sum() * 0.0)
                continue
            positives = target[sel]
            negatives = (
                sample_negatives(positives - offset, size, self.config.loss.n_negatives, gen)
                + offset
            )
            losses.append(
                next_item_bce(
                    states[sel], model.item_vectors(positives), model.item_vectors(negatives)
                )
            )
        return losses

    def _intra(
        self,
        d: int,
        last: Tensor,
        rows: Tensor,
        present: Tensor,
        bank: Tensor | None,
        bank_present: Tensor | None,
        weights: DecoupledWeights,
        gen: torch.Generator,
    ) -> Tensor:
        assert bank is not None and bank_present is not None
        anchors_mask = present[d]
        if not bool(anchors_mask.any()):
            return last.sum() * 0.0
        pool_rows = bank_present[d].nonzero().squeeze(1)
        # row of each anchor in the compacted pool
        position = torch.full((bank.shape[1],), -1, dtype=torch.long)
        position[pool_rows] = torch.arange(pool_rows.shape[0])
        loss = self.config.loss
        return intra_domain_loss(
            last[d][anchors_mask],
            bank[d][pool_rows],
            position[rows[anchors_mask]],
            int(pool_rows.shape[0]),
            weights,
            rho=loss.rho,
            k_max=loss.k_max,
            n_negatives=loss.m_negatives,
            generator=gen,
        )

    @torch.no_grad()
    def shared_representations(
        self, model: nn.Module, client_data: object
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        assert isinstance(model, CrossDomainRecommender)
        assert isinstance(client_data, ClientExamples)
        reps, present = self._bank(model, client_data)
        return client_data.users.copy(), reps.numpy(), present.numpy()

    # --- scoring -----------------------------------------------------------------------------
    def scorer(self, model: nn.Module) -> SequentialScorer:
        assert isinstance(model, CrossDomainRecommender)
        return SequentialScorer(self.name, model)


class SequentialScorer:
    def __init__(self, name: str, model: CrossDomainRecommender):
        self.name = name
        self.model = model
        self._item_cache: dict[int, Tensor] = {}

    @torch.no_grad()
    def score(self, batch: EvalBatch) -> np.ndarray:
        model = self.model
        model.eval()
        shape = model.shape
        d = batch.domain
        lo, hi = shape.domain_offsets[d], shape.domain_offsets[d] + shape.domain_sizes[d]
        domain_hist = [h[(h >= lo) & (h < hi)] for h in batch.histories]
        width = max(1, max((min(len(h), shape.max_len) for h in domain_hist), default=1))
        domain_tokens = pad_sequences(domain_hist, width)
        mixed_tokens = None
        if model.cross_encoder is not None:
            width = max(1, max((min(len(h), shape.max_len) for h in batch.histories), default=1))
            mixed_tokens = pad_sequences(batch.histories, width)
        sem = model.user_features(torch.as_tensor(np.asarray(batch.users, dtype=np.int64)))
        users = model.user_states(d, domain_tokens, mixed_tokens, sem)
        if d not in self._item_cache:
            self._item_cache[d] = model.domain_item_vectors(d)
        return (users @ self._item_cache[d].T).numpy()


def _reweight_by_targets(
    losses: list[Tensor], target_domain: Tensor, expected: Tensor
) -> list[Tensor]:
    """Domain d's mean loss times (its targets in this batch / in a random batch on average).

    A per-batch mean gives each target 1/(targets in its batch) of weight; in random batches
    that is about 1/expected[d] for everyone, but a batch of short sequences holds few
    targets, so length-sorted batches would weigh short users' targets up. This puts every
    target back at 1/expected[d].
    """
    out = []
    for d, loss in enumerate(losses):
        if float(expected[d]) > 0:
            n = (target_domain == d).sum().to(loss.dtype)
            loss = loss * (n / expected[d].to(loss.dtype))
        out.append(loss)
    return out
