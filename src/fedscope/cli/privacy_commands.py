"""``fedscope privacy`` (the report of a run), ``fedscope privacy-plan`` (what a budget implies,
before training) and ``fedscope align`` (PSI user alignment)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from fedscope.cli.app import ConfigFile, Overrides, app, console
from fedscope.cli.train_commands import _print_privacy
from fedscope.config import ConfigError, load_config
from fedscope.experiments import runner
from fedscope.federation import run_dir as layout

if TYPE_CHECKING:
    from fedscope.privacy.plan import PrivacyPlan


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


@app.command("privacy-plan")
def privacy_plan(
    config: ConfigFile = None,
    overrides: Overrides = None,
    json_out: Annotated[
        Path | None,
        typer.Option(
            "--json",
            help="Also write the plan, each client's rounds sampled and epsilon after T, and "
            "rho per round to this JSON file.",
        ),
    ] = None,
) -> None:
    """What a privacy budget implies, before training: per client the budget, noise multiplier
    and rounds within budget, and how large the server's averaged noise is against the update
    it hides.

    Takes the same --config and --set as `fedscope train`; trains nothing and writes nothing
    but the --json file.
    """
    from fedscope.data import load_dataset
    from fedscope.privacy.plan import sends_per_client

    if json_out is not None and not json_out.parent.is_dir():
        raise ConfigError(f"--json {json_out}: folder {json_out.parent} does not exist")

    cfg = load_config(config, overrides or [])
    if not cfg.privacy.enabled:
        raise ConfigError("privacy.epsilon is not set: nothing to plan (--set privacy.epsilon=E)")
    dataset = load_dataset(cfg.data.name, cfg.data.data_dir, **cfg.data.options)
    partitioning = runner.make_partitioning(cfg, dataset)
    plan = runner.privacy_plan_for(cfg, partitioning)
    ratio = runner.privacy_noise_ratio(cfg, dataset, partitioning, plan)
    f = cfg.federation
    sends = sends_per_client(cfg.seed, plan.rounds, len(plan.clients), f.fraction)
    eps_after = [plan.epsilon_spent(c.client_id, c.steps_planned) for c in plan.clients]
    console.print(_plan_table(plan, sends, eps_after))
    console.print(
        f"shared numbers per client update: d = {ratio.n_params:,} "
        f"(federation.shared_parameters={f.shared_parameters}); clients a round: m = "
        f"{ratio.clients_per_round} (C = {f.fraction:g} of K = {partitioning.n_clients})",
        highlight=False,
    )
    console.print(
        f"averaged noise / largest averaged update (rho, about z*sqrt(d/m)): median "
        f"{ratio.median:.3g}, smallest {ratio.smallest:.3g} over {len(ratio.per_round)} rounds",
        highlight=False,
    )
    if ratio.median > 1:
        console.print(
            "[bold yellow]rho > 1:[/] each round the server's averaged noise is larger than "
            "any update the clients can send. Fewer shared numbers "
            "(federation.shared_parameters), more clients a round or a larger budget lower it; "
            "BENCHMARKS.md (Privacy) has the accuracy measured at several values.",
            highlight=False,
        )
    if json_out is not None:
        record = {
            "plan": json.loads(plan.to_json()),
            "rounds_sampled": sends,
            "epsilon_after_T": eps_after,
            "noise_ratio": ratio.summary() | {"per_round": list(ratio.per_round)},
        }
        json_out.write_text(json.dumps(record, indent=1))
        console.print(f"written: {json_out}", highlight=False)


def _plan_table(plan: PrivacyPlan, sends: Sequence[int], eps_after: Sequence[float]) -> Table:
    s = plan.settings
    table = Table(
        title=(
            f"Privacy plan: eps_total={s.epsilon:g} ({s.allocation}), delta_total={s.delta:g}, "
            f"beta={s.beta:g}, calibration={s.calibration}, accountant={s.accountant}, "
            f"T={plan.rounds}, q={plan.sample_rate:g}"
        ),
        title_justify="left",
    )
    for col in (
        "client",
        "|U_k|",
        "eps_k",
        "delta_k",
        "z",
        "rounds sampled",
        "steps in budget",
        "eps after T",
    ):
        table.add_column(col, justify="right")
    for c in plan.clients:
        zs = list(dict.fromkeys(seg.z for seg in c.segments))
        table.add_row(
            str(c.client_id),
            str(c.n_users),
            f"{c.epsilon:.4g}",
            f"{c.delta:.3g}",
            " → ".join(f"{z:.4g}" for z in zs),
            str(sends[c.client_id]),
            f"{min(c.max_steps, c.steps_planned)}/{c.steps_planned}",
            f"{eps_after[c.client_id]:.4g}",
        )
    return table


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
