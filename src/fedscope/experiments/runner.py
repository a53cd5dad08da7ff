"""Running one experiment: prepare a run directory, train in a regime, evaluate once.

Regimes (``federation.regime``):

* ``federated``: Flower's simulation engine, K clients, C sampled per round, T
  rounds (the product path; see :mod:`fedscope.federation`).
* ``centralised``: one model trained on everyone's data, a *non-private upper
  reference*. It gets the same number of passes over the data as a federated
  client does in expectation: ``ceil(T * C)`` passes of E epochs.
* ``local``: every client trains alone on its own users (the paper's
  "standalone" training) for the same ``ceil(T * C)`` passes of E epochs; each client
  picks its best epoch on its own validation instances, and its own model
  ranks its own users' test instances.

Neither of the last two is a federation, so they run in this process; all
three share the method, the batching, the client step and the evaluator.
Model selection uses validation only; the test split is evaluated once, for
the selected weights, in both ranking protocols.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import numpy as np

from fedscope import __version__
from fedscope.config import ExperimentConfig
from fedscope.data import load_dataset
from fedscope.data.dataset import CrossDomainDataset
from fedscope.data.partition import ClientPartition, Partitioning, partition, save_partitioning
from fedscope.evaluation import EvalResult, Evaluator, PopularityScorer
from fedscope.evaluation.evaluator import Mode
from fedscope.evaluation.paired import InstanceRanks, save_ranks
from fedscope.federation import run_dir as layout
from fedscope.federation.run_dir import CONFIG_FILE
from fedscope.files import atomic_write_text
from fedscope.methods import method_class
from fedscope.privacy.noise_ratio import NoiseRatio, averaged_noise_ratio
from fedscope.privacy.plan import PrivacyPlan, make_plan, plan_path, sends_per_client
from fedscope.privacy.report import write_report
from fedscope.training.task import (
    PARTITION_FILE,
    RecommendationTask,
    check_semantics,
    schedule_length,
    validation_metrics,
)

RUN_FILE = "run.json"
RESULTS_FILE = "results.json"
RANKS_FILE = "ranks.npz"
PLOT_FILE = "convergence.png"
TASK_FACTORY = "fedscope.training.task:task_factory"

ProgressFn = Callable[[dict[str, Any]], None]


def code_version() -> str:
    """fedscope version plus the git commit of the source tree when there is one."""
    here = Path(__file__).resolve().parent
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            cwd=here,
        ).stdout.strip()
        # a run made from edited sources must not claim the commit's code
        changed = (
            sha
            and subprocess.run(
                ["git", "status", "--porcelain", "--untracked-files=no"],
                capture_output=True,
                text=True,
                timeout=5,
                cwd=here,
            ).stdout.strip()
        )
    except (OSError, subprocess.SubprocessError):
        sha, changed = "", ""
    if not sha:
        return __version__
    return f"{__version__}+{sha}" + ("-dirty" if changed else "")


def default_run_dir(config: ExperimentConfig) -> Path:
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    name = f"{config.method}-{config.data.name}-{config.federation.regime}-s{config.seed}-{stamp}"
    return Path(config.output_dir) / name


def make_partitioning(config: ExperimentConfig, dataset: CrossDomainDataset) -> Partitioning:
    if config.federation.regime == "centralised":
        everyone = ClientPartition(0, np.arange(dataset.n_users), tuple(range(dataset.n_domains)))
        return Partitioning("centralised", config.seed, (everyone,))
    p = config.partition
    return partition(dataset, p.n_clients, p.scheme, p.seed, p.alpha, p.exponent, file=p.file)


def prepare_run(config: ExperimentConfig, run_dir: Path) -> Path:
    """Write everything a run needs into a fresh ``run_dir``."""
    run_dir = Path(run_dir)
    if (run_dir / CONFIG_FILE).exists():
        raise FileExistsError(f"{run_dir} already holds a run; use --resume to continue it")
    dataset = load_dataset(config.data.name, config.data.data_dir, **config.data.options)
    # Refused before anything is written, so that the corrected command can reuse --run-dir:
    # an unknown method, a semantic store that does not fit the data, a budget that cannot be
    # met.
    method_class(config.method)
    check_semantics(config, dataset)
    partitioning = make_partitioning(config, dataset)
    plan = privacy_plan_for(config, partitioning) if config.privacy.enabled else None
    existed = set(run_dir.iterdir()) if run_dir.is_dir() else None
    try:
        _write_run(config, run_dir, dataset, partitioning, plan)
    except BaseException:
        # Half a run would block the next attempt ("already holds a run"): take back what
        # this call wrote, and nothing else.
        if existed is None:
            shutil.rmtree(run_dir, ignore_errors=True)
        else:
            for path in set(run_dir.iterdir()) - existed:
                if path.is_dir():
                    shutil.rmtree(path)
                else:
                    path.unlink()
        raise
    return run_dir


def _write_run(
    config: ExperimentConfig,
    run_dir: Path,
    dataset: CrossDomainDataset,
    partitioning: Partitioning,
    plan: PrivacyPlan | None,
) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / CONFIG_FILE).write_text(config.model_dump_json(indent=2))
    save_partitioning(partitioning, run_dir / PARTITION_FILE)
    if plan is not None:
        plan_path(run_dir).write_text(plan.to_json())
    layout.write_task_spec(run_dir, TASK_FACTORY)
    meta = {
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "code_version": code_version(),
        "method": config.method,
        "regime": config.federation.regime,
        "seed": config.seed,
        "dataset": dataset.name,
        "dataset_fingerprint": dataset.fingerprint,
        "protocol": dataset.protocol,
        "protocol_note": dataset.protocol_note,
        "n_clients": partitioning.n_clients,
        "client_sizes": partitioning.sizes().tolist(),
    }
    if plan is not None:
        ratio = privacy_noise_ratio(config, dataset, partitioning, plan)
        meta["privacy_noise_ratio"] = ratio.summary()
    (run_dir / RUN_FILE).write_text(json.dumps(meta, indent=2))
    if config.federation.exchange_representations:
        # The clients' PSI runs, once, before training (costs are in alignment.json).
        from fedscope.privacy.alignment import align_run

        align_run(run_dir)


def privacy_plan_for(config: ExperimentConfig, partitioning: Partitioning) -> PrivacyPlan:
    """Every client's budget and noise schedule (PrivacySettingsError if one cannot be met)."""
    f = config.federation
    sizes = [int(n) for n in partitioning.sizes()]
    sends = sends_per_client(config.seed, f.rounds, partitioning.n_clients, f.fraction)
    return make_plan(config, sizes, sends)


def privacy_noise_ratio(
    config: ExperimentConfig,
    dataset: CrossDomainDataset,
    partitioning: Partitioning,
    plan: PrivacyPlan,
) -> NoiseRatio:
    """rho, the averaged DP noise against the largest averaged update, over the run's rounds
    (fedscope.privacy.noise_ratio), for the model this configuration shares."""
    task = RecommendationTask(config, dataset, partitioning)
    n_params = sum(int(w.size) for w in task.shared_weights())
    return averaged_noise_ratio(plan, n_params, config.seed, config.federation.fraction)


def read_config(run_dir: Path) -> ExperimentConfig:
    return ExperimentConfig.model_validate_json((Path(run_dir) / CONFIG_FILE).read_text())


# --- training ----------------------------------------------------------------------------------


def train(
    run_dir: Path, resume: bool = False, progress: ProgressFn | None = None
) -> dict[str, Any]:
    """Train the run in ``run_dir`` (continuing it when ``resume``) and evaluate it.
    :class:`~fedscope.federation.run_dir.RunInUseError` if another process is writing it."""
    run_dir = Path(run_dir)
    with layout.exclusive(run_dir):
        return _train_held(run_dir, resume, progress)


def _train_held(run_dir: Path, resume: bool, progress: ProgressFn | None) -> dict[str, Any]:
    config = read_config(run_dir)
    regime = config.federation.regime
    if regime == "federated":
        from fedscope.federation.simulation import run_simulation

        n_clients = json.loads((run_dir / RUN_FILE).read_text())["n_clients"]
        threads = config.train.threads or 1  # per simulated client, several of which run at once
        run_simulation(
            run_dir,
            n_clients,
            max_parallel=config.federation.parallel_clients,
            resume=resume,
            run_config={"torch-threads": threads},
        )
    else:
        if config.train.threads > 0:
            import torch

            torch.set_num_threads(config.train.threads)
        task = RecommendationTask.from_run_dir(run_dir)
        if regime == "centralised":
            _train_alone(task, run_dir, 0, resume, progress, task.validation_evaluator())
        else:
            # A client's own validation users are few: select on all of them, not a subset.
            ev = Evaluator(
                task.dataset,
                "valid",
                "sampled",
                n_negatives=config.eval.n_negatives,
                seed=config.eval.candidate_seed,
            )
            for k in range(task.partitioning.n_clients):
                _train_alone(task, run_dir, k, resume, progress, ev)
    return finalise(run_dir)


def client_dir(run_dir: Path, client_id: int) -> Path:
    return Path(run_dir) / "clients" / f"{client_id:04d}"


def _train_alone(
    task: RecommendationTask,
    run_dir: Path,
    client_id: int,
    resume: bool,
    progress: ProgressFn | None,
    evaluator: Evaluator,
) -> None:
    """One model trained by one party on its own data, validated every epoch."""
    config = task.config
    epochs = schedule_length(config)
    rows = _client_valid_rows(task, client_id, evaluator)
    if config.federation.regime == "centralised":
        last_path, best_path = (
            layout.last_checkpoint_path(run_dir),
            layout.best_checkpoint_path(run_dir),
        )
    else:
        last_path, best_path = (
            client_dir(run_dir, client_id) / "last.npz",
            client_dir(run_dir, client_id) / "best.npz",
        )
        client_dir(run_dir, client_id).mkdir(parents=True, exist_ok=True)
    start, weights, best_value, best_round = 1, task.initial_weights(), None, None
    if resume and last_path.is_file():
        ck = layout.load_checkpoint(last_path)
        start, weights, best_value, best_round = (
            ck.round + 1,
            ck.weights,
            ck.best_value,
            ck.best_round,
        )
    if config.federation.regime == "centralised":
        layout.keep_metrics_up_to(run_dir, start - 1)
    task.load_shared_weights(weights)
    for epoch in range(start, epochs + 1):
        t0 = time.perf_counter()
        update = task.client_update(client_id, task.shared_weights(), epoch)
        weights = [w + d for w, d in zip(task.shared_weights(), update.delta, strict=True)]
        fit_s = time.perf_counter() - t0
        record: dict[str, Any] = {"round": epoch, "client": client_id, "fit_s": fit_s}
        record["client_train"] = update.metrics
        if epoch % config.eval.every == 0 or epoch == epochs:
            task.load_shared_weights(weights)
            higher, equal = evaluator.rank(task.method.scorer(task.model), rows)
            record["validation"] = validation_metrics(
                evaluator.summarise(config.method, higher, equal).metrics
            )
            value = record["validation"][config.eval.selection_metric]
            if best_value is None or value > best_value:
                best_value, best_round = value, epoch
                layout.save_checkpoint(
                    best_path, layout.Checkpoint(weights, epoch, best_value, best_round)
                )
        record["best_round"], record["best_value"] = best_round, best_value
        record["eval_s"] = time.perf_counter() - t0 - fit_s
        layout.save_checkpoint(last_path, layout.Checkpoint(weights, epoch, best_value, best_round))
        if config.federation.regime == "centralised":
            layout.append_jsonl(layout.metrics_path(run_dir), record)
        else:
            layout.append_jsonl(layout.metrics_path(client_dir(run_dir, client_id)), record)
        if progress is not None:
            progress(record | {"rounds": epochs, "clients": task.partitioning.n_clients})


def _client_valid_rows(task: RecommendationTask, client_id: int, ev: Evaluator) -> np.ndarray:
    """Validation rows of this client's users (all of them for the centralised model)."""
    part = task.partitioning.clients[client_id]
    mine = np.isin(ev.users[ev.selected], part.users)
    mine &= np.isin(ev.domains[ev.selected], part.domains)
    return ev.selected[mine]


# --- final evaluation --------------------------------------------------------------------------


def _evaluate_selected(
    task: RecommendationTask, run_dir: Path, split: Literal["valid", "test"], mode: Mode
) -> tuple[EvalResult, EvalResult, Evaluator]:
    """The selected model's result and the popularity floor, same split and candidates."""
    config = task.config
    ev = Evaluator(
        task.dataset,
        split,
        mode,
        n_negatives=config.eval.n_negatives,
        seed=config.eval.candidate_seed,
    )
    if config.federation.regime != "local":
        ck = layout.load_checkpoint(layout.best_checkpoint_path(run_dir))
        task.load_shared_weights(ck.weights)
        result = ev.evaluate(task.method.scorer(task.model))
    else:
        n = len(ev.split)
        higher, equal = np.full(n, -1, dtype=np.int64), np.zeros(n, dtype=np.int64)
        for k, part in enumerate(task.partitioning.clients):
            rows = np.nonzero(np.isin(ev.users, part.users) & np.isin(ev.domains, part.domains))[0]
            ck = layout.load_checkpoint(client_dir(run_dir, k) / "best.npz")
            task.load_shared_weights(ck.weights)
            h, e = ev.rank(task.method.scorer(task.model), rows)
            higher[rows], equal[rows] = h[rows], e[rows]
        result = ev.summarise(config.method, higher, equal)
    result.scorer = f"{config.method} ({config.federation.regime})"
    floor = ev.evaluate(PopularityScorer(task.dataset))
    return result, floor, ev


def _instance_ranks(result: EvalResult, ev: Evaluator, fingerprint: str) -> InstanceRanks:
    return InstanceRanks(
        scorer=result.scorer,
        users=ev.users,
        domains=ev.domains,
        domain_names=tuple(d.name for d in ev.dataset.domains),
        higher=result.per_instance["higher"],
        equal=result.per_instance["equal"],
        identity={
            "dataset_fingerprint": fingerprint,
            "split": result.split,
            "mode": result.mode,
            "n_negatives": result.n_negatives,
            "candidate_seed": result.candidate_seed,
        },
    )


def finalise(run_dir: Path) -> dict[str, Any]:
    """Evaluate the selected model once on validation and test, both protocols; write
    results.json, ranks.npz and the convergence plot."""
    run_dir = Path(run_dir)
    with layout.exclusive(run_dir):
        return _finalise_held(run_dir)


def _finalise_held(run_dir: Path) -> dict[str, Any]:
    task = RecommendationTask.from_run_dir(run_dir)
    meta = json.loads((run_dir / RUN_FILE).read_text())
    out: dict[str, Any] = {"run": meta, "config": json.loads(task.config.model_dump_json())}
    if task.config.federation.regime != "local":
        ck = layout.load_checkpoint(layout.best_checkpoint_path(run_dir))
        out["selected_round"] = ck.round
    status = layout.read_status(run_dir) if task.config.federation.regime == "federated" else None
    if status and status.get("stopped"):
        # federation.on_divergence=stop ended training early; the selection above is among
        # the rounds before it
        out["stopped"] = status["stopped"]
    splits: tuple[Literal["valid", "test"], ...] = ("valid", "test")
    modes: tuple[Mode, ...] = ("sampled", "full")
    rankings: dict[str, InstanceRanks] = {}
    for split in splits:
        out[split] = {}
        for mode in modes:
            result, floor, ev = _evaluate_selected(task, run_dir, split, mode)
            out[split][mode] = [result.to_dict(), floor.to_dict()]
            for role, r in (("model", result), ("popularity", floor)):
                rankings[f"{split}.{mode}.{role}"] = _instance_ranks(
                    r, ev, task.dataset.fingerprint
                )
    # Per-instance ranks, so that two runs can be compared paired (fedscope compare).
    save_ranks(run_dir / RANKS_FILE, rankings)
    if task.config.privacy.enabled:
        rounds_done = layout.load_checkpoint(layout.last_checkpoint_path(run_dir)).round
        report = write_report(run_dir, rounds_done)
        out["privacy"] = {k: v for k, v in report.items() if k != "clients"}
    # Atomic: another command may be reading a stored run's results while it is re-evaluated.
    atomic_write_text(run_dir / RESULTS_FILE, json.dumps(out, indent=2))
    floor = task.validation_evaluator().evaluate(PopularityScorer(task.dataset))
    plot_convergence(run_dir, floor.metrics["overall"]["HR@10"])
    return out


def results_as_eval(results: dict[str, Any], split: str, mode: str) -> list[EvalResult]:
    """EvalResults back from results.json, for printing tables."""
    return [EvalResult(**r) for r in results[split][mode]]


def plot_convergence(run_dir: Path, floor_hr10: float | None = None) -> Path | None:
    """Validation HR@10 against round (federated/centralised runs), with the popularity floor
    on the same validation instances as a dashed line."""
    rows = layout.read_metrics(run_dir)
    points = [(r["round"], (r.get("validation") or {}).get("HR@10")) for r in rows]
    points = [(x, y) for x, y in points if y is not None]
    if not points:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    config = read_config(run_dir)
    fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
    ax.plot(
        [x for x, _ in points],
        [100 * y for _, y in points],
        marker="o",
        markersize=2.5,
        label=config.method,
    )
    if floor_hr10 is not None:
        ax.axhline(100 * floor_hr10, color="grey", linestyle="--", label="popularity (floor)")
    ax.legend(loc="lower right")
    ax.set_xlabel("communication round" if config.federation.regime == "federated" else "epoch")
    ax.set_ylabel("validation HR@10 (%)")
    ax.set_title(f"{config.method} on {config.data.name} ({config.federation.regime})")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    path = Path(run_dir) / PLOT_FILE
    fig.savefig(path)
    plt.close(fig)
    return path
