"""``fedscope train``, ``fedscope evaluate``, ``fedscope recommend``."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import typer
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from fedscope.cli.app import ConfigFile, NewRunDir, Overrides, app, console
from fedscope.config import ConfigError, ExperimentConfig, load_config
from fedscope.evaluation.tables import rich_table
from fedscope.experiments import runner
from fedscope.federation import run_dir as layout
from fedscope.training.task import schedule_length


class RoundProgress:
    """A progress bar over rounds (or epochs) with the latest loss and validation MRR."""

    def __init__(self, total: int, label: str):
        self.progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            TextColumn("{task.completed}/{task.total}"),
            TextColumn("loss {task.fields[loss]}"),
            TextColumn("val MRR {task.fields[mrr]}"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=console,
        )
        self.task = self.progress.add_task(label, total=total, loss="–", mrr="–")

    def update(self, record: dict[str, Any]) -> None:
        loss = (record.get("client_train") or {}).get("loss")
        mrr = (record.get("validation") or {}).get("MRR")
        fields: dict[str, Any] = {}
        if loss is not None:
            fields["loss"] = f"{loss:.4f}"
        if mrr is not None:
            fields["mrr"] = f"{100 * mrr:.2f}"
        self.progress.update(self.task, completed=record["round"], **fields)


def _poll_metrics(run_dir: Path, bar: RoundProgress, stop: threading.Event) -> None:
    seen = 0
    while not stop.is_set():
        rows = layout.read_metrics(run_dir)
        for row in rows[seen:]:
            bar.update(row)
        seen = len(rows)
        stop.wait(0.5)


def _print_results(results: dict[str, Any], run_dir: Path | None = None) -> None:
    meta = results["run"]
    console.print(
        f"[bold]{meta['method']}[/] · {meta['regime']} · {meta['dataset']} ({meta['protocol']}) · "
        f"seed {meta['seed']} · code {meta['code_version']}"
    )
    if "selected_round" in results:
        console.print(f"selected on validation: round {results['selected_round']}")
    if results.get("stopped"):
        stop = results["stopped"]
        console.print(
            f"[bold yellow]training stopped in round {stop['round']}[/]: {stop['reason']} "
            f"(federation.on_divergence=stop); {stop['error']}",
            highlight=False,
        )
    for mode in ("sampled", "full"):
        console.print(rich_table(runner.results_as_eval(results, "test", mode)))
    console.print(f"[dim]protocol: {meta['protocol_note']}[/]", highlight=False)
    if run_dir is not None and "privacy" in results:
        _print_privacy(run_dir)


def _print_privacy(run_dir: Path) -> None:
    from fedscope.privacy.report import REPORT_FILE, report_table

    report = json.loads((run_dir / REPORT_FILE).read_text())
    console.print(report_table(report))
    p = report
    console.print(
        f"epsilon spent per client: {p['epsilon_spent_min']:.4g}–{p['epsilon_spent_max']:.4g}"
        f" (budgets from the allocation above); over budget: {len(p['clients_over_budget'])}, "
        f"suspended: {len(p['clients_suspended'])}, noise raised: "
        f"{len(p['clients_noise_raised'])} · {run_dir / REPORT_FILE}"
    )


def _warn_about_noise(run_dir: Path) -> None:
    ratio = json.loads((run_dir / runner.RUN_FILE).read_text()).get("privacy_noise_ratio")
    if ratio is not None and ratio["median"] > 1:
        console.print(
            f"[bold yellow]warning:[/] with this budget the server's averaged DP noise is "
            f"{ratio['median']:.3g} times the largest update the clients can send (rho, over "
            f"d = {ratio['n_params']:,} shared numbers and m = {ratio['clients_per_round']} "
            "clients a round); the model may learn nothing. `fedscope privacy-plan` shows the "
            "plan before training.",
            highlight=False,
        )


def run_training(run_dir: Path, resume: bool) -> dict[str, Any]:
    config = runner.read_config(run_dir)
    regime = config.federation.regime
    total = schedule_length(config)
    label = {"federated": "round", "centralised": "pass", "local": "client passes"}[regime]
    bar = RoundProgress(total, label)
    stop = threading.Event()
    with bar.progress:
        if regime == "federated":
            poller = threading.Thread(target=_poll_metrics, args=(run_dir, bar, stop), daemon=True)
            poller.start()
            try:
                results = runner.train(run_dir, resume=resume)
            finally:
                stop.set()
                poller.join(timeout=5)
                for row in layout.read_metrics(run_dir)[-1:]:
                    bar.update(row)
        else:
            results = runner.train(run_dir, resume=resume, progress=bar.update)
    return results


@app.command()
def train(
    config: ConfigFile = None,
    overrides: Overrides = None,
    run_dir: NewRunDir = None,
    resume: Annotated[
        Path | None, typer.Option(help="Continue the interrupted run in this directory.")
    ] = None,
) -> None:
    """Train a method (federated by default) and evaluate the selected model once."""
    if resume is not None:
        if config is not None or overrides:
            raise ConfigError(
                "--resume continues a run with its stored configuration; drop --config/--set"
            )
        if not (resume / runner.CONFIG_FILE).is_file():
            raise ConfigError(f"{resume}: not a run directory (no {runner.CONFIG_FILE})")
        target = resume
    else:
        cfg: ExperimentConfig = load_config(config, overrides)
        target = run_dir or runner.default_run_dir(cfg)
        runner.prepare_run(cfg, target)
    console.print(f"run directory: {target}")
    _warn_about_noise(target)
    t0 = time.perf_counter()
    results = run_training(target, resume is not None)
    _print_results(results, target)
    console.print(
        f"[dim]{time.perf_counter() - t0:.0f}s · results: {target / runner.RESULTS_FILE}[/]"
    )


@app.command()
def methods() -> None:
    """The methods `--set method=NAME` accepts: built-in ones and installed plugins."""
    from rich.table import Table

    from fedscope.methods import available_methods, method_class

    table = Table()
    for column in ("method", "from", "description"):
        table.add_column(column)
    for name, description in available_methods().items():
        module = method_class(name).__module__
        source = "fedscope" if module.split(".")[0] == "fedscope" else f"plugin ({module})"
        table.add_row(name, source, description)
    console.print(table)
    console.print("Plugins: see docs/methods.md (entry-point group fedscope.methods).", style="dim")


@app.command()
def evaluate(run_dir: Annotated[Path, typer.Argument(help="A finished run directory.")]) -> None:
    """Evaluate a run's selected model (validation-selected) on validation and test, both protocols."""
    if not (run_dir / runner.CONFIG_FILE).is_file():
        raise ConfigError(f"{run_dir}: not a run directory (no {runner.CONFIG_FILE})")
    _print_results(runner.finalise(run_dir), run_dir)


@app.command()
def recommend(
    run_dir: Annotated[Path, typer.Argument(help="A finished run directory.")],
    history: Annotated[
        str,
        typer.Option(help="Comma-separated item ids (source keys such as ASINs, or global ids)."),
    ],
    domain: Annotated[
        str | None, typer.Option(help="Target domain (default: every domain).")
    ] = None,
    top_k: Annotated[int, typer.Option("--top-k", help="How many items to list.")] = 10,
) -> None:
    """Top-K next items for a history, with titles."""
    from rich.markup import escape

    from fedscope.serving.recommender import Recommender

    # The CLI may peek at a run still in progress; the HTTP service insists on a finished one.
    recommender = Recommender.from_run_dir(run_dir, require_finished=False)
    tokens = [h.strip() for h in history.split(",") if h.strip()]
    if not tokens:
        raise ConfigError("--history is empty: give at least one item id")
    any_tied = False
    for name, ranked in recommender.recommend(tokens, domain, top_k).items():
        console.print(f"[bold]{name}[/]: top {len(ranked)} after {len(tokens)} history items")
        for rec in ranked:
            any_tied |= rec.tied
            console.print(
                # catalogue text is not markup: a title such as "[b]..." must print as is
                f"{rec.rank:>3}. {escape(rec.item)}  {escape(rec.title or '(no title)')}  "
                f"[dim]{rec.score:.3f}{' =' if rec.tied else ''}[/]",
                highlight=False,
            )
    if any_tied:
        console.print(
            "= tied: another item has exactly this score, so the order among them is by item id, "
            "not the model's preference",
            highlight=False,
        )


def resolve_items(ds: Any, tokens: list[str]) -> np.ndarray:
    """Item keys (or global ids) to global ids; unknown ones are an error naming them."""
    from fedscope.serving.recommender import ItemIndex

    if not tokens:
        raise ConfigError("--history is empty: give at least one item id")
    return ItemIndex(ds).resolve(tokens)
