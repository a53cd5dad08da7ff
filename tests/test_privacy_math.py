"""Budgets, clipping, Gaussian noise, accountants and noise calibration (fedscope.privacy)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from fedscope.privacy import (
    RDP_ORDERS,
    ClippingRule,
    PrivacySettingsError,
    add_gaussian_noise,
    allocate_budgets,
    clip_update,
    epsilon_after,
    gaussian_privatise,
    make_accountant,
    noise_multiplier_for_budget,
    paper_noise_multiplier,
    update_norm,
)
from fedscope.privacy.accountant import OPACUS_MAX_ORDER

KINDS = ["rdp", "opacus-rdp"]

# --------------------------------------------------------------------------------------------
# Budget allocation
# --------------------------------------------------------------------------------------------

USERS = [1, 4, 9, 100, 2500, 37]


@pytest.mark.parametrize("beta", [0.3, 0.5, 1.0])
def test_allocation_sums_to_total_and_follows_users_to_the_beta(beta: float) -> None:
    budgets = allocate_budgets(USERS, epsilon=4.0, delta=1e-5, beta=beta)
    assert [b.client_id for b in budgets] == list(range(len(USERS)))
    assert [b.n_users for b in budgets] == USERS
    assert math.isclose(sum(b.epsilon for b in budgets), 4.0, rel_tol=1e-12)
    for b in budgets:
        assert b.delta == pytest.approx(1e-5 / len(USERS), rel=1e-15)
        # eps_k / eps_0 must equal (|U_k| / |U_0|)^beta.
        expected_ratio = (b.n_users / budgets[0].n_users) ** beta
        assert b.epsilon / budgets[0].epsilon == pytest.approx(expected_ratio, rel=1e-12)


def test_allocation_beta_zero_is_uniform_exactly() -> None:
    budgets = allocate_budgets(USERS, epsilon=1.0, delta=1e-5, beta=0.0)
    assert len({b.epsilon for b in budgets}) == 1
    assert budgets[0].epsilon == pytest.approx(1.0 / len(USERS), rel=1e-15)


def test_larger_beta_moves_budget_to_data_rich_clients() -> None:
    low = allocate_budgets(USERS, 1.0, 1e-5, 0.3)
    high = allocate_budgets(USERS, 1.0, 1e-5, 0.7)
    richest = USERS.index(max(USERS))
    poorest = USERS.index(min(USERS))
    assert high[richest].epsilon > low[richest].epsilon
    assert high[poorest].epsilon < low[poorest].epsilon


@pytest.mark.parametrize(
    ("kwargs", "fragments"),
    [
        ({"epsilon": 0.0}, ["epsilon", "0.0"]),
        ({"epsilon": -1.0}, ["epsilon", "-1.0"]),
        ({"epsilon": math.inf}, ["epsilon", "inf"]),
        ({"epsilon": math.nan}, ["epsilon", "nan"]),
        ({"delta": 0.0}, ["delta", "0.0"]),
        ({"delta": 1.0}, ["delta", "1.0"]),
        ({"delta": 2e-1 * 7}, ["delta", "1.4"]),
        ({"beta": -0.1}, ["beta", "-0.1"]),
        ({"beta": 1.5}, ["beta", "1.5"]),
        ({"n_users": [3, 0, 2]}, ["client 1", "0 users"]),
        ({"n_users": [3, 2, -4]}, ["client 2", "-4 users"]),
        ({"n_users": [3, 2.5]}, ["client 1", "2.5"]),
        ({"n_users": []}, ["n_users is empty"]),
    ],
)
def test_bad_allocation_settings_say_which_value(kwargs: dict, fragments: list[str]) -> None:
    settings = {"n_users": [10, 20], "epsilon": 1.0, "delta": 1e-5, "beta": 0.5} | kwargs
    with pytest.raises(PrivacySettingsError) as info:
        allocate_budgets(**settings)
    assert isinstance(info.value, ValueError)
    for fragment in fragments:
        assert fragment in str(info.value)


# --------------------------------------------------------------------------------------------
# Clipping
# --------------------------------------------------------------------------------------------


def _random_update(rng: np.random.Generator, scale: float) -> list[np.ndarray]:
    return [
        (rng.standard_normal((17, 9)) * scale).astype(np.float32),
        rng.standard_normal(31) * scale,
        (rng.standard_normal((2, 3, 4)) * scale).astype(np.float16),
    ]


def test_update_norm_is_the_global_l2_norm_in_float64() -> None:
    rng = np.random.default_rng(0)
    update = _random_update(rng, 1.0)
    flat = np.concatenate([a.astype(np.float64).ravel() for a in update])
    assert update_norm(update) == pytest.approx(float(np.linalg.norm(flat)), rel=1e-12)
    # 100k float16 ones: their sum of squares overflows float16 (max 65504) but not float64.
    assert update_norm([np.ones(100_000, dtype=np.float16)]) == pytest.approx(math.sqrt(1e5))


def test_clipping_bounds_the_norm_and_keeps_direction_dtypes_and_shapes() -> None:
    rng = np.random.default_rng(1)
    for trial in range(200):
        update = _random_update(rng, scale=float(rng.uniform(0.5, 50.0)))
        threshold = float(rng.uniform(0.1, 3.0))
        before = update_norm(update)
        clipped, reported = clip_update(update, threshold)
        assert reported == pytest.approx(before, rel=1e-12)
        after = update_norm(clipped)
        assert after <= threshold, f"trial {trial}: {after} > {threshold}"
        assert after == pytest.approx(threshold, rel=2e-3)  # float16 rounding
        for original, out in zip(update, clipped, strict=True):
            assert out.dtype == original.dtype and out.shape == original.shape
        # Direction: the float64 part is scaled by one factor, min(1, C/||Delta||) up to the
        # tiny extra shrink that absorbs float16 rounding.
        ratios = clipped[1] / update[1]
        assert ratios == pytest.approx(np.full_like(ratios, ratios[0]), rel=1e-12)
        assert ratios[0] == pytest.approx(threshold / before, rel=2e-3)
        assert ratios[0] <= threshold / before * (1 + 1e-12)


def test_clipping_leaves_small_updates_untouched_and_copies() -> None:
    rng = np.random.default_rng(2)
    update = _random_update(rng, scale=0.01)
    clipped, norm = clip_update(update, threshold=10.0)
    assert norm < 10.0
    for original, out in zip(update, clipped, strict=True):
        np.testing.assert_array_equal(out, original)
        assert out is not original
    clipped[0][0, 0] = 123.0
    assert update[0][0, 0] != 123.0


def test_zero_update_stays_zero() -> None:
    clipped, norm = clip_update([np.zeros(5, np.float32), np.zeros((2, 2))], threshold=1.0)
    assert norm == 0.0
    assert all(not a.any() for a in clipped)


@pytest.mark.parametrize("threshold", [0.0, -1.0, math.inf, math.nan])
def test_clipping_threshold_must_be_positive_and_finite(threshold: float) -> None:
    with pytest.raises(PrivacySettingsError, match="clipping threshold") as info:
        clip_update([np.ones(3)], threshold)
    assert repr(threshold) in str(info.value)


def test_clipping_refuses_diverged_and_integer_updates() -> None:
    with pytest.raises(ValueError, match="non-finite"):
        clip_update([np.array([1.0, np.nan])], 1.0)
    with pytest.raises(TypeError, match="array 1 has dtype int64"):
        clip_update([np.ones(2), np.ones(2, dtype=np.int64)], 1.0)


def test_fixed_clipping_rule_ignores_history() -> None:
    rule = ClippingRule(initial=2.5, gamma=None)
    assert not rule.adaptive
    assert rule.threshold([]) == 2.5
    assert rule.threshold([100.0, 200.0, 300.0]) == 2.5


def test_adaptive_threshold_is_gamma_times_median_of_last_window_norms() -> None:
    rule = ClippingRule(initial=1.0, gamma=0.5, window=3)
    # Warm-up: first round uses the initial value, then the median of the norms so far.
    assert rule.threshold([]) == 1.0
    assert rule.threshold([8.0]) == 0.5 * 8.0
    assert rule.threshold([8.0, 2.0]) == 0.5 * 5.0
    assert rule.threshold([8.0, 2.0, 6.0]) == 0.5 * 6.0
    # Only the last M = 3 norms count: the old 1000 is out of the window.
    assert rule.threshold([1000.0, 8.0, 2.0, 4.0]) == 0.5 * 4.0
    assert rule.threshold([1.0, 1.0, 9.0, 10.0, 11.0]) == 0.5 * 10.0
    # A median of zero (all-zero updates) cannot be a threshold: back to the initial value.
    assert rule.threshold([5.0, 0.0, 0.0, 0.0]) == 1.0


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"initial": 0.0}, "initial clipping threshold"),
        ({"initial": -2.0}, "-2.0"),
        ({"gamma": 0.0}, "gamma"),
        ({"gamma": -1.0}, "-1.0"),
        ({"gamma": math.inf}, "inf"),
        ({"window": 0}, "window"),
        ({"window": 2.5}, "2.5"),
    ],
)
def test_bad_clipping_rules_are_refused(kwargs: dict, fragment: str) -> None:
    with pytest.raises(PrivacySettingsError) as info:
        ClippingRule(**({"initial": 1.0} | kwargs))
    assert fragment in str(info.value)


def test_adaptive_threshold_rejects_bad_history() -> None:
    with pytest.raises(ValueError, match="entry 1"):
        ClippingRule(initial=1.0).threshold([1.0, math.nan])
    with pytest.raises(ValueError, match="entry 0"):
        ClippingRule(initial=1.0).threshold([-1.0])


# --------------------------------------------------------------------------------------------
# Gaussian noise
# --------------------------------------------------------------------------------------------


def test_gaussian_noise_has_the_requested_std_and_keeps_dtypes() -> None:
    sigma = 0.7
    base = [np.full(200_000, 3.0, dtype=np.float32), np.zeros((300, 100))]
    noisy = add_gaussian_noise(base, sigma, np.random.default_rng(3))
    for original, out in zip(base, noisy, strict=True):
        assert out.dtype == original.dtype and out.shape == original.shape
        noise = out.astype(np.float64) - original
        n = noise.size
        assert abs(noise.mean()) < 5 * sigma / math.sqrt(n)
        assert noise.std() == pytest.approx(sigma, rel=0.02)
    # Independent across arrays.
    corr = np.corrcoef(noisy[0][:30_000] - 3.0, noisy[1].ravel())[0, 1]
    assert abs(corr) < 0.03


def test_gaussian_noise_is_reproducible_and_zero_sigma_copies() -> None:
    base = [np.zeros(50)]
    a = add_gaussian_noise(base, 1.0, np.random.default_rng(7))
    b = add_gaussian_noise(base, 1.0, np.random.default_rng(7))
    c = add_gaussian_noise(base, 1.0, np.random.default_rng(8))
    np.testing.assert_array_equal(a[0], b[0])
    assert not np.array_equal(a[0], c[0])
    same = add_gaussian_noise(base, 0.0, np.random.default_rng(7))
    np.testing.assert_array_equal(same[0], base[0])
    assert same[0] is not base[0]


@pytest.mark.parametrize("sigma", [-0.1, math.inf, math.nan])
def test_gaussian_noise_refuses_bad_sigma(sigma: float) -> None:
    with pytest.raises(PrivacySettingsError, match="sigma"):
        add_gaussian_noise([np.zeros(2)], sigma, np.random.default_rng(0))


def test_privatise_scales_noise_to_the_clipping_threshold() -> None:
    update = [np.full(40_000, 5.0), np.full(10_000, 5.0, dtype=np.float32)]
    out, norm = gaussian_privatise(
        update, clip_threshold=2.0, noise_multiplier=1.5, rng=np.random.default_rng(4)
    )
    assert norm == pytest.approx(5.0 * math.sqrt(50_000))
    clipped, _ = clip_update(update, 2.0)
    residual = np.concatenate(
        [(o - c).astype(np.float64).ravel() for o, c in zip(out, clipped, strict=True)]
    )
    assert residual.std() == pytest.approx(1.5 * 2.0, rel=0.03)


# --------------------------------------------------------------------------------------------
# Accountants
# --------------------------------------------------------------------------------------------


def _closed_form_gaussian_epsilon(z: float, rounds: int, delta: float, orders) -> float:
    # Full participation (q = 1): RDP of the Gaussian mechanism is alpha / (2 z^2) per round,
    # converted with the improved bound eps = rdp + log1p(-1/a) - log(delta a) / (a - 1).
    return min(
        rounds * a / (2 * z * z) + math.log1p(-1 / a) - math.log(delta * a) / (a - 1)
        for a in orders
        if a > 1.01
    )


@pytest.mark.parametrize("kind", KINDS)
def test_full_participation_matches_the_gaussian_closed_form(kind: str) -> None:
    orders = [a for a in RDP_ORDERS if kind == "rdp" or a <= OPACUS_MAX_ORDER]
    accountant = make_accountant(kind)
    accountant.record(5.0, 1.0, steps=10)
    expected = _closed_form_gaussian_epsilon(5.0, 10, 1e-6, orders)
    assert accountant.epsilon(1e-6) == pytest.approx(expected, rel=1e-9)


def test_the_two_libraries_agree_on_the_subsampled_gaussian() -> None:
    # DEPENDENCIES.md measured 19.99 (dp-accounting) vs 19.84 (Opacus) here.
    eps = {kind: epsilon_after(1.1, 1e-5, 0.2, 200, kind) for kind in KINDS}
    assert eps["rdp"] == pytest.approx(eps["opacus-rdp"], rel=0.03)
    assert 1.0 < eps["rdp"] < 100.0


def test_the_two_libraries_agree_on_a_heterogeneous_history() -> None:
    records = [(1.1, 0.2, 100), (2.0, 0.1, 50), (1.1, 0.2, 50)]
    eps = {}
    for kind in KINDS:
        accountant = make_accountant(kind)
        for record in records:
            accountant.record(*record)
        assert accountant.history == records
        assert accountant.steps == 200
        eps[kind] = accountant.epsilon(1e-5)
    assert eps["rdp"] == pytest.approx(eps["opacus-rdp"], rel=0.03)
    # 50 noisier, rarer rounds in place of 50 at z = 1.1, q = 0.2 spend less.
    assert eps["rdp"] < epsilon_after(1.1, 1e-5, 0.2, 200)


@pytest.mark.parametrize("kind", KINDS)
def test_composition_is_additive_and_order_free(kind: str) -> None:
    one_by_one = make_accountant(kind)
    for _ in range(6):
        one_by_one.record(3.0, 1.0)
    assert one_by_one.history == [(3.0, 1.0, 6)]
    at_once = make_accountant(kind)
    at_once.record(3.0, 1.0, steps=6)
    assert one_by_one.epsilon(1e-5) == pytest.approx(at_once.epsilon(1e-5), rel=1e-12)

    forward = make_accountant(kind, [(3.0, 1.0, 4), (6.0, 1.0, 2)])
    backward = make_accountant(kind, [(6.0, 1.0, 2), (3.0, 1.0, 4)])
    assert forward.steps == backward.steps == 6
    assert forward.epsilon(1e-5) == pytest.approx(backward.epsilon(1e-5), rel=1e-12)
    assert forward.epsilon(1e-5) < at_once.epsilon(1e-5)


def test_epsilon_grows_with_rounds_and_falls_with_noise() -> None:
    accountant = make_accountant()
    spent = []
    for _ in range(3):
        accountant.record(2.0, 0.2, steps=50)
        spent.append(accountant.epsilon(1e-5))
    assert spent[0] < spent[1] < spent[2]
    assert spent[2] > epsilon_after(3.0, 1e-5, 0.2, 150) > epsilon_after(6.0, 1e-5, 0.2, 150)
    # A smaller delta costs more epsilon for the same mechanism.
    assert accountant.epsilon(1e-7) > spent[2]


@pytest.mark.parametrize("kind", KINDS)
def test_accountant_edge_cases(kind: str) -> None:
    accountant = make_accountant(kind)
    assert accountant.name == kind
    assert accountant.epsilon(1e-5) == 0.0
    assert accountant.steps == 0 and accountant.history == []
    assert accountant.optimal_order(1e-5) is None
    for z, q, steps, fragment in [
        (0.0, 0.5, 1, "noise multiplier"),
        (-1.0, 0.5, 1, "noise multiplier"),
        (math.nan, 0.5, 1, "noise multiplier"),
        (1.0, 0.0, 1, "sample rate"),
        (1.0, 1.5, 1, "sample rate"),
        (1.0, 0.5, 0, "steps"),
        (1.0, 0.5, 1.5, "steps"),
    ]:
        with pytest.raises(ValueError, match=fragment):
            accountant.record(z, q, steps)
    assert accountant.steps == 0  # failed records change nothing
    with pytest.raises(ValueError, match="delta"):
        accountant.epsilon(0.0)

    accountant.record(4.0, 1.0, 3)
    spent = accountant.epsilon(1e-5)
    what_if = accountant.copy()
    what_if.record(4.0, 1.0, 3)
    assert what_if.epsilon(1e-5) > spent
    assert accountant.epsilon(1e-5) == spent and accountant.steps == 3


def test_unknown_accountant_lists_the_known_ones() -> None:
    with pytest.raises(PrivacySettingsError, match="'rdp', 'opacus-rdp'"):
        make_accountant("pld")


# --------------------------------------------------------------------------------------------
# Calibration
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("epsilon", "delta", "q", "rounds", "kind"),
    [
        (1.0, 1e-5, 0.2, 200, "rdp"),
        (0.05, 2e-7, 0.2, 200, "rdp"),
        (3.0, 1e-6, 1.0, 10, "rdp"),
        (0.3, 1e-5, 1.0, 1, "opacus-rdp"),
    ],
)
def test_noise_multiplier_for_budget_is_the_smallest_that_meets_it(
    epsilon: float, delta: float, q: float, rounds: int, kind: str
) -> None:
    rel_tol = 1e-3
    z = noise_multiplier_for_budget(epsilon, delta, q, rounds, kind, rel_tol=rel_tol)
    spent = epsilon_after(z, delta, q, rounds, kind)
    assert spent <= epsilon
    assert spent == pytest.approx(epsilon, rel=5 * rel_tol)
    assert epsilon_after(z / (1 + rel_tol), delta, q, rounds, kind) > epsilon


def test_impossible_budget_says_so() -> None:
    with pytest.raises(PrivacySettingsError, match=r"cannot be met in 200 rounds") as info:
        noise_multiplier_for_budget(0.005, 2e-7, 0.2, 200, max_noise_multiplier=100.0)
    spent_at_max = epsilon_after(100.0, 2e-7, 0.2, 200)
    assert f"spends epsilon={spent_at_max:.4g}" in str(info.value)


def test_paper_formula_bounds_one_round_but_not_two_hundred() -> None:
    epsilon, delta = 0.5, 1e-5
    z_paper = paper_noise_multiplier(epsilon, delta)
    assert z_paper == pytest.approx(math.sqrt(2 * math.log(1.25 / delta)) / epsilon)
    # One full-participation release with the paper's noise is within the budget...
    assert epsilon_after(z_paper, delta, 1.0, 1) <= epsilon
    # ...but 200 subsampled rounds at that noise spend far more, and meeting the budget over
    # 200 rounds needs far more noise.
    assert epsilon_after(z_paper, delta, 0.2, 200) > 2 * epsilon
    # (epsilon falls with z, so this says the z that meets the budget is over 2 z_paper)
    assert epsilon_after(2 * z_paper, delta, 0.2, 200) > epsilon


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"epsilon": 0.0}, "target epsilon"),
        ({"delta": 1.0}, "delta"),
        ({"sample_rate": 0.0}, "sample rate"),
        ({"rounds": 0}, "rounds"),
        ({"accountant": "moments"}, "unknown accountant"),
        ({"rel_tol": 0.0}, "rel_tol"),
        ({"max_noise_multiplier": math.inf}, "max_noise_multiplier"),
    ],
)
def test_bad_calibration_settings_are_refused(kwargs: dict, fragment: str) -> None:
    settings = {"epsilon": 1.0, "delta": 1e-5, "sample_rate": 0.2, "rounds": 10} | kwargs
    with pytest.raises(PrivacySettingsError, match=fragment):
        noise_multiplier_for_budget(**settings)
