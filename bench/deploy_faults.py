"""Faults in a local deployment: a SuperNode killed mid-round, the SuperLink killed and restarted.

    python bench/deploy_faults.py [--rounds 4] [--round-timeout 180] [--out bench/results/deploy_faults.json]

Three deployments of the same small run (generated data, 3 SuperNodes, TLS, every client
sampled every round), each started by fedscope.deployment.local:

* ``baseline``: no fault; the reference for the time of a round and for the final weights;
* ``node_killed``: SuperNode 2 gets SIGKILL (its whole process group, ClientApp included)
  while round 2 trains on it. Measured: the time from the kill until the round was
  aggregated without it (detection), how later rounds went, what events.jsonl recorded;
* ``superlink_restarted``: the SuperLink (and the ServerApp under it) gets SIGKILL during
  round 2; the launcher starts a new one on the same port and resubmits the run with
  resume=true. Measured: the SuperLink's restart time, the time lost against the baseline,
  the rounds completed, and whether the final weights equal the baseline's.

Writes one JSON file with the command, the machine (cores, load average before and after)
and the numbers.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from fedscope.cli.errors import run_reporting_errors
from fedscope.config import load_config
from fedscope.deployment.local import DeployOptions, FaultPlan, deploy_local, pid_alive
from fedscope.experiments import runner
from fedscope.federation import run_dir as layout

SETS = [
    'data.options={"n_users": 300, "n_items": 120}',
    "partition.n_clients=3",
    "federation.fraction=1.0",
    "model.dim=16",
    "train.lr=0.005",
    "train.local_epochs=2",
    "eval.n_negatives=99",
]


def run_scenario(
    name: str, root: Path, rounds: int, round_timeout: float, faults: FaultPlan
) -> dict[str, Any]:
    config = load_config(None, [*SETS, f"federation.rounds={rounds}"])
    run_dir = runner.prepare_run(config, root / name)
    started = time.time()
    error = None
    try:
        report, _ = deploy_local(
            run_dir,
            DeployOptions(n_nodes=3, round_timeout_s=round_timeout, faults=faults, timeout_s=1800),
        )
        report_dict: dict[str, Any] = {
            "startup_s": report.startup_s,
            "submissions": report.submissions,
            "faults": report.faults,
        }
    except Exception as exc:  # recorded, so the other scenarios still run
        error = f"{type(exc).__name__}: {exc}"
        report_dict = {}
    wall = time.time() - started
    rows = layout.read_metrics(run_dir)
    events = layout.read_events(run_dir)
    record = json.loads((run_dir / "deploy" / "processes.json").read_text())
    pids = [c["pid"] for c in record["children"] + record["retired"]]
    pids += [d["pid"] for d in record["descendants"]]
    out: dict[str, Any] = {
        "wall_s": wall,
        "error": error,
        "rounds_completed": [r["round"] for r in rows],
        "rounds": [
            {
                "round": r["round"],
                "sampled": r["sampled"],
                "dropped": r["dropped"],
                "lost": r.get("lost"),
                "fit_s": r["fit_s"],
                "time": r["time"],
                "val_MRR": (r.get("validation") or {}).get("MRR"),
            }
            for r in rows
        ],
        "events": [
            {k: v for k, v in e.items() if k not in ("errors",)}
            for e in events
            if e["event"] != "run_started"
        ],
        "processes_left_alive": [p for p in pids if pid_alive(p)],
        **report_dict,
    }
    last = layout.last_checkpoint_path(run_dir)
    if last.is_file():
        out["final_weights"] = str(last)
    return out


def same_weights(a: str | None, b: str | None) -> bool | None:
    if a is None or b is None:
        return None
    wa, wb = layout.load_checkpoint(Path(a)).weights, layout.load_checkpoint(Path(b)).weights
    return all(np.array_equal(x, y) for x, y in zip(wa, wb, strict=True))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--round-timeout", type=float, default=180.0)
    parser.add_argument("--out", type=Path, default=Path("bench/results/deploy_faults.json"))
    parser.add_argument("--only", nargs="*", default=None, help="scenarios to run")
    args = parser.parse_args()
    load_before = os.getloadavg()
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="deploy-faults-") as tmp:
        root = Path(tmp)
        scenarios = {
            "baseline": FaultPlan(),
            "node_killed": FaultPlan(kill_node=2, kill_node_round=2),
            "superlink_restarted": FaultPlan(restart_superlink_round=2),
        }
        for name, plan in scenarios.items():
            if args.only and name not in args.only:
                continue
            print(f"[{time.strftime('%H:%M:%S')}] {name} ...", flush=True)
            results[name] = run_scenario(name, root, args.rounds, args.round_timeout, plan)
            print(json.dumps({k: v for k, v in results[name].items() if k != "rounds"}), flush=True)
        summary = summarise(results)
        for entry in results.values():
            entry.pop("final_weights", None)
    payload = {
        "command": " ".join([sys.executable, *sys.argv]),
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "load_average_before": load_before,
            "load_average_after": os.getloadavg(),
        },
        "settings": {"sets": SETS, "rounds": args.rounds, "round_timeout_s": args.round_timeout},
        "summary": summary,
        "scenarios": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(payload, indent=1) + "\n")
    print(json.dumps(summary, indent=1))


def summarise(results: dict[str, Any]) -> dict[str, Any]:
    summary: dict[str, Any] = {}
    base = results.get("baseline")
    normal_round = None
    if base and base["rounds"]:
        normal_round = float(np.median([r["fit_s"] for r in base["rounds"]]))
        summary["baseline"] = {"wall_s": base["wall_s"], "median_fit_s": normal_round}
    killed = results.get("node_killed")
    if killed:
        kill = next((f for f in killed.get("faults", []) if f["fault"] == "supernode_killed"), None)
        round2 = next((r for r in killed["rounds"] if r["round"] == 2), None)
        lost = [e for e in killed["events"] if e["event"] == "client_lost"]
        summary["node_killed"] = {
            "rounds_completed": killed["rounds_completed"],
            "detect_s": (round2["time"] - kill["time"]) if kill and round2 else None,
            "round_2_fit_s": round2["fit_s"] if round2 else None,
            "lost_events": [
                {k: e.get(k) for k in ("round", "partition", "stage", "reason", "waited_s")}
                for e in lost
            ],
            "later_rounds_fit_s": [r["fit_s"] for r in killed["rounds"] if r["round"] > 2],
            "error": killed["error"],
        }
    restarted = results.get("superlink_restarted")
    if restarted:
        fault = next(
            (f for f in restarted.get("faults", []) if f["fault"] == "superlink_restarted"), None
        )
        summary["superlink_restarted"] = {
            "rounds_completed": restarted["rounds_completed"],
            "resume_from_round": fault["resume_from_round"] if fault else None,
            "superlink_restart_s": (fault["ready_time"] - fault["time"]) if fault else None,
            "time_lost_vs_baseline_s": (restarted["wall_s"] - base["wall_s"]) if base else None,
            "final_weights_equal_baseline": same_weights(
                restarted.get("final_weights"), base.get("final_weights") if base else None
            ),
            "error": restarted["error"],
        }
    return summary


if __name__ == "__main__":
    run_reporting_errors(main)
