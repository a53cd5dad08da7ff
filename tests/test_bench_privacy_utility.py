"""bench/privacy_utility.py (RQ6 grid) end to end on the generated data set, at tiny scale."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from tests.helpers import load_bench_script

from fedscope.privacy import noise_multiplier_for_budget

# K = 4 equal clients of 75 users, C = 0.5, T = 2. A noise cap of 5 admits eps_total = 4
# (eps_k = 1 needs z = 3.7) and refuses eps_total = 1 (eps_k = 0.25 needs z = 11.9).
TINY = [
    "--data",
    "synthetic",
    "--config",
    "none",
    "--set",
    'data.options={"n_users": 300, "n_items": 120}',
    "--set",
    "partition.n_clients=4",
    "--set",
    "federation.fraction=0.5",
    "--set",
    "federation.rounds=2",
    "--set",
    "train.batch_size=32",
    "--set",
    "eval.valid_subset=200",
    "--set",
    "privacy.max_noise_multiplier=5",
    "--domain",
    "Movies",
    "--betas",
    "0.5",
    "--deltas",
    "1e-5",
]


def _script():
    return load_bench_script("privacy_utility")


def _csv(path: Path) -> dict[tuple[str, str], dict[str, str]]:
    with path.open() as f:
        return {(r["variant"], r["eps_total"]): r for r in csv.DictReader(f)}


def test_only_plan_solves_every_point_and_records_refusals(tmp_path: Path) -> None:
    out = tmp_path / "plan"
    runs = tmp_path / "runs"
    _script().main(
        [*TINY, "--eps", "1", "4", "--root", str(runs), "--out", str(out), "--only-plan"]
    )
    rows = _csv(Path(f"{out}.csv"))
    assert not runs.exists()  # planning writes no run directory
    for variant in ("uniform", "adaptive-b0.5"):
        ok = rows[(variant, "4.0")]
        assert ok["status"] == "feasible"
        # equal clients: eps_k = 4 / 4, delta_k = 1e-5 / 4, whatever beta is
        want = noise_multiplier_for_budget(1.0, 1e-5 / 4, 0.5, 2, max_noise_multiplier=5)
        assert float(ok["noise_multiplier_max"]) == pytest.approx(want, rel=1e-9)
        assert float(ok["eps_planned_max"]) <= 1.0 * (1 + 1e-9)
        # rho with equal clients and m = 2 a round is z * sqrt(d / 2) for d shared numbers
        d = 2 * (float(ok["noise_ratio"]) / want) ** 2
        assert d == pytest.approx(round(d), rel=1e-9) and d > 1000
        refused = rows[(variant, "1.0")]
        assert refused["status"] == "infeasible at max_noise_multiplier=5"
        assert "eps_k=0.25" in refused["note"] and refused["noise_multiplier_max"] == ""
    assert rows[("uniform", "4.0")]["clipping"] == "fixed"
    assert rows[("adaptive-b0.5", "4.0")]["clipping"] == "adaptive"


@pytest.mark.slow
def test_grid_trains_reports_and_reuses_runs(tmp_path: Path) -> None:
    script = _script()
    root, out = tmp_path / "runs", tmp_path / "pu"
    common = [*TINY, "--root", str(root), "--out", str(out), "--only", "adaptive-b0.5"]
    script.main([*common, "--eps", "4"])
    run_dir = root / "adaptive-b0.5-eps4-d1e-05-split-accountant-s0"
    results = run_dir / "results.json"
    stamp = results.stat().st_mtime_ns

    # Again with one more budget: the finished run is reused, the refused one is a row.
    script.main([*common, "--eps", "1", "4"])
    assert results.stat().st_mtime_ns == stamp
    assert not (root / "adaptive-b0.5-eps1-d1e-05-split-accountant-s0").exists()
    rows = _csv(Path(f"{out}.csv"))
    assert rows[("adaptive-b0.5", "1.0")]["status"].startswith("infeasible")
    row = rows[("adaptive-b0.5", "4.0")]
    assert row["status"] == "done" and row["domain"] == "Movies"
    assert row["trained_now"] == "False"  # its seconds are reading time, not training time
    privacy = json.loads(results.read_text())["privacy"]
    assert float(row["eps_spent_max"]) == pytest.approx(privacy["epsilon_spent_max"])
    recorded = json.loads((run_dir / "run.json").read_text())["privacy_noise_ratio"]
    assert float(row["noise_ratio"]) == pytest.approx(recorded["median"])
    assert 0.9 < float(row["eps_spent_max"]) <= 1.0 * (1 + 1e-9)  # eps_k = 1, spent in full
    assert row["calibration"] == "accountant" and row["allocation"] == "split"
    test = json.loads(results.read_text())["test"]
    assert float(row["hr10_sampled"]) == test["sampled"][0]["metrics"]["Movies"]["HR@10"]
    assert 0.0 <= float(row["ndcg10_sampled"]) <= float(row["hr10_sampled"]) <= 1.0
    assert Path(f"{out}.png").stat().st_size > 10_000
    summary = json.loads(Path(f"{out}.json").read_text())
    assert summary["reference"]["popularity"]["hr10_sampled"] > 0

    # A grid asking for other settings must not silently reuse that run.
    with pytest.raises(SystemExit, match=r"train\.lr"):
        script.main([*common, "--eps", "4", "--set", "train.lr=0.01"])


def test_outputs_default_beside_the_runs(tmp_path: Path) -> None:
    script = _script()
    args = script.parse_args([*TINY, "--root", str(tmp_path / "runs"), "--only-plan"])
    assert args.out.parent == tmp_path / "runs"
    assert args.out.name.startswith("privacy_utility_") and args.out.name.endswith("_plan")


@pytest.mark.parametrize("scheme", ["equal", "powerlaw"])
def test_beta_note_says_when_beta_cannot_change_any_budget(tmp_path: Path, scheme: str) -> None:
    out = tmp_path / "plan"
    argv = [*TINY, "--eps", "4", "--root", str(tmp_path / "runs"), "--out", str(out)]
    argv += ["--set", f"partition.scheme={scheme}", "--betas", "0.3", "0.7", "--only-plan"]
    argv += ["--set", "privacy.max_noise_multiplier=1000"]  # the smallest unequal client
    _script().main(argv)
    summary = json.loads(Path(f"{out}.json").read_text())
    rows = _csv(Path(f"{out}.csv"))
    low, high = rows[("adaptive-b0.3", "4.0")], rows[("adaptive-b0.7", "4.0")]
    if scheme == "equal":
        # 300 users over 4 clients: 75 each, so every beta gives every client eps_total / 4
        assert low["eps_k_min"] == low["eps_k_max"] == high["eps_k_max"] == "1.0"
        assert summary["beta_note"].startswith("clients of 75-75 users")
        assert "repeat each other" in summary["beta_note"]
    else:
        # unequal clients: the larger beta spreads the budgets further apart
        spread = [float(r["eps_k_max"]) / float(r["eps_k_min"]) for r in (low, high)]
        assert 1.01 < spread[0] < spread[1]
        assert summary["beta_note"] is None
