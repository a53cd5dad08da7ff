"""Transformer sequence encoder (the paper's TransformerEnc) and the token convention.

Token convention (the one place it is defined)
-----------------------------------------------
Encoders read *tokens*, not item ids. Token ``0`` is padding; item ``i`` (a domain's local id
``0..n_items-1``, or a global id when the caller uses one unified vocabulary) is token ``i + 1``.
Convert with :func:`items_to_tokens` / :func:`tokens_to_items` and build batches with
:func:`pad_sequences`; never add or subtract the 1 by hand elsewhere.

Padding is on the right: row ``b`` holds the most recent ``min(len, N)`` items, oldest first, in
columns ``0..len-1``, followed by padding. Right padding was chosen because

* positions are then counted from the oldest kept item, so a prefix of length ``t`` gets exactly
  the positional encodings it would get if it were encoded alone; the hidden state used as a
  next-item prediction at position ``t`` during training is therefore the same function the model
  computes at evaluation time on a history of length ``t + 1`` (and padding cannot change it);
* under the causal mask every padded query can still see the real items before it, so no
  attention row is fully masked except in an all-padding row;
* the GRU baseline can use packed sequences directly.

The user representation ``z_u`` is the hidden state at the last non-padded column; a row with no
items (a user without history in the domain) gets the zero vector.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor, nn

PAD_TOKEN = 0


def items_to_tokens(items: Tensor) -> Tensor:
    """Item ids (>= 0) to tokens (>= 1); token 0 is reserved for padding."""
    return items + 1


def tokens_to_items(tokens: Tensor) -> Tensor:
    """Tokens back to item ids; padding (token 0) becomes -1."""
    return tokens - 1


def pad_sequences(sequences: Sequence[Sequence[int] | np.ndarray | Tensor], max_len: int) -> Tensor:
    """Right-padded ``[B, max_len]`` token matrix of the most recent ``max_len`` items of each
    sequence (item ids, oldest first). Empty sequences give all-padding rows."""
    if max_len < 1:
        raise ValueError(f"max_len must be >= 1, got {max_len}")
    out = torch.full((len(sequences), max_len), PAD_TOKEN, dtype=torch.long)
    for row, seq in enumerate(sequences):
        recent = torch.as_tensor(np.asarray(seq, dtype=np.int64)[-max_len:])
        if recent.numel() and int(recent.min()) < 0:
            raise ValueError(f"sequence {row} holds a negative item id {int(recent.min())}")
        out[row, : recent.numel()] = items_to_tokens(recent)
    return out


def valid_mask(tokens: Tensor) -> Tensor:
    """``[B, N]`` bool, True on real items; raises if a row is not right-padded."""
    if tokens.dim() != 2:
        raise ValueError(f"tokens must be [batch, length], got shape {tuple(tokens.shape)}")
    valid = tokens != PAD_TOKEN
    # A real item after a pad means left padding or a hole: positions and z_u would be wrong.
    holes = valid[:, 1:] & ~valid[:, :-1]
    if bool(holes.any()):
        row = int(holes.any(dim=1).nonzero()[0, 0])
        raise ValueError(
            f"token row {row} is not right-padded (a real item follows padding); "
            "build batches with fedscope.models.pad_sequences"
        )
    return valid


def sinusoidal_positions(length: int, dim: int) -> Tensor:
    """Fixed ``[length, dim]`` sinusoidal encodings (sin on even, cos on odd channels)."""
    position = torch.arange(length, dtype=torch.float32).unsqueeze(1)
    frequency = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32) * (-math.log(10000.0) / dim))
    table = torch.zeros(length, dim)
    table[:, 0::2] = torch.sin(position * frequency)
    table[:, 1::2] = torch.cos(position * frequency[: dim // 2])
    return table


def new_item_embedding(n_items: int, dim: int, init_std: float | None = None) -> nn.Embedding:
    """An item table for ``n_items`` items plus the padding row 0.

    Rows start with std ``init_std``, by default ``dim**-0.5`` (unit-norm rows, so inner-product
    logits start near 1); the padding row is zero.
    """
    table = nn.Embedding(n_items + 1, dim, padding_idx=PAD_TOKEN)
    nn.init.normal_(table.weight, std=dim**-0.5 if init_std is None else init_std)
    with torch.no_grad():
        table.weight[PAD_TOKEN].zero_()
    return table


def item_rows(table: nn.Embedding | None, items: Tensor | None) -> Tensor:
    """Rows of an encoder's own item table for item ids (all items when None)."""
    if table is None:
        raise RuntimeError("this encoder has no item table of its own")
    if items is None:
        return table.weight[1:]
    return table(items_to_tokens(items))


class SequenceEncoding(NamedTuple):
    """What every sequence encoder returns."""

    user: Tensor  # [B, d] hidden state at the last real item; zeros for empty rows
    hidden: Tensor | None  # [B, N, d] every position's state (zeros on padding), if asked for
    valid: Tensor  # [B, N] bool, True on real items
    lengths: Tensor  # [B] number of real items


def gather_last(hidden: Tensor, lengths: Tensor) -> Tensor:
    """Hidden state at column ``length - 1`` of each row; zeros where ``length == 0``."""
    last = (lengths - 1).clamp(min=0)
    picked = hidden[torch.arange(hidden.shape[0], device=hidden.device), last]
    return picked * (lengths > 0).unsqueeze(1).to(hidden.dtype)


class TransformerSequenceEncoder(nn.Module):
    """Item embeddings + sinusoidal positions + ``n_layers`` causal self-attention blocks.

    Blocks are ``nn.TransformerEncoderLayer`` with ``norm_first=True`` (pre-LN) followed by one
    final LayerNorm: pre-LN trains stably without learning-rate warm-up, which matters for the
    short local epochs of federated rounds; the final norm is what pre-LN stacks need so that the
    output scale does not grow with depth. The feed-forward width defaults to ``dim`` (as in
    SASRec) to keep the shared model small.

    Item embeddings are initialised with std ``dim**-0.5`` (unit-norm rows, so inner-product
    logits start near 1) and multiplied by ``sqrt(dim)`` on the input side so that item and
    position signals enter the first block at comparable magnitude.
    """

    def __init__(
        self,
        n_items: int,
        max_len: int,
        dim: int = 64,
        n_layers: int = 2,
        n_heads: int = 2,
        dropout: float = 0.3,
        ff_dim: int | None = None,
    ) -> None:
        super().__init__()
        if n_items < 0:
            raise ValueError(f"n_items must be >= 0, got {n_items}")
        if dim % n_heads != 0:
            raise ValueError(f"dim ({dim}) must be divisible by n_heads ({n_heads})")
        if dim % 2 != 0:
            raise ValueError(f"dim must be even for sinusoidal positions, got {dim}")
        self.n_items = n_items
        self.max_len = max_len
        self.dim = dim
        self.n_heads = n_heads
        # n_items == 0: no table of its own; the caller embeds items and uses `encode` (models
        # that share one item table between several encoders and the output layer).
        self.item_embedding = new_item_embedding(n_items, dim) if n_items else None
        # Not persistent: it is a fixed function of (max_len, dim), so federated aggregation
        # and checkpoints should not carry it.
        self.register_buffer("positions", sinusoidal_positions(max_len, dim), persistent=False)
        self.input_dropout = nn.Dropout(dropout)
        self.layers = nn.ModuleList(
            nn.TransformerEncoderLayer(
                d_model=dim,
                nhead=n_heads,
                dim_feedforward=ff_dim or dim,
                dropout=dropout,
                activation="gelu",
                batch_first=True,
                norm_first=True,
            )
            for _ in range(n_layers)
        )
        self.final_norm = nn.LayerNorm(dim)

    def item_vectors(self, items: Tensor | None = None) -> Tensor:
        """Embedding rows (the item-side ``z_v``) of item ids, or of all items when None."""
        return item_rows(self.item_embedding, items)

    def _attention_mask(self, valid: Tensor) -> Tensor:
        n = valid.shape[1]
        causal = torch.ones(n, n, dtype=torch.bool, device=valid.device).tril()
        eye = torch.eye(n, dtype=torch.bool, device=valid.device)
        # Every query may see itself: a fully masked softmax row is NaN and NaNs leak into real
        # rows through 0 * NaN in the next layer. Padded keys are otherwise hidden.
        allowed = causal.unsqueeze(0) & (valid.unsqueeze(1) | eye.unsqueeze(0))
        return (~allowed).repeat_interleave(self.n_heads, dim=0)  # [B*H, N, N], True = blocked

    def forward(self, tokens: Tensor, return_all: bool = False) -> SequenceEncoding:
        """Encode right-padded ``[B, N]`` tokens (``N <= max_len``)."""
        if self.item_embedding is None:
            raise RuntimeError("this encoder has no item table: call encode() with embeddings")
        return self.encode(self.item_embedding(tokens), valid_mask(tokens), return_all)

    def encode(self, embedded: Tensor, valid: Tensor, return_all: bool = False) -> SequenceEncoding:
        """Encode already-embedded items ``[B, N, d]`` with their validity mask ``[B, N]``."""
        n = embedded.shape[1]
        if n > self.max_len:
            raise ValueError(f"sequence length {n} exceeds the encoder's max_len {self.max_len}")
        x = embedded * math.sqrt(self.dim) + self.positions[:n]
        x = self.input_dropout(x)
        mask = self._attention_mask(valid)
        for layer in self.layers:
            x = layer(x, src_mask=mask)
        hidden = self.final_norm(x) * valid.unsqueeze(-1).to(x.dtype)
        lengths = valid.sum(dim=1)
        return SequenceEncoding(
            user=gather_last(hidden, lengths),
            hidden=hidden if return_all else None,
            valid=valid,
            lengths=lengths,
        )
