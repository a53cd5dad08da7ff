"""GRU sequence encoder for the FedAvg+GRU4Rec baseline.

This is the embedding-input form of GRU4Rec (item embedding -> dropout -> GRU), with the hidden
size equal to the embedding size so that states are scored against item embedding rows by inner
product, exactly like the Transformer encoder. It reads the same right-padded tokens (see
:mod:`fedscope.models.transformer` for the convention) and returns the same
:class:`SequenceEncoding`. Sequences are packed, so padding never enters the recurrence.
"""

from __future__ import annotations

from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from fedscope.models.transformer import (
    SequenceEncoding,
    gather_last,
    item_rows,
    new_item_embedding,
    valid_mask,
)


class GRUSequenceEncoder(nn.Module):
    def __init__(
        self,
        n_items: int,
        dim: int = 64,
        n_layers: int = 1,
        dropout: float = 0.3,
    ) -> None:
        super().__init__()
        if n_items < 0:
            raise ValueError(f"n_items must be >= 0, got {n_items}")
        self.n_items = n_items
        self.dim = dim
        # n_items == 0: the caller owns the item table and calls `encode` (see the transformer).
        self.item_embedding = new_item_embedding(n_items, dim) if n_items else None
        self.input_dropout = nn.Dropout(dropout)
        # Dropout between stacked GRU layers only exists for n_layers > 1 (torch warns otherwise).
        self.gru = nn.GRU(
            dim,
            dim,
            num_layers=n_layers,
            batch_first=True,
            dropout=dropout if n_layers > 1 else 0.0,
        )

    def item_vectors(self, items: Tensor | None = None) -> Tensor:
        """Embedding rows (the item-side ``z_v``) of item ids, or of all items when None."""
        return item_rows(self.item_embedding, items)

    def forward(self, tokens: Tensor, return_all: bool = False) -> SequenceEncoding:
        """Encode right-padded ``[B, N]`` tokens."""
        if self.item_embedding is None:
            raise RuntimeError("this encoder has no item table: call encode() with embeddings")
        return self.encode(self.item_embedding(tokens), valid_mask(tokens), return_all)

    def encode(self, embedded: Tensor, valid: Tensor, return_all: bool = False) -> SequenceEncoding:
        """Encode already-embedded items ``[B, N, d]`` with their validity mask ``[B, N]``."""
        lengths = valid.sum(dim=1)
        n = embedded.shape[1]
        x = self.input_dropout(embedded)
        # pack_padded_sequence rejects zero lengths; empty rows run one pad step and are zeroed.
        packed = pack_padded_sequence(
            x, lengths.clamp(min=1).cpu(), batch_first=True, enforce_sorted=False
        )
        out, _ = self.gru(packed)
        hidden, _ = pad_packed_sequence(out, batch_first=True, total_length=n)
        hidden = hidden * valid.unsqueeze(-1).to(hidden.dtype)
        return SequenceEncoding(
            user=gather_last(hidden, lengths),
            hidden=hidden if return_all else None,
            valid=valid,
            lengths=lengths,
        )
