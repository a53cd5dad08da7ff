"""RQ6: privacy-utility trade-off, HR@10 of the target domain against the privacy budget.

The grid, rows, table and plot live in `fedscope.experiments.suite.rq6_privacy` (also run by
`fedscope experiment rq6_privacy`); this script is their command line with CSV/JSON outputs,
--only-plan and free choice of every grid axis.

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

Outputs (``--out PREFIX``, default <root>/privacy_utility_<data>_<allocation>_<calibration>,
with ``_plan`` for --only-plan): PREFIX.csv (one row per point and seed; ``seconds`` is this
call's wall time for the point, training only where ``trained_now`` is true),
PREFIX.json (the rows plus the references and the command), PREFIX.png (HR@10 of the domain
against eps_total, log x, one line per variant, means over seeds), and a Markdown table on
stdout.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

from fedscope.cli.errors import run_reporting_errors
from fedscope.config import ExperimentConfig, load_config
from fedscope.experiments import runner
from fedscope.experiments.suite import execute
from fedscope.experiments.suite.rq6_privacy import (
    CALIBRATION_NOTE,
    CONTROLLED_KEYS,
    PlanMaker,
    Point,
    beta_note,
    build_grid,
    floors,
    infeasible,
    markdown,
    pick_domain,
    plot,
    result_fields,
    run_plan_fields,
    write_csv,
)
from fedscope.experiments.suite.rq6_privacy import base_row as _base_row
from fedscope.privacy import PrivacySettingsError

REPO = Path(__file__).resolve().parents[1]


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


def run_or_reuse(run_dir: Path, cfg: ExperimentConfig) -> tuple[dict[str, Any], bool]:
    """(results, trained_now). Raises PrivacySettingsError, before writing anything, when the
    plan refuses the budget; a stored run with other settings stops the grid."""
    try:
        results, seconds = execute.run_or_reuse(run_dir, cfg)
    except execute.StoredRunMismatchError as exc:
        raise SystemExit(str(exc)) from exc
    if seconds is not None:
        print(f"  {run_dir.name}: {seconds:.0f}s", flush=True)
    return results, seconds is not None


def base_row(point: Point, cfg: ExperimentConfig, seed: int, run_dir: Path) -> dict[str, Any]:
    return _base_row(point, cfg, seed, _shown(run_dir))


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
            row |= planner.plan_fields(cfg) | {"status": "feasible"}
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
            results, row["trained_now"] = run_or_reuse(run_dir, cfg)
        except PrivacySettingsError as exc:
            row |= infeasible(cfg, exc)
            print(f"  {run_dir.name}: {row['status']}: {exc}", flush=True)
            return row, None
    if dp:
        row |= run_plan_fields(run_dir)
    row |= result_fields(results, pick_domain(results, args.domain))
    row["status"] = "done"
    return row, results


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
        # Beside the runs, not in bench/results: a default-named file there is easily
        # committed by accident; results meant to be kept get an explicit --out.
        suffix = "_plan" if args.only_plan else ""
        name = f"privacy_utility_{args.data}_{args.allocation}_{args.calibration}{suffix}"
        args.out = args.root / name
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
        "beta_note": beta_note(rows),
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
    if summary["beta_note"] is not None:
        print(f"note: {summary['beta_note']}")
    written = [csv_path, json_path]
    if not args.only_plan and plot(rows, reference, png_path, title) is not None:
        written.append(png_path)
    print("\nwrote " + ", ".join(str(p) for p in written))
    return rows


if __name__ == "__main__":
    run_reporting_errors(main)
