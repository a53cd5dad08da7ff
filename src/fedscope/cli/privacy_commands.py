"""``fedscope privacy`` (the report of a run) and ``fedscope align`` (PSI user alignment)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from fedscope.cli.main import app, console
from fedscope.cli.train_commands import _print_privacy
from fedscope.config import ConfigError
from fedscope.experiments import runner
from fedscope.federation import run_dir as layout


@app.command()
def privacy(
    run_dir: Annotated[Path, typer.Argument(help="A run directory trained with privacy.epsilon.")],
) -> None:
    """The run's privacy report: per client budget, epsilon spent, noise, clipping, suspensions
    (recomputed from the clients' ledgers up to the last completed round)."""
    from fedscope.privacy.plan import plan_path
    from fedscope.privacy.report import write_report

    if not plan_path(run_dir).is_file():
        raise ConfigError(f"{run_dir}: no privacy plan (was the run trained with privacy.epsilon?)")
    last = layout.last_checkpoint_path(run_dir)
    rounds_done = layout.load_checkpoint(last).round if last.is_file() else 0
    write_report(run_dir, rounds_done)
    _print_privacy(run_dir)


@app.command()
def align(
    run_dir: Annotated[Path, typer.Argument(help="A prepared run directory.")],
    fpr: Annotated[
        float, typer.Option(help="Bound on the chance of any false match over the alignment.")
    ] = 1e-9,
) -> None:
    """Find the users the run's clients share, by pairwise private set intersection (PSI).

    No client reveals an identifier that the other does not hold. Writes alignment.json.
    """
    from fedscope.privacy.alignment import ALIGNMENT_FILE, align_run

    if not (run_dir / runner.CONFIG_FILE).is_file():
        raise ConfigError(f"{run_dir}: not a run directory (no {runner.CONFIG_FILE})")
    out = align_run(run_dir, fpr)
    console.print(
        f"{out['pairs']} client pairs, {out['bytes'] / 1e6:.1f} MB exchanged, "
        f"{out['seconds']:.1f} s of PSI computation; false matches dropped: "
        f"{out['false_positives_dropped']}"
    )
    console.print(
        f"users aligned within a client (inter-domain term on): {out['users_aligned_locally']}; "
        f"user copies shared across clients (found by PSI; their inter-domain term is off): "
        f"{out['users_shared_across_clients']} · {run_dir / ALIGNMENT_FILE}"
    )
