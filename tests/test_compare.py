"""Paired comparison of two runs (`fedscope compare`): the maths, the stored ranks, the CLI."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from tests.helpers import run_cli

from fedscope.config import load_config
from fedscope.evaluation.paired import (
    InstanceRanks,
    MismatchedEvaluationError,
    load_ranks,
    paired_differences,
    save_ranks,
)
from fedscope.experiments import runner

IDENTITY = {
    "dataset_fingerprint": "abc",
    "split": "test",
    "mode": "sampled",
    "n_negatives": 99,
    "candidate_seed": 0,
}


def _ranks(higher: list[int], scorer: str = "a", **identity: object) -> InstanceRanks:
    n = len(higher)
    return InstanceRanks(
        scorer=scorer,
        users=np.arange(n),
        domains=np.arange(n) % 2,
        domain_names=("Food", "Kitchen"),
        higher=np.array(higher),
        equal=np.zeros(n, dtype=np.int64),
        identity={**IDENTITY, **identity},
    )


def _row(rows, group, metric):
    return next(r for r in rows if r.group == group and r.metric == metric)


def test_paired_difference_and_its_standard_error():
    # HR@10 per instance: A hits 0, 1, 2, 3 (higher < 10); B hits 0 and 4
    a = _ranks([0, 3, 9, 2, 50, 60])
    b = _ranks([5, 40, 30, 20, 1, 70], scorer="b")
    rows = paired_differences(a, b, ("HR@10",))
    overall = _row(rows, "overall", "HR@10")
    diff = np.array([1, 1, 1, 1, 0, 0]) - np.array([1, 0, 0, 0, 1, 0])
    assert overall.n == 6
    assert overall.a == pytest.approx(4 / 6) and overall.b == pytest.approx(2 / 6)
    assert overall.difference == pytest.approx(diff.mean())
    assert overall.standard_error == pytest.approx(diff.std(ddof=1) / math.sqrt(6))
    # domains are the even (Food) and odd (Kitchen) instances here
    food = _row(rows, "Food", "HR@10")
    assert food.n == 3 and food.difference == pytest.approx(diff[::2].mean())
    assert overall.reading == "not shown"  # six instances cannot show it


def test_readings_follow_the_95_percent_interval():
    same = paired_differences(_ranks([0, 5, 50] * 20), _ranks([0, 5, 50] * 20), ("MRR",))
    assert all(r.difference == 0 and r.standard_error == 0 for r in same)
    assert {r.reading for r in same} == {"not shown"}
    better = paired_differences(_ranks([0, 1] * 50), _ranks([0, 80] * 50), ("HR@10",))
    assert _row(better, "overall", "HR@10").reading == "A higher"
    worse = paired_differences(_ranks([0, 80] * 50), _ranks([0, 1] * 50), ("HR@10",))
    assert _row(worse, "overall", "HR@10").reading == "B higher"


def test_rankings_of_other_instances_or_candidates_do_not_pair():
    a = _ranks([0, 1, 2, 3])
    with pytest.raises(MismatchedEvaluationError, match="candidate_seed differs"):
        paired_differences(a, _ranks([0, 1, 2, 3], candidate_seed=1))
    with pytest.raises(MismatchedEvaluationError, match="dataset_fingerprint differs"):
        paired_differences(a, _ranks([0, 1, 2, 3], dataset_fingerprint="other"))
    shuffled = _ranks([0, 1, 2, 3])
    shuffled = InstanceRanks(**{**shuffled.__dict__, "users": np.array([1, 0, 2, 3])})
    with pytest.raises(MismatchedEvaluationError, match="different evaluation instances"):
        paired_differences(a, shuffled)
    with pytest.raises(MismatchedEvaluationError, match="different subsets"):
        paired_differences(a, _ranks([0, -1, 2, 3]))
    with pytest.raises(ValueError, match="unknown metric"):
        paired_differences(a, a, ("HR@7",))


def test_ranks_file_round_trip(tmp_path: Path):
    a, b = _ranks([0, 4, 7, 200]), _ranks([1, 2, 3, 4], scorer="popularity")
    save_ranks(tmp_path / "ranks.npz", {"test.sampled.model": a, "test.sampled.popularity": b})
    back = load_ranks(tmp_path / "ranks.npz", "test.sampled.popularity")
    assert back.scorer == "popularity" and back.identity == b.identity
    assert back.domain_names == b.domain_names
    for field in ("users", "domains", "higher", "equal"):
        np.testing.assert_array_equal(getattr(back, field), getattr(b, field))
    with pytest.raises(KeyError, match=r"no ranking 'test\.full\.model'"):
        load_ranks(tmp_path / "ranks.npz", "test.full.model")


def _train(tmp_path: Path, name: str, *sets: str) -> Path:
    cfg = load_config(
        None,
        ["method=sasrec", "federation.regime=centralised", "federation.rounds=5", *sets],
    )
    run_dir = runner.prepare_run(cfg, tmp_path / name)
    runner.train(run_dir)
    return run_dir


def test_compare_two_real_runs_and_a_run_against_its_floor(tmp_path: Path):
    data = 'data.options={"n_users": 300, "n_items": 120}'
    run_a = _train(tmp_path, "a", data, "seed=0")
    run_b = _train(tmp_path, "b", data, "seed=1")
    results_a = json.loads((run_a / "results.json").read_text())
    results_b = json.loads((run_b / "results.json").read_text())

    p = run_cli("compare", str(run_a), str(run_b), "--out", str(tmp_path / "ab.json"))
    assert p.returncode == 0, p.stderr
    assert "A − B ± s.e." in p.stdout and "overall (" in p.stdout and not p.stderr
    ab = json.loads((tmp_path / "ab.json").read_text())
    overall = next(r for r in ab["rows"] if r["group"] == "overall" and r["metric"] == "HR@10")
    # the paired means are the runs' own reported test metrics
    assert overall["a"] == pytest.approx(
        results_a["test"]["sampled"][0]["metrics"]["overall"]["HR@10"]
    )
    assert overall["b"] == pytest.approx(
        results_b["test"]["sampled"][0]["metrics"]["overall"]["HR@10"]
    )
    assert overall["difference"] == pytest.approx(overall["a"] - overall["b"])

    # the experiment report's paired table says the same, seed by seed, with the floor as a row
    from fedscope.experiments.suite.base import StoredRun, domains_of, paired_table

    stored = {
        label: [StoredRun(spec=None, seed=0, run_dir=d, results=r)]
        for label, d, r in (("A", run_a, results_a), ("B", run_b, results_b))
    }
    domains = domains_of(results_a)
    table = paired_table("A", stored, domains)
    assert [row[0] for row in table.rows] == ["B (seed 0)", "popularity (floor) (seed 0)"]
    first = next(r for r in ab["rows"] if r["group"] == domains[0] and r["metric"] == "HR@10")
    cell = f"{100 * first['difference']:+.2f} ± {100 * first['standard_error']:.2f}"
    assert table.rows[0][1] in (cell, f"**{cell}**")
    assert (table.rows[0][1] == f"**{cell}**") == (first["reading"] != "not shown")

    p = run_cli(
        "compare",
        str(run_a),
        "popularity",
        "--protocol",
        "full",
        "--metric",
        "MRR",
        "--out",
        str(tmp_path / "floor.json"),
    )
    assert p.returncode == 0, p.stderr
    floor = json.loads((tmp_path / "floor.json").read_text())
    full = results_a["test"]["full"]
    row = next(r for r in floor["rows"] if r["group"] == "overall")
    assert floor["b"]["scorer"] == "popularity" and row["metric"] == "MRR"
    assert row["a"] == pytest.approx(full[0]["metrics"]["overall"]["MRR"])
    assert row["b"] == pytest.approx(full[1]["metrics"]["overall"]["MRR"])

    # another data set does not pair, and says why in one line
    run_c = _train(tmp_path, "c", 'data.options={"n_users": 200, "n_items": 120}')
    p = run_cli("compare", str(run_a), str(run_c))
    assert p.returncode == 2 and "dataset_fingerprint differs" in p.stderr
    assert "Traceback" not in p.stderr

    # a run evaluated before ranks were stored names the command that writes them
    (run_b / runner.RANKS_FILE).unlink()
    p = run_cli("compare", str(run_a), str(run_b))
    # (rich wraps long messages at the terminal width)
    assert p.returncode == 2 and f"fedscope evaluate {run_b}" in " ".join(p.stderr.split())
    assert run_cli("evaluate", str(run_b)).returncode == 0
    assert (run_b / runner.RANKS_FILE).is_file()
