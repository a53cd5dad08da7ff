"""The FedCSR-style dual-contrastive baseline and its coupled InfoNCE."""

import math

import numpy as np
import pytest
import torch

from fedscope.config import load_config
from fedscope.data import load_dataset
from fedscope.losses.infonce import drop_items, info_nce
from fedscope.methods import DataShape, StepContext, available_methods, method_class


def test_info_nce_matches_the_formula():
    a = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    c = torch.tensor([[1.0, 0.0], [0.6, 0.8], [0.0, 1.0]])
    allowed = torch.tensor([[True, True, True], [True, False, True]])
    got = info_nce(a, c, torch.tensor([0, 2]), allowed, temperature=0.5)
    # anchor 0: sims 1, .6, 0 -> -log(e^2 / (e^2 + e^1.2 + e^0)); anchor 1: sims 0, -, 1
    l0 = -2 + math.log(math.exp(2) + math.exp(1.2) + 1)
    l1 = -2 + math.log(1 + math.exp(2))
    assert got.item() == pytest.approx((l0 + l1) / 2, rel=1e-6)


def test_info_nce_leaves_out_anchors_without_negatives_and_rejects_bad_positives():
    a = torch.randn(3, 4, requires_grad=True)
    c = torch.randn(3, 4)
    only_self = torch.eye(3, dtype=torch.bool)
    loss = info_nce(a, c, torch.arange(3), only_self, 0.2)
    assert loss.item() == 0.0
    loss.backward()  # attached to the graph
    with pytest.raises(ValueError, match="positive"):
        info_nce(a, c, torch.tensor([1, 1, 1]), only_self, 0.2)


def test_drop_items_keeps_order_padding_and_the_last_item():
    tokens = torch.tensor([[5, 6, 7, 8, 0], [9, 0, 0, 0, 0], [0, 0, 0, 0, 0]])
    gen = torch.Generator().manual_seed(0)
    for _ in range(50):
        out = drop_items(tokens, 0.6, gen)
        for row, src in zip(out.tolist(), tokens.tolist(), strict=True):
            kept = [t for t in row if t > 0]
            real = [t for t in src if t > 0]
            assert row == kept + [0] * (len(row) - len(kept))  # right-padded
            assert kept == [t for t in real if t in kept]  # order kept
            assert (not real and not kept) or kept[-1] == real[-1]
    assert torch.equal(drop_items(tokens, 0.0, gen), tokens)


def test_fedcsr_is_a_registered_method_that_learns_with_both_terms():
    assert "fedcsr" in available_methods()
    ds = load_dataset("synthetic", n_users=150, n_items=80)
    sets = ["method=fedcsr", "train.lr=0.01", "train.batch_size=50", "loss.alpha=1"]
    m = method_class("fedcsr")(load_config(None, sets), DataShape.of(ds))
    ex = m.prepare_client(ds, np.arange(ds.n_users), (0, 1))
    model = m.build_model(1)
    assert model.user_fusion is None and model.item_fusion is None  # no semantics, no fusion
    first = m.client_step(model, ex, StepContext(7, 1, 0, 1))
    assert first["intra"] > 0 and first["inter"] > 0
    assert all(np.isfinite(v) for v in first.values())
    again = m.client_step(m.build_model(1), ex, StepContext(7, 1, 0, 1))
    assert first == again  # deterministic in the step seed
    later = [m.client_step(model, ex, StepContext(s, s, 0, 1)) for s in range(2, 9)]
    assert later[-1]["pred"] < first["pred"]
    # both contrasts are being learned, not just computed
    assert later[-1]["intra"] < first["intra"]
    assert later[-1]["inter"] < first["inter"]


def test_fedcsr_with_zero_contrastive_weight_computes_no_contrast():
    ds = load_dataset("synthetic", n_users=100, n_items=60)
    cfg = load_config(None, ["method=fedcsr", "train.batch_size=50", "loss.alpha=0"])
    m = method_class("fedcsr")(cfg, DataShape.of(ds))
    stats = m.client_step(
        m.build_model(0), m.prepare_client(ds, np.arange(100), (0, 1)), StepContext(3, 1, 0, 1)
    )
    assert stats["intra"] == 0 and stats["inter"] == 0 and stats["pred"] > 0
