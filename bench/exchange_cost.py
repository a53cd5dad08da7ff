"""What the cross-client inter-domain term costs: PSI once, then bytes and seconds per round.

    FEDSCOPE_DATA_DIR=../shared/data python bench/exchange_cost.py --data food-kitchen \
        --rounds 6 --out bench/results/exchange_cost_fk.json

Real federated runs through Flower's simulation engine with users split by domain
(``partition.scheme=by-domain``: every client holds one domain of its users), K = 50,
C = 0.2, method ``fedscope`` with the paper's IIDCL weights: once with the paper's fallback
(no exchange: a one-domain client has no inter-domain pair) and once with
``federation.exchange_representations=true``. Per configuration, from the run directory:

* the PSI alignment made when the run is prepared (``alignment.json``): pairs run, bytes,
  compute seconds, users shared across clients; and the wall time of ``prepare_run``;
* means over rounds 2..T of seconds per round (without validation), the fit workflow's
  seconds, bytes to and from the clients as the ServerApp counts them, and the clients'
  mean inter-domain loss (0 where the term has nothing to pair).

Like ``bench/secagg_cost.py``, the runs skip ``runner.finalise``'s test evaluation; the load
average is recorded before and after each configuration.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from fedscope.cli.errors import run_reporting_errors
from fedscope.config import load_config
from fedscope.experiments import runner
from fedscope.federation import run_dir as layout
from fedscope.federation.simulation import run_simulation

MB = 1e6


def run_configuration(data: str, exchange: bool, n_clients: int, n_rounds: int) -> dict[str, Any]:
    config = load_config(
        Path("configs/food-kitchen.toml") if data == "food-kitchen" else None,
        [
            f"data.name={data}",
            "method=fedscope",
            f"partition.n_clients={n_clients}",
            "partition.scheme=by-domain",
            f"federation.rounds={n_rounds}",
            f"federation.exchange_representations={str(exchange).lower()}",
            "eval.every=100000",  # validation only in the last round, subtracted there
        ],
    )
    out: dict[str, Any] = {"exchange": exchange, "load_avg_before": os.getloadavg()}
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        run_dir = runner.prepare_run(config, Path(tmp) / "run")
        out["prepare_s"] = round(time.perf_counter() - started, 1)
        alignment = run_dir / "alignment.json"
        if alignment.is_file():
            a = json.loads(alignment.read_text())
            out["psi"] = {
                "pairs": a["pairs"],
                "mb": round(a["bytes"] / MB, 2),
                "compute_s": round(a["seconds"], 1),
                "users_shared_across_clients": a["users_shared_across_clients"],
            }
        started = time.perf_counter()
        run_simulation(run_dir, n_clients, run_config={"torch-threads": 1})
        out["run_wall_s"] = round(time.perf_counter() - started, 1)
        rows = layout.read_metrics(run_dir)
    out["load_avg_after"] = os.getloadavg()
    timed = [r for r in rows if r["round"] > 1] or rows
    out["rounds"] = len(rows)
    out["s_per_round"] = mean(r["round_s"] - (r["eval_s"] or 0.0) for r in timed)
    out["fit_s_per_round"] = mean(r["fit_s"] for r in timed)
    out["mb_to_clients_per_round"] = mean(r["bytes_to_clients"] / MB for r in timed)
    out["mb_from_clients_per_round"] = mean(r["bytes_from_clients"] / MB for r in timed)
    out["client_inter_loss"] = [round(r["client_train"]["inter"], 4) for r in rows]
    out["client_compute_s"] = mean(r["client_train"]["compute_s"] for r in timed)
    return out


def mean(values: Any) -> float:
    return round(float(np.mean(list(values))), 3)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default="food-kitchen")
    ap.add_argument("--clients", type=int, default=50)
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    results = [run_configuration(args.data, ex, args.clients, args.rounds) for ex in (False, True)]
    report = {
        "command": "python bench/exchange_cost.py "
        + f"--data {args.data} --clients {args.clients} --rounds {args.rounds}",
        "machine": f"{platform.node()} ({os.cpu_count()} CPUs)",
        "results": results,
    }
    text = json.dumps(report, indent=1)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)
    print(text)


if __name__ == "__main__":
    run_reporting_errors(main)
