"""Running an experiment's plan: train what is missing, reuse what is stored, index it all.

Runs are visited seed-major (every configuration of seed 0, then of seed 1, ...), so a grid
stopped part-way holds whole seeds. A run directory with results.json is reused (after
checking that it holds the configuration the plan asks for); one with only config.json was
interrupted and is resumed; otherwise it is prepared and trained. The index
``<root>/<experiment>/<mode>/experiment.json`` is rewritten after every run, so an
interrupted experiment still lists what it finished.

Two experiment commands may share one grid (each skips the runs the other is training, as
``in use``). Each rewrite of the index therefore merges: under a lock, an entry this command
did not finish takes the other command's ``done`` entry for the same run, so whichever command
writes last, the index lists every run either of them finished.
"""

from __future__ import annotations

import contextlib
import json
import multiprocessing
import os
import signal
import sys
import time
from collections.abc import Callable, Collection
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NoReturn

from fedscope.config import SPEED_ONLY_SETTINGS, ExperimentConfig
from fedscope.experiments import runner
from fedscope.experiments.suite.base import (
    Experiment,
    Plan,
    RunSpec,
    StoredExperiment,
    StoredRun,
)
from fedscope.experiments.suite.progress import ProgressWatcher
from fedscope.federation import run_dir as layout
from fedscope.files import atomic_write_text, locked
from fedscope.privacy import PrivacySettingsError
from fedscope.processes import die_with_parent, process_table

INDEX_FILE = "experiment.json"
INDEX_LOCK = ".experiment.lock"
# In a run directory: how long the experiment command that trained it took to train it. An
# index also records it, but two commands sharing a grid rewrite one index and can drop each
# other's entries; the run's own copy survives that, a rebuilt index and archiving.
WALL_FILE = "train_wall.json"
# How long an interrupted training process gets to shut its Flower simulation and Ray down
# (ray.shutdown plus the wait for Ray's workers, about 15 s when busy) before it is killed.
WORKER_STOP_GRACE_S = 60.0
Echo = Callable[[str], None]


class StoredRunMismatchError(ValueError):
    """A run directory holds a run with other settings than the plan asks for."""


def check_only(plan: Plan, only: Collection[str] | None) -> frozenset[str] | None:
    """The run names ``only`` selects (None: every run), refusing a name the plan lacks.

    A grid cell is named as its run directory is, without the seed suffix, so that one cell
    (for example the one a paper's headline rests on) can be trained before the rest."""
    if only is None:
        return None
    names = {spec.name for spec in plan.runs}
    unknown = sorted(set(only) - names)
    if unknown:
        raise ValueError(
            f"no run named {', '.join(unknown)} in {plan.experiment} ({plan.mode}); "
            f"its runs are: {', '.join(spec.name for spec in plan.runs)}"
        )
    return frozenset(only)


def experiment_folder(root: Path, experiment: str, mode: str) -> Path:
    return Path(root) / experiment / mode


def run_dir_of(root: Path, plan: Plan, spec: RunSpec, seed: int) -> Path:
    return experiment_folder(root, spec.home(plan.experiment), plan.mode) / f"{spec.name}-s{seed}"


def _same(want: Any, have: Any, root: str | None) -> bool:
    if want == have:
        return True
    # A path under the root (an override's "{root}", such as RQ2's semantic store) is stored
    # resolved. After the root is moved or archived the same artefact sits at the same place
    # relative to it, so such a path is compared relative to the root.
    if root and isinstance(want, str) and isinstance(have, str) and want.startswith(root + "/"):
        return have.endswith(want[len(root) :])
    return False


def _differences(want: Any, have: Any, root: str | None, prefix: str = "") -> list[str]:
    if isinstance(want, dict) and isinstance(have, dict):
        out = []
        for k in sorted(set(want) | set(have)):
            out += _differences(want.get(k), have.get(k), root, f"{prefix}{k}.")
        return out
    return [] if _same(want, have, root) else [f"{prefix[:-1]}: run has {have!r}, wanted {want!r}"]


def config_differences(
    run_dir: Path, wanted: ExperimentConfig, root: Path | None = None
) -> list[str]:
    """How the run stored in ``run_dir`` differs from ``wanted`` (empty: the same run).
    ``root``: the experiments' root ``wanted`` was planned under, whose paths are compared
    relative to it (see :func:`_same`)."""
    have = runner.read_config(run_dir).model_dump()
    want = wanted.model_dump()
    for dotted in ("output_dir", *SPEED_ONLY_SETTINGS):
        *sections, key = dotted.split(".")
        for tree in (have, want):
            for section in sections:
                tree = tree[section]
            tree.pop(key, None)
    return _differences(want, have, None if root is None else str(Path(root).resolve()))


def check_same_config(run_dir: Path, wanted: ExperimentConfig, root: Path | None = None) -> None:
    """A reused run must be the run that is asked for: a root shared between plans with
    different overrides would otherwise mix settings silently."""
    diff = config_differences(run_dir, wanted, root)
    if diff:
        raise StoredRunMismatchError(
            f"{run_dir}: holds a run with other settings than asked for:\n  "
            + "\n  ".join(diff)
            + "\nuse another --root, or delete that run directory"
        )


def _planned(plan: Plan, root: Path) -> list[tuple[RunSpec, int, Path]]:
    """(spec, seed, run directory) in the order the plan visits them: seed-major."""
    return [
        (spec, seed, run_dir_of(root, plan, spec, seed))
        for seed in plan.seeds()
        for spec in plan.runs
        if seed in spec.seeds
    ]


def check_stored_runs(plan: Plan, root: Path) -> None:
    """Every stored or interrupted run of the plan holds the settings asked for.

    Checked before anything trains: a mismatch found only when the loop reaches that run
    would come after hours spent on the runs before it.
    """
    for spec, seed, run_dir in _planned(plan, root):
        if (run_dir / runner.CONFIG_FILE).is_file():
            check_same_config(run_dir, plan.config(spec, seed), root)


def run_state(run_dir: Path) -> str:
    # A finished run is only read again (reused by another plan, evaluated), and its results
    # are replaced atomically: a command that holds it meanwhile does not make it "in use".
    if (run_dir / runner.RESULTS_FILE).is_file():
        return "stored"
    if layout.in_use_by(run_dir) is not None:
        return "in use"
    if (run_dir / runner.CONFIG_FILE).is_file():
        return "interrupted"
    return "new"


def plan_to_train(plan: Plan, root: Path, selected: frozenset[str] | None) -> Plan:
    """The part of ``plan`` a call will train: the selected runs, only their seeds that are
    not stored yet. An experiment prepares for this part alone, so that training one run
    does not first build what only the others need (RQ2's user profiles take most of an hour
    on the titled data; its IAE-only run needs the items alone)."""
    runs = []
    for spec in plan.runs:
        if selected is not None and spec.name not in selected:
            continue
        seeds = tuple(
            s for s in spec.seeds if run_state(run_dir_of(root, plan, spec, s)) != "stored"
        )
        if seeds:
            runs.append(replace(spec, seeds=seeds))
    return replace(plan, runs=runs)


def run_or_reuse(
    run_dir: Path, cfg: ExperimentConfig, check: bool = True
) -> tuple[dict[str, Any], float | None]:
    """(results, seconds trained now; None when reused). PrivacySettingsError is raised before
    anything is written when a privacy plan refuses the budget, RunInUseError when another
    process is training the run (so that two experiment commands can share a grid)."""
    if run_state(run_dir) == "stored":  # read without the lock (see run_state)
        if check:
            check_same_config(run_dir, cfg)
        return json.loads((run_dir / runner.RESULTS_FILE).read_text()), None
    # Held from the state check on: a second process must not prepare or resume it meanwhile.
    with layout.exclusive(run_dir):
        state = run_state(run_dir)
        if state != "new" and check:
            check_same_config(run_dir, cfg)
        if state == "stored":
            return json.loads((run_dir / runner.RESULTS_FILE).read_text()), None
        if state == "new":
            runner.prepare_run(cfg, run_dir)
        t0 = time.perf_counter()
        out = runner.train(run_dir, resume=state == "interrupted")
        return out, time.perf_counter() - t0


def _previous_walls(root: Path) -> dict[str, float]:
    """Training wall time of every run any index under ``root`` recorded, by run directory
    (relative to ``root``): a reused or shared run keeps the time it took when trained."""
    walls: dict[str, float] = {}
    for path in find_indexes(root):
        try:
            old = json.loads(path.read_text())
        except json.JSONDecodeError:
            continue
        for r in old.get("runs", []):
            if r.get("wall_s") is not None and not r.get("reused"):
                walls[r["run_dir"]] = r["wall_s"]
    for path in find_indexes(root):  # a reused entry fills only what no trained entry has
        try:
            old = json.loads(path.read_text())
        except json.JSONDecodeError:
            continue
        for r in old.get("runs", []):
            if r.get("wall_s") is not None:
                walls.setdefault(r["run_dir"], r["wall_s"])
    return walls


def _write_wall(run_dir: Path, seconds: float) -> None:
    atomic_write_text(run_dir / WALL_FILE, json.dumps({"wall_s": round(seconds, 1)}))


def _stored_wall(run_dir: Path) -> float | None:
    try:
        return float(json.loads((run_dir / WALL_FILE).read_text())["wall_s"])
    except (OSError, ValueError, KeyError, TypeError):
        return None  # trained before the file existed, or not by an experiment command


def _spec_json(spec: RunSpec) -> dict[str, Any]:
    return {
        "label": spec.label,
        "name": spec.name,
        "overrides": list(spec.overrides),
        "owner": spec.owner,
        "tags": dict(spec.tags),
    }


def _index_head(exp: Experiment, plan: Plan) -> dict[str, Any]:
    return {
        "experiment": exp.name,
        "title": exp.title,
        "paper": exp.paper,
        "description": exp.description,
        "mode": plan.mode,
        "code_version": runner.code_version(),
        "config_file": str(plan.config_file) if plan.config_file else None,
        "base_overrides": list(plan.base_overrides),
        "extra_sets": list(plan.extra_sets),
        "seeds": plan.seeds(),
        "notes": plan.notes,
        "missing": plan.missing,
    }


def dry_run(plan: Plan, root: Path, only: Collection[str] | None = None) -> list[dict[str, Any]]:
    """Every (run, seed) of the plan with its overrides and whether it is already stored;
    a run that ``only`` leaves out and that is not stored shows as ``skipped``."""
    selected = check_only(plan, only)
    rows = []
    for spec, seed, run_dir in _planned(plan, root):
        state = run_state(run_dir)
        if selected is not None and spec.name not in selected and state != "stored":
            state = "skipped"
        stored = (run_dir / runner.CONFIG_FILE).is_file()
        differences = config_differences(run_dir, plan.config(spec, seed), root) if stored else []
        rows.append(
            {
                "label": spec.label,
                "run_dir": str(run_dir),
                "seed": seed,
                "state": "other settings" if differences else state,
                "differences": differences,
                "overrides": [*spec.overrides, *plan.extra_sets],
                "shared_from": spec.owner,
            }
        )
    return rows


def execute(
    exp: Experiment,
    plan: Plan,
    root: Path,
    echo: Echo = print,
    train: bool = True,
    only: Collection[str] | None = None,
    jobs: int = 1,
    progress_every: float = 60.0,
) -> dict[str, Any]:
    """Train or reuse every run of ``plan`` under ``root``; write and return the index.

    ``train=False`` trains and prepares nothing: the index lists the stored runs as done and
    every other run as ``not run`` (or ``in use``), so a report can show a partial grid.
    ``only`` (run names, see :func:`check_only`) trains just those runs; the others are
    indexed as with ``train=False``. ``jobs`` runs that many trainings at once, each in its
    own process. Every ``progress_every`` seconds, a line says how far each training run is."""
    if jobs < 1:
        raise ValueError(f"jobs must be >= 1, got {jobs}")
    root = Path(root)
    selected = check_only(plan, only)
    folder = experiment_folder(root, exp.name, plan.mode)
    folder.mkdir(parents=True, exist_ok=True)
    index_path = folder / INDEX_FILE
    walls = _previous_walls(root)
    index = _index_head(exp, plan) | {
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "runs": [],
    }
    for note in plan.notes:
        echo(f"note: {note}")
    for item in plan.missing:
        echo(f"missing: {item}")
    check_stored_runs(plan, root)
    if train:
        exp.prepare(plan_to_train(plan, root, selected), root, echo)
    t_start = time.perf_counter()
    entries: list[dict[str, Any]] = []
    to_train: list[tuple[int, RunSpec, Path, ExperimentConfig]] = []
    watcher = ProgressWatcher(echo, every=progress_every)

    def record(position: int, label: str, outcome: tuple[Any, ...]) -> None:
        nonlocal index
        entry, shown = entries[position], entries[position]["run_dir"]
        watcher.forget(shown)
        if outcome[0] == "infeasible":
            entry |= {"status": "infeasible", "note": outcome[1], "wall_s": None}
            echo(f"  {shown}: infeasible: {outcome[1]}")
        elif outcome[0] == "in use":
            entry |= {"status": "in use", "note": outcome[1], "wall_s": None}
            echo(f"  {shown}: being trained by {outcome[1]}; skipped (run again to include it)")
        else:
            _, results, seconds = outcome
            reused = seconds is None
            if reused:
                wall = walls.get(shown)
                wall = _stored_wall(root / shown) if wall is None else wall
            else:
                _write_wall(root / shown, seconds)
                wall = round(seconds, 1)
            entry |= {"status": "done", "reused": reused, "wall_s": wall}
            entry.pop("note", None)
            meta = results["run"]
            index.setdefault("dataset", meta["dataset"])
            index.setdefault("dataset_fingerprint", meta["dataset_fingerprint"])
            index.setdefault("protocol", meta["protocol"])
            index.setdefault("protocol_note", meta["protocol_note"])
            how = "stored, reused" if reused else f"trained in {seconds:.0f}s"
            echo(f"  {shown}: {label}: {how}")
        index["runs"] = [dict(e) for e in entries]
        index["wall_s_this_call"] = round(time.perf_counter() - t_start, 1)
        index["updated"] = datetime.now(UTC).isoformat(timespec="seconds")
        index = write_index(index_path, index)

    with watcher:
        for spec, seed, run_dir in _planned(plan, root):
            shown = str(run_dir.relative_to(root))
            cfg = plan.config(spec, seed)
            entries.append(
                _spec_json(spec)
                | {"seed": seed, "run_dir": shown, "config": f"{shown}/{runner.CONFIG_FILE}"}
            )
            trains = train and (selected is None or spec.name in selected)
            state = run_state(run_dir)
            if not trains and state != "stored":
                status = "in use" if state == "in use" else "not run"
                entries[-1] |= {"status": status, "wall_s": None}
                echo(f"  {shown}: {spec.label}: {status}")
            elif state == "stored" or jobs == 1:
                if state != "stored":
                    watcher.watch(shown, run_dir)
                # check=False: check_stored_runs compared every stored run before the loop.
                record(len(entries) - 1, spec.label, train_cell(run_dir, cfg))
                continue
            else:
                entries[-1] |= {"status": "in use", "note": "this command", "wall_s": None}
                to_train.append((len(entries) - 1, spec, run_dir, cfg))
                watcher.watch(shown, run_dir)
            index["runs"] = [dict(e) for e in entries]
            index = write_index(index_path, index)
        try:
            if to_train:
                _train_in_parallel(to_train, jobs, record, echo)
        except KeyboardInterrupt:
            # The runs being trained keep their last checkpoint; say so in the index too.
            for entry in entries:
                if entry.get("status") == "in use" and entry.get("note") == "this command":
                    entry |= {"status": "interrupted", "note": "rerun the command to resume"}
            index["runs"] = [dict(e) for e in entries]
            write_index(index_path, index)
            raise
    index["runs"] = [dict(e) for e in entries]
    return write_index(index_path, index)


def train_cell(run_dir: Path, cfg: ExperimentConfig) -> tuple[Any, ...]:
    """One cell of a grid: ``("done", results, seconds trained or None when reused)``,
    ``("infeasible", why)`` or ``("in use", holder)``. A top-level function, so that a
    process pool (``--jobs``) can run it."""
    try:
        results, seconds = run_or_reuse(run_dir, cfg, check=False)
    except PrivacySettingsError as exc:
        return ("infeasible", str(exc))
    except layout.RunInUseError as exc:
        return ("in use", exc.holder)
    return ("done", results, seconds)


def _train_in_parallel(
    cells: list[tuple[int, RunSpec, Path, ExperimentConfig]],
    jobs: int,
    record: Callable[[int, str, tuple[Any, ...]], None],
    echo: Echo,
) -> None:
    """Train ``cells`` in ``jobs`` processes at once, in plan order, recording each as it ends.

    Each cell is a whole run in its own process (with its own Flower simulation), so results
    are those of training them one after another. A cell that fails stops the cells not yet
    started; those already training finish (or can be resumed), then the error is raised. An
    interruption (Ctrl-C, SIGTERM) stops those too, each keeping its last checkpoint."""
    # spawn: a forked copy of this process would share its threads' locks and torch state
    context = multiprocessing.get_context("spawn")
    before = set(multiprocessing.active_children())
    with ProcessPoolExecutor(
        max_workers=jobs, mp_context=context, initializer=_start_worker
    ) as pool:
        running = {}
        for position, spec, run_dir, cfg in cells:
            running[pool.submit(_train_cell_in_worker, run_dir, cfg)] = (position, spec.label)
        echo(f"  training {len(cells)} runs, {jobs} at a time")
        try:
            for future in as_completed(running):
                position, label = running[future]
                record(position, label, future.result())
        except BaseException as exc:
            for future in running:
                future.cancel()
            if isinstance(exc, KeyboardInterrupt):
                workers = [p.pid for p in multiprocessing.active_children() if p not in before]
                _stop_workers([pid for pid in workers if pid is not None], echo)
            raise


def _start_worker() -> None:
    """Set up one training process of ``--jobs``.

    Its own session, so that Ctrl-C in a terminal (SIGINT to the foreground process group)
    reaches the experiment command alone, which then stops each training process with SIGINT
    (:func:`_stop_workers`); Ray's processes would otherwise die with the group at the same
    moment. SIGINT, not SIGTERM: ray.init claims SIGTERM in its driver for a bare
    ``sys.exit``, while SIGINT stays ours. It hides Flower's logs of the actors lost as Ray
    shuts down, then raises KeyboardInterrupt, so that the run's ``finally`` blocks stop Ray
    and release the run directory. The kernel sends the same SIGINT if the experiment command
    dies without stopping its training processes (SIGKILL), instead of letting them train on
    unseen."""
    os.setsid()
    # Ray's core takes SIGTERM for a crash in the driver (absl's failure handler: a stack
    # dump, then the process dies where it stands), and it sends its driver SIGTERM when it
    # loses its raylet, as can happen half-way through an interrupted shutdown. Without that
    # handler the SIGTERM reaches Python, and _train_cell_in_worker can still clean up.
    os.environ.setdefault("RAY_DISABLE_FAILURE_SIGNAL_HANDLER", "1")
    signal.signal(signal.SIGINT, _interrupt_quietly)
    signal.signal(signal.SIGTERM, _interrupt_quietly)  # until ray.init takes it over
    die_with_parent(signal.SIGINT)


_worker_training = False  # in a training process: whether it is training a run now


def _interrupt_quietly(signum: int, frame: object) -> None:
    if not _worker_training:  # waiting for work: nothing to clean up
        _exit_worker()
    from fedscope.federation.simulation import silence_engine_logs

    silence_engine_logs()
    raise KeyboardInterrupt(f"signal {signum}")


def _train_cell_in_worker(run_dir: Path, cfg: ExperimentConfig) -> tuple[Any, ...]:
    """:func:`train_cell` in a training process; interrupted, the process ends (a pool worker
    would otherwise hand the interruption back as a result and wait for more work)."""
    global _worker_training
    _worker_training = True
    try:
        return train_cell(run_dir, cfg)
    except (KeyboardInterrupt, SystemExit):
        # SystemExit: Ray's core sends its own driver SIGTERM (ray.init made that sys.exit)
        # when it loses its raylet half-way through a shutdown.
        _exit_worker()
    finally:
        _worker_training = False


def _exit_worker() -> NoReturn:
    """End this training process and whatever it started that is still there. The run has
    shut Ray down as far as it could; an interruption can still catch Ray half-way and leave
    some of its processes (seen: the dashboard and runtime-env agents of a killed raylet).
    They are all in this process's group (its own session), so SIGKILL to the group ends
    them, and this process with them."""
    sys.stdout.flush()
    sys.stderr.flush()
    if os.getpgrp() == os.getpid():  # the group is ours alone (set up by _start_worker)
        os.killpg(os.getpgrp(), signal.SIGKILL)
    os._exit(128 + signal.SIGINT)


def _stop_workers(pids: list[int], echo: Echo, grace_s: float = WORKER_STOP_GRACE_S) -> None:
    """SIGINT each training process, wait up to ``grace_s`` for all to end, then SIGKILL the
    process group of each (its own session, holding its Ray processes): of those still there,
    and of those that ended but may have left Ray processes behind."""
    echo(f"  interrupted: stopping {len(pids)} training processes")
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGINT)
    deadline = time.monotonic() + grace_s
    left = pids
    while left and time.monotonic() < deadline:
        time.sleep(0.2)
        table = process_table()
        # A zombie has ended; the pool's own thread reaps it.
        left = [pid for pid in left if pid in table and table[pid].state != "Z"]
    for pid in pids:  # a group's id is not reused while the group has a member
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)


def write_index(index_path: Path, index: dict[str, Any]) -> dict[str, Any]:
    """Write ``index`` to ``index_path``, first taking from the index already there every run
    that this one does not list as done and that one does (another command finished it; its
    results must still be on disk). Returns what was written."""
    index_path = Path(index_path)
    root = index_path.parent.parents[1]  # <root>/<experiment>/<mode>/experiment.json
    with locked(index_path.parent / INDEX_LOCK):
        try:
            there = json.loads(index_path.read_text()) if index_path.is_file() else {}
        except json.JSONDecodeError:
            there = {}  # a torn file from before writes were atomic: ours replaces it
        finished = {
            (r.get("run_dir"), r.get("seed")): r
            for r in there.get("runs", [])
            if r.get("status") == "done"
            and (root / str(r.get("run_dir")) / runner.RESULTS_FILE).is_file()
        }
        runs = []
        for entry in index["runs"]:
            other = finished.get((entry["run_dir"], entry["seed"]))
            runs.append(other if entry.get("status") != "done" and other else entry)
        merged = index | {"runs": runs}
        for key in ("dataset", "dataset_fingerprint", "protocol", "protocol_note"):
            if key in there:
                merged.setdefault(key, there[key])
        atomic_write_text(index_path, json.dumps(merged, indent=2))
    return merged


# --- reading back --------------------------------------------------------------------------------


def load_stored(index_path: Path) -> StoredExperiment:
    """An experiment's index and its finished runs, from disk only."""
    index_path = Path(index_path)
    index = json.loads(index_path.read_text())
    folder = index_path.parent
    root = folder.parents[1]
    runs = []
    for entry in index["runs"]:
        if entry.get("status") != "done":
            continue
        run_dir = root / entry["run_dir"]
        results_file = run_dir / runner.RESULTS_FILE
        if not results_file.is_file():
            continue
        spec = RunSpec(
            entry["label"],
            entry["name"],
            tuple(entry["overrides"]),
            (entry["seed"],),
            entry.get("owner"),
            tuple(sorted(entry.get("tags", {}).items())),
        )
        runs.append(
            StoredRun(
                spec, entry["seed"], run_dir, json.loads(results_file.read_text()), entry["wall_s"]
            )
        )
    return StoredExperiment(index, folder, runs)


def find_indexes(root: Path) -> list[Path]:
    """Every experiment index under ``root`` (``<root>/<experiment>/<mode>/experiment.json``)."""
    return sorted(Path(root).glob(f"*/*/{INDEX_FILE}"))
