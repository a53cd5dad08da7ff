import numpy as np
import pytest
from tests.helpers import tiny_dataset

from fedscope.evaluation import (
    ConstantScorer,
    EvalBatch,
    EvalResult,
    Evaluator,
    NonFiniteScoreError,
    PopularityScorer,
    RandomScorer,
    draw_candidates,
    select_on_validation,
)

SEQS = [[0, 1, 2, 20, 3], [1, 21, 2, 22, 23], [5, 6], [2, 3, 24, 25, 4, 26]]


class OracleScorer:
    """Knows the targets: must reach HR@1 = 1."""

    name = "oracle"

    def __init__(self, ev: Evaluator):
        self.ev = ev
        self.by_user = {int(u): int(t) for u, t in zip(ev.users, ev.local_targets, strict=True)}

    def score(self, batch: EvalBatch) -> np.ndarray:
        n = self.ev.dataset.domains[batch.domain].n_items
        out = np.zeros((len(batch), n))
        for j, u in enumerate(batch.users):
            out[j, self.by_user[int(u)]] = 1.0
        return out


class NaNScorer:
    name = "nan"

    def __init__(self, ds):
        self.ds = ds

    def score(self, batch: EvalBatch) -> np.ndarray:
        out = np.zeros((len(batch), self.ds.domains[batch.domain].n_items))
        out[0, 0] = np.nan
        return out


def test_split_and_short_users_reported():
    ds = tiny_dataset(SEQS)
    assert len(ds.test) == 3 and len(ds.valid) == 3
    assert list(ds.dropped.values()) == [1]
    assert ds.train_len.tolist() == [3, 3, 2, 4]


@pytest.mark.parametrize("mode", ["sampled", "full"])
def test_constant_scores_give_chance_level(mode):
    ds = tiny_dataset(SEQS)
    ev = Evaluator(ds, "test", mode, n_negatives=5, seed=1)
    r = ev.evaluate(ConstantScorer(ds))
    # every instance: target tied with all its competitors
    for i in range(len(ds.test)):
        eq = r.per_instance["equal"][i]
        assert r.per_instance["higher"][i] == 0
        assert r.per_instance["mean_rank"][i] == pytest.approx(1 + eq / 2)
    if mode == "sampled":
        assert r.metrics["overall"]["HR@1"] == pytest.approx(1 / 6)


def test_oracle_is_perfect_in_both_modes():
    ds = tiny_dataset(SEQS)
    for mode in ("sampled", "full"):
        ev = Evaluator(ds, "test", mode, n_negatives=5)
        r = ev.evaluate(OracleScorer(ev))
        assert r.metrics["overall"]["HR@1"] == 1.0
        assert r.metrics["overall"]["MRR"] == 1.0


class FirstUserOracle(OracleScorer):
    """Ranks the first test user's target first and every other user's target last."""

    name = "first-user oracle"

    def score(self, batch: EvalBatch) -> np.ndarray:
        n = self.ev.dataset.domains[batch.domain].n_items
        out = np.zeros((len(batch), n))
        first = int(self.ev.users[0])
        for j, u in enumerate(batch.users):
            out[j, self.by_user[int(u)]] = 1.0 if int(u) == first else -1.0
        return out


def test_standard_error_is_the_sampling_error_of_the_mean():
    ds = tiny_dataset(SEQS)
    ev = Evaluator(ds, "test", "sampled", n_negatives=5)
    r = ev.evaluate(FirstUserOracle(ev))
    # HR@1 is 1, 0, 0 over the three instances: mean 1/3, sample std sqrt(1/3), so the
    # standard error is sqrt(1/3) / sqrt(3) = 1/3
    assert r.counts["overall"] == 3
    assert r.metrics["overall"]["HR@1"] == pytest.approx(1 / 3)
    assert r.standard_errors["overall"]["HR@1"] == pytest.approx(1 / 3)
    # identical instances have no sampling error; a group of one has none defined
    perfect = ev.evaluate(OracleScorer(ev))
    assert perfect.standard_errors["overall"]["MRR"] == 0.0
    singles = [g for g, n in r.counts.items() if n == 1]
    assert singles and all(g not in r.standard_errors for g in singles)
    # results.json round trip, and results written before standard errors existed still load
    back = EvalResult(**r.to_dict())
    assert back.standard_errors == r.standard_errors
    old = {k: v for k, v in r.to_dict().items() if k != "standard_errors"}
    assert EvalResult(**old).standard_errors == {}


def test_full_ranking_masks_history_but_not_target():
    # user 0 test: history [0,1,2,20] -> target 3 (domain A); items 0,1,2 masked
    ds = tiny_dataset(SEQS)
    ev = Evaluator(ds, "test", "full")
    r = ev.evaluate(ConstantScorer(ds))
    i = int(np.nonzero(ev.users == 0)[0][0])
    assert r.per_instance["equal"][i] == 20 - 1 - 3


def test_sampled_negatives_exclude_everything_the_user_touched():
    ds = tiny_dataset(SEQS, n_items=(200, 300))
    c = draw_candidates(ds, "test", n_negatives=50, seed=3)
    items = ds.user_item_sets()
    for i in range(len(ds.test)):
        d = int(ds.target_domains(ds.test)[i])
        negs = c.negatives[i][: c.n_valid[i]] + ds.domains[d].offset
        assert len(np.unique(negs)) == 50
        assert not np.isin(negs, items[int(ds.seq_user[ds.test.seq[i]])]).any()
        assert np.all(ds.domain_of(negs) == d)
    again = draw_candidates(ds, "test", n_negatives=50, seed=3)
    assert np.array_equal(c.negatives, again.negatives)
    other = draw_candidates(ds, "test", n_negatives=50, seed=4)
    assert not np.array_equal(c.negatives, other.negatives)


def test_small_domain_caps_negatives_and_says_so():
    ds = tiny_dataset(SEQS)
    r = Evaluator(ds, "test", "sampled", n_negatives=999).evaluate(ConstantScorer(ds))
    assert any("fewer than 999" in n for n in r.notes)


def test_non_finite_score_is_an_error():
    ds = tiny_dataset(SEQS)
    with pytest.raises(NonFiniteScoreError, match="non-finite"):
        Evaluator(ds, "test", "full").evaluate(NaNScorer(ds))


def test_popularity_counts_training_only():
    ds = tiny_dataset(SEQS)
    counts = ds.train_item_counts()
    # targets of test (3, 23, 26) and valid (20, 22, 4) never count
    assert counts[3] == 1  # item 3 appears in user 3's training prefix only
    assert counts[23] == 0 and counts[26] == 0
    r = Evaluator(ds, "test", "full").evaluate(PopularityScorer(ds))
    assert set(r.metrics) >= {"overall", "A", "B"}


def test_selection_uses_validation_and_tests_only_the_winner():
    ds = tiny_dataset(SEQS)
    valid = Evaluator(ds, "valid", "full")
    test = Evaluator(ds, "test", "full")
    calls = []

    class Counting(ConstantScorer):
        def __init__(self, ds, name):
            super().__init__(ds)
            self.name = name

        def score(self, batch):
            calls.append(self.name)
            return super().score(batch)

    oracle = OracleScorer(valid)
    sel = select_on_validation({"const": Counting(ds, "const"), "oracle": oracle}, valid, test)
    assert sel.best == "oracle"
    assert sel.test.split == "test" and sel.test.scorer == "oracle"
    assert set(sel.validation) == {"const", "oracle"}
    assert all(c == "const" for c in calls)  # the loser never saw the test split


def test_random_scorer_near_chance():
    ds = tiny_dataset(SEQS, n_items=(200, 300))
    r = Evaluator(ds, "test", "sampled", n_negatives=99).evaluate(RandomScorer(ds, seed=0))
    assert 0 < r.metrics["overall"]["mean_rank"] < 100
