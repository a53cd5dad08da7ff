import numpy as np
import pytest

from fedscope.evaluation.metrics import chance_level, expected_metrics


def test_untied_ranks_give_textbook_metrics():
    # Target beaten by 0, 4 and 20 candidates, no ties: positions 1, 5 and 21.
    m = expected_metrics(np.array([0, 4, 20]), np.array([0, 0, 0]))
    assert m["HR@1"].tolist() == [1.0, 0.0, 0.0]
    assert m["HR@5"].tolist() == [1.0, 1.0, 0.0]
    assert m["HR@10"].tolist() == [1.0, 1.0, 0.0]
    assert m["NDCG@5"][1] == pytest.approx(1 / np.log2(6))
    assert m["NDCG@10"][2] == 0.0
    assert m["MRR"].tolist() == pytest.approx([1.0, 0.2, 1 / 21])
    assert m["mean_rank"].tolist() == [1.0, 5.0, 21.0]


def test_ties_are_resolved_in_expectation():
    # Beaten by 3, tied with 3 others: positions 4..7 equally likely.
    m = expected_metrics(np.array([3]), np.array([3]))
    assert m["HR@5"][0] == pytest.approx(2 / 4)
    assert m["HR@1"][0] == 0.0
    assert m["MRR"][0] == pytest.approx((1 / 4 + 1 / 5 + 1 / 6 + 1 / 7) / 4)
    assert m["NDCG@5"][0] == pytest.approx((1 / np.log2(5) + 1 / np.log2(6)) / 4)
    assert m["mean_rank"][0] == 1 + 3 + 3 / 2


def test_expectation_matches_random_tie_breaking_by_simulation():
    rng = np.random.default_rng(0)
    higher, equal = 2, 12
    positions = higher + 1 + rng.integers(0, equal + 1, size=200_000)
    m = expected_metrics(np.array([higher]), np.array([equal]))
    assert m["HR@10"][0] == pytest.approx(np.mean(positions <= 10), abs=3e-3)
    assert m["MRR"][0] == pytest.approx(np.mean(1 / positions), abs=2e-3)
    ndcg = np.where(positions <= 10, 1 / np.log2(positions + 1), 0)
    assert m["NDCG@10"][0] == pytest.approx(ndcg.mean(), abs=3e-3)


def test_constant_scores_are_exactly_chance_level():
    c = chance_level(1000)
    assert c["HR@10"] == pytest.approx(0.01)
    assert c["HR@1"] == pytest.approx(0.001)
    assert c["MRR"] == pytest.approx(np.sum(1 / np.arange(1, 1001)) / 1000)
    assert c["mean_rank"] == 500.5
