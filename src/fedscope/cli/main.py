"""The ``fedscope`` command line."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from fedscope import __version__
from fedscope.cli.errors import err_console as err_console  # re-exported to the commands
from fedscope.cli.errors import run_reporting_errors

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


# Sub-command modules register themselves on `app` / `data_app` when imported.
from fedscope.cli import (  # noqa: E402,F401
    data_commands,
    deploy_commands,
    eval_commands,
    experiment_commands,
    privacy_commands,
    semantics_commands,
    serve_commands,
    train_commands,
)


def main() -> None:
    """Entry point: user-facing errors are printed as one clear message, not a traceback.

    Set FEDSCOPE_DEBUG=1 to get the traceback instead.
    """
    run_reporting_errors(app)
