"""What SecAgg+ costs fedscope per round: seconds and bytes on the wire, at K = 50.

    python bench/secagg_cost.py --out bench/results/secagg_cost_fk.json
    python bench/secagg_cost.py --rounds 2 --shared no-item-table        # quick look

Real federated runs through Flower's simulation engine (two simulated clients at a time),
Food-Kitchen, method fedscope, K = 50, C = 0.2 (10 clients a round), paper batch 256,
E = 1: plain aggregation against SecAgg+ (``federation.secure_aggregation=true``), each
with every parameter federated (``all``) and with the item table kept local
(``no-item-table``). Configurations run one after another.

Per configuration, from the run's ``metrics.jsonl``:

* seconds per round: ``round_s - eval_s`` (the round without central validation, which
  runs only in the last round here), and the fit workflow's own ``fit_s``;
* bytes to and from the clients per round, as the ServerApp counts them: the protobuf size
  of every message's content (``fedscope.federation.server_app.content_wire_bytes``),
  summed over all messages of the round (every SecAgg+ stage), split by SecAgg+ stage.

Means are over rounds 2..T: round 1 also starts the Ray workers' data loading and caches.
The training runs are started as ``runner.train`` starts them (``prepare_run``, then the
simulation with the configured torch threads), without ``runner.finalise``'s full test
evaluation, which is no part of a round.

Times are wall-clock on the machine it runs on, and other jobs may share its cores: the
load average is recorded before and after every configuration.
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
from flwr.common import FitIns, ndarrays_to_parameters
from flwr.common.serde import recorddict_to_proto
from flwr.compat.common.recorddict_compat import fitins_to_recorddict

from fedscope.cli.errors import run_reporting_errors
from fedscope.config import load_config
from fedscope.experiments import runner
from fedscope.federation import run_dir as layout
from fedscope.federation.server_app import content_wire_bytes
from fedscope.federation.simulation import FederationError, run_simulation

MB = 1e6


def load_average() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def run_configuration(
    data: str, data_dir: str | None, secagg: bool, shared: str, n_clients: int, n_rounds: int
) -> dict[str, Any]:
    overrides = [
        f"data.name={data}",
        "method=fedscope",
        f"partition.n_clients={n_clients}",
        "federation.fraction=0.2",
        f"federation.rounds={n_rounds}",
        f"federation.secure_aggregation={str(secagg).lower()}",
        f"federation.shared_parameters={shared}",
        "train.batch_size=256",
        "train.local_epochs=1",
        "eval.every=100000",  # validation only in the last round, and subtracted there
    ]
    if data_dir is not None:
        overrides.append(f"data.data_dir={data_dir}")
    cfg = load_config(None, overrides)
    out: dict[str, Any] = {
        "secagg": secagg,
        "shared_parameters": shared,
        "load_avg_before": load_average(),
    }
    with tempfile.TemporaryDirectory() as tmp:
        run_dir = runner.prepare_run(cfg, Path(tmp) / "run")
        threads = cfg.train.threads or 1  # as runner.train
        started = time.perf_counter()
        try:
            run_simulation(run_dir, n_clients, run_config={"torch-threads": threads})
        except FederationError as exc:
            out["error"] = str(exc)
        out["run_wall_s"] = round(time.perf_counter() - started, 1)
        out["load_avg_after"] = load_average()
        rows = layout.read_metrics(run_dir)
        last = layout.last_checkpoint_path(run_dir)
        weights = layout.load_checkpoint(last).weights if last.is_file() else None
    out["rounds_done"] = len(rows)
    if not rows:
        return out
    timed = [r for r in rows if r["round"] > 1] or rows
    out["timed_rounds"] = [r["round"] for r in timed]
    out["sampled_per_round"] = len(rows[-1]["sampled"])
    if weights is not None:
        out["shared_arrays"] = len(weights)
        out["shared_mb"] = round(sum(np.asarray(w).nbytes for w in weights) / MB, 3)
    out["per_round"] = [
        {
            "round": r["round"],
            "round_s": round(r["round_s"], 2),
            "fit_s": round(r["fit_s"], 2),
            "eval_s": None if r["eval_s"] is None else round(r["eval_s"], 2),
            "bytes_to_clients": r["bytes_to_clients"],
            "bytes_from_clients": r["bytes_from_clients"],
            "messages": r["messages"],
        }
        for r in rows
    ]
    out["s_per_round"] = round(mean(r["round_s"] - (r["eval_s"] or 0.0) for r in timed), 2)
    out["fit_s_per_round"] = round(mean(r["fit_s"] for r in timed), 2)
    out["bytes_to_clients_per_round"] = round(mean(r["bytes_to_clients"] for r in timed))
    out["bytes_from_clients_per_round"] = round(mean(r["bytes_from_clients"] for r in timed))
    out["messages_per_round"] = round(mean(r["messages"] for r in timed), 1)
    if all(r.get("client_train") for r in timed):
        # plain rounds only: per-client metrics stay empty under SecAgg+
        out["client_compute_s_per_round_total"] = round(
            mean(r["client_train"]["compute_s"] * len(r["sampled"]) for r in timed), 2
        )
    if secagg:
        stages: dict[str, dict[str, list[float]]] = {}
        for r in timed:
            for s in r["secagg_stage_wire"] or []:
                tally = stages.setdefault(s["stage"], {"to": [], "from": []})
                tally["to"].append(s["bytes_to_clients"])
                tally["from"].append(s["bytes_from_clients"])
        out["bytes_per_stage"] = {
            stage: {"to_clients": round(mean(t["to"])), "from_clients": round(mean(t["from"]))}
            for stage, t in stages.items()
        }
    if weights is not None:
        out["counting_cost"] = counting_cost(weights)
    return out


def counting_cost(weights: list[np.ndarray]) -> dict[str, Any]:
    """Seconds to size one train message of this model: the server's way against building
    Flower's protobuf; the two sizes must agree."""
    fitins = FitIns(ndarrays_to_parameters(weights), {"server_round": 1, "secagg": False})
    content = fitins_to_recorddict(fitins, keep_input=True)
    t0 = time.perf_counter()
    counted = content_wire_bytes(content)
    counted_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    proto = recorddict_to_proto(content).ByteSize()
    proto_s = time.perf_counter() - t0
    if counted != proto:
        raise AssertionError(f"content_wire_bytes {counted} != protobuf ByteSize {proto}")
    return {
        "message_bytes": counted,
        "content_wire_bytes_ms": round(1000 * counted_s, 3),
        "recorddict_to_proto_ms": round(1000 * proto_s, 1),
    }


def mean(values: Any) -> float:
    return float(np.mean(list(values)))


def extras(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """SecAgg+ minus plain, for each shared_parameters setting both ran."""
    out = []
    for shared in dict.fromkeys(r["shared_parameters"] for r in results):
        pair = {r["secagg"]: r for r in results if r["shared_parameters"] == shared}
        plain, secure = pair.get(False), pair.get(True)
        if not plain or not secure or "s_per_round" not in plain or "s_per_round" not in secure:
            continue
        row: dict[str, Any] = {"shared_parameters": shared}
        for key in (
            "s_per_round",
            "fit_s_per_round",
            "bytes_to_clients_per_round",
            "bytes_from_clients_per_round",
        ):
            row[f"extra_{key}"] = round(secure[key] - plain[key], 2)
            row[f"ratio_{key}"] = round(secure[key] / plain[key], 3)
        out.append(row)
    return out


def markdown(results: list[dict[str, Any]], extra: list[dict[str, Any]]) -> str:
    lines = [
        "| aggregation | shared | shared MB | s/round | fit s/round | MB to clients/round "
        "| MB from clients/round | messages/round |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        name = "SecAgg+" if r["secagg"] else "plain"
        if "s_per_round" not in r:
            lines.append(f"| {name} | {r['shared_parameters']} | failed: {r.get('error')} |")
            continue
        lines.append(
            f"| {name} | {r['shared_parameters']} | {r.get('shared_mb', float('nan')):.2f} "
            f"| {r['s_per_round']:.2f} | {r['fit_s_per_round']:.2f} "
            f"| {r['bytes_to_clients_per_round'] / MB:.2f} "
            f"| {r['bytes_from_clients_per_round'] / MB:.2f} | {r['messages_per_round']:g} |"
        )
    if extra:
        lines += [
            "",
            "| shared | SecAgg+ extra s/round | extra fit s | extra MB to clients "
            "| extra MB from clients | bytes from clients x plain |",
            "|---|---:|---:|---:|---:|---:|",
        ]
        for e in extra:
            lines.append(
                f"| {e['shared_parameters']} | {e['extra_s_per_round']:+.2f} "
                f"({e['ratio_s_per_round']:.2f}x) | {e['extra_fit_s_per_round']:+.2f} "
                f"| {e['extra_bytes_to_clients_per_round'] / MB:+.3f} "
                f"| {e['extra_bytes_from_clients_per_round'] / MB:+.3f} "
                f"| {e['ratio_bytes_from_clients_per_round']:.2f} |"
            )
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default="food-kitchen")
    ap.add_argument("--data-dir", default=None, help="data root (default: $FEDSCOPE_DATA_DIR)")
    ap.add_argument("--clients", type=int, default=50)
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--shared", nargs="+", default=["all", "no-item-table"])
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    if args.rounds < 2:
        ap.error("--rounds must be at least 2 (round 1 is warm-up and not averaged)")
    print("$ python " + " ".join(sys.argv), flush=True)
    started_load = load_average()
    results = []
    for shared in args.shared:
        for secagg in (False, True):
            res = run_configuration(
                args.data, args.data_dir, secagg, shared, args.clients, args.rounds
            )
            results.append(res)
            brief = {k: v for k, v in res.items() if k not in ("per_round", "bytes_per_stage")}
            print(json.dumps(brief), flush=True)
    extra = extras(results)
    report = {
        "what": "SecAgg+ cost per round, K clients, fraction 0.2, batch 256, E = 1",
        "data": args.data,
        "method": "fedscope",
        "K": args.clients,
        "rounds": args.rounds,
        "bytes_measure": (
            "protobuf size of each message's content (Flower RecordDict), summed over every "
            "message the ServerApp sends (each client's own copy) and every reply it receives"
        ),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
        "load_avg_start": started_load,
        "load_avg_end": load_average(),
        "configurations": results,
        "secagg_extra": extra,
    }
    print(markdown(results, extra))
    print(f"load average (1, 5, 15 min): start {started_load}, end {report['load_avg_end']}")
    if args.out:
        args.out.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    run_reporting_errors(main)
