"""``fedscope data ...``: list, stats, validate."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Literal

import typer
from rich.table import Table

from fedscope.cli.app import DataDir, Sets, console, data_app, err_console, parse_sets
from fedscope.config import ConfigError
from fedscope.data import load_dataset
from fedscope.data.registry import DATA_DIR_ENV, available, resolve_data_dir
from fedscope.data.stats import dataset_stats
from fedscope.data.validate import validate_path

Format = Annotated[Literal["table", "json"], typer.Option("--format", help="Output format.")]


@data_app.command("list")
def list_datasets(data_dir: DataDir = None) -> None:
    """List the data sets fedscope knows and whether their files are present."""
    root = resolve_data_dir(data_dir)
    table = Table(title=f"data root: {root or f'(not set: --data-dir or ${DATA_DIR_ENV})'}")
    for col in ("name", "folder", "present", "description"):
        table.add_column(col)
    for s in available():
        if s.folder is None:
            present = "generated"
        elif root is None:
            present = "?"
        else:
            present = (
                "yes" if all((root / s.folder / f).is_file() for f in s.required_files) else "no"
            )
        table.add_row(s.name, s.folder or "–", present, s.description)
    console.print(table)


@data_app.command("stats")
def stats(
    name: Annotated[str, typer.Argument(help="Data set name (see `fedscope data list`).")],
    data_dir: DataDir = None,
    fmt: Format = "table",
    option: Sets = None,
    no_cache: Annotated[bool, typer.Option("--no-cache", help="Parse the sources again.")] = False,
) -> None:
    """Users, items per domain, split sizes, sequence lengths and text coverage."""
    ds = load_dataset(name, data_dir, use_cache=not no_cache, **parse_sets(option))
    st = dataset_stats(ds)
    if fmt == "json":
        console.print_json(json.dumps(st))
        return
    console.print(f"[bold]{st['name']}[/]  protocol: [bold]{st['protocol']}[/]")
    if st["protocol_note"]:
        console.print(f"  {st['protocol_note']}", highlight=False)
    console.print(
        f"users {st['users']:,} (with interactions {st['users_with_interactions']:,}, "
        f"in 2+ domains {st['users_in_two_or_more_domains']:,}) · sequences {st['sequences']:,} · "
        f"interactions {st['interactions']:,} · items {st['items_total']:,}"
    )
    sp = st["splits"]
    console.print(
        f"splits: train interactions {sp['train_interactions']:,} in {sp['train_sequences']:,} "
        f"sequences · valid {sp['valid_instances']:,} · test {sp['test_instances']:,}"
    )
    table = Table(title="per domain")
    table.add_column("")
    for d in st["domains"]:
        table.add_column(d["name"], justify="right")

    def row(label: str, fn) -> None:  # one statistic across domains
        table.add_row(label, *(fn(d) for d in st["domains"]))

    row("items", lambda d: f"{d['items']:,}")
    row("items interacted", lambda d: f"{d['distinct_items_interacted']:,}")
    row("interactions", lambda d: f"{d['interactions']:,}")
    row("users active", lambda d: f"{d['users_active']:,}")
    row("valid targets", lambda d: f"{d['valid_targets']:,}")
    row("test targets", lambda d: f"{d['test_targets']:,}")
    for key, label in (
        ("p50", "per-user length p50"),
        ("mean", "per-user length mean"),
        ("max", "per-user length max"),
    ):
        row(label, lambda d, key=key: str(d["user_sequence_length"].get(key, "–")))
    attrs = sorted({a for d in st["domains"] for a in d["text_coverage"]})
    for a in attrs:
        row(f"{a} coverage", lambda d, a=a: f"{100 * d['text_coverage'].get(a, 0.0):.1f}%")
    if not attrs:
        row("text coverage", lambda d: "none")
    console.print(table)
    ln = st["user_sequence_length"]
    if ln.get("count"):
        pct = " ".join(f"p{p}={ln[f'p{p}']:g}" for p in (10, 25, 50, 75, 90))
        console.print(
            f"interactions per user: min {ln['min']} · {pct} · mean {ln['mean']} · max {ln['max']}"
        )
    for what, count in st["dropped"].items():
        console.print(f"[yellow]left out by the protocol:[/] {what}: {count:,}")
    for note in st["notes"]:
        console.print(f"note: {note}", highlight=False)


@data_app.command("validate")
def validate(
    path: Annotated[Path, typer.Argument(help="A data file or a data set folder.")],
) -> None:
    """Check a file or folder and list every problem with its file and line."""
    problems, what = validate_path(path)
    if not problems:
        console.print(f"[green]OK[/]: no problems found ({what})")
        return
    for p in problems:
        err_console.print(str(p), highlight=False, soft_wrap=True)
    err_console.print(f"[bold red]{len(problems)} problem(s)[/] ({what})")
    raise typer.Exit(1)


@data_app.command("export")
def export(
    name: Annotated[str, typer.Argument(help="Data set name (see `fedscope data list`).")],
    to: Annotated[Path, typer.Option("--to", help="Folder to write the CSV files into.")],
    data_dir: DataDir = None,
    option: Sets = None,
    force: Annotated[
        bool, typer.Option("--force", help="Overwrite interactions.csv/items.csv already there.")
    ] = False,
) -> None:
    """Write a data set as interactions.csv and items.csv: the `interactions` format, which
    is how your own data comes in (a template, or a conversion of a known format)."""
    from fedscope.data.formats import interactions

    existing = [
        to / f
        for f in (interactions.INTERACTIONS_FILE, interactions.ITEMS_FILE)
        if (to / f).exists()
    ]
    if existing and not force:
        raise ConfigError(
            f"{', '.join(map(str, existing))} already exist(s); pass --force to overwrite"
        )
    ds = load_dataset(name, data_dir, **parse_sets(option))
    try:
        written = interactions.write(ds, to)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    console.print(
        f"wrote {written[0]} ({len(ds.items):,} interactions) and {written[1]} ({ds.n_items_total:,} items); load them with "
        f"`--set data.name=interactions --set data.data_dir={to}`",
        highlight=False,
    )
    if not ds.protocol.endswith("loo"):
        console.print(
            f"note: the files hold the interactions, not {name}'s own split ({ds.protocol}); "
            "loaded back, they are split by leave-one-out",
            highlight=False,
        )
