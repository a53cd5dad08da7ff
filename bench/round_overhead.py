"""The share of a federated round spent outside model computation, read from finished runs.

``bench/speed.py rounds`` measures the overhead in short dedicated runs; this reads the same
quantity from the ``metrics.jsonl`` that every federated run writes, so long comparison runs
(200 rounds, real data) report it too. Per round: fit time ``fit_s`` (the server's
send-and-receive of the fit stage) against the ideal on the simulation's workers, the sampled
clients' own model-computation time (``client_train.compute_s`` is their mean) divided by the
number of workers. Medians over the rounds, so a few slow rounds (another job starting, a
checkpoint) do not move it.

    python bench/round_overhead.py RUN_DIR [RUN_DIR ...] [--workers 2] [--out FILE.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

from fedscope.cli.errors import run_reporting_errors
from fedscope.federation.run_dir import metrics_path, read_metrics


def round_overhead(run_dir: Path, workers: int) -> dict[str, float | int | str]:
    path = metrics_path(run_dir)
    if not path.is_file():
        raise SystemExit(f"{path}: no metrics.jsonl (is {run_dir} a federated run directory?)")
    fit, ideal, sent = [], [], []
    for row in read_metrics(run_dir):
        train = row.get("client_train") or {}
        if row.get("fit_s") is None or not train.get("compute_s") or not row.get("sampled"):
            continue  # a round without client training (dropped, resumed at) says nothing here
        n = len(row["sampled"])
        fit.append(row["fit_s"])
        ideal.append(train["compute_s"] * n / workers)
        sent.append(row["bytes_to_clients"] / n)
    if not fit:
        raise SystemExit(f"{path}: no round with client compute times")
    fit_s, ideal_s = statistics.median(fit), statistics.median(ideal)
    return {
        "run": str(run_dir),
        "rounds": len(fit),
        "fit_s": fit_s,
        "ideal_s": ideal_s,
        "overhead_share": 1.0 - ideal_s / fit_s,
        "mb_to_each_client": statistics.median(sent) / 1e6,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--workers", type=int, default=2, help="simulation workers (default 2)")
    parser.add_argument("--out", type=Path, help="also write the rows as JSON here")
    args = parser.parse_args(argv)
    rows = [round_overhead(run, args.workers) for run in args.runs]
    print("| run | rounds | fit s | ideal s | overhead share | MB to each client |")
    print("|---|---:|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r['run']} | {r['rounds']} | {r['fit_s']:.2f} | {r['ideal_s']:.2f} "
            f"| {r['overhead_share']:.2f} | {r['mb_to_each_client']:.2f} |"
        )
    if args.out:
        args.out.write_text(json.dumps(rows, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(run_reporting_errors(main))
