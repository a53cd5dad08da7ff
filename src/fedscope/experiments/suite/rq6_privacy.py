"""RQ6 (Figure 7): privacy-utility trade-off, HR@10 of the target domain against the budget.

The paper's RQ6 on Food-Kitchen: test HR@10 on Kitchen against eps_total in {0.25, 0.5, 1, 2,
4} for uniform DP and adaptive DP (beta in {0.3, 0.5, 0.7}), with delta in {1e-3, 1e-4,
1e-5}. Every point is one federated run, selected on validation like every other run; test is
evaluated once. The grid (:func:`build_grid`), the per-point rows, the table and the plot live
here; ``bench/privacy_utility.py`` is a command-line wrapper around them (CSV/JSON outputs,
``--only-plan``), and :class:`PrivacyUtility` is the suite's experiment.

Variants (every one at one delta, default 1e-5):

* ``uniform``: the paper's baseline, ``privacy.beta=0`` with fixed clipping
  (``privacy.clip_gamma=null``): every client gets eps_total / K (``split``).
* ``adaptive-b<B>``: ``privacy.beta=B`` with adaptive clipping (the configured
  ``privacy.clip_gamma``, default 1).
* ``adaptive-b<B>-d<D>``: the adaptive variant at one beta repeated at other deltas (the
  paper's robustness curves).

Plus a run without DP (same configuration, ``privacy.epsilon`` unset) and the popularity
floor, drawn as horizontal lines.
"""

from __future__ import annotations

import csv
import json
import math
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fedscope.config import ExperimentConfig
from fedscope.data import load_dataset
from fedscope.data.dataset import CrossDomainDataset
from fedscope.evaluation import chance_level
from fedscope.experiments import runner
from fedscope.experiments.suite import rq1_overall
from fedscope.experiments.suite.base import (
    Experiment,
    Figure,
    Mode,
    RunSpec,
    StoredExperiment,
    Summary,
    Table,
    legend_below,
)
from fedscope.privacy.plan import PrivacyPlan, load_plan

NODP = "nodp"
# Keys this script sets per point; a --set on them would be silently overridden.
CONTROLLED_KEYS = (
    "seed",
    "data.name",
    "privacy.epsilon",
    "privacy.delta",
    "privacy.beta",
    "privacy.clip_gamma",
    "privacy.allocation",
    "privacy.calibration",
    "federation.on_divergence",
)
CALIBRATION_NOTE = {
    "accountant": (
        "accountant calibration: one noise multiplier z_k per client, solved before training "
        "so that the accountant's epsilon after all T rounds equals eps_k"
    ),
    "per-round": (
        "per-round calibration (the paper's formula): z_k = sqrt(2 ln(1.25/delta_k)) / eps_k, "
        "which bounds one round; clients are suspended (privacy.on_exhausted) once the "
        "accountant reaches eps_k"
    ),
}
CSV_COLUMNS = (
    "variant",
    "eps_total",
    "delta",
    "beta",
    "clipping",
    "allocation",
    "calibration",
    "accountant",
    "amplification",
    "seed",
    "n_clients",
    "rounds",
    "n_users_min",
    "n_users_max",
    "eps_k_min",
    "eps_k_max",
    "noise_multiplier_min",
    "noise_multiplier_max",
    "noise_ratio",
    "steps_within_budget_min",
    "clients_to_suspend",
    "eps_planned_max",
    "eps_planned_min",
    "eps_spent_max",
    "eps_spent_min",
    "clients_over_budget",
    "clients_suspended",
    "rounds_done",
    "stopped_round",
    "selected_round",
    "domain",
    "hr10_sampled",
    "ndcg10_sampled",
    "hr10_full",
    "overall_hr10_sampled",
    "overall_ndcg10_sampled",
    "overall_hr10_full",
    "status",
    "note",
    "seconds",  # this call's wall time for the point: training when trained_now, else reading
    "trained_now",
    "run_dir",
)


@dataclass(frozen=True)
class Point:
    """One setting of the grid (run once per seed)."""

    variant: str
    eps_total: float | None  # None: the run without DP
    delta: float | None
    beta: float | None
    fixed_clipping: bool

    def run_name(self, allocation: str, calibration: str, seed: int) -> str:
        if self.eps_total is None:
            return f"{NODP}-s{seed}"
        return (
            f"{self.variant}-eps{self.eps_total:g}-d{self.delta:g}-{allocation}-{calibration}"
            f"-s{seed}"
        )

    def overrides(self, allocation: str, calibration: str) -> list[str]:
        if self.eps_total is None:
            return []
        sets = [
            f"privacy.epsilon={self.eps_total!r}",
            f"privacy.delta={self.delta!r}",
            f"privacy.beta={self.beta!r}",
            f"privacy.allocation={allocation}",
            f"privacy.calibration={calibration}",
            # A budget whose noise destroys the model is a point of the curve (stopped at
            # the round it diverged, selected among the rounds before), not a crash.
            "federation.on_divergence=stop",
        ]
        if self.fixed_clipping:
            sets.append("privacy.clip_gamma=null")
        return sets


def build_grid(
    eps_list: list[float], betas: list[float], deltas: list[float], delta: float, delta_beta: float
) -> list[Point]:
    """The no-DP reference first, then eps-major so that a grid stopped part-way has whole
    budgets of every variant."""
    points = [Point(NODP, None, None, None, False)]
    for eps in eps_list:
        points.append(Point("uniform", eps, delta, 0.0, True))
        for beta in betas:
            points.append(Point(f"adaptive-b{beta:g}", eps, delta, beta, False))
        for d in deltas:
            if d == delta and delta_beta in betas:
                continue  # that point is adaptive-b<delta_beta> itself
            name = f"adaptive-b{delta_beta:g}" + ("" if d == delta else f"-d{d:g}")
            points.append(Point(name, eps, d, delta_beta, False))
    return points


class PlanMaker:
    """Plans without training; the data set and partitioning are built once per setting."""

    def __init__(self) -> None:
        self._datasets: dict[str, CrossDomainDataset] = {}

    def plan_fields(self, cfg: ExperimentConfig) -> dict[str, Any]:
        """:func:`plan_fields` of the point's plan, with rho as a prepared run records it."""
        dataset = self._dataset(cfg)
        partitioning = runner.make_partitioning(cfg, dataset)
        plan = runner.privacy_plan_for(cfg, partitioning)
        ratio = runner.privacy_noise_ratio(cfg, dataset, partitioning, plan)
        return plan_fields(plan) | {"noise_ratio": ratio.median}

    def _dataset(self, cfg: ExperimentConfig) -> CrossDomainDataset:
        key = json.dumps([cfg.data.name, cfg.data.data_dir, cfg.data.options], sort_keys=True)
        if key not in self._datasets:
            self._datasets[key] = load_dataset(cfg.data.name, cfg.data.data_dir, **cfg.data.options)
        return self._datasets[key]


def run_plan_fields(run_dir: Path) -> dict[str, Any]:
    """:func:`plan_fields` of a prepared run, with the rho its run.json records (None for runs
    prepared before rho was recorded)."""
    meta = json.loads((Path(run_dir) / runner.RUN_FILE).read_text())
    ratio = meta.get("privacy_noise_ratio")
    return plan_fields(load_plan(run_dir)) | {
        "noise_ratio": None if ratio is None else ratio["median"]
    }


def plan_fields(plan: PrivacyPlan) -> dict[str, Any]:
    zs = [seg.z for c in plan.clients for seg in c.segments]
    planned = [plan.epsilon_spent(c.client_id, c.max_steps) for c in plan.clients]
    return {
        "n_clients": len(plan.clients),
        "rounds": plan.rounds,
        "n_users_min": min(c.n_users for c in plan.clients),
        "n_users_max": max(c.n_users for c in plan.clients),
        "eps_k_min": min(c.epsilon for c in plan.clients),
        "eps_k_max": max(c.epsilon for c in plan.clients),
        "noise_multiplier_min": min(zs),
        "noise_multiplier_max": max(zs),
        "steps_within_budget_min": min(c.max_steps for c in plan.clients),
        "clients_to_suspend": sum(c.max_steps < c.steps_planned for c in plan.clients),
        "eps_planned_max": max(planned),
        "eps_planned_min": min(planned),
    }


def pick_domain(results: dict[str, Any], wanted: str | None) -> str:
    domains = [
        g for g in results["test"]["sampled"][0]["metrics"] if "|" not in g and g != "overall"
    ]
    if wanted is not None:
        if wanted not in domains:
            raise ValueError(f"--domain {wanted!r}: the data set's domains are {domains}")
        return wanted
    # The paper's RQ6 target is Kitchen, the second domain of Food-Kitchen.
    return "Kitchen" if "Kitchen" in domains else domains[min(1, len(domains) - 1)]


def result_fields(results: dict[str, Any], domain: str) -> dict[str, Any]:
    sampled = results["test"]["sampled"][0]["metrics"]
    full = results["test"]["full"][0]["metrics"]
    stopped = results.get("stopped")
    out: dict[str, Any] = {
        "stopped_round": None if stopped is None else stopped["round"],
        "selected_round": results.get("selected_round"),
        "domain": domain,
        "hr10_sampled": sampled[domain]["HR@10"],
        "ndcg10_sampled": sampled[domain]["NDCG@10"],
        "hr10_full": full[domain]["HR@10"],
        "overall_hr10_sampled": sampled["overall"]["HR@10"],
        "overall_ndcg10_sampled": sampled["overall"]["NDCG@10"],
        "overall_hr10_full": full["overall"]["HR@10"],
    }
    privacy = results.get("privacy")
    if privacy is not None:
        out |= {
            "eps_spent_max": privacy["epsilon_spent_max"],
            "eps_spent_min": privacy["epsilon_spent_min"],
            "clients_over_budget": len(privacy["clients_over_budget"]),
            "clients_suspended": len(privacy["clients_suspended"]),
            "rounds_done": privacy["rounds_done"],
            "calibration": privacy["calibration"],
            "accountant": privacy["accountant"],
            "allocation": privacy["allocation"],
        }
    return out


def floors(results: dict[str, Any], domain: str) -> dict[str, float]:
    return {
        "hr10_sampled": results["test"]["sampled"][1]["metrics"][domain]["HR@10"],
        "ndcg10_sampled": results["test"]["sampled"][1]["metrics"][domain]["NDCG@10"],
        "hr10_full": results["test"]["full"][1]["metrics"][domain]["HR@10"],
    }


def base_row(point: Point, cfg: ExperimentConfig, seed: int, run_dir: str) -> dict[str, Any]:
    dp = point.eps_total is not None
    return {
        "variant": point.variant,
        "eps_total": point.eps_total,
        "delta": point.delta,
        "beta": point.beta,
        "clipping": ("fixed" if point.fixed_clipping else "adaptive") if dp else None,
        "allocation": cfg.privacy.allocation if dp else None,
        "calibration": cfg.privacy.calibration if dp else None,
        "accountant": cfg.privacy.accountant if dp else None,
        "amplification": cfg.privacy.amplification if dp else None,
        "seed": seed,
        "n_clients": cfg.partition.n_clients,
        "rounds": cfg.federation.rounds,
        "run_dir": run_dir,
    }


def infeasible(cfg: ExperimentConfig, exc: Exception) -> dict[str, Any]:
    return {
        "status": f"infeasible at max_noise_multiplier={cfg.privacy.max_noise_multiplier:g}",
        "note": str(exc),
    }


# --- outputs -----------------------------------------------------------------------------------


def write_csv(rows: list[dict[str, Any]], path: Path) -> None:
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=CSV_COLUMNS, extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: "" if row.get(k) is None else row.get(k) for k in CSV_COLUMNS})


def _num(x: float | None, fmt: str) -> str:
    return "-" if x is None else format(x, fmt)


def _pct(xs: list[float]) -> str:
    if not xs:
        return "-"
    mean = 100 * statistics.fmean(xs)
    return f"{mean:.2f}" if len(xs) == 1 else f"{mean:.2f} ± {100 * statistics.pstdev(xs):.2f}"


def _range(lo: float | None, hi: float | None, fmt: str) -> str:
    if lo is None:
        return "-"
    return _num(lo, fmt) if math.isclose(lo, hi, rel_tol=1e-9) else f"{lo:{fmt}}–{hi:{fmt}}"


def grouped(rows: list[dict[str, Any]]) -> dict[tuple, list[dict[str, Any]]]:
    """Rows of the same point over seeds, in grid order."""
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault((r["variant"], r["eps_total"], r["delta"]), []).append(r)
    return groups


def markdown(rows: list[dict[str, Any]], domain: str | None, only_plan: bool) -> str:
    head, body = table_cells(rows, domain, only_plan)
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    return "\n".join(lines + ["| " + " | ".join(cells) + " |" for cells in body])


def table_cells(
    rows: list[dict[str, Any]], domain: str | None, only_plan: bool
) -> tuple[list[str], list[list[str]]]:
    """Column heads and one row of cells per grid point (mean ± std over seeds)."""
    d = domain or "domain"
    head = [
        "variant",
        "eps_total",
        "delta",
        "beta",
        "clipping",
        "eps_k",
        "z (noise multiplier)",
        "rho",
        "steps within budget",
    ]
    if only_plan:
        head += ["eps planned (max)", "status"]
    else:
        head += [
            "eps spent max (min)",
            "suspended",
            f"{d} HR@10",
            f"{d} NDCG@10",
            f"{d} HR@10 full",
            "overall HR@10",
            "n",
            "status",
        ]
    body: list[list[str]] = []
    for runs in grouped(rows).values():
        r = runs[0]
        done = [x for x in runs if x["status"] == "done"]
        cells = [
            r["variant"],
            _num(r["eps_total"], "g"),
            _num(r["delta"], "g"),
            _num(r["beta"], "g"),
            r["clipping"] or "-",
            _range(r.get("eps_k_min"), r.get("eps_k_max"), ".4g"),
            _range(r.get("noise_multiplier_min"), r.get("noise_multiplier_max"), ".4g"),
            _num(r.get("noise_ratio"), ".3g"),
            _num(r.get("steps_within_budget_min"), "d")
            + (f" ({r['clients_to_suspend']} clients cut)" if r.get("clients_to_suspend") else ""),
        ]
        if only_plan:
            cells += [_num(r.get("eps_planned_max"), ".4g"), r["status"]]
        else:
            spent = (
                f"{max(x['eps_spent_max'] for x in done):.4g} "
                f"({min(x['eps_spent_min'] for x in done):.4g})"
                if done and done[0].get("eps_spent_max") is not None
                else "-"
            )
            suspended = (
                str(max(x["clients_suspended"] for x in done))
                if done and done[0].get("clients_suspended") is not None
                else "-"
            )
            cells += [
                spent,
                suspended,
                _pct([x["hr10_sampled"] for x in done]),
                _pct([x["ndcg10_sampled"] for x in done]),
                _pct([x["hr10_full"] for x in done]),
                _pct([x["overall_hr10_sampled"] for x in done]),
                str(len(done)),
                _status(runs),
            ]
        body.append(cells)
    return head, body


def beta_note(rows: list[dict[str, Any]], tolerance: float = 0.01) -> str | None:
    """Say so when beta cannot matter: with clients of (nearly) equal size every beta gives
    every client (nearly) the same budget, so the adaptive curves at different beta are the
    same runs up to that difference, not evidence about beta."""
    betas = {r["beta"] for r in rows if r.get("clipping") == "adaptive"}
    planned = [r for r in rows if r.get("eps_k_min") and r.get("n_users_min")]
    if len(betas) < 2 or not planned:
        return None
    spread = max(r["eps_k_max"] / r["eps_k_min"] - 1 for r in planned)
    if spread > tolerance:
        return None
    n_lo = min(r["n_users_min"] for r in planned)
    n_hi = max(r["n_users_max"] for r in planned)
    return (
        f"clients of {n_lo}-{n_hi} users: at every point the clients' eps_k lie within "
        f"{100 * spread:.2g}% of each other, so beta (which only reweights budgets by client "
        "size) moves no budget by more than that; the curves at different beta repeat each "
        "other up to it"
    )


def _status(runs: list[dict[str, Any]]) -> str:
    text = ", ".join(sorted({x["status"] for x in runs}))
    stops = sorted({x["stopped_round"] for x in runs if x.get("stopped_round") is not None})
    if stops:
        text += f"; diverged, stopped in round {', '.join(str(r) for r in stops)}"
    return text


def plot(
    rows: list[dict[str, Any]],
    reference: dict[str, Any],
    path: Path,
    title: str,
) -> Path | None:
    """HR@10 of the domain against eps_total, sampled and full ranking side by side."""
    curves: dict[str, dict[float, list[dict[str, Any]]]] = {}
    for r in rows:
        if r["eps_total"] is None or r["status"] != "done":
            continue
        curves.setdefault(r["variant"], {}).setdefault(r["eps_total"], []).append(r)
    if not curves:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    domain = reference["domain"]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), dpi=120)
    panels = (
        ("hr10_sampled", f"sampled ({reference.get('n_negatives')} negatives)"),
        ("hr10_full", "full ranking"),
    )
    for ax, (key, label) in zip(axes, panels, strict=True):
        for variant, by_eps in curves.items():
            xs = sorted(by_eps)
            ys = [100 * statistics.fmean(r[key] for r in by_eps[x]) for x in xs]
            err = [100 * statistics.pstdev([r[key] for r in by_eps[x]]) for x in xs]
            style = "-." if "-d" in variant else "-"
            ax.errorbar(xs, ys, yerr=err, marker="o", ms=3.5, ls=style, capsize=2, label=variant)
        if reference.get("no_dp") is not None:
            ax.axhline(100 * reference["no_dp"][key], color="black", ls="--", label="no DP")
        if reference.get("popularity") is not None:
            ax.axhline(100 * reference["popularity"][key], color="grey", ls=":", label="popularity")
        n_negatives = reference.get("n_negatives")
        if key == "hr10_sampled" and n_negatives:
            # Where the DP points sit: a scorer that cannot tell the candidates apart.
            chance = 100 * chance_level(n_negatives + 1)["HR@10"]
            ax.axhline(chance, color="tab:red", ls=(0, (1, 3)), lw=1, label="random ranking")
        ax.set_xscale("log")
        ticks = sorted({x for by_eps in curves.values() for x in by_eps})
        ax.set_xticks(ticks, [f"{x:g}" for x in ticks])
        ax.minorticks_off()
        ax.set_xlabel("ε_total")
        ax.set_ylabel(f"test HR@10 on {domain} (%)")
        ax.set_title(label)
        ax.grid(alpha=0.3)
    # Under the panels: inside, the legend covers the reference lines near the top.
    bottom = legend_below(fig, axes[0], ncol=5)  # the sampled panel has every line
    fig.suptitle(title, fontsize=9)
    fig.tight_layout(rect=(0, bottom, 1, 1))
    fig.savefig(path)
    plt.close(fig)
    return path


# --- the suite's experiment -------------------------------------------------------------------

NAME = "rq6_privacy"
ALLOCATION, CALIBRATION, DELTA, DELTA_BETA = "split", "accountant", 1e-5, 0.5
# (eps list, betas, deltas, seeds) per mode
GRIDS: dict[str, tuple[list[float], list[float], list[float], tuple[int, ...]]] = {
    "full": ([0.25, 0.5, 1.0, 2.0, 4.0], [0.3, 0.5, 0.7], [1e-3, 1e-4, 1e-5], (0, 1, 2, 3, 4)),
    "reduced": ([0.25, 1.0, 4.0], [0.5], [1e-3, 1e-5], (0,)),
    "quick": ([1.0, 4.0], [0.5], [1e-3, 1e-5], (0,)),
}


def point_spec(point: Point, seeds: tuple[int, ...], mode: Mode) -> RunSpec:
    tags = (
        ("variant", point.variant),
        ("eps_total", point.eps_total),
        ("delta", point.delta),
        ("beta", point.beta),
        ("fixed_clipping", point.fixed_clipping),
    )
    if point.eps_total is None:
        # Without DP the run is RQ1's FedSCOPE run: read it, do not train it again.
        shared = rq1_overall.spec_for("fedscope", "federated", mode)
        return RunSpec("no DP", shared.name, shared.overrides, seeds, shared.owner, tags)
    name = point.run_name(ALLOCATION, CALIBRATION, 0).removesuffix("-s0")
    return RunSpec(
        f"{point.variant} ε={point.eps_total:g}",
        name,
        (
            "method=fedscope",
            "federation.regime=federated",
            *point.overrides(ALLOCATION, CALIBRATION),
        ),
        seeds,
        NAME,
        tags,
    )


def _point_of(tags: dict[str, Any]) -> Point:
    return Point(
        tags["variant"], tags["eps_total"], tags["delta"], tags["beta"], tags["fixed_clipping"]
    )


class PrivacyUtility(Experiment):
    name = NAME
    title = "Privacy-utility trade-off: adaptive against uniform DP"
    paper = "RQ6, Figure 7"
    description = (
        "Federated FedSCOPE under uniform DP (beta=0, fixed clipping) and adaptive DP (beta, "
        "adaptive clipping) over eps_total, and the adaptive variant at other deltas; test "
        "HR@10 of the target domain (Kitchen on Food-Kitchen) against eps_total, with the run "
        "without DP and the popularity floor."
    )

    def runs(self, mode: Mode) -> list[RunSpec]:
        eps, betas, deltas, seeds = GRIDS[mode]
        grid = build_grid(eps, betas, deltas, DELTA, DELTA_BETA)
        return [point_spec(p, seeds, mode) for p in grid]

    def notes(self, mode: Mode) -> list[str]:
        eps, betas, deltas, _ = GRIDS[mode]
        notes = [
            f"eps_total {eps}, betas {betas}, deltas {deltas} (adaptive beta={DELTA_BETA:g}), "
            f"allocation={ALLOCATION}, {CALIBRATION} calibration",
            CALIBRATION_NOTE[CALIBRATION],
        ]
        if mode == "reduced":
            notes.append(
                "reduced: three budgets, one adaptive beta, two deltas and, by default, one seed (the full "
                "grid is 31 runs per seed, about 9 h per seed on 2 cores)"
            )
        if mode == "quick":
            notes.append(
                "quick: with K=10 clients and a 'split' allocation each client's budget is "
                "eps_total/10, so the quick runs are heavily noised"
            )
        return notes

    def summarise(self, stored: StoredExperiment, figures: Path) -> Summary:
        out = Summary()
        if not stored.runs:
            return out
        domain = pick_domain(stored.runs[0].results, None)
        rows: list[dict[str, Any]] = []
        reference: dict[str, Any] = {"domain": domain, "no_dp": None, "popularity": None}
        no_dp = []
        for run in stored.runs:
            point = _point_of(dict(run.spec.tags))
            cfg = runner.read_config(run.run_dir)
            row = base_row(point, cfg, run.seed, str(run.run_dir))
            if point.eps_total is not None:
                row |= run_plan_fields(run.run_dir)
            row |= result_fields(run.results, domain) | {"status": "done"}
            rows.append(row)
            if reference["popularity"] is None:
                reference["popularity"] = floors(run.results, domain)
                reference["n_negatives"] = run.results["test"]["sampled"][0]["n_negatives"]
            if point.eps_total is None:
                no_dp.append({k: row[k] for k in ("hr10_sampled", "ndcg10_sampled", "hr10_full")})
        for entry in stored.index["runs"]:
            if entry.get("status") == "infeasible":
                tags = entry["tags"]
                rows.append(
                    {
                        "variant": tags["variant"],
                        "eps_total": tags["eps_total"],
                        "delta": tags["delta"],
                        "beta": tags["beta"],
                        "clipping": "fixed" if tags["fixed_clipping"] else "adaptive",
                        "seed": entry["seed"],
                        "status": "infeasible",
                        "note": entry.get("note"),
                    }
                )
        if no_dp:
            reference["no_dp"] = {k: statistics.fmean(x[k] for x in no_dp) for k in no_dp[0]}
        head, body = table_cells(rows, domain, only_plan=False)
        caption = []
        if reference["no_dp"] is not None:
            caption.append(f"no DP: {domain} HR@10 {100 * reference['no_dp']['hr10_sampled']:.2f}")
        caption.append(
            f"popularity floor: {domain} HR@10 {100 * reference['popularity']['hr10_sampled']:.2f}"
        )
        note = beta_note(rows)
        if note is not None:
            caption.append(note)
        out.tables.append(
            Table(
                f"Privacy-utility grid: test metrics (%) on {domain}",
                head,
                body,
                " · ".join(caption)
                + ". eps spent from the accountant; z: noise multipliers; rho: the server's "
                "averaged noise over the largest averaged update (median over rounds).",
            )
        )
        title = (
            f"{stored.index.get('dataset')} · allocation={ALLOCATION} · {CALIBRATION} "
            f"calibration · {stored.mode} mode"
        )
        path = figures / f"{self.name}-{stored.mode}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        if plot(rows, reference, path, title) is not None:
            out.figures.append(
                Figure(
                    f"Test HR@10 on {domain} against eps_total",
                    path,
                    "Mean ± std over seeds; dashed: no DP; dotted: popularity floor; sparse red "
                    "dots (sampled panel): random ranking.",
                )
            )
        return out


EXPERIMENT = PrivacyUtility()
