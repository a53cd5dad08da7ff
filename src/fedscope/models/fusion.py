"""The fusion encoder Enc([z; f_A]) of the paper's feature-fusion step.

``Enc`` is a two-layer MLP (Linear -> GELU -> Dropout -> Linear) from ``dim + semantic_dim`` to
``dim``. The same class serves users (``z`` = the sequence encoder's ``z_u``, ``f_A`` = the
user's LLM profile vector) and items (``z`` = the item's embedding row, ``f_A`` = its LLM
attribute vector); the paper writes one symbol ``Enc`` for both, so one instance can be shared
when the two semantic widths agree.

Without semantic features (``semantic_dim == 0``, the "w/o LLM" ablation) the module keeps the
MLP and runs the same code on ``[z]`` alone: the only difference between the ablation and the
full model is the input width, so any gain measured for the LLM features is not confounded with
the extra capacity of the MLP. The paper does not name the activation or hidden width; GELU and
a hidden width of ``dim`` are our choices.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


class FusionEncoder(nn.Module):
    def __init__(
        self,
        dim: int = 64,
        semantic_dim: int = 0,
        hidden_dim: int | None = None,
        dropout: float = 0.3,
        residual: bool = False,
    ) -> None:
        super().__init__()
        # residual: z + Enc([z; f_A]); the MLP then learns a correction to the behavioural
        # representation instead of having to reproduce it through two layers.
        self.residual = residual
        if semantic_dim < 0:
            raise ValueError(f"semantic_dim must be >= 0, got {semantic_dim}")
        self.dim = dim
        self.semantic_dim = semantic_dim
        width = hidden_dim or dim
        self.mlp = nn.Sequential(
            nn.Linear(dim + semantic_dim, width),
            nn.GELU(),
            nn.Dropout(dropout),
            nn.Linear(width, dim),
        )

    def forward(self, behaviour: Tensor, semantic: Tensor | None = None) -> Tensor:
        """Fuse ``behaviour`` ``[..., dim]`` with ``semantic`` features.

        ``semantic`` is ``[..., semantic_dim]``; its leading shape may be a prefix of the
        behaviour's (e.g. one ``[B, s]`` user profile for ``[B, N, dim]`` per-position states),
        in which case it is broadcast over the remaining positions. It must be None exactly when
        ``semantic_dim == 0``.
        """
        if behaviour.shape[-1] != self.dim:
            raise ValueError(
                f"behaviour features have width {behaviour.shape[-1]}, expected {self.dim}"
            )
        if self.semantic_dim == 0:
            if semantic is not None and semantic.shape[-1] != 0:
                raise ValueError(
                    "semantic features given to a FusionEncoder built with semantic_dim=0"
                )
            # Zero-width features: the ablation runs exactly the concatenate-then-MLP path below.
            semantic = behaviour.new_zeros(*behaviour.shape[:-1], 0)
        elif semantic is None:
            raise ValueError(
                f"this FusionEncoder expects semantic features of width {self.semantic_dim}"
            )
        if semantic.shape[-1] != self.semantic_dim:
            raise ValueError(
                f"semantic features have width {semantic.shape[-1]}, expected {self.semantic_dim}"
            )
        lead = behaviour.shape[:-1]
        extra = len(lead) - (semantic.dim() - 1)
        if extra < 0 or semantic.shape[:-1] != lead[: semantic.dim() - 1]:
            raise ValueError(
                f"semantic features of shape {tuple(semantic.shape)} do not match behaviour "
                f"features of shape {tuple(behaviour.shape)} (their leading shape must be a "
                "prefix of the behaviour's)"
            )
        # Insert the missing per-position axes after the shared prefix, then broadcast.
        semantic = semantic.reshape(*semantic.shape[:-1], *([1] * extra), self.semantic_dim)
        semantic = semantic.expand(*lead, self.semantic_dim).to(behaviour.dtype)
        fused = self.mlp(torch.cat([behaviour, semantic], dim=-1))
        return behaviour + fused if self.residual else fused
