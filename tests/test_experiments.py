"""The experiment suite: registry, plans, a real tiny run end to end, and the report."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from tests.helpers import run_held_by_another_process

from fedscope.experiments.suite import available, get
from fedscope.experiments.suite.execute import (
    INDEX_FILE,
    StoredRunMismatchError,
    dry_run,
    execute,
    run_dir_of,
    write_index,
)
from fedscope.experiments.suite.rq1_overall import GRID, run_name
from fedscope.methods import available_methods
from fedscope.processes import process_table

FEDSCOPE = [sys.executable, "-m", "fedscope.cli"]
PAPER = {
    "rq1_overall",
    "convergence",
    "rq2_semantics",
    "rq2_generative",
    "rq3_iidcl",
    "rq4_cold_start",
    "rq5_standalone",
    "rq6_privacy",
    "rq7_robustness",
}
# Quick mode shrunk further: 4 clients of 75 users, 2 rounds.
TINY = [
    "--set",
    'data.options={"n_users": 300, "n_items": 120}',
    "--set",
    "partition.n_clients=4",
    "--set",
    "federation.rounds=2",
    "--set",
    "eval.every=1",
    "--set",
    "eval.valid_subset=200",
    "--set",
    "train.batch_size=32",
]


def cli(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    env = dict(os.environ, COLUMNS="250")
    proc = subprocess.run([*FEDSCOPE, *args], capture_output=True, text=True, env=env, timeout=600)
    if check and proc.returncode != 0:
        raise AssertionError(f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
    return proc


def test_registry_lists_the_paper_experiments() -> None:
    assert set(available()) == PAPER
    for exp in available().values():
        for mode in ("quick", "reduced", "full"):
            specs = exp.runs(mode)
            assert specs, (exp.name, mode)
            # one run directory per name and seed: names are unique within an experiment
            assert len({(s.home(exp.name), s.name) for s in specs}) == len(specs)


def test_rq1_runs_every_registered_method_of_its_grid() -> None:
    known = available_methods()
    wanted = {(m, r) for _, m, r, _ in GRID if m in known}
    specs = get("rq1_overall").runs("quick")
    assert {(s.tag("method"), s.tag("regime")) for s in specs} == wanted
    missing = get("rq1_overall").missing("quick")
    for _, method, _, _ in GRID:
        assert (method in known) != any(f"{method!r}" in m for m in missing)


def test_rq1_lines_of_one_method_get_their_own_run_directories() -> None:
    assert run_name("sasrec", "federated") == "sasrec-federated"
    tuned = run_name("gru4rec", "federated", ("train.lr=0.05",))
    assert tuned == "gru4rec-federated-lr0.05"
    assert run_name("gru4rec", "federated", ("train.lr=0.05", "model.dropout = 0.1")) == (
        "gru4rec-federated-lr0.05-dropout0.1"
    )
    names = [run_name(m, r, extra) for _, m, r, extra in GRID]
    assert len(set(names)) == len(names)


def test_shared_runs_live_in_their_owner_folder(tmp_path: Path) -> None:
    plan = get("convergence").plan("quick", root=tmp_path)
    rq1 = get("rq1_overall").plan("quick", root=tmp_path)
    fed_rq1 = {run_dir_of(tmp_path, rq1, s, 0) for s in rq1.runs if s.tag("regime") == "federated"}
    assert {run_dir_of(tmp_path, plan, s, 0) for s in plan.runs} == fed_rq1
    # the same run gets the same configuration from either experiment
    a = next(s for s in plan.runs if s.tag("method") == "fedscope")
    b = next(s for s in rq1.runs if s.tag("method") == "fedscope")
    assert plan.config(a, 0) == rq1.config(b, 0)


def test_dry_run_plans_without_writing(tmp_path: Path) -> None:
    root = tmp_path / "exp"
    out = cli("experiment", "rq7_robustness", "--quick", "--dry-run", "--root", str(root)).stdout
    assert not root.exists()
    assert "partition.n_clients=20" in out and "federation.fraction=0.5" in out
    assert "shared from rq1_overall" in out
    rows = dry_run(get("rq7_robustness").plan("quick", root=root), root)
    assert len(rows) == 5 and {r["state"] for r in rows} == {"new"}


def test_the_notes_say_which_seeds_a_plan_trains(tmp_path: Path) -> None:
    exp = get("rq3_iidcl")
    assert exp.plan("reduced", root=tmp_path).notes[0] == "seeds [0]"
    given = exp.plan("reduced", seeds=[2], root=tmp_path)
    assert given.notes[0] == "seeds [2] (--seeds; the mode's are [0])"
    assert all("seeds [0]" not in n for n in given.notes[1:])
    assert {s for spec in given.runs for s in spec.seeds} == {2}


def test_only_names_runs_of_the_plan(tmp_path: Path) -> None:
    root = tmp_path / "exp"
    plan = get("rq2_semantics").plan("reduced", root=root)
    rows = dry_run(plan, root, only=["fedscope-federated-ufe-iae"])
    assert [r["state"] for r in rows][:4] == ["skipped", "skipped", "skipped", "new"]
    with pytest.raises(ValueError, match="no run named ufe-iae in rq2_semantics") as info:
        execute(get("rq2_semantics"), plan, root, only=["ufe-iae"])
    assert "fedscope-federated-ufe-iae" in str(info.value)  # it lists the names it has
    assert not root.exists()  # refused before anything is written
    p = cli(
        "experiment",
        "rq2_semantics",
        "--reduced",
        "--root",
        str(root),
        "--only",
        "x,y",
        check=False,
    )
    message = " ".join(p.stderr.split())
    assert p.returncode == 2 and "no run named x, y in rq2_semantics" in message
    assert "Traceback" not in message and not root.exists()
    # A repeated --only adds to the selection; it must not keep only its last value.
    args = ("experiment", "rq2_semantics", "--reduced", "--root", str(root))
    p = cli(*args, "--only", "x", "--only", "y", check=False)
    assert p.returncode == 2 and "no run named x, y in" in " ".join(p.stderr.split())


def test_a_path_under_the_root_is_compared_relative_to_it(tmp_path: Path) -> None:
    """RQ2's store path is stored resolved; an archived or moved root still holds the same run,
    while a store elsewhere relative to the root is another run."""
    from fedscope.experiments import runner

    root = tmp_path / "archive"
    plan = get("rq2_semantics").plan("reduced", root=root)
    spec = next(s for s in plan.runs if s.name == "fedscope-federated-ufe-iae")
    run_dir = run_dir_of(root, plan, spec, 0)
    run_dir.mkdir(parents=True)
    wanted = plan.config(spec, 0)
    assert wanted.semantics.store == f"{root.resolve()}/rq2_semantics/reduced/semantics-encoder"

    def state_with_store(store: str) -> dict[str, object]:
        stored = wanted.model_copy(deep=True)
        stored.semantics.store = store
        (run_dir / runner.CONFIG_FILE).write_text(stored.model_dump_json())
        return next(r for r in dry_run(plan, root) if r["run_dir"] == str(run_dir))

    trained_at = "/elsewhere/runs/rq2_semantics/reduced/semantics-encoder"
    assert state_with_store(trained_at)["state"] == "interrupted"
    row = state_with_store("/elsewhere/runs/rq2_semantics/reduced/semantics-llm")
    assert row["state"] == "other settings"
    assert row["differences"] == [
        "semantics.store: run has '/elsewhere/runs/rq2_semantics/reduced/semantics-llm', "
        f"wanted '{wanted.semantics.store}'"
    ]


def test_a_stored_run_with_other_settings_is_refused_before_anything_trains(
    tmp_path: Path,
) -> None:
    from fedscope.experiments import runner

    root = tmp_path / "exp"
    exp = get("convergence")
    plan = exp.plan("quick", sets=TINY[1::2], root=root)
    last = plan.runs[-1]  # visited last: a check at the run itself would come after the others
    other = plan.config(last, 0).model_copy(deep=True)
    other.train.lr = other.train.lr * 2
    runner.prepare_run(other, run_dir_of(root, plan, last, 0))

    rows = dry_run(plan, root)
    assert [r["state"] for r in rows] == ["new"] * (len(rows) - 1) + ["other settings"]
    assert rows[-1]["differences"] == [
        f"train.lr: run has {other.train.lr!r}, wanted {plan.config(last, 0).train.lr!r}"
    ]
    with pytest.raises(StoredRunMismatchError, match=r"train\.lr: run has"):
        execute(exp, plan, root, echo=lambda _: None)
    assert [r["state"] for r in dry_run(plan, root)][:-1] == ["new"] * (len(rows) - 1)

    # How many clients trained at once changes no result (test_resume.py), so a run trained
    # with another number is the planned run.
    faster = plan.config(last, 0).model_copy(deep=True)
    faster.federation.parallel_clients = 7
    shutil.rmtree(run_dir_of(root, plan, last, 0))
    runner.prepare_run(faster, run_dir_of(root, plan, last, 0))
    assert dry_run(plan, root)[-1]["state"] == "interrupted"


def test_a_run_another_process_is_training_is_skipped_not_touched(tmp_path: Path) -> None:
    """Two experiment commands may share one grid: a run held by the other is left to it."""
    from fedscope.experiments import runner
    from fedscope.experiments.suite.execute import run_or_reuse
    from fedscope.federation.run_dir import RunInUseError

    root = tmp_path / "exp"
    plan = get("convergence").plan("quick", sets=TINY[1::2], root=root)
    spec = plan.runs[0]
    run_dir = run_dir_of(root, plan, spec, 0)
    runner.prepare_run(plan.config(spec, 0), run_dir)
    with run_held_by_another_process(run_dir) as holder:
        before = {p.name: p.stat().st_mtime_ns for p in run_dir.iterdir()}
        rows = dry_run(plan, root)
        assert rows[0]["state"] == "in use" and {r["state"] for r in rows[1:]} == {"new"}
        with pytest.raises(RunInUseError, match=f"process {holder.pid} "):
            run_or_reuse(run_dir, plan.config(spec, 0))
        # and through the command line, in one line naming the process
        for command in (["train", "--resume", str(run_dir)], ["evaluate", str(run_dir)]):
            p = cli(*command, check=False)
            message = " ".join(p.stderr.split())
            assert p.returncode == 2 and f"in use by process {holder.pid} " in message
            assert "Traceback" not in message
        assert {p.name: p.stat().st_mtime_ns for p in run_dir.iterdir()} == before  # untouched
    assert dry_run(plan, root)[0]["state"] == "interrupted"


def test_jobs_train_the_runs_of_a_grid_at_once(tmp_path: Path) -> None:
    root = tmp_path / "exp"
    args = ["experiment", "rq5_standalone", "--quick", "--root", str(root), *TINY]
    out = cli(*args, "--jobs", "2", "--progress-every", "0.1").stdout
    assert "training 2 runs, 2 at a time" in out and out.count("trained in") == 2
    # Progress is read from the workers' run directories: a line when a run is half done.
    # ... each on one line of its own, however long (a log file is not folded at 80 columns)
    line = r"^  \S+/quick/\S+-s0: (round|client passes) \d+/\d+ \(\d+%\).*, \S+ \S+ in(, about .+ left)?$"
    assert re.search(line, out, re.MULTILINE), out
    index = json.loads((root / "rq5_standalone" / "quick" / INDEX_FILE).read_text())
    assert [r["status"] for r in index["runs"]] == ["done", "done"]
    assert all(r["wall_s"] > 0 and "note" not in r for r in index["runs"])
    # At once: each run was prepared before the other had its results.
    (a0, a1), (b0, b1) = (
        ((root / r["run_dir"] / name).stat().st_mtime for name in ("config.json", "results.json"))
        for r in index["runs"]
    )
    assert a0 < b1 and b0 < a1
    assert cli(*args, "--jobs", "2").stdout.count("stored, reused") == 2
    bad = cli(*args, "--jobs", "0", check=False)
    assert bad.returncode == 2 and "--jobs" in bad.stderr


def _descendants(pid: int) -> set[tuple[int, int]]:
    """(pid, start time) of every process below ``pid`` now."""
    table = process_table()
    children: dict[int, list[int]] = {}
    for child, entry in table.items():
        children.setdefault(entry.ppid, []).append(child)
    found, stack = set(), list(children.get(pid, []))
    while stack:
        child = stack.pop()
        found.add((child, table[child].start))
        stack.extend(children.get(child, []))
    return found


def _still_running(processes: set[tuple[int, int]]) -> list[str]:
    table = process_table()
    return [
        f"{table[pid].name} ({pid})"
        for pid, start in processes
        if pid in table and table[pid].start == start and table[pid].state != "Z"
    ]


ROUNDS_TO_INTERRUPT = 100


def _start_two_runs_and_wait(
    root: Path, log: Path, sasrec_done: bool = False
) -> tuple[subprocess.Popen, set]:
    """``fedscope experiment`` training two Flower runs at once (``--jobs 2``), returned once
    both have a checkpoint (and, with ``sasrec_done``, once the faster FedAvg+SASRec run has
    finished), with every process it had started by then."""
    args = [
        "experiment", "rq1_overall", "--quick", "--root", str(root), *TINY,
        "--set", f"federation.rounds={ROUNDS_TO_INTERRUPT}",
        "--only", "fedscope-federated,sasrec-federated", "--jobs", "2",
    ]  # fmt: skip
    env = dict(os.environ, COLUMNS="250", FLWR_DISABLE_UPDATE_CHECK="1")
    proc = subprocess.Popen(
        [*FEDSCOPE, *args], stdout=log.open("w"), stderr=subprocess.STDOUT, env=env,
        start_new_session=True,
    )  # fmt: skip
    runs = [root / "rq1_overall" / "quick" / f"{name}-s0" for name in ("fedscope-federated",
            "sasrec-federated")]  # fmt: skip
    seen: set[tuple[int, int]] = set()
    deadline = time.monotonic() + 300
    while not all((run / "checkpoints" / "last.npz").is_file() for run in runs) or (
        # finished as far as the command is concerned: it has recorded the run
        sasrec_done and "FedAvg+SASRec: trained in" not in log.read_text()
    ):
        assert proc.poll() is None, log.read_text()[-3000:]
        assert time.monotonic() < deadline, "the runs never reached a checkpoint"
        seen |= _descendants(proc.pid)
        time.sleep(0.2)
    return proc, seen | _descendants(proc.pid)


def test_sigterm_stops_an_experiment_its_training_processes_and_their_ray(
    tmp_path: Path,
) -> None:
    """``kill PID`` of an experiment training with ``--jobs``, one run finished (its process
    idle) and one still training: every process it started ends, the log ends with one line
    saying how to resume (no traceback from Ray's lost actors or the idle process), and the
    index says which run finished and which was interrupted."""
    root, log = tmp_path / "exp", tmp_path / "experiment.log"
    proc, started = _start_two_runs_and_wait(root, log, sasrec_done=True)
    fedscope_run = root / "rq1_overall" / "quick" / "fedscope-federated-s0"
    try:
        assert not (fedscope_run / "results.json").is_file()  # still training
        assert len(started) > 4  # the two training processes and their Ray processes
        os.kill(proc.pid, signal.SIGTERM)  # the command alone, not its process group
        assert proc.wait(timeout=120) == 130
        deadline = time.monotonic() + 30
        while _still_running(started) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not _still_running(started)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
    out = log.read_text()
    assert out.strip().splitlines()[-1].startswith("interrupted after "), out[-2000:]
    assert "Traceback" not in out and "ActorUnavailableError" not in out, out[-3000:]
    index = json.loads((root / "rq1_overall" / "quick" / INDEX_FILE).read_text())
    states = {r["run_dir"].split("/")[-1]: r["status"] for r in index["runs"]}
    assert states["fedscope-federated-s0"] == "interrupted"
    assert states["sasrec-federated-s0"] == "done"
    # and so does the plan the same command would follow to resume
    sets = [*TINY[1::2], f"federation.rounds={ROUNDS_TO_INTERRUPT}"]
    rows = {
        Path(row["run_dir"]).name: row["state"]
        for row in dry_run(get("rq1_overall").plan("quick", None, sets, root), root)
    }
    assert (
        rows["fedscope-federated-s0"] == "interrupted" and rows["sasrec-federated-s0"] == "stored"
    )


def test_a_killed_experiment_takes_its_training_processes_with_it(tmp_path: Path) -> None:
    """SIGKILL leaves the command no chance to stop anything: its training processes learn of
    its death from the kernel (PDEATHSIG) and stop themselves, Ray included."""
    root, log = tmp_path / "exp", tmp_path / "experiment.log"
    proc, started = _start_two_runs_and_wait(root, log)
    try:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        deadline = time.monotonic() + 90
        while _still_running(started) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not _still_running(started), log.read_text()[-3000:]
    finally:
        for pid, _ in started:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)


def test_the_index_keeps_runs_another_command_finished(tmp_path: Path) -> None:
    """Two commands sharing a grid each write the index; whichever writes last, a run either
    of them finished is listed as done, not as the other's stale "in use"."""
    path = tmp_path / "exp" / "rq1_overall" / "reduced" / INDEX_FILE

    def entry(name: str, status: str, **more: object) -> dict[str, object]:
        return {"run_dir": f"rq1_overall/reduced/{name}", "seed": 0, "status": status, **more}

    first = {  # trained a, found b in use
        "experiment": "rq1_overall",
        "dataset": "food-kitchen",
        "runs": [entry("a", "done", wall_s=5.0), entry("b", "in use"), entry("c", "in use")],
    }
    second = {  # found a in use, trained b; c is held by a third process throughout
        "experiment": "rq1_overall",
        "runs": [entry("a", "in use"), entry("b", "done", wall_s=7.0), entry("c", "in use")],
    }
    for name in ("a", "b"):  # finished runs have their results on disk
        (path.parents[2] / "rq1_overall" / "reduced" / name).mkdir(parents=True)
        (path.parents[2] / "rq1_overall" / "reduced" / name / "results.json").write_text("{}")
    write_index(path, first)
    written = write_index(path, second)
    assert [r["status"] for r in written["runs"]] == ["done", "done", "in use"]
    assert [r.get("wall_s") for r in written["runs"][:2]] == [5.0, 7.0]
    assert written["dataset"] == "food-kitchen"
    assert json.loads(path.read_text()) == written
    again = write_index(path, first)  # and the other order
    assert [r["status"] for r in again["runs"]] == ["done", "done", "in use"]
    assert [r.get("wall_s") for r in again["runs"][:2]] == [5.0, 7.0]
    # a run deleted since (to train it again) is not resurrected from the old entry
    (path.parents[2] / "rq1_overall" / "reduced" / "a" / "results.json").unlink()
    after = write_index(path, second)
    assert [r["status"] for r in after["runs"]] == ["in use", "done", "in use"]


def test_table_cells_format_metrics_as_percent_and_rounds_as_rounds() -> None:
    from fedscope.experiments.suite.base import fmt_mean_std, fmt_rounds

    assert fmt_mean_std([0.1234]) == "12.34"
    assert fmt_mean_std([0.10, 0.12, None]) == "11.00 ± 1.00"
    assert fmt_mean_std([None]) == "–"
    assert fmt_rounds([200]) == "200"
    assert fmt_rounds([100, 150]) == "125.0 ± 25.0"
    assert fmt_rounds([]) == "–"
    # the HTML report keeps the Markdown report's bold, and escapes the rest
    from fedscope.experiments.suite.base import inline_html

    assert inline_html("mode: **quick** <b>") == "mode: <strong>quick</strong> &lt;b&gt;"
    assert inline_html("**+1.00 ± 0.20**") == "<strong>+1.00 ± 0.20</strong>"


def test_tables_state_the_test_sets_sampling_error_of_hr10() -> None:
    import math

    from fedscope.experiments.suite.base import hit_rate_standard_error, sampling_error_note

    # 30 hits in 300 instances: sample std sqrt(300/299 * 0.09), over sqrt(300)
    assert hit_rate_standard_error(0.1, 300) == pytest.approx(math.sqrt(0.09 / 299))
    assert math.isnan(hit_rate_standard_error(0.1, 1))
    # the largest error over the rows is the one stated (0.4 is nearer 50% than 0.1), and a
    # group of one instance has no sampling error to state
    note = sampling_error_note(
        {"Food": [0.1, 0.4], "Kitchen": [0.05], "Tiny": [0.5]},
        {"Food": 300, "Kitchen": 637, "Tiny": 1},
    )
    assert f"Food ±{100 * math.sqrt(0.24 / 299):.2f} (n=300)" in note
    assert f"Kitchen ±{100 * math.sqrt(0.05 * 0.95 / 636):.2f} (n=637)" in note
    assert "Tiny" not in note
    assert sampling_error_note({}, {}) == ""


def test_common_seeds_keeps_the_seeds_every_row_finished_and_says_what_it_left_out() -> None:
    from fedscope.experiments.suite.base import RunSpec, StoredExperiment, StoredRun

    def run(label: str, seed: int) -> StoredRun:
        spec = RunSpec(label, label.lower(), (), (seed,))
        return StoredRun(spec, seed, Path(f"{label}-s{seed}"), {})

    runs = [run("None", 0), run("None", 1), run("None", 2), run("IAE", 0), run("IAE", 1)]
    runs += [run("LLM", 1), run("LLM", 2)]
    stored = StoredExperiment({"experiment": "rq2"}, Path("."), runs)
    kept, note = stored.common_seeds()
    assert [(r.spec.label, r.seed) for r in kept.runs] == [("None", 1), ("IAE", 1), ("LLM", 1)]
    assert note == (
        "common seeds: means over seeds [1] only (--common-seeds); "
        "left out: None seeds 0, 2; IAE seed 0; LLM seed 2"
    )
    assert stored.runs == runs  # the stored experiment itself is not changed
    # nothing to leave out: the note says which seeds, and no "left out"
    whole = StoredExperiment({}, Path("."), [run("A", 0), run("B", 0)])
    assert whole.common_seeds()[1] == "common seeds: means over seeds [0] only (--common-seeds)"
    # no seed in common: every run kept, and the report says so instead of an empty table
    apart = StoredExperiment({}, Path("."), [run("A", 0), run("B", 1)])
    kept, note = apart.common_seeds()
    assert kept.runs == apart.runs and "none is finished by every row" in note


def _table_cells(report: str, title: str, label: str) -> list[str]:
    block = report.split(f"**{title}")[1]
    line = next(x for x in block.splitlines() if x.startswith(f"| {label}"))
    return [c.strip() for c in line.strip("|").split("|")]


@pytest.mark.slow
def test_quick_experiment_end_to_end_and_report_from_stored_runs(tmp_path: Path) -> None:
    root, out = tmp_path / "exp", tmp_path / "report"
    args = ["experiment", "rq5_standalone", "--quick", "--root", str(root), *TINY]
    fed_dir = root / "rq1_overall" / "quick" / "fedscope-federated-s0"
    # One cell first: the other is indexed as not run and nothing of it is written.
    cli(*args, "--only", "fedscope-local")
    index = json.loads((root / "rq5_standalone" / "quick" / "experiment.json").read_text())
    assert {r["name"]: r["status"] for r in index["runs"]} == {
        "fedscope-federated": "not run",
        "fedscope-local": "done",
    }
    assert not fed_dir.exists()
    cli(*args)  # the rest; fedscope-local is reused with the wall time it was trained in
    index = json.loads((root / "rq5_standalone" / "quick" / "experiment.json").read_text())
    assert index["dataset"] == "synthetic" and index["mode"] == "quick"
    assert index["code_version"] and index["protocol"] and index["seeds"] == [0]
    assert [r["status"] for r in index["runs"]] == ["done", "done"]
    assert all(r["wall_s"] > 0 for r in index["runs"])
    assert (root / "rq1_overall" / "quick" / "fedscope-local-s0" / "clients" / "0003").is_dir()
    cfg = json.loads((fed_dir / "config.json").read_text())
    assert cfg["federation"]["rounds"] == 2 and cfg["partition"]["n_clients"] == 4
    results = json.loads((fed_dir / "results.json").read_text())

    runs_before = sorted(p.parent for p in root.rglob("config.json"))
    stamps = {p: (p / "results.json").stat().st_mtime_ns for p in runs_before}
    # RQ1 indexed from what is stored (rq5's two runs are RQ1's), training nothing
    cli("experiment", "rq1_overall", "--quick", "--root", str(root), *TINY, "--stored-only")
    rq1 = json.loads((root / "rq1_overall" / "quick" / "experiment.json").read_text())
    statuses = {r["name"]: r["status"] for r in rq1["runs"]}
    assert statuses.pop("fedscope-federated") == statuses.pop("fedscope-local") == "done"
    assert set(statuses.values()) == {"not run"} and len(statuses) == len(GRID) - 2
    assert sorted(p.name for p in (root / "rq1_overall" / "quick").iterdir()) == [
        ".experiment.lock",
        "experiment.json",
        "fedscope-federated-s0",
        "fedscope-local-s0",
    ]
    cli("report", "--root", str(root), "--out", str(out))
    assert sorted(p.parent for p in root.rglob("config.json")) == runs_before
    assert {p: (p / "results.json").stat().st_mtime_ns for p in runs_before} == stamps

    report = (out / "report.md").read_text()
    assert "common seeds" not in report
    cli("report", "--root", str(root), "--out", str(tmp_path / "common"), "--common-seeds")
    common = (tmp_path / "common" / "report.md").read_text()
    assert "- common seeds: means over seeds [0] only (--common-seeds)" in common
    assert f"- finished runs: 2 of {len(GRID)}" in common
    assert "synthetic" in report and index["code_version"] in report
    assert f"- finished runs: 2 of {len(GRID)}" in report
    assert (
        "- not finished: FedSCOPE w/o IIDCL (fedscope-no-iidcl-federated), seed 0 (not run); "
        "FedCSR-style dual-contrastive (FedAvg) (fedcsr-federated)"
    ) in report
    title = "Test metrics (%), all clients' instances, sampled (999 negatives)"
    cells = _table_cells(report, title, "FedSCOPE (federated) (n=1)")
    metrics = results["test"]["sampled"][0]["metrics"]
    want = [
        f"{100 * metrics[d][m]:.2f}"
        for d in ("Books", "Movies")
        for m in ("HR@10", "NDCG@10", "MRR")
    ]
    assert cells[1:] == want
    floor = results["test"]["sampled"][1]["metrics"]
    floor_cells = _table_cells(report, title, "popularity (floor)")
    assert floor_cells[1] == f"{100 * floor['Books']['HR@10']:.2f}"
    # per-client comparison, computed from the stored checkpoints
    per_client = json.loads(
        (root / "rq5_standalone" / "quick" / "derived" / "per-client-s0.json").read_text()
    )
    assert len(per_client) == 4 and all(0 <= c["standalone"]["HR@10"] <= 1 for c in per_client)
    # Every test instance belongs to one client, so the clients' floors, weighted by their
    # instances, add up to the floor of the whole table, and likewise the federated model.
    n = sum(c["instances"] for c in per_client)
    for side, source in (("popularity", floor), ("federated", metrics)):
        pooled = sum(c[side]["HR@10"] * c["instances"] for c in per_client) / n
        assert pooled == pytest.approx(source["overall"]["HR@10"], abs=1e-9)
    # The floor drawn under validation curves is built from the config alone; it must be the
    # floor on the very instances and candidates the run validated on.
    from fedscope.evaluation.floors import PopularityScorer
    from fedscope.experiments.suite.base import StoredRun, validation_floor
    from fedscope.training.task import RecommendationTask, validation_metrics

    stored_fed = StoredRun(spec=None, seed=0, run_dir=fed_dir, results=results)
    floor_curve = validation_floor(stored_fed, tmp_path / "derived")
    task = RecommendationTask.from_run_dir(fed_dir)
    expected = task.validation_evaluator().evaluate(PopularityScorer(task.dataset)).metrics
    assert floor_curve == pytest.approx(validation_metrics(expected))
    assert 0 < floor_curve["HR@10"] < 1 and "Books/HR@10" in floor_curve

    pngs = re.findall(r"\]\((figures/[^)]+\.png)\)", report)
    assert pngs
    for rel in pngs:
        data = (out / rel).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5_000

    # Again: every run is reused, nothing is retrained.
    walls = {r["name"]: r["wall_s"] for r in index["runs"]}
    again = cli(*args).stdout
    assert again.count("stored, reused") == 2
    # An index rebuilt from nothing (two commands sharing a grid can drop each other's entries)
    # still has each run's training time: the run directory keeps its own copy.
    for old_index in root.rglob("experiment.json"):
        old_index.unlink()
    cli(*args, "--stored-only")
    rebuilt = json.loads((root / "rq5_standalone" / "quick" / "experiment.json").read_text())
    assert {r["name"]: r["wall_s"] for r in rebuilt["runs"]} == walls
    assert {p: (p / "results.json").stat().st_mtime_ns for p in runs_before} == stamps
    # A finished run that another command holds (reading it for its own plan, evaluating it)
    # is still stored to this one: two commands sharing a grid start on the same shared run.
    with run_held_by_another_process(fed_dir):
        assert cli(*args).stdout.count("stored, reused") == 2
        plan = get("rq5_standalone").plan("quick", sets=TINY[1::2], root=root)
        assert {r["state"] for r in dry_run(plan, root)} == {"stored"}
    # Other settings on the same root are refused instead of silently mixed.
    bad = cli(*args, "--set", "train.lr=0.01", check=False)
    assert bad.returncode != 0 and "train.lr" in bad.stdout + bad.stderr


def test_progress_lines_follow_what_a_run_has_written(tmp_path: Path) -> None:
    """The watcher reads a run's own files (so a worker process's run too): no line before
    the count moves, then one with the rate measured from the last poll before it moved."""
    from fedscope.experiments import runner
    from fedscope.experiments.suite.progress import ProgressWatcher, run_progress
    from fedscope.federation import run_dir as layout

    plan = get("rq5_standalone").plan(
        "quick", sets=[*TINY[1::2], "federation.rounds=4"], root=tmp_path
    )
    federated, local = (plan.config(spec, 0) for spec in plan.runs)
    lines: list[str] = []
    watcher = ProgressWatcher(lines.append)
    fed_dir, local_dir = tmp_path / "fed", tmp_path / "local"
    watcher.watch("fed", fed_dir)
    watcher.watch("local", local_dir)
    assert watcher.poll(0.0, speak=True) == []  # not prepared yet
    runner.prepare_run(federated, fed_dir)
    runner.prepare_run(local, local_dir)
    assert watcher.poll(100.0, speak=True) == []  # queued: nothing trained, no rate yet
    assert watcher.poll(200.0, speak=True) == []
    for r in (1, 2, 3):  # three rounds in the 40 s after the last poll
        record = {"round": r, "best_value": 0.0512, "best_round": 2}
        layout.append_jsonl(layout.metrics_path(fed_dir), record)
    assert watcher.poll(240.0, speak=False) == []  # read, not said
    assert watcher.poll(250.0, speak=True) == [
        "  fed: round 3/4 (75%), best validation MRR 5.12 (round 2), 50 s in, about 17 s left"
    ]
    assert watcher.poll(260.0, speak=True) == []  # said already
    (local_dir / "clients" / "0000").mkdir(parents=True)
    layout.append_jsonl(local_dir / "clients" / "0000" / "metrics.jsonl", {"round": 1})
    progress = run_progress(local_dir)
    assert progress is not None and (progress.unit, progress.done) == ("client passes", 1)
    assert progress.total == 8  # 4 clients of ceil(T * C) = 2 passes each
    line = watcher.poll(320.0, speak=True)  # one pass in the 60 s since the poll at 260 s
    assert line == ["  local: client passes 1/8 (12%), 60 s in, about 7 min left"]
    watcher.forget("local")
    (local_dir / "clients" / "0001").mkdir()
    layout.append_jsonl(local_dir / "clients" / "0001" / "metrics.jsonl", {"round": 1})
    assert watcher.poll(400.0, speak=True) == []
    assert lines == [
        "  fed: round 3/4 (75%), best validation MRR 5.12 (round 2), 50 s in, about 17 s left",
        "  local: client passes 1/8 (12%), 60 s in, about 7 min left",
    ]
