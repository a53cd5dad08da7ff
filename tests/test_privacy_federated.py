"""Differential privacy through the real Flower path: DP + SecAgg+, suspension, the report."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from fedscope.config import load_config
from fedscope.experiments import runner
from fedscope.federation import run_dir as layout
from fedscope.privacy.client import read_ledger
from fedscope.privacy.plan import load_plan
from fedscope.privacy.report import REPORT_FILE

pytestmark = pytest.mark.slow

SETTINGS = [
    'data.options={"n_users": 300, "n_items": 120}',
    "partition.n_clients=4",
    "federation.fraction=0.5",
    "federation.rounds=4",
    "federation.secure_aggregation=true",
    "train.batch_size=32",
    "eval.valid_subset=200",
    # the paper's per-round calibration: at eps_total=8 over 4 equal clients, the accountant
    # lets each client through 3 of the 4 rounds, then suspends it
    "privacy.epsilon=8",
    "privacy.beta=0",
    "privacy.calibration=per-round",
]


@pytest.fixture(scope="module")
def dp_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    run_dir = runner.prepare_run(load_config(None, SETTINGS), tmp_path_factory.mktemp("dp") / "run")
    return run_dir, runner.train(run_dir)


def test_dp_run_keeps_every_client_within_its_budget(dp_run: tuple[Path, dict]) -> None:
    run_dir, results = dp_run
    plan = load_plan(run_dir)
    assert [c.max_steps for c in plan.clients] == [3, 3, 3, 3]
    report = json.loads((run_dir / REPORT_FILE).read_text())
    assert results["privacy"]["epsilon_spent_max"] == report["epsilon_spent_max"]
    assert report["clients_over_budget"] == []
    for c in report["clients"]:
        assert 0 < c["epsilon_spent"] <= c["epsilon_budget"]
        assert c["steps_charged"] == 3  # amplification: every round up to the cap

    # every round a client was sampled in is in its ledger: sent in rounds 1-3, suspended in 4
    rows = layout.read_metrics(run_dir)
    for k in range(4):
        ledger = read_ledger(run_dir, k)
        sampled = [r["round"] for r in rows if k in r["sampled"]]
        assert [r["round"] for r in ledger] == sampled
        for r in ledger:
            assert r["status"] == ("suspended" if r["round"] == 4 else "sent")
            if r["status"] == "sent":
                assert r["sigma"] == pytest.approx(r["noise_multiplier"] * r["clip"])


def test_dp_rounds_run_under_secagg_and_suspended_rounds_move_nothing(
    dp_run: tuple[Path, dict],
) -> None:
    run_dir, _ = dp_run
    rows = {r["round"]: r for r in layout.read_metrics(run_dir)}
    assert all(r["secagg"] and r["aggregated"] for r in rows.values())
    assert not rows[3].get("step_skipped")
    assert rows[4]["step_skipped"]  # both sampled clients were suspended
    last = layout.load_checkpoint(layout.last_checkpoint_path(run_dir))
    assert last.round == 4 and all(np.isfinite(w).all() for w in last.weights)
    # round 4 moved nothing: its validation equals round 3's
    assert rows[4]["validation"] == rows[3]["validation"]


def test_the_report_names_clients_an_assignment_file_named(
    dp_run: tuple[Path, dict], tmp_path: Path
) -> None:
    import dataclasses
    import shutil

    from rich.console import Console

    from fedscope.data.partition import (
        PARTITION_FILE,
        Partitioning,
        load_partitioning,
        save_partitioning,
    )
    from fedscope.privacy.report import build_report, report_table

    run_dir, _ = dp_run
    assert all("name" not in c for c in build_report(run_dir, 4)["clients"])
    named = shutil.copytree(run_dir, tmp_path / "named")
    p = load_partitioning(named / PARTITION_FILE)
    shops = ("north", "south", "east", "west")
    clients = tuple(dataclasses.replace(c, name=n) for c, n in zip(p.clients, shops, strict=True))
    save_partitioning(Partitioning("file", p.seed, clients), named / PARTITION_FILE)
    report = build_report(named, 4)
    assert [c["name"] for c in report["clients"]] == list(shops)
    console = Console(width=200, record=True)
    console.print(report_table(report))
    assert "2 (east)" in console.export_text()


def test_a_dp_run_records_rho_and_train_warns_about_it(
    dp_run: tuple[Path, dict], capsys: pytest.CaptureFixture[str]
) -> None:
    from fedscope.cli.train_commands import _warn_about_noise
    from fedscope.training.task import RecommendationTask

    run_dir, _ = dp_run
    ratio = json.loads((run_dir / runner.RUN_FILE).read_text())["privacy_noise_ratio"]
    shared = RecommendationTask.from_run_dir(run_dir).shared_weights()
    assert ratio["n_params"] == sum(w.size for w in shared)  # what travels, every array
    assert ratio["clients_per_round"] == 2
    plan = load_plan(run_dir)
    z = plan.clients[0].segments[0].z  # equal clients, one noise multiplier
    # rounds 1-3 (round 4: every client is suspended, no noise to count)
    assert ratio["median"] == pytest.approx(z * np.sqrt(ratio["n_params"] / 2))
    capsys.readouterr()
    _warn_about_noise(run_dir)
    out = " ".join(capsys.readouterr().out.split())
    assert f"{ratio['median']:.3g} times the largest update" in out
