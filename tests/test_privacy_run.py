"""Differential privacy in a run: the plan, the client's privatiser and ledger, refusals."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from fedscope.config import ConfigError, load_config
from fedscope.federation.strategy import sample_partitions
from fedscope.privacy import PrivacySettingsError, update_norm
from fedscope.privacy.client import DpPrivatiser, read_ledger
from fedscope.privacy.noise_ratio import averaged_noise_ratio
from fedscope.privacy.plan import PrivacyPlan, make_plan, sends_per_client

SIZES = [100, 200, 300, 400]


def _config(*sets: str):
    base = ["partition.n_clients=4", "federation.fraction=0.5", "federation.rounds=20"]
    return load_config(None, [*base, *sets])


def test_accountant_calibration_spends_the_budget_typed() -> None:
    config = _config("privacy.epsilon=4", "privacy.beta=0.5")
    plan = make_plan(config, SIZES, [10] * 4)
    budgets = [c.epsilon for c in plan.clients]
    assert sum(budgets) == pytest.approx(4.0)
    assert budgets == sorted(budgets)  # more users, larger share (beta > 0)
    zs = [c.segments[0].z for c in plan.clients]
    assert zs == sorted(zs, reverse=True)  # larger budget, less noise
    for c in plan.clients:
        assert c.max_steps == 20 and plan.sample_rate == 0.5
        spent = plan.epsilon_spent(c.client_id, 20)
        assert spent <= c.epsilon * (1 + 1e-9)
        assert spent >= 0.98 * c.epsilon  # the noise is not needlessly large


def test_uniform_allocation_and_mean_allocation() -> None:
    uniform = make_plan(_config("privacy.epsilon=4", "privacy.beta=0"), SIZES, [10] * 4)
    assert {c.epsilon for c in uniform.clients} == {1.0}
    mean = make_plan(
        _config("privacy.epsilon=4", "privacy.beta=0", "privacy.allocation=mean"), SIZES, [10] * 4
    )
    assert {c.epsilon for c in mean.clients} == {4.0}


def test_per_round_calibration_stops_clients_at_their_budget() -> None:
    sets = ("privacy.epsilon=2", "privacy.beta=0", "privacy.calibration=per-round")
    suspend = make_plan(_config(*sets), SIZES, [10] * 4)
    c = suspend.clients[0]
    assert 0 < c.max_steps < 20  # the paper's per-round noise does not last T rounds
    assert suspend.epsilon_spent(0, c.max_steps) <= c.epsilon
    # one more step would pass the budget (computed without the plan's cap)
    over = make_plan(_config(*sets, "federation.rounds=" + str(c.max_steps + 1)), SIZES, [10] * 4)
    assert over.clients[0].max_steps == c.max_steps
    assert c.noise_multiplier(c.max_steps) is not None
    assert c.noise_multiplier(c.max_steps + 1) is None

    raised = make_plan(_config(*sets, "privacy.on_exhausted=raise-noise"), SIZES, [10] * 4)
    r = raised.clients[0]
    assert r.max_steps == 20 and r.noise_raised_at is not None
    assert len(r.segments) == 2 and r.segments[1].z > r.segments[0].z
    assert raised.epsilon_spent(0, 20) <= r.epsilon * (1 + 1e-9)


def test_without_amplification_a_step_is_a_round_sent() -> None:
    config = _config("privacy.epsilon=4", "privacy.amplification=false")
    sends = sends_per_client(config.seed, 20, 4, 0.5)
    assert sum(sends) == 20 * 2  # two of four clients per round
    plan = make_plan(config, SIZES, sends)
    assert plan.sample_rate == 1.0
    assert [c.steps_planned for c in plan.clients] == sends


def test_impossible_budget_is_refused() -> None:
    config = _config("privacy.epsilon=0.001", "privacy.max_noise_multiplier=3")
    with pytest.raises(PrivacySettingsError, match="cannot be met"):
        make_plan(config, SIZES, [10] * 4)


def test_privacy_needs_a_federated_regime() -> None:
    with pytest.raises(ConfigError, match=r"needs federation\.regime=federated"):
        load_config(None, ["privacy.epsilon=1", "federation.regime=centralised"])


def test_bad_privacy_values_are_refused_with_their_name() -> None:
    for bad, name in (
        ("epsilon=0", "privacy.epsilon"),
        ("delta=1", "privacy.delta"),
        ("beta=1.5", "privacy.beta"),
    ):
        with pytest.raises(ConfigError, match=name):
            load_config(None, [f"privacy.{bad}"])


def _plan(tmp: Path, *sets: str) -> PrivacyPlan:
    return make_plan(
        _config("privacy.epsilon=8", "privacy.clip_initial=1.0", *sets), SIZES, [10] * 4
    )


def test_privatiser_clips_adapts_adds_seeded_noise_and_keeps_a_ledger(tmp_path: Path) -> None:
    plan = _plan(
        tmp_path, "privacy.clip_gamma=0.5", "privacy.clip_window=2", "privacy.clip_max=100"
    )
    z = plan.clients[1].segments[0].z
    dp = DpPrivatiser(plan, tmp_path, seed=3)
    update = [np.full((10, 10), 1.0, np.float32), np.full(5, 2.0, np.float32)]
    norm = update_norm(update)

    first = dp(update, 1, 1)
    again = DpPrivatiser(plan, tmp_path, seed=3)(update, 1, 1)  # a resumed run: same noise
    for a, b in zip(first, again, strict=True):
        np.testing.assert_array_equal(a, b)
    rows = read_ledger(tmp_path, 1)
    assert len(rows) == 1  # round 1 was replaced, not appended twice
    assert rows[0]["clip"] == 1.0 and rows[0]["norm"] == pytest.approx(norm)
    assert rows[0]["sigma"] == pytest.approx(z * 1.0) and rows[0]["clipped"]
    # the noise has the planned scale: residual std around the clipped update ~ sigma
    clipped = [a * (1.0 / norm) for a in update]
    resid = np.concatenate([(p - c).ravel() for p, c in zip(first, clipped, strict=True)])
    assert resid.std() == pytest.approx(z, rel=0.25)

    dp(update, 1, 4)
    dp([a * 3 for a in update], 1, 7)
    dp(update, 1, 9)
    rows = read_ledger(tmp_path, 1)
    # gamma * median of the last two pre-clip norms
    assert rows[2]["clip"] == pytest.approx(0.5 * norm)
    assert rows[3]["clip"] == pytest.approx(0.5 * np.median([norm, 3 * norm]))
    # a resumed run that restarts at round 7 forgets the rows of rounds 7 and 9
    dp(update, 1, 7)
    assert [r["round"] for r in read_ledger(tmp_path, 1)] == [1, 4, 7]


def test_adaptive_threshold_is_capped_by_clip_max(tmp_path: Path) -> None:
    dp = DpPrivatiser(_plan(tmp_path, "privacy.clip_max=2"), tmp_path, seed=0)
    big = [np.full(100, 5.0, np.float32)]  # norm 50
    dp(big, 0, 1)
    dp(big, 0, 2)
    assert [r["clip"] for r in read_ledger(tmp_path, 0)] == [1.0, 2.0]


def test_privatiser_suspends_a_client_past_its_budget(tmp_path: Path) -> None:
    config = _config("privacy.epsilon=2", "privacy.beta=0", "privacy.calibration=per-round")
    plan = make_plan(config, SIZES, [10] * 4)
    last = plan.clients[2].max_steps
    dp = DpPrivatiser(plan, tmp_path, seed=0)
    update = [np.ones(4, np.float32)]
    assert dp(update, 2, last) is not None
    assert dp(update, 2, last + 1) is None
    rows = read_ledger(tmp_path, 2)
    assert [r["status"] for r in rows] == ["sent", "suspended"]


def test_cli_refuses_an_unmeetable_budget_before_training(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    env = dict(os.environ, COLUMNS="200")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "fedscope.cli",
            "train",
            "--run-dir",
            str(run_dir),
            "--set",
            "privacy.epsilon=0.0001",
            "--set",
            "privacy.max_noise_multiplier=5",
            "--set",
            'data.options={"n_users": 200, "n_items": 80}',
            "--set",
            "partition.n_clients=4",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "cannot be met" in proc.stderr and "Traceback" not in proc.stderr
    assert not run_dir.exists()  # refused before anything was written


@pytest.mark.parametrize("scheme", ["by-domain", "equal"])
def test_align_finds_exactly_the_users_clients_share(tmp_path: Path, scheme: str) -> None:
    from collections import Counter

    from fedscope.data.partition import load_partitioning
    from fedscope.experiments import runner
    from fedscope.privacy.alignment import align_run

    config = load_config(
        None,
        [
            'data.options={"n_users": 200, "n_items": 80}',
            "partition.n_clients=4",
            f"partition.scheme={scheme}",
        ],
    )
    run_dir = runner.prepare_run(config, tmp_path / "run")
    out = align_run(run_dir)
    parts = load_partitioning(run_dir / "partition.json").clients
    held = Counter(int(u) for p in parts for u in p.users)
    expected = sum(1 for p in parts for u in p.users if held[int(u)] > 1)
    assert out["users_shared_across_clients"] == expected
    assert out["false_positives_dropped"] == 0 and out["bytes"] > 0
    if scheme == "by-domain":
        assert expected > 0 and out["users_aligned_locally"] == 0
    else:
        assert expected == 0 and out["users_aligned_locally"] > 0


# --- the averaged-noise ratio of `fedscope privacy-plan` ------------------------------------


def test_noise_ratio_is_z_sqrt_d_over_m_for_equal_clients() -> None:
    config = _config("privacy.epsilon=4", "privacy.beta=0")
    plan = make_plan(config, [100] * 4, [10] * 4)
    z = plan.clients[0].segments[0].z
    ratio = averaged_noise_ratio(plan, 10_000, seed=0, fraction=0.5)
    assert ratio.clients_per_round == 2 and len(ratio.per_round) == 20
    assert ratio.median == pytest.approx(z * np.sqrt(10_000 / 2))
    # four times the numbers, twice the ratio; a larger budget, less noise
    assert averaged_noise_ratio(plan, 40_000, 0, 0.5).median == pytest.approx(2 * ratio.median)
    looser = make_plan(_config("privacy.epsilon=40", "privacy.beta=0"), [100] * 4, [10] * 4)
    assert averaged_noise_ratio(looser, 10_000, 0, 0.5).median < ratio.median


def test_noise_ratio_weights_clients_by_size_and_leaves_out_suspended_ones() -> None:
    config = _config("privacy.epsilon=4", "privacy.beta=0")
    plan = make_plan(config, SIZES, [10] * 4)
    ratio = averaged_noise_ratio(plan, 100, seed=3, fraction=0.5)
    for t, rho in zip(range(1, 21), ratio.per_round, strict=True):
        chosen = sample_partitions(3, t, [0, 1, 2, 3], 0.5)
        w = np.array([SIZES[k] for k in chosen], dtype=float)
        zs = np.array([plan.clients[k].noise_multiplier(t) for k in chosen])
        assert rho == pytest.approx(np.sqrt(100 * np.sum((w * zs) ** 2)) / w.sum())
    # per-round calibration suspends clients part-way: their rounds count no noise
    per_round = _config("privacy.epsilon=2", "privacy.beta=0", "privacy.calibration=per-round")
    stopped = make_plan(per_round, SIZES, [10] * 4)
    last = max(c.max_steps for c in stopped.clients)
    assert last < 20
    assert len(averaged_noise_ratio(stopped, 100, 3, 0.5).per_round) == last


def test_privacy_plan_command_prints_budgets_and_the_noise_ratio(tmp_path: Path) -> None:
    env = dict(os.environ, COLUMNS="200")
    base = [sys.executable, "-m", "fedscope.cli", "privacy-plan"]
    data = [
        "--set",
        'data.options={"n_users": 200, "n_items": 80}',
        "--set",
        "partition.n_clients=4",
    ]
    record_path = tmp_path / "plan.json"
    unequal = ["--set", "partition.scheme=powerlaw", "--set", "privacy.beta=1"]
    settings = ["--set", "privacy.epsilon=2", "--set", "federation.fraction=0.5"]
    proc = subprocess.run(
        [*base, *data, *settings, *unequal, "--json", str(record_path)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    assert "Privacy plan: eps_total=2 (split)" in out and "steps in budget" in out
    assert "clients a round: m = 2 (C = 0.5 of K = 4)" in out
    assert "rho > 1" in out  # any DP budget on a model of thousands of numbers
    # the JSON record holds what the table prints, and the plan reads back
    record = json.loads(record_path.read_text())
    plan = PrivacyPlan.from_json(json.dumps(record["plan"]))
    assert sum(c.epsilon for c in plan.clients) == pytest.approx(2.0)
    assert len({c.epsilon for c in plan.clients}) == 4  # beta = 1, clients of unequal size
    assert record["epsilon_after_T"] == pytest.approx([c.epsilon for c in plan.clients], rel=1e-3)
    assert sum(record["rounds_sampled"]) == 2 * plan.rounds
    ratio = record["noise_ratio"]
    assert ratio["median"] == pytest.approx(float(np.median(ratio["per_round"])))
    assert f"median {ratio['median']:.3g}" in out
    missing = tmp_path / "no-such-folder" / "plan.json"
    refused = subprocess.run(
        [*base, *data, *settings, "--json", str(missing)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert refused.returncode == 2 and "does not exist" in refused.stderr
    refused = subprocess.run([*base, *data], capture_output=True, text=True, env=env, timeout=300)
    assert refused.returncode == 2 and "privacy.epsilon is not set" in refused.stderr
