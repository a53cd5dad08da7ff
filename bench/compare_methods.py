"""Issue #3 comparison: FedSCOPE against every baseline, same data, same candidates.

Runs (or reuses, when a finished run directory exists) every (method, regime, seed) of the
grid below through `fedscope.experiments.runner`, then prints a Markdown table of test
metrics (mean ± std over seeds) in the sampled and the full-ranking protocol, with the
popularity floor. Every run is selected on validation; test is evaluated once per run.

    python bench/compare_methods.py --data food-kitchen --seeds 0 1 2 --root bench/runs/fk \
        [--config configs/food-kitchen.toml] [--set key=value ...] [--only fedscope sasrec]

Runs are independent processes' worth of work; run several copies with --only to split them.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from fedscope.config import load_config
from fedscope.experiments import runner

# (label, method, regime, extra overrides)
GRID: list[tuple[str, str, str, tuple[str, ...]]] = [
    ("FedSCOPE", "fedscope", "federated", ()),
    ("FedSCOPE w/o IIDCL", "fedscope-no-iidcl", "federated", ()),
    ("FedAvg+SASRec", "sasrec", "federated", ()),
    ("FedAvg+GRU4Rec", "gru4rec", "federated", ()),
    ("Local-only FedSCOPE", "fedscope", "local", ()),
    ("Local-only SASRec", "sasrec", "local", ()),
    ("Centralised FedSCOPE (non-private reference)", "fedscope", "centralised", ()),
]
METRICS = ("HR@10", "NDCG@10", "MRR")


def run_one(
    root: Path, data: str, method: str, regime: str, seed: int, config: Path | None, sets: list[str]
) -> dict:
    run_dir = root / f"{method}-{regime}-s{seed}"
    results = run_dir / runner.RESULTS_FILE
    if results.is_file():
        return json.loads(results.read_text())
    overrides = [
        f"data.name={data}",
        f"method={method}",
        f"federation.regime={regime}",
        f"seed={seed}",
        *sets,
    ]
    cfg = load_config(config, overrides)
    if not (run_dir / runner.CONFIG_FILE).is_file():
        runner.prepare_run(cfg, run_dir)
        resume = False
    else:
        resume = True  # an interrupted run: continue it
    t0 = time.perf_counter()
    out = runner.train(run_dir, resume=resume)
    print(f"  {run_dir.name}: {time.perf_counter() - t0:.0f}s", flush=True)
    return out


def table(rows: dict[str, list[dict]], mode: str, domains: list[str]) -> str:
    head = ["method"] + [f"{d} {m}" for d in domains for m in METRICS]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" + "---:|" * (len(head) - 1)]
    floor_done = False
    for label, runs in rows.items():
        if not runs:
            continue
        cells = []
        for d in domains:
            for m in METRICS:
                vals = [100 * r["test"][mode][0]["metrics"][d][m] for r in runs]
                cells.append(f"{np.mean(vals):.2f} ± {np.std(vals):.2f}")
        lines.append(f"| {label} (n={len(runs)}) | " + " | ".join(cells) + " |")
        if not floor_done:
            floor = runs[0]["test"][mode][1]["metrics"]
            lines.append(
                "| popularity (floor) | "
                + " | ".join(f"{100 * floor[d][m]:.2f}" for d in domains for m in METRICS)
                + " |"
            )
            floor_done = True
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", required=True)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--root", type=Path, required=True)
    ap.add_argument("--config", type=Path, help="a TOML/JSON config under the --set overrides")
    ap.add_argument("--set", dest="sets", action="append", default=[])
    ap.add_argument("--only", nargs="*", help="labels' methods to run (e.g. fedscope sasrec)")
    ap.add_argument("--report-only", action="store_true", help="tabulate finished runs only")
    args = ap.parse_args()
    print("$ python " + " ".join(sys.argv), flush=True)
    rows: dict[str, list[dict]] = {label: [] for label, *_ in GRID}
    # Seed-major: a grid stopped part-way has whole seeds of every method, not all seeds of some.
    for seed in args.seeds:
        for label, method, regime, extra in GRID:
            if args.only and method not in args.only and f"{method}:{regime}" not in args.only:
                continue
            run_dir = args.root / f"{method}-{regime}-s{seed}"
            if args.report_only:
                f = run_dir / runner.RESULTS_FILE
                if f.is_file():
                    rows[label].append(json.loads(f.read_text()))
                continue
            rows[label].append(
                run_one(
                    args.root, args.data, method, regime, seed, args.config, [*args.sets, *extra]
                )
            )
    finished = [r for runs in rows.values() for r in runs]
    if not finished:
        print("no finished runs")
        return
    meta = finished[0]["run"]
    domains = [
        g for g in finished[0]["test"]["sampled"][0]["metrics"] if "|" not in g and g != "overall"
    ]
    print(
        f"\ndata {meta['dataset']} · protocol {meta['protocol']} · test split · "
        f"config {args.config} · overrides {args.sets}"
    )
    for mode in ("sampled", "full"):
        print(f"\n**{mode}**\n")
        print(table(rows, mode, domains))


if __name__ == "__main__":
    main()
