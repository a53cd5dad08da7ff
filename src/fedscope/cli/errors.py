"""How a command reports a user's mistake: one clear line on stderr and exit status 2.

Shared by ``fedscope`` and the scripts under ``bench/``, so a missing data root or a bad
override reads the same everywhere. ``FEDSCOPE_DEBUG=1`` lets the traceback through instead.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import TypeVar

from rich.console import Console

from fedscope.data.errors import DataError, DatasetNotFoundError

T = TypeVar("T")

err_console = Console(stderr=True)

# Errors whose message is the whole story for a user: bad input files, missing data, a run
# directory in the way, a refused setting (pydantic's ValidationError and our ConfigError and
# PrivacySettingsError are ValueErrors).
_NAMED_ERRORS: tuple[type[BaseException], ...] = (
    DataError,
    DatasetNotFoundError,
    FileExistsError,
    FileNotFoundError,
)


def run_reporting_errors(entry: Callable[[], T]) -> T:
    """``entry()``; a user-facing error becomes one message on stderr and exit status 2."""
    if os.environ.get("FEDSCOPE_DEBUG"):
        return entry()
    try:
        return entry()
    except _NAMED_ERRORS as exc:
        err_console.print(f"[bold red]error:[/] {exc}", highlight=False)
        sys.exit(2)
    except (KeyError, ValueError) as exc:
        msg = exc.args[0] if isinstance(exc, KeyError) and exc.args else str(exc)
        err_console.print(f"[bold red]error:[/] {msg}", highlight=False)
        sys.exit(2)
