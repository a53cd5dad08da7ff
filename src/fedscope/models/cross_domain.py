"""The cross-domain sequential recommender shared by FedSCOPE and its baselines.

One global item table (the unified item space V*, token = global id + 1) feeds

* one sequence encoder per domain over the user's domain sequence S^d, and
* optionally one encoder over the aggregated cross-domain sequence S* (all
  domains, chronological),

and the user state for predicting the next item of domain d is
``z_u^d = h^d + h*`` (the domain state and the cross-domain state at the same
moment; ``h^d`` alone when the cross-domain encoder is off). The paper does
not say how S* enters z_u^d; summing the two states keeps z_u^d in R^d, which
the fusion MLP and the inner-product scorer expect.

With ``fusion=True`` users and items pass through the paper's fusion encoder,
``z~ = Enc([z; f_A])``, a two-layer MLP; ``f_A`` are semantic features (zero
width until semantic augmentation is configured: the same module then runs on
``[z]`` alone, which is the clean "w/o LLM" ablation). We use two MLPs of that
form, one for users and one for items: the paper writes one ``Enc`` but user
profiles and item metadata are different feature spaces. Scores are inner
products ``z~_u . z~_v``.

Training uses every position (SASRec style): for each item x_p (p >= 1) of a
user's mixed training sequence, of domain d, the state is ``h^d`` after the
domain-d items before p and ``h*`` after the mixed items before p, exactly what
evaluation computes for a history ending just before p.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from fedscope.models.fusion import FusionEncoder
from fedscope.models.gru4rec import GRUSequenceEncoder
from fedscope.models.transformer import TransformerSequenceEncoder, new_item_embedding
from fedscope.training.batching import TrainBatch


@dataclass(frozen=True)
class ModelShape:
    domain_offsets: tuple[int, ...]  # global id of each domain's first item
    domain_sizes: tuple[int, ...]
    dim: int = 64
    n_layers: int = 2
    n_heads: int = 2
    dropout: float = 0.3
    max_len: int = 50
    encoder: str = "transformer"  # "transformer" | "gru"
    cross_domain: bool = True
    fusion: bool = True
    fusion_residual: bool = False
    user_semantic_dim: int = 0
    item_semantic_dim: int = 0
    item_init_std: float | None = None  # None: dim**-0.5

    @property
    def n_items(self) -> int:
        return sum(self.domain_sizes)

    @property
    def n_domains(self) -> int:
        return len(self.domain_sizes)


class CrossDomainRecommender(nn.Module):
    def __init__(self, shape: ModelShape):
        super().__init__()
        self.shape = shape
        self.items = new_item_embedding(shape.n_items, shape.dim, shape.item_init_std)
        self.domain_encoders = nn.ModuleList(self._encoder() for _ in range(shape.n_domains))
        self.cross_encoder = self._encoder() if shape.cross_domain else None
        if shape.fusion:
            self.user_fusion = FusionEncoder(
                shape.dim,
                shape.user_semantic_dim,
                dropout=shape.dropout,
                residual=shape.fusion_residual,
            )
            self.item_fusion = FusionEncoder(
                shape.dim,
                shape.item_semantic_dim,
                dropout=shape.dropout,
                residual=shape.fusion_residual,
            )
        else:
            self.user_fusion = self.item_fusion = None
        # Semantic features are local, read-only inputs: buffers, never trained or federated.
        self.register_buffer(
            "item_semantics", torch.zeros(shape.n_items, shape.item_semantic_dim), persistent=False
        )
        self.register_buffer(
            "user_semantics", torch.zeros(0, shape.user_semantic_dim), persistent=False
        )

    def set_semantics(self, items: Tensor | None, users: Tensor | None) -> None:
        """Install f_A: ``items`` [n_items, item_semantic_dim] by global item id, ``users``
        [n_users, user_semantic_dim] by user index (zero rows: no semantics for that entity)."""
        s = self.shape
        if items is not None:
            if tuple(items.shape) != (s.n_items, s.item_semantic_dim):
                raise ValueError(
                    f"item semantics of shape {tuple(items.shape)}, expected "
                    f"({s.n_items}, {s.item_semantic_dim})"
                )
            self.item_semantics = items.to(torch.float32)
        if users is not None:
            if users.dim() != 2 or users.shape[1] != s.user_semantic_dim:
                raise ValueError(
                    f"user semantics of shape {tuple(users.shape)}, expected "
                    f"(n_users, {s.user_semantic_dim})"
                )
            self.user_semantics = users.to(torch.float32)

    def user_features(self, users: Tensor | None) -> Tensor | None:
        """f_A of user indices (zeros for -1 or unknown users); None without user semantics."""
        if not self.shape.user_semantic_dim or users is None:
            return None
        table = self.user_semantics
        out = table.new_zeros(users.shape[0], self.shape.user_semantic_dim)
        known = (users >= 0) & (users < table.shape[0])
        out[known] = table[users[known]]
        return out

    def _encoder(self) -> nn.Module:
        s = self.shape
        if s.encoder == "transformer":
            return TransformerSequenceEncoder(0, s.max_len, s.dim, s.n_layers, s.n_heads, s.dropout)
        if s.encoder == "gru":
            return GRUSequenceEncoder(0, s.dim, n_layers=1, dropout=s.dropout)
        raise ValueError(f"unknown encoder {s.encoder!r}: expected 'transformer' or 'gru'")

    # --- pieces --------------------------------------------------------------------------------
    def encode(
        self, encoder: nn.Module, tokens: Tensor, return_all: bool
    ) -> tuple[Tensor, Tensor | None]:
        valid = tokens > 0
        out = encoder.encode(self.items(tokens), valid, return_all=return_all)
        return out.user, out.hidden

    def fuse_users(self, z: Tensor, user_semantics: Tensor | None = None) -> Tensor:
        if self.user_fusion is None:
            return z
        return self.user_fusion(z, user_semantics)

    def item_vectors(self, global_ids: Tensor) -> Tensor:
        """Fused item representations ``z~_v`` of global item ids (any shape)."""
        e = self.items(global_ids + 1)
        if self.item_fusion is None:
            return e
        sem = self.item_semantics[global_ids] if self.shape.item_semantic_dim else None
        return self.item_fusion(e, sem)

    def domain_item_vectors(self, domain: int) -> Tensor:
        start = self.shape.domain_offsets[domain]
        ids = torch.arange(
            start, start + self.shape.domain_sizes[domain], device=self.items.weight.device
        )
        return self.item_vectors(ids)

    # --- inference -----------------------------------------------------------------------------
    def user_states(
        self,
        domain: int,
        domain_tokens: Tensor,
        mixed_tokens: Tensor | None,
        user_semantics: Tensor | None = None,
    ) -> Tensor:
        """Fused user representations for predicting the next item of ``domain`` after the
        given (right-padded, most recent ``max_len``) histories."""
        z, _ = self.encode(self.domain_encoders[domain], domain_tokens, return_all=False)
        if self.cross_encoder is not None and mixed_tokens is not None:
            z_star, _ = self.encode(self.cross_encoder, mixed_tokens, return_all=False)
            z = z + z_star
        return self.fuse_users(z, user_semantics)

    # --- training ------------------------------------------------------------------------------
    def forward_train(self, batch: TrainBatch) -> tuple[Tensor, Tensor]:
        """Fused user states for every target position, and per-domain user representations.

        Returns ``states`` ``[B, N, d]`` (row b, column j: the state for predicting
        ``batch.target[b, j]`` in its domain) and ``last`` ``[D, B, d]`` (the user's
        representation for the next item of each domain after the whole prefix; meaningful
        where ``batch.present``), the representations IIDCL contrasts.
        """
        b, n = batch.mixed.shape
        dim = self.shape.dim
        z = self.items.weight.new_zeros(b, n, dim)
        last = self.items.weight.new_zeros(self.shape.n_domains, b, dim)
        positions = batch.domain_pos.clamp(min=0).unsqueeze(-1).expand(-1, -1, dim)
        for d, encoder in enumerate(self.domain_encoders):
            wanted = (batch.target_domain == d) & (batch.domain_pos >= 0)
            if not bool(batch.present[d].any()):
                continue  # no user of the batch has items of this domain yet
            user, hidden = self.encode(encoder, batch.domain[d], return_all=True)
            z = z + hidden.gather(1, positions) * wanted.unsqueeze(-1).to(z.dtype)
            last = last.index_copy(0, torch.tensor([d]), user.unsqueeze(0))
        if self.cross_encoder is not None:
            user_star, hidden_star = self.encode(self.cross_encoder, batch.mixed, return_all=True)
            z = z + hidden_star
            last = last + user_star.unsqueeze(0)
        sem = self.user_features(batch.users)
        sem_last = None if sem is None else sem.unsqueeze(0).expand(self.shape.n_domains, -1, -1)
        return self.fuse_users(z, sem), self.fuse_users(last, sem_last)
