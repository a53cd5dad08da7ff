"""``fedscope experiment`` (the paper's experiments, resumable) and ``fedscope report``."""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal

import typer
from rich.table import Table

from fedscope.cli.app import ConfigFile, app, console

if TYPE_CHECKING:
    from fedscope.experiments.suite.base import Table as ResultTable

DEFAULT_ROOT = Path("runs/experiments")

Root = Annotated[
    Path,
    typer.Option("--root", help="Where experiments keep their runs: ROOT/<experiment>/<mode>/."),
]


def _parse_seeds(text: str | None) -> list[int] | None:
    if text is None:
        return None
    try:
        seeds = [int(s) for s in text.replace(",", " ").split()]
    except ValueError as exc:
        raise typer.BadParameter(f"expected integers such as 0,1,2; got {text!r}") from exc
    if not seeds:
        raise typer.BadParameter("no seed given", param_hint="--seeds")
    return seeds


def _list_experiments() -> None:
    from fedscope.experiments.suite import available

    table = Table(title="experiments (fedscope experiment NAME --quick|--reduced|--full)")
    table.add_column("name")
    table.add_column("paper")
    table.add_column("title")
    table.add_column("runs quick/reduced/full (per seed)", justify="right")
    for name, exp in available().items():
        counts = "/".join(str(len(exp.runs(m))) for m in ("quick", "reduced", "full"))
        table.add_row(name, exp.paper, exp.title, counts)
    console.print(table)


@app.command("experiment")
def experiment(
    name: Annotated[str, typer.Argument(help="Experiment name, or 'list' to list them.")],
    quick: Annotated[
        bool, typer.Option("--quick", help="Generated data set, minutes on 2 cores.")
    ] = False,
    reduced: Annotated[
        bool, typer.Option("--reduced", help="Real data, the documented cut-down grid.")
    ] = False,
    full: Annotated[
        bool, typer.Option("--full", help="Real data, the paper's grid (the default).")
    ] = False,
    root: Root = DEFAULT_ROOT,
    seeds: Annotated[
        str | None, typer.Option("--seeds", help="Seeds instead of the mode's, e.g. 0,1,2.")
    ] = None,
    overrides: Annotated[
        list[str] | None,
        typer.Option("--set", help="Override a config value in every run: section.key=value."),
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="List the runs, their overrides and which are stored.")
    ] = False,
    only: Annotated[
        list[str] | None,
        typer.Option(
            "--only",
            help="Train only these runs (names as in --dry-run's run directories, without "
            "the -s<seed> suffix; comma-separated, or --only repeated); the others are "
            "indexed as with --stored-only.",
        ),
    ] = None,
    jobs: Annotated[
        int,
        typer.Option(
            "--jobs",
            min=1,
            help="Train this many runs at once, each in its own process (a run itself uses "
            "federation.parallel_clients workers of train.threads threads).",
        ),
    ] = 1,
    progress_every: Annotated[
        float,
        typer.Option(
            "--progress-every",
            min=0,
            help="Seconds between the progress lines of the runs being trained (0: none).",
        ),
    ] = 60.0,
    stored_only: Annotated[
        bool,
        typer.Option(
            "--stored-only",
            help="Train nothing: index the runs already stored and list the others as not "
            "run, so that `fedscope report` shows a partial grid.",
        ),
    ] = False,
) -> None:
    """Run (or resume) one of the paper's experiments; finished runs are reused."""
    from fedscope.experiments.suite import get
    from fedscope.experiments.suite.execute import check_only, execute
    from fedscope.experiments.suite.execute import dry_run as plan_rows
    from fedscope.processes import signals_raise_interrupt

    if name == "list":
        _list_experiments()
        return
    if quick + reduced + full > 1:
        raise typer.BadParameter("choose one of --quick, --reduced, --full")
    mode: Literal["quick", "reduced", "full"] = (
        "quick" if quick else "reduced" if reduced else "full"
    )
    exp = get(name)
    plan = exp.plan(mode, _parse_seeds(seeds), overrides or [], root)
    # Every --only counts: a repeated option must not silently keep only its last value.
    selected = (
        None if not only else [n.strip() for item in only for n in item.split(",") if n.strip()]
    )
    try:
        check_only(plan, selected)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--only") from None
    console.print(f"[bold]{exp.name}[/] · {exp.paper} · mode {mode} · root {root}", highlight=False)
    if dry_run:
        rows = plan_rows(plan, root, selected)
        console.print(
            f"{len(rows)} runs (state: new, interrupted = resumed, stored = reused, "
            "in use = being trained by another process, skipped, other settings = refused "
            "until moved or deleted):",
            soft_wrap=True,
        )
        for row in rows:
            shared = f" (shared from {row['shared_from']})" if row["shared_from"] != name else ""
            console.print(
                f"  [{row['state']}] {row['label']} · seed {row['seed']} · {row['run_dir']}"
                f"{shared} · {' '.join(row['overrides'])}",
                markup=False,
                highlight=False,
                soft_wrap=True,
            )
            for difference in row["differences"]:
                console.print(f"      {difference}", markup=False, highlight=False, soft_wrap=True)
        console.print(
            "every run: "
            + (f"--config {plan.config_file} " if plan.config_file else "")
            + " ".join(plan.base_overrides),
            highlight=False,
            soft_wrap=True,
        )
        for note in plan.notes:
            console.print(f"note: {note}", highlight=False, soft_wrap=True)
        for item in plan.missing:
            console.print(f"missing: {item}", highlight=False, soft_wrap=True)
        return
    t0 = time.perf_counter()
    try:
        with signals_raise_interrupt():
            index = execute(
                exp,
                plan,
                root,
                # One line per message even when stdout is a log file (rich would fold at 80
                # columns), so that `grep` finds a run's progress lines whole.
                echo=lambda s: console.print(s, highlight=False, soft_wrap=True),
                train=not stored_only,
                only=selected,
                jobs=jobs,
                progress_every=progress_every,
            )
    except KeyboardInterrupt:
        console.print(
            f"interrupted after {time.perf_counter() - t0:.0f}s; what was done is kept "
            "(finished runs, the last checkpoint of those in training, cached semantic "
            "answers) and the same command resumes from there (--dry-run lists the "
            "interrupted runs)",
            highlight=False,
            soft_wrap=True,
        )
        raise typer.Exit(130) from None
    done = sum(r["status"] == "done" for r in index["runs"])
    console.print(
        f"{done}/{len(index['runs'])} runs finished in {time.perf_counter() - t0:.0f}s · index "
        f"{root / exp.name / mode / 'experiment.json'} · `fedscope report --root {root}`",
        highlight=False,
        soft_wrap=True,
    )


@app.command("report")
def report(
    root: Root = DEFAULT_ROOT,
    out: Annotated[Path, typer.Option("--out", help="Output folder.")] = Path("report"),
    fmt: Annotated[
        Literal["markdown", "html"], typer.Option("--format", help="markdown or html.")
    ] = "markdown",
    common_seeds: Annotated[
        bool,
        typer.Option(
            "--common-seeds",
            help="Average each experiment over the seeds every one of its rows finished, so that "
            "rows are compared on the same seeds (the report says which runs were left out).",
        ),
    ] = False,
) -> None:
    """One document (tables and PNG figures) from every stored experiment under --root."""
    from fedscope.experiments.suite.report import write_report

    path = write_report(
        root, out, fmt, echo=lambda s: console.print(s, highlight=False), common_seeds=common_seeds
    )
    console.print(f"wrote {path}", highlight=False)


@app.command("tune")
def tune(
    name: Annotated[str, typer.Argument(help="The grid's name: its folder under --root.")],
    grid: Annotated[
        list[str],
        typer.Option(
            "--grid",
            help="An axis: KEY=V1,V2,... (or KEY=[JSON list] for values with commas); "
            "repeat for more axes: every combination is a point.",
        ),
    ],
    config: ConfigFile = None,
    overrides: Annotated[
        list[str] | None,
        typer.Option("--set", help="Override a config value in every point: section.key=value."),
    ] = None,
    seeds: Annotated[
        str, typer.Option("--seeds", help="Seeds of every point, averaged, e.g. 0,1,2.")
    ] = "0",
    metric: Annotated[
        Literal["MRR", "HR@10", "NDCG@10", "HR@5", "NDCG@5"],
        typer.Option("--metric", help="Validation metric that ranks the points (overall)."),
    ] = "MRR",
    protocol: Annotated[
        Literal["sampled", "full"],
        typer.Option("--protocol", help="Validation protocol that ranks the points."),
    ] = "sampled",
    root: Annotated[
        Path, typer.Option("--root", help="Where grids keep their runs: ROOT/<name>/grid/.")
    ] = Path("runs/tune"),
    jobs: Annotated[int, typer.Option("--jobs", min=1, help="Train this many points at once.")] = 1,
    progress_every: Annotated[
        float,
        typer.Option("--progress-every", min=0, help="Seconds between progress lines (0: none)."),
    ] = 60.0,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="List the points and which are stored.")
    ] = False,
) -> None:
    """Grid search on validation: train (or reuse) every point of a grid, rank the points by a
    validation metric averaged over seeds, and show the test numbers of the best point only."""
    from fedscope.experiments import tune as grid_search
    from fedscope.experiments.suite.base import rank_on_validation
    from fedscope.experiments.suite.execute import dry_run as plan_rows
    from fedscope.experiments.suite.execute import execute, load_stored

    axes = [grid_search.parse_axis(g) for g in grid]
    exp = grid_search.GridSearch(name, axes)
    plan = exp.plan_grid(config, overrides or [], _parse_seeds(seeds) or [0], root)
    folder = grid_search.tune_folder(root, name)
    console.print(f"[bold]tune {name}[/] · root {root}", highlight=False)

    def echo(line: str) -> None:
        console.print(line, markup=False, highlight=False, soft_wrap=True)

    if dry_run:
        for row in plan_rows(plan, root):
            echo(f"  [{row['state']}] {row['label']} · seed {row['seed']} · {row['run_dir']}")
            for difference in row["differences"]:
                echo(f"      {difference}")
        for note in plan.notes:
            echo(f"note: {note}")
        return
    index = execute(exp, plan, root, echo=echo, jobs=jobs, progress_every=progress_every)
    stored = load_stored(folder / "experiment.json")
    ranking = rank_on_validation(stored, metric, protocol)
    path = grid_search.write_result(stored, ranking, metric, protocol)
    _print_table(grid_search.ranking_table(ranking, metric, protocol))
    if ranking:
        _print_table(grid_search.best_test(ranking[0], stored))
    unfinished = [r for r in index["runs"] if r["status"] != "done"]
    for r in unfinished:
        echo(
            f"not finished: {r['run_dir']} ({r['status']}{': ' + r['note'] if r.get('note') else ''})"
        )
    echo(grid_search.best_point_line(ranking) + f" · ranking in {path}")


def _print_table(table: ResultTable) -> None:
    from fedscope.evaluation.tables import terminal_table

    shown = terminal_table(table.title)
    shown.caption = table.caption or None
    for i, column in enumerate(table.columns):
        if i < 2:
            shown.add_column(column, overflow="fold")
        else:
            shown.add_column(column, justify="right")
    for row in table.rows:
        shown.add_row(*row)
    console.print(shown)
