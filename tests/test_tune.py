"""`fedscope tune`: grid search ranked on validation, through the experiment machinery."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from tests.test_experiments import TINY, cli

from fedscope.config import ConfigError
from fedscope.experiments.suite.base import (
    RunSpec,
    StoredExperiment,
    StoredRun,
    rank_on_validation,
)
from fedscope.experiments.tune import Axis, GridSearch, check_axes, parse_axis, point_name


def test_axes_parse_lists_and_refuse_what_is_ambiguous() -> None:
    assert parse_axis("train.lr=0.001, 0.005") == Axis("train.lr", ("0.001", "0.005"))
    assert parse_axis("model.dim=[32,64]").values == ("32", "64")
    assert parse_axis('data.options=[{"seed": 1}, {"seed": 2}]').values == (
        '{"seed":1}',
        '{"seed":2}',
    )
    for bad, message in (
        ("train.lr", "expected KEY=V1,V2"),
        ("train.lr=0.1,,0.2", "an empty value"),
        ("train.lr=0.1,0.1", "0.1 given twice"),
        ("model.dim=[32,", "not a valid JSON list"),
    ):
        with pytest.raises(ConfigError, match=message):
            parse_axis(bad)
    lr = parse_axis("train.lr=0.1")
    with pytest.raises(ConfigError, match="no --grid"):
        check_axes([], [])
    with pytest.raises(ConfigError, match=r"train\.lr twice"):
        check_axes([lr, lr], [])
    with pytest.raises(ConfigError, match="both --set and --grid"):
        check_axes([lr], ["train.lr=0.2"])
    with pytest.raises(ConfigError, match="use --seeds"):
        check_axes([parse_axis("seed=1,2")], [])


def test_point_names_are_short_unique_folder_names() -> None:
    lr, alpha = parse_axis("train.lr=0.001,0.01"), parse_axis("loss.alpha=0,0.1")
    assert point_name([lr, alpha], ["0.001", "0.1"]) == "lr0.001-alpha0.1"
    # two axes with the same last part keep their whole keys
    other = parse_axis("partition.alpha=0.5,1")
    assert point_name([alpha, other], ["0", "1"]) == "loss.alpha0-partition.alpha1"
    options = parse_axis('data.options=[{"seed": 1}]')
    assert point_name([options], options.values) == "options_seed_1_"
    specs = GridSearch("g", [lr, alpha]).runs("full")
    assert [s.name for s in specs] == [
        "lr0.001-alpha0",
        "lr0.001-alpha0.1",
        "lr0.01-alpha0",
        "lr0.01-alpha0.1",
    ]
    with pytest.raises(ConfigError, match="share the folder 'storex_y'"):
        GridSearch("g", [parse_axis("semantics.store=x/y,x_y")]).runs("full")


def _result(mrr: float, round_: int) -> dict:
    return {
        "selected_round": round_,
        "valid": {"sampled": [{"metrics": {"overall": {"MRR": mrr}}}]},
    }


def _stored(values: dict[tuple[str, int], float]) -> StoredExperiment:
    runs = [
        StoredRun(RunSpec(name, name, (f"x={name}",), (seed,)), seed, Path(name), _result(v, 3))
        for (name, seed), v in values.items()
    ]
    return StoredExperiment({"runs": []}, Path("."), runs)


def test_points_rank_by_their_mean_over_seeds_and_a_non_finite_one_is_an_error() -> None:
    stored = _stored({("a", 0): 0.10, ("a", 1): 0.30, ("b", 0): 0.25, ("b", 1): 0.25})
    ranking = rank_on_validation(stored, "MRR", "sampled")
    assert [p.name for p in ranking] == ["b", "a"]  # 0.25 against 0.20, though a has the max
    assert ranking[1].std == pytest.approx(0.10) and ranking[1].seeds == [0, 1]
    tie = rank_on_validation(_stored({("z", 0): 0.2, ("y", 0): 0.2}), "MRR", "sampled")
    assert [p.name for p in tie] == ["z", "y"]  # grid order breaks ties
    with pytest.raises(ValueError, match="validation MRR is nan"):
        rank_on_validation(_stored({("a", 0): math.nan}), "MRR", "sampled")


def test_tune_trains_the_grid_ranks_it_on_validation_and_reuses_it(tmp_path: Path) -> None:
    root = tmp_path / "tune"
    args = ["tune", "lr", "--grid", "train.lr=0.0005,0.02", "--root", str(root), *TINY]
    args += ["--set", "federation.rounds=1", "--progress-every", "0"]
    out = " ".join(cli(*args).stdout.split())
    folder = root / "lr" / "grid"
    result = json.loads((folder / "tune.json").read_text())
    valid = {
        name: json.loads((folder / f"{name}-s0" / "results.json").read_text())["valid"]["sampled"][
            0
        ]["metrics"]["overall"]["MRR"]
        for name in ("lr0.0005", "lr0.02")
    }
    best = max(valid, key=valid.__getitem__)
    assert result["best"]["name"] == best == result["points"][0]["name"]
    assert result["points"][0]["valid"] == [valid[best]]
    assert f"best: --set train.lr={best[2:]}" in out
    assert f"Test of the chosen point (train.lr={best[2:]})" in out
    assert "trained in" in out
    # `fedscope report` over the same root shows the grid: the ranking and the chosen test
    cli("report", "--root", str(root), "--out", str(tmp_path / "report"))
    report = (tmp_path / "report" / "report.md").read_text()
    assert "## Grid search on validation (lr, grid)" in report
    assert f"| 1 | train.lr={best[2:]} |" in report and "| popularity (overall) |" in report
    again = " ".join(cli(*args).stdout.split())
    assert "trained in" not in again and again.count("stored, reused") == 2
    # a grid with a point the configuration refuses trains nothing and says why
    p = cli(*args[:3], "train.lr=0.02,-1", *args[4:], check=False)
    assert p.returncode == 2 and "train.lr: Input should be greater than 0" in p.stderr
    assert "Traceback" not in p.stderr and not (folder / "lr-1-s0").exists()
