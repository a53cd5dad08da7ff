"""The ``fedscope`` command line: the application with every command registered."""

from __future__ import annotations

# Sub-command modules register themselves on `app` / `data_app` when imported.
from fedscope.cli import (  # noqa: F401
    data_commands,
    deploy_commands,
    eval_commands,
    experiment_commands,
    privacy_commands,
    semantics_commands,
    serve_commands,
    train_commands,
)
from fedscope.cli.app import app as app
from fedscope.cli.errors import run_reporting_errors


def main() -> None:
    """Entry point: user-facing errors are printed as one clear message, not a traceback.

    Set FEDSCOPE_DEBUG=1 to get the traceback instead.
    """
    run_reporting_errors(app)
