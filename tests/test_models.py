"""Sequence encoders, the token convention and the fusion encoder."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch

from fedscope.losses import next_item_bce, next_item_targets, sample_negatives
from fedscope.models import (
    PAD_TOKEN,
    FusionEncoder,
    GRUSequenceEncoder,
    TransformerSequenceEncoder,
    items_to_tokens,
    pad_sequences,
    tokens_to_items,
    valid_mask,
)

ENCODERS = {
    "transformer": lambda n_items, max_len: TransformerSequenceEncoder(n_items, max_len, dim=32),
    "gru": lambda n_items, max_len: GRUSequenceEncoder(n_items, dim=32, n_layers=2),
}


def test_token_convention_round_trips_and_reserves_zero_for_padding() -> None:
    items = torch.tensor([0, 5, 41])
    tokens = items_to_tokens(items)
    assert tokens.tolist() == [1, 6, 42]
    assert tokens_to_items(tokens).tolist() == items.tolist()
    assert tokens_to_items(torch.tensor([PAD_TOKEN])).tolist() == [-1]


def test_pad_sequences_keeps_the_most_recent_items_right_padded() -> None:
    tokens = pad_sequences([[3, 4, 5, 6, 7], [9], []], max_len=3)
    assert tokens.tolist() == [[6, 7, 8], [10, 0, 0], [0, 0, 0]]
    with pytest.raises(ValueError, match="negative item id"):
        pad_sequences([[1, -2]], max_len=3)


def test_left_padded_rows_are_rejected_with_the_row_number() -> None:
    with pytest.raises(ValueError, match="row 1 is not right-padded"):
        valid_mask(torch.tensor([[1, 2, 0], [0, 3, 4]]))


@pytest.mark.parametrize("kind", sorted(ENCODERS))
def test_encoder_shapes(kind: str) -> None:
    torch.manual_seed(0)
    encoder = ENCODERS[kind](30, 8)
    tokens = pad_sequences([[1, 2, 3], [4] * 8, [5]], max_len=8)
    out = encoder(tokens, return_all=True)
    assert out.user.shape == (3, 32)
    assert out.hidden is not None and out.hidden.shape == (3, 8, 32)
    assert out.lengths.tolist() == [3, 8, 1]
    assert encoder(tokens).hidden is None
    # z_u is the state at the last real item, and padded positions are zero.
    assert torch.equal(out.user[0], out.hidden[0, 2])
    assert torch.equal(out.user[1], out.hidden[1, 7])
    assert float(out.hidden[0, 3:].detach().abs().sum()) == 0.0
    assert encoder.item_vectors().shape == (30, 32)
    assert torch.equal(encoder.item_vectors(torch.tensor([0, 29]))[1], encoder.item_vectors()[29])


@pytest.mark.parametrize("kind", sorted(ENCODERS))
def test_padding_does_not_change_the_user_representation(kind: str) -> None:
    torch.manual_seed(1)
    encoder = ENCODERS[kind](30, 12).eval()
    history = [4, 17, 2, 9, 9]
    alone = encoder(pad_sequences([history], max_len=5), return_all=True)
    padded = encoder(pad_sequences([history, list(range(12))], max_len=12), return_all=True)
    assert alone.hidden is not None and padded.hidden is not None
    torch.testing.assert_close(padded.user[0], alone.user[0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(padded.hidden[0, :5], alone.hidden[0], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("kind", sorted(ENCODERS))
def test_positions_only_see_the_past(kind: str) -> None:
    torch.manual_seed(2)
    encoder = ENCODERS[kind](30, 6).eval()
    with torch.no_grad():
        a = encoder(pad_sequences([[1, 2, 3, 4, 5, 6]], 6), return_all=True).hidden
        b = encoder(pad_sequences([[1, 2, 3, 20, 21, 22]], 6), return_all=True).hidden
    assert a is not None and b is not None
    torch.testing.assert_close(a[0, :3], b[0, :3], atol=1e-5, rtol=1e-5)
    assert float((a[0, 3:] - b[0, 3:]).abs().max()) > 1e-3


@pytest.mark.parametrize("kind", sorted(ENCODERS))
@pytest.mark.parametrize("training", [True, False])
def test_empty_history_gives_zero_vector_without_nan(kind: str, training: bool) -> None:
    torch.manual_seed(3)
    encoder = ENCODERS[kind](30, 6).train(training)
    tokens = pad_sequences([[], [1, 2], []], max_len=6)
    out = encoder(tokens, return_all=True)
    assert out.hidden is not None
    assert not torch.isnan(out.hidden).any()
    user = out.user.detach()
    assert float(user[0].abs().sum()) == 0.0 and float(user[2].abs().sum()) == 0.0
    assert float(user[1].abs().sum()) > 0.0
    out.user.sum().backward()
    for name, parameter in encoder.named_parameters():
        assert parameter.grad is None or torch.isfinite(parameter.grad).all(), name


def test_transformer_fast_and_autograd_paths_agree_in_eval() -> None:
    # Without grad, torch runs a fused inference kernel; it must read our mask the same way.
    torch.manual_seed(4)
    encoder = TransformerSequenceEncoder(40, 10, dim=32, n_heads=2).eval()
    tokens = pad_sequences([[1, 2, 3], [], list(range(10)), [7]], max_len=10)
    with_grad = encoder(tokens, return_all=True).hidden
    with torch.no_grad():
        fused = encoder(tokens, return_all=True).hidden
    assert with_grad is not None and fused is not None
    torch.testing.assert_close(fused, with_grad, atol=1e-5, rtol=1e-5)


def test_transformer_rejects_sequences_longer_than_its_positions() -> None:
    encoder = TransformerSequenceEncoder(10, 4, dim=16)
    with pytest.raises(ValueError, match="max_len 4"):
        encoder(pad_sequences([[1, 2, 3, 4, 5]], max_len=5))


def test_fusion_shapes_broadcast_and_ablation_uses_the_same_mlp() -> None:
    torch.manual_seed(5)
    with_semantics = FusionEncoder(dim=16, semantic_dim=8).eval()
    behaviour = torch.randn(4, 6, 16)
    profile = torch.randn(4, 8)
    fused = with_semantics(behaviour, profile)
    assert fused.shape == (4, 6, 16)
    # A per-user profile broadcast over positions equals passing it explicitly per position.
    explicit = with_semantics(behaviour, profile.unsqueeze(1).expand(4, 6, 8))
    torch.testing.assert_close(fused, explicit)

    ablation = FusionEncoder(dim=16, semantic_dim=0)
    assert type(ablation.mlp) is type(with_semantics.mlp)
    assert [type(m) for m in ablation.mlp] == [type(m) for m in with_semantics.mlp]
    assert ablation.mlp[0].in_features == 16 and with_semantics.mlp[0].in_features == 24
    # The ablation is the MLP applied to z alone (in eval mode, dropout off).
    ablation.eval()
    assert ablation(behaviour).shape == (4, 6, 16)
    torch.testing.assert_close(ablation(behaviour), ablation.mlp(behaviour))

    with pytest.raises(ValueError, match="expects semantic features of width 8"):
        with_semantics(behaviour)
    with pytest.raises(ValueError, match="semantic_dim=0"):
        ablation(behaviour, profile)
    with pytest.raises(ValueError, match="width 5, expected 8"):
        with_semantics(behaviour, torch.randn(4, 5))
    with pytest.raises(ValueError, match="leading shape"):
        with_semantics(behaviour, torch.randn(3, 8))


def test_fusion_passes_gradient_to_semantic_and_behaviour_inputs() -> None:
    fusion = FusionEncoder(dim=8, semantic_dim=4, dropout=0.0)
    behaviour = torch.randn(3, 8, requires_grad=True)
    semantic = torch.randn(3, 4, requires_grad=True)
    fusion(behaviour, semantic).pow(2).sum().backward()
    assert behaviour.grad is not None and float(behaviour.grad.abs().sum()) > 0
    assert semantic.grad is not None and float(semantic.grad.abs().sum()) > 0


def _successor_batch(n_items: int, length: int, generator: torch.Generator) -> torch.Tensor:
    """Windows of the rule 'item i is followed by i + 1 (mod n_items)', random lengths."""
    starts = torch.randint(0, n_items, (64,), generator=generator)
    lengths = torch.randint(2, length + 1, (64,), generator=generator)
    rows = [
        [(int(s) + j) % n_items for j in range(int(n))]
        for s, n in zip(starts, lengths, strict=True)
    ]
    return pad_sequences(rows, max_len=length)


@pytest.fixture
def single_thread() -> Iterator[None]:
    # Tiny models run faster on one thread, and other test processes may share the cores.
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.mark.usefixtures("single_thread")
@pytest.mark.parametrize("kind", sorted(ENCODERS))
def test_encoder_with_bce_learns_a_deterministic_successor_rule(kind: str) -> None:
    torch.manual_seed(6)
    generator = torch.Generator().manual_seed(6)
    n_items, length = 20, 8
    encoder = ENCODERS[kind](n_items, length)
    optimiser = torch.optim.Adam(encoder.parameters(), lr=5e-3)
    for _ in range(150):
        tokens = _successor_batch(n_items, length, generator)
        targets, mask = next_item_targets(tokens)
        negatives = sample_negatives(targets, n_items, 4, generator)
        hidden = encoder(tokens, return_all=True).hidden
        assert hidden is not None
        loss = next_item_bce(
            hidden,
            encoder.item_vectors(targets.clamp(min=0)),
            encoder.item_vectors(negatives),
            mask,
        )
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()

    encoder.eval()
    with torch.no_grad():
        tokens = _successor_batch(n_items, length, generator)
        targets, mask = next_item_targets(tokens)
        hidden = encoder(tokens, return_all=True).hidden
        assert hidden is not None
        predicted = (hidden @ encoder.item_vectors().T).argmax(dim=-1)
        accuracy = float((predicted == targets)[mask].float().mean())
    assert accuracy > 0.95, f"{kind}: next-item accuracy {accuracy:.3f} after 150 steps"
