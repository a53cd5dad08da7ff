"""``fedscope floors``, ``fedscope demo`` and ``fedscope compare``."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated, Literal

import typer

from fedscope.cli.app import DataDir, Sets, app, console, parse_sets
from fedscope.data import load_dataset
from fedscope.evaluation import EvalResult, Evaluator, PopularityScorer, RandomScorer
from fedscope.evaluation.tables import rich_table

Modes = Literal["both", "sampled", "full"]


def floor_results(
    name: str,
    data_dir: Path | None,
    split: Literal["valid", "test"],
    modes: Modes,
    n_negatives: int,
    seed: int,
    options: dict | None = None,
) -> list[list[EvalResult]]:
    """Popularity and random scorers in each requested protocol: one list of results per mode."""
    ds = load_dataset(name, data_dir, **(options or {}))
    out = []
    for mode in ("sampled", "full") if modes == "both" else (modes,):
        ev = Evaluator(ds, split, mode, n_negatives=n_negatives, seed=seed)
        out.append([ev.evaluate(PopularityScorer(ds)), ev.evaluate(RandomScorer(ds, seed=seed))])
    return out


@app.command()
def floors(
    name: Annotated[str, typer.Argument(help="Data set name.")],
    data_dir: DataDir = None,
    split: Annotated[Literal["valid", "test"], typer.Option(help="Split to evaluate.")] = "test",
    mode: Annotated[Modes, typer.Option(help="Ranking protocol(s).")] = "both",
    negatives: Annotated[int, typer.Option(help="Sampled negatives per instance.")] = 999,
    seed: Annotated[
        int, typer.Option(help="Seed of the candidate draw and the random scorer.")
    ] = 0,
    option: Sets = None,
    out: Annotated[Path | None, typer.Option(help="Also write the results as JSON here.")] = None,
) -> None:
    """The popularity and random floors of a data set, in the sampled and full-ranking protocols."""
    t0 = time.perf_counter()
    tables = floor_results(name, data_dir, split, mode, negatives, seed, parse_sets(option))
    for results in tables:
        console.print(rich_table(results))
        for note in results[0].notes:
            console.print(f"note: {note}", highlight=False)
    console.print(f"protocol: {tables[0][0].protocol_note}", highlight=False)
    console.print(f"[dim]{time.perf_counter() - t0:.1f}s[/]")
    if out is not None:
        out.write_text(json.dumps([r.to_dict() for results in tables for r in results], indent=2))
        console.print(f"wrote {out}")


@app.command()
def demo(
    seed: Annotated[int, typer.Option(help="Experiment seed (the data set is fixed).")] = 0,
    output_dir: Annotated[Path, typer.Option(help="Where the demo's runs go.")] = Path("runs"),
) -> None:
    """Train FedSCOPE and a baseline federatedly on the embedded generated data set and compare."""
    from datetime import UTC, datetime

    from fedscope.cli.train_commands import run_training
    from fedscope.config import load_config
    from fedscope.experiments import runner
    from fedscope.experiments.presets import DEMO, DEMO_METHODS

    t0 = time.perf_counter()
    root = output_dir / f"demo-{datetime.now(UTC).strftime('%Y%m%d-%H%M%S')}"
    console.rule("fedscope demo: federated training on the generated data set")
    console.print(f"preset: {' '.join(DEMO)}", highlight=False)
    finals = {}
    for method in DEMO_METHODS:
        cfg = load_config(None, [*DEMO, f"method={method}", f"seed={seed}"])
        run_dir = runner.prepare_run(cfg, root / method)
        console.print(f"[bold]{method}[/] → {run_dir}")
        finals[method] = run_training(run_dir, resume=False)
    console.rule("test split, the model each run selected on validation")
    for mode in ("sampled", "full"):
        results = [runner.results_as_eval(finals[m], "test", mode)[0] for m in DEMO_METHODS]
        results.append(runner.results_as_eval(finals[DEMO_METHODS[0]], "test", mode)[1])
        console.print(rich_table(results))
    console.print(f"[dim]{time.perf_counter() - t0:.0f}s · runs in {root}[/]")


@app.command()
def compare(
    run_a: Annotated[Path, typer.Argument(help="A finished run directory (A).")],
    run_b: Annotated[
        str,
        typer.Argument(help="Another finished run directory (B), or 'popularity' for A's floor."),
    ],
    split: Annotated[Literal["valid", "test"], typer.Option(help="Split to compare on.")] = "test",
    protocol: Annotated[
        Literal["sampled", "full"], typer.Option(help="Ranking protocol.")
    ] = "sampled",
    metric: Annotated[
        list[str] | None, typer.Option(help="Metric(s) (default: HR@10, NDCG@10, MRR).")
    ] = None,
    out: Annotated[Path | None, typer.Option(help="Also write the comparison as JSON.")] = None,
) -> None:
    """Paired comparison of two runs on the same instances and candidates: A − B per domain,
    with the standard error of the per-instance difference and a 95% interval."""
    from fedscope.evaluation.paired import InstanceRanks, load_ranks, paired_differences
    from fedscope.evaluation.tables import terminal_table
    from fedscope.experiments.runner import RANKS_FILE, RESULTS_FILE

    def ranks_of(run: Path, role: str) -> InstanceRanks:
        path = run / RANKS_FILE
        if not path.is_file():
            hint = (
                "it was evaluated before per-instance ranks were stored; `fedscope evaluate "
                f"{run}` writes them (it needs the run's checkpoints)"
                if (run / RESULTS_FILE).is_file()
                else "it is not a finished run directory"
            )
            raise FileNotFoundError(f"{run}: no {RANKS_FILE}; {hint}")
        return load_ranks(path, f"{split}.{protocol}.{role}")

    a = ranks_of(run_a, "model")
    b = ranks_of(run_a, "popularity") if run_b == "popularity" else ranks_of(Path(run_b), "model")
    rows = paired_differences(a, b, tuple(metric or ("HR@10", "NDCG@10", "MRR")))
    console.print(f"A: {run_a}\nB: {run_b}", highlight=False)
    table = terminal_table(
        f"A: {a.scorer} · B: {b.scorer} · {split} split · {protocol} · values in %"
    )
    for col in ("group", "metric", "A", "B", "A − B ± s.e.", "reading"):
        if col in ("group", "metric", "reading"):
            table.add_column(col, overflow="fold")
        else:
            table.add_column(col, justify="right")
    for i, r in enumerate(rows):
        first = i == 0 or rows[i - 1].group != r.group
        table.add_row(
            f"{r.group} ({r.n:,})" if first else "",
            r.metric,
            f"{100 * r.a:.2f}",
            f"{100 * r.b:.2f}",
            f"{100 * r.difference:+.2f} ± {100 * r.standard_error:.2f}",
            r.reading,
            end_section=i + 1 < len(rows) and rows[i + 1].group != r.group,
        )
    console.print(table)
    console.print(
        "Paired over the same instances and candidates (their number in parentheses): s.e. is the "
        "standard error of the mean per-instance difference; 'A higher' or 'B higher' when the "
        "95% interval (±1.96 s.e.) excludes 0. It measures the test set's sampling error only; "
        "the spread over training seeds needs more runs.",
        highlight=False,
    )
    if out is not None:
        payload = {
            "a": {"run": str(run_a), "scorer": a.scorer},
            "b": {"run": run_b, "scorer": b.scorer},
            "split": split,
            "protocol": protocol,
            "rows": [
                {
                    "group": r.group,
                    "metric": r.metric,
                    "n": r.n,
                    "a": r.a,
                    "b": r.b,
                    "difference": r.difference,
                    "standard_error": r.standard_error,
                    "interval95": list(r.interval95),
                    "reading": r.reading,
                }
                for r in rows
            ],
        }
        out.write_text(json.dumps(payload, indent=2))
        console.print(f"wrote {out}")
