"""Issue #3 comparison: FedSCOPE against every baseline, same data, same candidates.

Superseded by ``fedscope experiment rq1_overall`` (fedscope.experiments.suite.rq1_overall),
whose grid this script runs: kept as a thin wrapper for its command line and its run-dir
naming ``<method>-<regime>-s<seed>`` directly under --root, which existing runs use.

Runs (or reuses, when a finished run directory exists; continues an interrupted one) every
(method, regime, seed) of RQ1's grid, then prints a Markdown table of test metrics (mean ±
std over seeds) in the sampled and the full-ranking protocol, with the popularity floor.
Every run is selected on validation; test is evaluated once.

    python bench/compare_methods.py --data food-kitchen --seeds 0 1 2 --root bench/runs/fk \
        [--config configs/food-kitchen.toml] [--set key=value ...] [--only fedscope sasrec]
        [--report-only [--subset "history<=5"]]

Runs are independent processes' worth of work; run several copies with --only to split them.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from fedscope.cli.errors import run_reporting_errors
from fedscope.config import load_config
from fedscope.experiments import runner
from fedscope.experiments.suite.base import RunSpec, StoredRun, domains_of, metric_table
from fedscope.experiments.suite.execute import run_or_reuse
from fedscope.experiments.suite.rq1_overall import registered_grid, run_name

METRICS = ("HR@10", "NDCG@10", "MRR")


def run_one(
    root: Path,
    data: str,
    method: str,
    regime: str,
    seed: int,
    config: Path | None,
    sets: list[str],
    extra: tuple[str, ...] = (),
) -> dict:
    """One run of the grid line (method, regime, extra), ``sets`` on top of the config."""
    run_dir = root / f"{run_name(method, regime, extra)}-s{seed}"
    overrides = [
        f"data.name={data}",
        f"method={method}",
        f"federation.regime={regime}",
        f"seed={seed}",
        *sets,
        *extra,
    ]
    # No settings check on reuse: runs of this grid predate the suite's index and are
    # resumed by the same command line.
    results, seconds = run_or_reuse(run_dir, load_config(config, overrides), check=False)
    if seconds is not None:
        print(f"  {run_dir.name}: {seconds:.0f}s", flush=True)
    return results


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", required=True)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--root", type=Path, required=True)
    ap.add_argument("--config", type=Path, help="a TOML/JSON config under the --set overrides")
    ap.add_argument("--set", dest="sets", action="append", default=[])
    ap.add_argument("--only", nargs="*", help="labels' methods to run (e.g. fedscope sasrec)")
    ap.add_argument("--report-only", action="store_true", help="tabulate finished runs only")
    ap.add_argument(
        "--subset",
        help='tabulate the evaluator\'s "<domain>|<subset>" groups, e.g. "history<=5" (cold start)',
    )
    args = ap.parse_args()
    print("$ python " + " ".join(sys.argv), flush=True)
    grid, missing = registered_grid()
    for item in missing:
        print(f"missing: {item}")
    rows: dict[str, list[StoredRun]] = {label: [] for label, *_ in grid}
    # Seed-major: a grid stopped part-way has whole seeds of every method, not all seeds of some.
    for seed in args.seeds:
        for label, method, regime, extra in grid:
            if args.only and method not in args.only and f"{method}:{regime}" not in args.only:
                continue
            run_dir = args.root / f"{run_name(method, regime, extra)}-s{seed}"
            if args.report_only:
                f = run_dir / runner.RESULTS_FILE
                if not f.is_file():
                    continue
                results = json.loads(f.read_text())
            else:
                results = run_one(
                    args.root,
                    args.data,
                    method,
                    regime,
                    seed,
                    args.config,
                    args.sets,
                    extra,
                )
            spec = RunSpec(label, run_name(method, regime, extra), (), (seed,))
            rows[label].append(StoredRun(spec, seed, run_dir, results))
    finished = [r for runs in rows.values() for r in runs]
    if not finished:
        print("no finished runs")
        return
    if args.subset is not None:
        counts = finished[0].results["test"]["sampled"][0]["counts"]
        known = sorted({g.split("|", 1)[1] for g in counts if "|" in g})
        if args.subset not in known:
            sys.exit(
                f"--subset {args.subset!r}: {finished[0].run_dir / runner.RESULTS_FILE} has no "
                f"such group; its subsets are {known}"
            )
    meta = finished[0].results["run"]
    print(
        f"\ndata {meta['dataset']} · protocol {meta['protocol']} · test split · "
        f"config {args.config} · overrides {args.sets}"
        + ("" if args.subset is None else f" · test instances in subset {args.subset!r}")
    )
    for mode in ("sampled", "full"):
        print(
            "\n"
            + metric_table(
                mode, rows, mode, domains_of(finished[0].results), METRICS, subset=args.subset
            ).markdown()
        )


if __name__ == "__main__":
    run_reporting_errors(main)
