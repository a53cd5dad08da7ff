"""A run's privacy report: what each client was promised and what it spent.

Built from the run's plan (public) and the clients' ledgers. Epsilon spent is the
accountant's answer for the steps actually charged: with amplification, every completed
round up to the client's ``max_steps``; without it, the rounds in which the client sent.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any

from rich.table import Table

from fedscope.data.partition import PARTITION_FILE, load_partitioning
from fedscope.privacy.client import read_ledger
from fedscope.privacy.plan import PrivacyPlan, load_plan

REPORT_FILE = "privacy_report.json"


def build_report(run_dir: Path, rounds_done: int) -> dict[str, Any]:
    """The report after ``rounds_done`` completed rounds (ledger rows past it are ignored)."""
    run_dir = Path(run_dir)
    plan = load_plan(run_dir)
    clients = [_client_entry(plan, run_dir, c.client_id, rounds_done) for c in plan.clients]
    for entry, name in zip(clients, _client_names(run_dir, len(clients)), strict=True):
        if name is not None:
            entry["name"] = name
    spent = [c["epsilon_spent"] for c in clients]
    s = plan.settings
    return {
        "settings": s.model_dump(),
        "rounds_done": rounds_done,
        "rounds_planned": plan.rounds,
        "sample_rate": plan.sample_rate,
        "epsilon_total": s.epsilon,
        "delta_total": s.delta,
        "allocation": s.allocation,
        "calibration": s.calibration,
        "accountant": s.accountant,
        "epsilon_spent_max": max(spent),
        "epsilon_spent_min": min(spent),
        "epsilon_spent_sum": sum(spent),
        "clients_over_budget": [c["client"] for c in clients if c["over_budget"]],
        "clients_suspended": [c["client"] for c in clients if c["suspended_rounds"]],
        "clients_noise_raised": [c["client"] for c in clients if c["noise_raised_at_step"]],
        "clients": clients,
    }


def _client_names(run_dir: Path, n_clients: int) -> list[str | None]:
    """The clients' names where an assignment file named them (partition.scheme=file)."""
    path = run_dir / PARTITION_FILE
    if not path.is_file():
        return [None] * n_clients
    clients = load_partitioning(path).clients
    return [c.name for c in clients] if len(clients) == n_clients else [None] * n_clients


def _client_entry(plan: PrivacyPlan, run_dir: Path, client_id: int, rounds_done: int) -> dict:
    cp = plan.clients[client_id]
    rows = read_ledger(run_dir, client_id, before_round=rounds_done + 1)
    sent = [r for r in rows if r["status"] == "sent"]
    charged = rounds_done if plan.settings.amplification else len(sent)
    charged = min(charged, cp.max_steps)
    spent = plan.epsilon_spent(client_id, charged)
    clips = [r["clip"] for r in sent]
    return {
        "client": client_id,
        "n_users": cp.n_users,
        "epsilon_budget": cp.epsilon,
        "delta": cp.delta,
        "epsilon_spent": spent,
        # a tiny tolerance: the solver returns z meeting the budget to rounding
        "over_budget": spent > cp.epsilon * (1 + 1e-9),
        "steps_charged": charged,
        "max_steps": cp.max_steps,
        "noise_multipliers": [[s.first, s.last, s.z] for s in cp.segments],
        "noise_raised_at_step": cp.noise_raised_at,
        "rounds_sent": [r["round"] for r in sent],
        "suspended_rounds": [r["round"] for r in rows if r["status"] == "suspended"],
        "clip_thresholds": clips,
        "update_norms": [r["norm"] for r in sent],
        "clipped_share": (sum(r["clipped"] for r in sent) / len(sent)) if sent else None,
        "median_clip": statistics.median(clips) if clips else None,
    }


def write_report(run_dir: Path, rounds_done: int) -> dict[str, Any]:
    report = build_report(run_dir, rounds_done)
    (Path(run_dir) / REPORT_FILE).write_text(json.dumps(report, indent=1))
    return report


def report_table(report: dict[str, Any], max_rows: int = 60) -> Table:
    """A readable summary: one row per client (the first ``max_rows``)."""
    s = report["settings"]
    title = (
        f"Privacy: eps_total={s['epsilon']:g} ({report['allocation']}), "
        f"delta_total={s['delta']:g}, beta={s['beta']:g}, calibration={report['calibration']}, "
        f"accountant={report['accountant']}, rounds {report['rounds_done']}/"
        f"{report['rounds_planned']}, q={report['sample_rate']:g}"
    )
    table = Table(title=title, title_justify="left")
    for col in (
        "client",
        "|U_k|",
        "eps_k",
        "eps spent",
        "z",
        "rounds sent",
        "median C_k",
        "clipped",
        "suspended",
    ):
        table.add_column(col, justify="right")
    for c in report["clients"][:max_rows]:
        zs = list(dict.fromkeys(z for _, _, z in c["noise_multipliers"]))
        table.add_row(
            str(c["client"]) + (f" ({c['name']})" if "name" in c else ""),
            str(c["n_users"]),
            f"{c['epsilon_budget']:.4g}",
            f"{c['epsilon_spent']:.4g}" + (" OVER" if c["over_budget"] else ""),
            " → ".join(f"{z:.4g}" for z in zs),
            str(len(c["rounds_sent"])),
            "-" if c["median_clip"] is None else f"{c['median_clip']:.3g}",
            "-" if c["clipped_share"] is None else f"{100 * c['clipped_share']:.0f}%",
            (f"from round {c['suspended_rounds'][0]}" if c["suspended_rounds"] else "-"),
        )
    if len(report["clients"]) > max_rows:
        table.caption = f"{len(report['clients']) - max_rows} more clients in {REPORT_FILE}"
    return table
