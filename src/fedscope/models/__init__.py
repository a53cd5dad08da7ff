"""Sequence encoders and the fusion encoder (pure ``torch.nn`` modules, no federation).

Item ids enter the encoders as tokens (item ``i`` -> token ``i + 1``, 0 = padding, rows
right-padded); the convention and its helpers live in :mod:`fedscope.models.transformer`.
"""

from fedscope.models.fusion import FusionEncoder
from fedscope.models.gru4rec import GRUSequenceEncoder
from fedscope.models.transformer import (
    PAD_TOKEN,
    SequenceEncoding,
    TransformerSequenceEncoder,
    items_to_tokens,
    pad_sequences,
    sinusoidal_positions,
    tokens_to_items,
    valid_mask,
)

__all__ = [
    "PAD_TOKEN",
    "FusionEncoder",
    "GRUSequenceEncoder",
    "SequenceEncoding",
    "TransformerSequenceEncoder",
    "items_to_tokens",
    "pad_sequences",
    "sinusoidal_positions",
    "tokens_to_items",
    "valid_mask",
]
