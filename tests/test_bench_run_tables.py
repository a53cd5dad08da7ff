"""bench/validation_table.py and bench/round_overhead.py on real (tiny) federated runs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tests.helpers import load_bench_script

from fedscope.config import load_config
from fedscope.data.errors import DataError
from fedscope.experiments import runner

TINY = [
    "method=sasrec",
    'data.options={"n_users": 300, "n_items": 120}',
    "partition.n_clients=4",
    "federation.fraction=0.5",
    "federation.rounds=2",
    "eval.every=1",
    "eval.valid_subset=200",
    "train.batch_size=32",
    "train.threads=1",
]


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory) -> list[Path]:
    root = tmp_path_factory.mktemp("probe")
    runs = []
    for lr in ("0.001", "0.01"):
        cfg = load_config(None, [*TINY, f"train.lr={lr}"])
        run_dir = runner.prepare_run(cfg, root / f"sasrec-lr{lr}")
        runner.train(run_dir)
        runs.append(run_dir)
    return runs


@pytest.mark.slow
def test_validation_table_reads_the_probed_value_and_picks_the_best(two_runs, tmp_path, capsys):
    table = load_bench_script("validation_table")
    out = tmp_path / "probe.json"
    assert table.main(["--key", "train.lr", *map(str, two_runs), "--out", str(out)]) == 0
    rows = json.loads(out.read_text())
    assert [r["value"] for r in rows] == [0.001, 0.01]  # from each run's config, not its name
    for run_dir, row in zip(two_runs, rows, strict=True):
        results = json.loads((run_dir / "results.json").read_text())
        assert row["selected_round"] == results["selected_round"]
        # the per-round validation (the subset the run selects on), as the run's own record of
        # its best round has it
        last = json.loads((run_dir / "metrics.jsonl").read_text().splitlines()[-1])
        assert (last["best_round"], 100 * last["best_value"]) == (
            row["selected_round"],
            pytest.approx(row["valid_mrr"]),
        )
    best = max(rows, key=lambda r: r["valid_mrr"])
    assert f"best on validation MRR: train.lr={best['value']} " in capsys.readouterr().out

    with pytest.raises(SystemExit, match=r"has no setting 'train\.lrr'"):
        table.main(["--key", "train.lrr", str(two_runs[0])])
    broken = tmp_path / "broken"
    broken.mkdir()
    for name in ("config.json", "run.json", "results.json"):
        (broken / name).write_text((two_runs[0] / name).read_text())
    lines = (two_runs[0] / "metrics.jsonl").read_text().splitlines()
    (broken / "metrics.jsonl").write_text(lines[0] + "\n{not json\n")
    with pytest.raises(DataError, match=r"metrics\.jsonl:2: not valid JSON"):
        table.main(["--key", "train.lr", str(broken)])


@pytest.mark.slow
def test_round_overhead_is_fit_time_against_client_compute(two_runs, tmp_path):
    overhead = load_bench_script("round_overhead")
    row = overhead.round_overhead(two_runs[0], workers=2)
    rounds = [json.loads(line) for line in (two_runs[0] / "metrics.jsonl").read_text().splitlines()]
    trained = [r for r in rounds if (r.get("client_train") or {}).get("compute_s")]
    assert row["rounds"] == len(trained) == 2
    assert row["fit_s"] > 0 and row["ideal_s"] > 0
    assert row["overhead_share"] == pytest.approx(1 - row["ideal_s"] / row["fit_s"])
    # two sampled clients of four: each received the whole model
    assert row["mb_to_each_client"] == pytest.approx(trained[0]["bytes_to_clients"] / 2 / 1e6, 0.01)
    with pytest.raises(SystemExit, match=r"no metrics\.jsonl"):
        overhead.round_overhead(tmp_path, workers=2)


def test_archive_copies_light_files_and_skips_runs_linked_from_the_archive(tmp_path: Path):
    archive_runs = load_bench_script("archive_runs")
    source, target = tmp_path / "runs", tmp_path / "archive"
    fresh = source / "sasrec-federated-s1"
    (fresh / "checkpoints").mkdir(parents=True)
    # a DP run: the privacy tables read its plan back; the clients' ledgers stay behind
    for name in ("config.json", "results.json", "metrics.jsonl", "privacy_plan.json"):
        (fresh / name).write_text(name)
    (fresh / "checkpoints" / "last.npz").write_bytes(b"heavy")
    (fresh / "privacy").mkdir()
    (fresh / "privacy" / "client-0.jsonl").write_text("{}")
    (source / "unfinished-s1").mkdir()  # no results.json: not archived
    (target / "fedscope-federated-s0").mkdir(parents=True)
    (target / "fedscope-federated-s0" / "results.json").write_text("archived")
    (source / "fedscope-federated-s0").symlink_to(target / "fedscope-federated-s0")
    (source / "tune.json").write_text("ranking")  # a tune grid's ranking comes along
    (source / "derived").mkdir()  # a report's caches (t-SNE of a model not archived) come along
    (source / "derived" / "tsne-sasrec-federated-s1.npz").write_bytes(b"xy")
    # semantic stores: the manifest of a written one comes along, one still being written not
    for store, manifest in (
        ("semantics-encoder", {"parts": {"items": {}}}),
        ("semantics-half", {"parts": {"items": {}}, "pending": ["client-0001"]}),
    ):
        (source / store).mkdir()
        (source / store / "manifest.json").write_text(json.dumps(manifest))
        (source / store / "items.npz").write_bytes(b"heavy")

    assert archive_runs.archive(source, target) == ["sasrec-federated-s1"]
    assert (target / "derived" / "tsne-sasrec-federated-s1.npz").read_bytes() == b"xy"
    assert (target / "tune.json").read_text() == "ranking"
    copied = sorted(p.name for p in (target / "sasrec-federated-s1").iterdir())
    assert copied == ["config.json", "metrics.jsonl", "privacy_plan.json", "results.json"]
    assert (target / "fedscope-federated-s0" / "results.json").read_text() == "archived"
    assert not (target / "unfinished-s1").exists()
    assert sorted(p.name for p in (target / "semantics-encoder").iterdir()) == ["manifest.json"]
    assert not (target / "semantics-half").exists()
    (source / "semantics-half" / "manifest.json").write_text('{"parts": ')
    with pytest.raises(SystemExit, match=r"semantics-half/manifest.json: line 1: not valid JSON"):
        archive_runs.archive(source, target)
