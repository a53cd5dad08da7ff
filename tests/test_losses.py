"""Next-item BCE and IIDCL, checked against literal per-anchor reference implementations."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from fedscope.losses import (
    DecoupledWeights,
    IntraPairs,
    inter_domain_loss,
    intra_domain_k,
    intra_domain_loss,
    joint_objective,
    next_item_bce,
    next_item_targets,
    sample_negatives,
    select_intra_pairs,
)
from fedscope.losses import iidcl as iidcl_module
from fedscope.models import FusionEncoder, TransformerSequenceEncoder, pad_sequences

# --------------------------------------------------------------------------------------------
# Next-item BCE
# --------------------------------------------------------------------------------------------


def test_bce_matches_explicit_labels_per_target_and_shared_negatives() -> None:
    torch.manual_seed(0)
    user, positive = torch.randn(2, 3, 8), torch.randn(2, 3, 8)
    negative = torch.randn(2, 3, 4, 8)
    mask = torch.tensor([[True, True, False], [True, False, False]])
    expected_terms = []
    for b in range(2):
        for t in range(3):
            if not mask[b, t]:
                continue
            logits = torch.cat([(user[b, t] @ positive[b, t]).view(1), negative[b, t] @ user[b, t]])
            labels = torch.tensor([1.0, 0, 0, 0, 0])
            expected_terms.append(
                F.binary_cross_entropy_with_logits(logits, labels, reduction="sum")
            )
    expected = torch.stack(expected_terms).mean()
    torch.testing.assert_close(next_item_bce(user, positive, negative, mask), expected)

    shared = torch.randn(4, 8)
    torch.testing.assert_close(
        next_item_bce(user, positive, shared, mask),
        next_item_bce(user, positive, shared.expand(2, 3, 4, 8), mask),
    )
    summed = next_item_bce(user, positive, negative, mask)
    averaged = next_item_bce(user, positive, negative, mask, negative_reduction="mean")
    assert float(averaged) < float(summed)


def test_bce_ignores_masked_targets_and_survives_an_all_masked_batch() -> None:
    torch.manual_seed(1)
    user = torch.randn(3, 8, requires_grad=True)
    positive, negative = torch.randn(3, 8), torch.randn(3, 5, 8)
    mask = torch.tensor([True, False, True])
    changed = positive.clone()
    changed[1] = 100.0
    torch.testing.assert_close(
        next_item_bce(user, positive, negative, mask),
        next_item_bce(user, changed, negative, mask),
    )
    nothing = next_item_bce(user, positive, negative, torch.zeros(3, dtype=torch.bool))
    assert float(nothing.detach()) == 0.0
    nothing.backward()
    assert user.grad is not None and float(user.grad.abs().sum()) == 0.0
    with pytest.raises(ValueError, match="negative"):
        next_item_bce(user, positive, torch.randn(2, 5, 8))


def test_negative_sampler_avoids_the_positive_and_is_uniform_over_the_rest() -> None:
    generator = torch.Generator().manual_seed(2)
    positives = torch.full((4000,), 2)
    draws = sample_negatives(positives, 5, 5, generator)
    assert draws.shape == (4000, 5)
    assert int(draws.min()) >= 0 and int(draws.max()) <= 4
    assert not bool((draws == 2).any())
    shares = torch.bincount(draws.flatten(), minlength=5).float() / draws.numel()
    for item in (0, 1, 3, 4):
        assert abs(float(shares[item]) - 0.25) < 0.01, shares.tolist()
    padded = sample_negatives(torch.tensor([-1, 4]), 5, 3, generator)
    assert int(padded.min()) >= 0 and int(padded.max()) <= 4
    with pytest.raises(ValueError, match="at least 2 items"):
        sample_negatives(positives, 1, 3)


def test_next_item_targets_shift_by_one_and_mask_padding() -> None:
    tokens = pad_sequences([[4, 5, 6], [7], []], max_len=4)
    targets, mask = next_item_targets(tokens)
    assert targets.tolist() == [[5, 6, -1, -1], [-1, -1, -1, -1], [-1, -1, -1, -1]]
    assert mask.tolist() == [[True, True, False, False], [False] * 4, [False] * 4]


# --------------------------------------------------------------------------------------------
# Literal references: one anchor at a time, plain Python loops
# --------------------------------------------------------------------------------------------


def _cos(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.detach(), b.detach()
    return float(a @ b / (a.norm() * b.norm()))


def _reference_top_k(anchor: torch.Tensor, pool: torch.Tensor, self_row: int, k: int) -> list[int]:
    candidates = [j for j in range(pool.shape[0]) if j != self_row]
    return sorted(candidates, key=lambda j: -_cos(anchor, pool[j]))[:k]


def _reference_anchor_loss(
    anchor: torch.Tensor,
    positives: list[torch.Tensor],
    negatives: list[torch.Tensor],
    weights: DecoupledWeights,
) -> float:
    tau = weights.temperature
    loss = 0.0
    if positives:
        loss -= weights.align * sum(_cos(anchor, p) / tau for p in positives) / len(positives)
    if negatives:
        loss += weights.uniform * math.log(sum(math.exp(_cos(anchor, n) / tau) for n in negatives))
    return loss


def _reference_inter(
    reps: torch.Tensor, present: torch.Tensor, weights: DecoupledWeights
) -> list[float]:
    n_domains, n_users, _ = reps.shape
    out = []
    for i in range(n_domains):
        losses = []
        for u in range(n_users):
            if not present[i, u]:
                continue
            positives = [reps[j, u] for j in range(n_domains) if j != i and present[j, u]]
            if not positives:
                continue
            negatives = [
                reps[j, v]
                for j in range(n_domains)
                for v in range(n_users)
                if j != i and v != u and present[j, v]
            ]
            losses.append(_reference_anchor_loss(reps[i, u], positives, negatives, weights))
        out.append(sum(losses) / len(losses) if losses else 0.0)
    return out


# --------------------------------------------------------------------------------------------
# Intra-domain
# --------------------------------------------------------------------------------------------


def test_k_follows_the_paper_formula() -> None:
    assert intra_domain_k(300) == 6
    assert intra_domain_k(1000) == 20
    assert intra_domain_k(10_000) == 50
    assert intra_domain_k(30) == 1  # floor(0.6) = 0, at least one positive
    assert intra_domain_k(500, rho=0.1, k_max=20) == 20


def test_intra_selection_matches_a_literal_top_k_and_draws_valid_negatives() -> None:
    torch.manual_seed(3)
    pool = torch.randn(40, 6, dtype=torch.float64)
    anchor_rows = torch.tensor([0, 7, 39, -1])
    anchors = torch.cat([pool[anchor_rows[:3]], torch.randn(1, 6, dtype=torch.float64)])
    pairs = select_intra_pairs(
        anchors, pool, anchor_rows, k=5, n_negatives=10, generator=torch.Generator().manual_seed(0)
    )
    for a in range(4):
        self_row = int(anchor_rows[a])
        expected = _reference_top_k(anchors[a], pool, self_row, 5)
        assert pairs.positive_mask[a].all()
        assert pairs.positive_index[a].tolist() == expected
        negatives = pairs.negative_index[a][pairs.negative_mask[a]].tolist()
        assert len(negatives) == 10 and len(set(negatives)) == 10
        assert not set(negatives) & set(expected)
        assert self_row not in negatives


def test_intra_negatives_are_uniform_over_the_non_positive_pool() -> None:
    torch.manual_seed(4)
    pool = torch.randn(12, 4)
    generator = torch.Generator().manual_seed(4)
    counts = torch.zeros(12)
    for _ in range(600):
        pairs = select_intra_pairs(pool[:1], pool, torch.tensor([0]), 3, 4, generator)
        counts += torch.bincount(pairs.negative_index[0], minlength=12).float()
    positives = set(pairs.positive_index[0].tolist())
    drawable = [j for j in range(12) if j != 0 and j not in positives]
    assert counts[0] == 0 and all(counts[j] == 0 for j in positives)
    # 600 draws of 4 out of 8 rows: each row is drawn 300 times in expectation (sd ~ 12).
    assert all(240 < float(counts[j]) < 360 for j in drawable), counts.tolist()


def test_intra_loss_equals_the_literal_reference_with_fixed_negatives() -> None:
    torch.manual_seed(5)
    weights = DecoupledWeights(align=0.7, uniform=1.3, temperature=0.25)
    pool = torch.randn(30, 5, dtype=torch.float64)
    anchor_rows = torch.tensor([2, 11, 29])
    anchors = pool[anchor_rows]
    k = intra_domain_k(150)  # 3
    generator = torch.Generator().manual_seed(1)
    fixed_negatives = [
        [j for j in torch.randperm(30, generator=generator).tolist() if j != int(r)][:8]
        for r in anchor_rows
    ]
    positives = [_reference_top_k(anchors[a], pool, int(anchor_rows[a]), k) for a in range(3)]
    # The fixed negatives deliberately ignore the positive exclusion: the loss must take
    # whatever sets it is given.
    pairs = IntraPairs(
        positive_index=torch.tensor(positives),
        positive_mask=torch.ones(3, k, dtype=torch.bool),
        negative_index=torch.tensor(fixed_negatives),
        negative_mask=torch.ones(3, 8, dtype=torch.bool),
    )
    got = intra_domain_loss(anchors, pool, anchor_rows, 150, weights, pairs=pairs)
    expected = (
        sum(
            _reference_anchor_loss(
                anchors[a],
                [pool[j] for j in positives[a]],
                [pool[j] for j in fixed_negatives[a]],
                weights,
            )
            for a in range(3)
        )
        / 3
    )
    assert float(got) == pytest.approx(expected, rel=1e-9)

    # With its own sampling, the loss equals the reference on the sets it chose.
    sampled = select_intra_pairs(anchors, pool, anchor_rows, k, 8, torch.Generator().manual_seed(2))
    got = intra_domain_loss(anchors, pool, anchor_rows, 150, weights, pairs=sampled)
    expected = (
        sum(
            _reference_anchor_loss(
                anchors[a],
                [pool[j] for j in sampled.positive_index[a].tolist()],
                [pool[j] for j in sampled.negative_index[a].tolist()],
                weights,
            )
            for a in range(3)
        )
        / 3
    )
    assert float(got) == pytest.approx(expected, rel=1e-9)
    assert sampled.positive_index.tolist() == positives


def test_intra_handles_pools_smaller_than_k_plus_m() -> None:
    torch.manual_seed(6)
    pool = torch.randn(5, 4, requires_grad=True)
    rows = torch.arange(5)
    pairs = select_intra_pairs(pool, pool, rows, k=2, n_negatives=100)
    assert pairs.negative_mask.sum(dim=1).tolist() == [2] * 5  # 5 - self - 2 positives
    loss = intra_domain_loss(pool, pool, rows, n_domain_users=100, n_negatives=100)
    assert torch.isfinite(loss)
    loss.backward()
    assert pool.grad is not None and torch.isfinite(pool.grad).all()

    # K larger than the pool: every other user is a positive, no negatives remain.
    pairs = select_intra_pairs(pool, pool, rows, k=50, n_negatives=100)
    assert pairs.positive_mask.sum(dim=1).tolist() == [4] * 5
    assert not pairs.negative_mask.any()
    weights = DecoupledWeights(align=1.0, uniform=1.0, temperature=0.5)
    expected = (
        sum(
            _reference_anchor_loss(pool[a], [pool[j] for j in range(5) if j != a], [], weights)
            for a in range(5)
        )
        / 5
    )
    got = intra_domain_loss(pool, pool, rows, 10_000, weights, n_negatives=100)
    assert float(got.detach()) == pytest.approx(expected, rel=1e-5)

    # A pool holding only the anchor: nothing to contrast, loss 0, backward still works.
    single = torch.randn(1, 4, requires_grad=True)
    alone = intra_domain_loss(single, single, torch.tensor([0]), 1)
    assert float(alone.detach()) == 0.0
    alone.backward()
    empty = intra_domain_loss(single, torch.zeros(0, 4), torch.tensor([-1]), 1)
    assert float(empty.detach()) == 0.0
    with pytest.raises(ValueError, match="row of the pool"):
        intra_domain_loss(single, single, torch.tensor([1]), 1)


def test_intra_selection_in_blocks_equals_one_block(monkeypatch: pytest.MonkeyPatch) -> None:
    torch.manual_seed(7)
    pool = torch.randn(50, 8)
    rows = torch.arange(0, 50, 3)
    whole = select_intra_pairs(pool[rows], pool, rows, 4, 10)
    monkeypatch.setattr(iidcl_module, "_SELECTION_BLOCK_ELEMENTS", 100)  # two anchors per block
    blocked = select_intra_pairs(pool[rows], pool, rows, 4, 10)
    assert torch.equal(whole.positive_index, blocked.positive_index)
    for a in range(rows.numel()):
        drawn = set(blocked.negative_index[a].tolist())
        assert len(drawn) == 10 and not drawn & set(whole.positive_index[a].tolist())
        assert int(rows[a]) not in drawn


# --------------------------------------------------------------------------------------------
# Inter-domain
# --------------------------------------------------------------------------------------------


def test_inter_loss_equals_the_literal_reference() -> None:
    torch.manual_seed(8)
    weights = DecoupledWeights(align=0.5, uniform=2.0, temperature=0.3)
    reps = torch.randn(3, 6, 4, dtype=torch.float64)
    present = torch.tensor(
        [
            [1, 1, 1, 0, 1, 0],
            [1, 0, 1, 1, 0, 0],
            [0, 1, 1, 1, 0, 1],
        ],
        dtype=torch.bool,
    )
    got = inter_domain_loss(reps, present, weights)
    expected = _reference_inter(reps, present, weights)
    assert got.shape == (3,)
    for value, reference in zip(got.tolist(), expected, strict=True):
        assert value == pytest.approx(reference, rel=1e-9)


def test_users_in_one_domain_are_never_inter_anchors() -> None:
    torch.manual_seed(9)
    reps = torch.randn(2, 4, 4, dtype=torch.float64)
    # User 3 is only in domain 0; domain 1's losses must not depend on whether it anchors.
    present = torch.tensor([[1, 1, 1, 1], [1, 1, 1, 0]], dtype=torch.bool)
    base = inter_domain_loss(reps, present)
    moved = reps.clone()
    moved[1, 3] = torch.randn(4, dtype=torch.float64)  # absent, so must be ignored entirely
    torch.testing.assert_close(inter_domain_loss(moved, present), base)
    weights = DecoupledWeights()
    assert base.tolist() == pytest.approx(_reference_inter(reps, present, weights), rel=1e-9)


def test_inter_without_overlapping_users_is_zero_and_backpropagates() -> None:
    reps = torch.randn(2, 4, 8, requires_grad=True)
    present = torch.tensor([[1, 1, 0, 0], [0, 0, 1, 1]], dtype=torch.bool)
    loss = inter_domain_loss(reps, present)
    assert loss.tolist() == [0.0, 0.0]
    loss.sum().backward()
    assert reps.grad is not None and float(reps.grad.abs().sum()) == 0.0


def test_inter_sampled_negatives_come_from_other_users_in_other_domains() -> None:
    torch.manual_seed(10)
    reps = torch.randn(2, 10, 4, dtype=torch.float64)
    present = torch.ones(2, 10, dtype=torch.bool)
    generator = torch.Generator().manual_seed(0)
    full = inter_domain_loss(reps, present)
    # Asking for as many negatives as exist (9 per anchor) must give the full-set loss.
    all_drawn = inter_domain_loss(reps, present, n_negatives=9, generator=generator)
    torch.testing.assert_close(all_drawn, full)
    # Fewer negatives: the uniformity term can only shrink (log-sum-exp over a subset).
    weights = DecoupledWeights(align=0.0, uniform=1.0)
    subset = inter_domain_loss(reps, present, weights, n_negatives=3, generator=generator)
    everything = inter_domain_loss(reps, present, weights)
    assert bool((subset < everything).all())


# --------------------------------------------------------------------------------------------
# Weights and the joint objective
# --------------------------------------------------------------------------------------------


def test_zero_alignment_or_uniformity_weight_drops_that_term() -> None:
    torch.manual_seed(11)
    pool = torch.randn(20, 4, dtype=torch.float64)
    rows = torch.arange(4)
    pairs = select_intra_pairs(pool[:4], pool, rows, 2, 6)
    full = DecoupledWeights(align=1.0, uniform=1.0, temperature=0.5)
    align_only = DecoupledWeights(align=1.0, uniform=0.0, temperature=0.5)
    uniform_only = DecoupledWeights(align=0.0, uniform=1.0, temperature=0.5)
    parts = [
        intra_domain_loss(pool[:4], pool, rows, 100, w, pairs=pairs)
        for w in (full, align_only, uniform_only)
    ]
    assert float(parts[1]) < 0 < float(parts[2])
    assert float(parts[0]) == pytest.approx(float(parts[1] + parts[2]), rel=1e-9)


def test_joint_objective_combines_terms_and_skips_zero_weighted_ones() -> None:
    prediction = [torch.tensor(1.0), torch.tensor(2.0)]
    calls: list[str] = []

    def intra(domain: int) -> torch.Tensor:
        calls.append(f"intra{domain}")
        return torch.tensor([10.0, 20.0])[domain]

    def inter() -> torch.Tensor:
        calls.append("inter")
        return torch.tensor([100.0, 200.0])

    joint = joint_objective(prediction, intra, inter, alpha=0.5, lambda_intra=0.1, lambda_inter=0.2)
    assert float(joint.total) == pytest.approx(3.0 + 0.5 * (0.1 * 30.0 + 0.2 * 300.0))
    assert (joint.prediction, joint.intra, joint.inter) == (3.0, 30.0, 300.0)
    assert calls == ["intra0", "intra1", "inter"]

    def forbidden(*_: object) -> torch.Tensor:
        raise AssertionError("a zero-weighted term was computed")

    off = joint_objective(
        prediction, forbidden, inter, alpha=0.5, lambda_intra=0.0, lambda_inter=0.2
    )
    assert float(off.total) == pytest.approx(3.0 + 0.5 * 0.2 * 300.0) and off.intra == 0.0
    off = joint_objective(
        prediction, intra, forbidden, alpha=0.5, lambda_intra=0.1, lambda_inter=0.0
    )
    assert float(off.total) == pytest.approx(3.0 + 0.5 * 0.1 * 30.0) and off.inter == 0.0
    off = joint_objective(
        prediction, forbidden, forbidden, alpha=0.0, lambda_intra=1, lambda_inter=1
    )
    assert float(off.total) == 3.0
    with pytest.raises(ValueError, match="expected \\(2,\\)"):
        joint_objective(prediction, None, lambda: torch.zeros(3), 1.0, 1.0, 1.0)


# --------------------------------------------------------------------------------------------
# With the real encoder: gradients reach it, and IIDCL moves representations as intended
# --------------------------------------------------------------------------------------------


def _two_domain_model(seed: int) -> tuple[list[TransformerSequenceEncoder], FusionEncoder]:
    torch.manual_seed(seed)
    encoders = [TransformerSequenceEncoder(25, 6, dim=16) for _ in range(2)]
    return encoders, FusionEncoder(dim=16, semantic_dim=3)


def _histories(seed: int, n_users: int) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return [
        pad_sequences(
            [torch.randint(0, 25, (int(n),), generator=generator) for n in lengths], max_len=6
        )
        for lengths in torch.randint(1, 7, (2, n_users), generator=generator)
    ]


def _grad_norms(encoder: TransformerSequenceEncoder) -> tuple[float, float]:
    embedding = encoder.item_embedding.weight.grad
    attention = encoder.layers[0].self_attn.in_proj_weight.grad
    assert embedding is not None and attention is not None
    assert torch.isfinite(embedding).all() and torch.isfinite(attention).all()
    return float(embedding.abs().sum()), float(attention.abs().sum())


@pytest.mark.parametrize("term", ["prediction", "intra", "inter"])
def test_each_loss_sends_gradient_into_the_encoder(term: str) -> None:
    encoders, fusion = _two_domain_model(12)
    tokens = _histories(12, 8)
    profiles = torch.randn(8, 3)
    users = [fusion(encoders[d](tokens[d]).user, profiles) for d in range(2)]
    if term == "prediction":
        targets = torch.randint(0, 25, (8,))
        negatives = sample_negatives(targets, 25, 4)
        item_features = torch.randn(25, 3)
        loss = next_item_bce(
            users[0],
            fusion(encoders[0].item_vectors(targets), item_features[targets]),
            fusion(encoders[0].item_vectors(negatives), item_features[negatives]),
        )
    elif term == "intra":
        loss = intra_domain_loss(users[0], users[0], torch.arange(8), n_domain_users=200)
    else:
        loss = inter_domain_loss(torch.stack(users), torch.ones(2, 8, dtype=torch.bool)).sum()
    loss.backward()
    assert min(_grad_norms(encoders[0])) > 0
    if term == "inter":
        assert min(_grad_norms(encoders[1])) > 0
    assert (
        fusion.mlp[0].weight.grad is not None and float(fusion.mlp[0].weight.grad.abs().sum()) > 0
    )


def test_inter_domain_learning_pulls_a_users_two_domains_together() -> None:
    encoders, fusion = _two_domain_model(13)
    for module in (*encoders, fusion):
        module.eval()  # no dropout noise: the test is about the direction of the updates
    tokens = _histories(13, 12)
    profiles = torch.randn(12, 3)
    present = torch.ones(2, 12, dtype=torch.bool)
    parameters = [p for m in (*encoders, fusion) for p in m.parameters()]
    optimiser = torch.optim.Adam(parameters, lr=1e-2)

    def cosines() -> tuple[float, float]:
        with torch.no_grad():
            a, b = (
                F.normalize(fusion(encoders[d](tokens[d]).user, profiles), dim=1) for d in (0, 1)
            )
            table = a @ b.T
            same = float(table.diagonal().mean())
            other = float((table.sum() - table.diagonal().sum()) / (12 * 11))
        return same, other

    same_before, _ = cosines()
    for _ in range(15):
        users = torch.stack([fusion(encoders[d](tokens[d]).user, profiles) for d in (0, 1)])
        loss = inter_domain_loss(users, present).sum()
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    same_after, other_after = cosines()
    assert same_after > same_before + 0.2, (same_before, same_after)
    assert same_after > other_after + 0.2, (same_after, other_after)


def test_intra_domain_learning_pulls_top_k_neighbours_together() -> None:
    torch.manual_seed(14)
    reps = torch.randn(40, 8, requires_grad=True)
    rows = torch.arange(40)
    optimiser = torch.optim.Adam([reps], lr=2e-2)
    pairs = select_intra_pairs(reps, reps, rows, k=2, n_negatives=20)

    def neighbour_cosine() -> float:
        with torch.no_grad():
            unit = F.normalize(reps, dim=1)
            return float((unit.unsqueeze(1) * unit[pairs.positive_index]).sum(-1).mean())

    before = neighbour_cosine()
    for step in range(15):
        loss = intra_domain_loss(
            reps, reps, rows, 100, generator=torch.Generator().manual_seed(step)
        )
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    assert neighbour_cosine() > before + 0.1
