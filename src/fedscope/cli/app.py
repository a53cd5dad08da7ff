"""The ``fedscope`` application object and what every command module shares (console,
common options).

Kept apart from :mod:`fedscope.cli.main`, which imports the command modules, so that a
command module can be imported on its own without a circular import."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from fedscope import __version__
from fedscope.cli.errors import err_console as err_console  # re-exported to the commands

app = typer.Typer(
    name="fedscope",
    help="Privacy-preserving federated cross-domain sequential recommendation.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
data_app = typer.Typer(help="Inspect and check data sets.", no_args_is_help=True)
app.add_typer(data_app, name="data")

console = Console()

DataDir = Annotated[
    Path | None,
    typer.Option(
        "--data-dir",
        help="Folder holding the real data sets (default: $FEDSCOPE_DATA_DIR).",
        show_default=False,
    ),
]
Overrides = Annotated[
    list[str] | None,
    typer.Option("--set", help="Override a config value: section.key=value (repeatable)."),
]
ConfigFile = Annotated[Path | None, typer.Option("--config", help="TOML or JSON config file.")]
NewRunDir = Annotated[
    Path | None, typer.Option("--run-dir", help="Run directory (default: output_dir/<name>).")
]
Sets = Annotated[
    list[str] | None,
    typer.Option("--set", help="Loader option KEY=VALUE (value parsed as JSON when possible)."),
]


def parse_sets(items: list[str] | None) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in items or []:
        if "=" not in item:
            raise typer.BadParameter(f"expected KEY=VALUE, got {item!r}", param_hint="--set")
        key, value = item.split("=", 1)
        try:
            out[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            out[key.strip()] = value
    return out


def _version(value: bool) -> None:
    if value:
        console.print(f"fedscope {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Show the version.")
    ] = False,
) -> None:
    """fedscope: federated cross-domain sequential recommendation (FedSCOPE and baselines)."""
