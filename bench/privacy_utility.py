"""RQ6: privacy-utility trade-off, HR@10 of the target domain against the privacy budget.

The paper's RQ6 on Food-Kitchen: test HR@10 on Kitchen against eps_total in {0.25, 0.5, 1, 2,
4} for uniform DP and adaptive DP (beta in {0.3, 0.5, 0.7}), with delta in {1e-3, 1e-4,
1e-5}. Every point is one federated run through `fedscope.experiments.runner` (reused when a
finished run directory exists, continued when an interrupted one does), selected on
validation like every other run; test is evaluated once.

Variants (every one at --delta, default 1e-5):

* ``uniform``: the paper's baseline, ``privacy.beta=0`` with fixed clipping
  (``privacy.clip_gamma=null``): every client gets eps_total / K (``split``).
* ``adaptive-b<B>`` for B in --betas: ``privacy.beta=B`` with adaptive clipping (the
  configured ``privacy.clip_gamma``, default 1).
* ``adaptive-b<B>-d<D>`` for D in --deltas other than --delta: the adaptive variant at
  ``--delta-beta`` (default 0.5) repeated at other deltas (the paper's robustness curves).

Plus a run without DP (same configuration, ``privacy.epsilon`` unset) and the popularity
floor, drawn as horizontal lines. Every run uses ``privacy.allocation`` (--allocation,
default ``split``: the clients' eps_k sum to eps_total, as in the paper) and
``privacy.calibration`` (--calibration, default ``accountant``: z solved so the accountant's
epsilon after T rounds is eps_k; ``per-round``: the paper's formula, clients suspended when
they reach eps_k).

    FEDSCOPE_DATA_DIR=../shared/data python bench/privacy_utility.py --root bench/runs/rq6 \
        [--data food-kitchen] [--config configs/food-kitchen.toml] [--allocation split|mean] \
        [--calibration accountant|per-round] [--eps 0.25 0.5 1 2 4] [--betas 0.3 0.5 0.7] \
        [--deltas 1e-3 1e-4 1e-5] [--seeds 0] [--set key=value ...] [--only uniform nodp]
    ... --only-plan      # every point's plan (noise multipliers, feasibility); no training
    ... --report-only    # tabulate the finished runs only

A budget the plan refuses (privacy.PrivacySettingsError, e.g. a noise multiplier above
``privacy.max_noise_multiplier``) is a CSV row with status "infeasible at
max_noise_multiplier=..." instead of an error; raise the cap with
``--set privacy.max_noise_multiplier=...``.

Outputs (``--out PREFIX``, default bench/results/privacy_utility_<data>_<allocation>_
<calibration>, with ``_plan`` for --only-plan): PREFIX.csv (one row per point and seed),
PREFIX.json (the rows plus the references and the command), PREFIX.png (HR@10 of the domain
against eps_total, log x, one line per variant, means over seeds), and a Markdown table on
stdout.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import statistics
import sys
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fedscope.config import ExperimentConfig, load_config
from fedscope.data import load_dataset
from fedscope.data.dataset import CrossDomainDataset
from fedscope.experiments import runner
from fedscope.privacy import PrivacySettingsError
from fedscope.privacy.plan import PrivacyPlan, load_plan

REPO = Path(__file__).resolve().parents[1]
RESULTS_DIR = REPO / "bench" / "results"
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
    "eps_k_min",
    "eps_k_max",
    "noise_multiplier_min",
    "noise_multiplier_max",
    "steps_within_budget_min",
    "clients_to_suspend",
    "eps_planned_max",
    "eps_planned_min",
    "eps_spent_max",
    "eps_spent_min",
    "clients_over_budget",
    "clients_suspended",
    "rounds_done",
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
    "seconds",
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


def point_config(
    point: Point, args: argparse.Namespace, seed: int, config_path: Path | None
) -> ExperimentConfig:
    overrides = [
        f"data.name={args.data}",
        f"seed={seed}",
        *args.sets,
        *point.overrides(args.allocation, args.calibration),
    ]
    return load_config(config_path, overrides)


def _differences(a: Any, b: Any, prefix: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for k in sorted(set(a) | set(b)):
            out += _differences(a.get(k), b.get(k), f"{prefix}{k}.")
        return out
    return [] if a == b else [f"{prefix[:-1]}: run has {b!r}, grid wants {a!r}"]


def check_same_config(run_dir: Path, wanted: ExperimentConfig) -> None:
    """A reused run must be the run the grid asks for: a --root shared between grids with
    different --set overrides would otherwise mix settings silently."""
    have = runner.read_config(run_dir).model_dump()
    want = wanted.model_dump()
    have.pop("output_dir", None)
    want.pop("output_dir", None)
    diff = _differences(want, have)
    if diff:
        raise SystemExit(
            f"{run_dir}: holds a run with other settings than this grid asks for:\n  "
            + "\n  ".join(diff)
            + "\nuse another --root, or delete that run directory"
        )


def run_or_reuse(run_dir: Path, cfg: ExperimentConfig) -> tuple[dict[str, Any], bool]:
    """(results, trained_now). Raises PrivacySettingsError, before writing anything, when the
    plan refuses the budget."""
    results = run_dir / runner.RESULTS_FILE
    if (run_dir / runner.CONFIG_FILE).is_file():
        check_same_config(run_dir, cfg)
        if results.is_file():
            return json.loads(results.read_text()), False
        resume = True  # an interrupted run: continue it
    else:
        runner.prepare_run(cfg, run_dir)
        resume = False
    t0 = time.perf_counter()
    out = runner.train(run_dir, resume=resume)
    print(f"  {run_dir.name}: {time.perf_counter() - t0:.0f}s", flush=True)
    return out, True


class PlanMaker:
    """Plans without training; the data set and partitioning are built once per setting."""

    def __init__(self) -> None:
        self._datasets: dict[str, CrossDomainDataset] = {}

    def plan(self, cfg: ExperimentConfig) -> PrivacyPlan:
        key = json.dumps([cfg.data.name, cfg.data.data_dir, cfg.data.options], sort_keys=True)
        if key not in self._datasets:
            self._datasets[key] = load_dataset(cfg.data.name, cfg.data.data_dir, **cfg.data.options)
        partitioning = runner.make_partitioning(cfg, self._datasets[key])
        return runner.privacy_plan_for(cfg, partitioning)


def plan_fields(plan: PrivacyPlan) -> dict[str, Any]:
    zs = [seg.z for c in plan.clients for seg in c.segments]
    planned = [plan.epsilon_spent(c.client_id, c.max_steps) for c in plan.clients]
    return {
        "n_clients": len(plan.clients),
        "rounds": plan.rounds,
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
            raise SystemExit(f"--domain {wanted!r}: the data set's domains are {domains}")
        return wanted
    # The paper's RQ6 target is Kitchen, the second domain of Food-Kitchen.
    return "Kitchen" if "Kitchen" in domains else domains[min(1, len(domains) - 1)]


def result_fields(results: dict[str, Any], domain: str) -> dict[str, Any]:
    sampled = results["test"]["sampled"][0]["metrics"]
    full = results["test"]["full"][0]["metrics"]
    out: dict[str, Any] = {
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


def base_row(point: Point, cfg: ExperimentConfig, seed: int, run_dir: Path) -> dict[str, Any]:
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
        "run_dir": _shown(run_dir),
    }


def _shown(path: Path) -> str:
    """``path`` relative to the repository when it lies inside it (results files get committed)."""
    try:
        return str(path.resolve().relative_to(REPO))
    except ValueError:
        return str(path)


def evaluate_point(
    point: Point,
    args: argparse.Namespace,
    seed: int,
    config_path: Path | None,
    planner: PlanMaker,
) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """The CSV row of one (point, seed) and the run's results (None when there are none)."""
    cfg = point_config(point, args, seed, config_path)
    run_dir = args.root / point.run_name(args.allocation, args.calibration, seed)
    row = base_row(point, cfg, seed, run_dir)
    dp = point.eps_total is not None
    if args.only_plan:
        if not dp:
            row["status"] = "reference (not planned)"
            return row, None
        try:
            row |= plan_fields(planner.plan(cfg)) | {"status": "feasible"}
        except PrivacySettingsError as exc:
            row |= infeasible(cfg, exc)
        return row, None
    results_file = run_dir / runner.RESULTS_FILE
    if args.report_only:
        if not results_file.is_file():
            row["status"] = "not run"
            return row, None
        results = json.loads(results_file.read_text())
    else:
        try:
            results, _ = run_or_reuse(run_dir, cfg)
        except PrivacySettingsError as exc:
            row |= infeasible(cfg, exc)
            print(f"  {run_dir.name}: {row['status']}: {exc}", flush=True)
            return row, None
    if dp:
        row |= plan_fields(load_plan(run_dir))
    row |= result_fields(results, pick_domain(results, args.domain))
    row["status"] = "done"
    return row, results


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
    d = domain or "domain"
    head = [
        "variant",
        "eps_total",
        "delta",
        "beta",
        "clipping",
        "eps_k",
        "z (noise multiplier)",
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
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
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
                ", ".join(sorted({x["status"] for x in runs})),
            ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


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
        ax.set_xscale("log")
        ticks = sorted({x for by_eps in curves.values() for x in by_eps})
        ax.set_xticks(ticks, [f"{x:g}" for x in ticks])
        ax.minorticks_off()
        ax.set_xlabel("ε_total")
        ax.set_ylabel(f"test HR@10 on {domain} (%)")
        ax.set_title(label)
        ax.grid(alpha=0.3)
    axes[1].legend(fontsize=7, loc="best")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


# --- main ----------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default="food-kitchen")
    ap.add_argument(
        "--config",
        help="TOML/JSON config under the --set overrides; default configs/<data>.toml when it "
        "exists; 'none' for the built-in defaults",
    )
    ap.add_argument("--root", type=Path, help="run directories (default bench/runs/rq6-<data>)")
    ap.add_argument("--eps", type=float, nargs="+", default=[0.25, 0.5, 1.0, 2.0, 4.0])
    ap.add_argument("--betas", type=float, nargs="*", default=[0.3, 0.5, 0.7])
    ap.add_argument("--delta", type=float, default=1e-5, help="delta of every variant")
    ap.add_argument(
        "--deltas",
        type=float,
        nargs="*",
        default=[1e-3, 1e-4, 1e-5],
        help="deltas of the robustness curves (adaptive at --delta-beta)",
    )
    ap.add_argument("--delta-beta", type=float, default=0.5)
    ap.add_argument("--no-uniform", action="store_true", help="leave the uniform variant out")
    ap.add_argument("--allocation", choices=["split", "mean"], default="split")
    ap.add_argument("--calibration", choices=["accountant", "per-round"], default="accountant")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--set", dest="sets", action="append", default=[])
    ap.add_argument("--domain", help="domain to report (default Kitchen, else the second one)")
    ap.add_argument("--only", nargs="*", help="variants to run (e.g. uniform adaptive-b0.5 nodp)")
    ap.add_argument("--out", type=Path, help="output prefix (.csv, .json, .png are added)")
    mode = ap.add_mutually_exclusive_group()
    mode.add_argument("--only-plan", action="store_true", help="plan every point; no training")
    mode.add_argument("--report-only", action="store_true", help="tabulate finished runs only")
    args = ap.parse_args(argv)
    for item in args.sets:
        key = item.split("=", 1)[0].strip()
        if key in CONTROLLED_KEYS:
            ap.error(f"--set {item}: {key} is set by this script per point; use its option")
    if args.config is None:
        default = REPO / "configs" / f"{args.data}.toml"
        args.config = default if default.is_file() else None
    elif args.config.lower() == "none":
        args.config = None
    else:
        args.config = Path(args.config)
    if args.root is None:
        args.root = REPO / "bench" / "runs" / f"rq6-{args.data}"
    if args.out is None:
        suffix = "_plan" if args.only_plan else ""
        name = f"privacy_utility_{args.data}_{args.allocation}_{args.calibration}{suffix}"
        args.out = RESULTS_DIR / name
    return args


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    args = parse_args(argv)
    print("$ python " + " ".join(sys.argv if argv is None else ["bench/privacy_utility.py", *argv]))
    grid = build_grid(args.eps, args.betas, args.deltas, args.delta, args.delta_beta)
    if args.no_uniform:
        grid = [p for p in grid if p.variant != "uniform"]
    if args.only:
        grid = [p for p in grid if p.variant in args.only]
    planner = PlanMaker()
    rows: list[dict[str, Any]] = []
    reference: dict[str, Any] = {
        "domain": args.domain,
        "no_dp": None,
        "popularity": None,
        "n_negatives": None,
    }
    no_dp: list[dict[str, float]] = []
    t_start = time.perf_counter()
    # Seed-major: a grid stopped part-way has whole seeds of every point.
    for seed in args.seeds:
        for point in grid:
            t0 = time.perf_counter()
            row, results = evaluate_point(point, args, seed, args.config, planner)
            row["seconds"] = time.perf_counter() - t0
            rows.append(row)
            if args.only_plan and point.eps_total is not None:
                print(
                    f"  planned {point.variant} eps={point.eps_total:g} delta={point.delta:g}: "
                    f"{row['status']} ({row['seconds']:.1f}s)",
                    flush=True,
                )
            if results is None:
                continue
            domain = row["domain"]
            reference["domain"] = domain
            if reference["popularity"] is None:
                reference["popularity"] = floors(results, domain)
                reference["n_negatives"] = results["test"]["sampled"][0]["n_negatives"]
            if point.eps_total is None:
                no_dp.append({k: row[k] for k in ("hr10_sampled", "ndcg10_sampled", "hr10_full")})
    if no_dp:
        reference["no_dp"] = {k: statistics.fmean(x[k] for x in no_dp) for k in no_dp[0]}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    csv_path, json_path, png_path = (
        args.out.with_name(args.out.name + s) for s in (".csv", ".json", ".png")
    )
    write_csv(rows, csv_path)
    title = (
        f"{args.data} · allocation={args.allocation} · {args.calibration} calibration · "
        f"delta={args.delta:g} · seeds {args.seeds}"
    )
    if args.sets:
        title += "\n" + textwrap.shorten("overrides: " + " ".join(args.sets), 180)
    summary = {
        "command": " ".join(sys.argv),
        "data": args.data,
        "config": _shown(args.config) if args.config else None,
        "overrides": args.sets,
        "allocation": args.allocation,
        "calibration": args.calibration,
        "calibration_note": CALIBRATION_NOTE[args.calibration],
        "seeds": args.seeds,
        "reference": reference,
        "seconds": time.perf_counter() - t_start,
        "rows": rows,
    }
    json_path.write_text(json.dumps(summary, indent=1))
    print(f"\n{title}\n{CALIBRATION_NOTE[args.calibration]}.\n")
    print(markdown(rows, reference["domain"], args.only_plan))
    if reference["no_dp"] is not None:
        print(
            f"\nno DP: {reference['domain']} HR@10 {100 * reference['no_dp']['hr10_sampled']:.2f}"
        )
    if reference["popularity"] is not None:
        print(
            f"popularity floor: {reference['domain']} HR@10 "
            f"{100 * reference['popularity']['hr10_sampled']:.2f}"
        )
    written = [csv_path, json_path]
    if not args.only_plan and plot(rows, reference, png_path, title) is not None:
        written.append(png_path)
    print("\nwrote " + ", ".join(str(p) for p in written))
    return rows


if __name__ == "__main__":
    main()
