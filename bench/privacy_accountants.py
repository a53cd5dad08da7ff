"""Privacy accountants side by side, and the noise FedSCOPE's RQ6 budgets imply.

    python bench/privacy_accountants.py --out bench/results/privacy_accountants.json

`grid`: epsilon at delta = 1e-5 after T rounds of the Poisson-subsampled Gaussian mechanism
(noise multiplier z, sampling rate q) from dp-accounting ("rdp") and Opacus ("opacus-rdp") over
the same RDP orders, their relative difference, and the time of one fresh evaluation (compose
T rounds, then epsilon) per library; the median of --repeats runs.

`rq6`: the issue's RQ6 settings: epsilon_total in {0.25, 0.5, 1, 2, 4} over K = 50 equal
clients (beta = 0, so each client gets epsilon_total / K and delta_k = 1e-5 / K), q = 0.2,
T = 200. Per setting: the noise multiplier that keeps a client within (epsilon_k, delta_k) over
all T rounds (noise_multiplier_for_budget, searched up to z = 1e5 so the number is reported
even beyond the default cap of 1000), the paper's per-round z for the same (epsilon_k, delta_k)
and what that per-round noise actually spends over T rounds, and, for contrast, the z if every
client had the whole epsilon_total to itself.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

from fedscope.cli.errors import run_reporting_errors
from fedscope.privacy import (
    allocate_budgets,
    epsilon_after,
    make_accountant,
    noise_multiplier_for_budget,
    paper_noise_multiplier,
)
from fedscope.privacy import calibration as calibration_module
from fedscope.privacy.accountant import OPACUS_MAX_ORDER, RDP_ORDERS

GRID_Z = (0.8, 1.1, 2.0, 5.0)
GRID_Q = (0.1, 0.2)
GRID_ROUNDS = (50, 200)
GRID_DELTA = 1e-5

RQ6_EPSILON_TOTAL = (0.25, 0.5, 1.0, 2.0, 4.0)
RQ6_CLIENTS = 50
RQ6_DELTA_TOTAL = 1e-5
RQ6_Q = 0.2
RQ6_ROUNDS = 200
RQ6_MAX_Z = 1e5
DEFAULT_MAX_Z = 1000.0


def _timed_epsilon(kind: str, z: float, q: float, rounds: int, delta: float, repeats: int):
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        accountant = make_accountant(kind)
        accountant.record(z, q, rounds)
        eps = accountant.epsilon(delta)
        times.append(time.perf_counter() - start)
    return eps, accountant.optimal_order(delta), statistics.median(times)


def grid(repeats: int) -> list[dict]:
    rows = []
    for z in GRID_Z:
        for q in GRID_Q:
            for rounds in GRID_ROUNDS:
                eps_rdp, order_rdp, t_rdp = _timed_epsilon("rdp", z, q, rounds, GRID_DELTA, repeats)
                eps_op, order_op, t_op = _timed_epsilon(
                    "opacus-rdp", z, q, rounds, GRID_DELTA, repeats
                )
                rows.append(
                    {
                        "noise_multiplier": z,
                        "sample_rate": q,
                        "rounds": rounds,
                        "delta": GRID_DELTA,
                        "epsilon_rdp": eps_rdp,
                        "epsilon_opacus": eps_op,
                        "rel_diff": (eps_op - eps_rdp) / eps_rdp,
                        "order_rdp": order_rdp,
                        "order_opacus": order_op,
                        "seconds_rdp": t_rdp,
                        "seconds_opacus": t_op,
                    }
                )
                print(f"  z={z} q={q} T={rounds}: {eps_rdp:.4f} vs {eps_op:.4f}", flush=True)
    return rows


def _calibrate(epsilon: float, delta: float) -> tuple[float, float, int]:
    calibration_module._epsilon_after.cache_clear()
    calibration_module._solve_noise_multiplier.cache_clear()
    start = time.perf_counter()
    z = noise_multiplier_for_budget(
        epsilon, delta, RQ6_Q, RQ6_ROUNDS, max_noise_multiplier=RQ6_MAX_Z
    )
    seconds = time.perf_counter() - start
    evaluations = calibration_module._epsilon_after.cache_info().misses
    return z, seconds, evaluations


def rq6() -> list[dict]:
    rows = []
    for eps_total in RQ6_EPSILON_TOTAL:
        budgets = allocate_budgets([1] * RQ6_CLIENTS, eps_total, RQ6_DELTA_TOTAL, beta=0.0)
        eps_k = statistics.fmean(b.epsilon for b in budgets)  # the mean share, eps_total / K
        delta_k = budgets[0].delta
        z, seconds, evaluations = _calibrate(eps_k, delta_k)
        z_paper = paper_noise_multiplier(eps_k, delta_k)
        z_whole, _, _ = _calibrate(eps_total, delta_k)
        rows.append(
            {
                "epsilon_total": eps_total,
                "clients": RQ6_CLIENTS,
                "epsilon_k": eps_k,
                "delta_k": delta_k,
                "sample_rate": RQ6_Q,
                "rounds": RQ6_ROUNDS,
                "noise_multiplier": z,
                "exceeds_default_max": z > DEFAULT_MAX_Z,
                "epsilon_at_noise_multiplier": epsilon_after(z, delta_k, RQ6_Q, RQ6_ROUNDS),
                "calibration_seconds": seconds,
                "calibration_evaluations": evaluations,
                "paper_noise_multiplier": z_paper,
                "epsilon_spent_by_paper_noise": epsilon_after(z_paper, delta_k, RQ6_Q, RQ6_ROUNDS),
                "noise_multiplier_if_whole_budget_per_client": z_whole,
            }
        )
        print(f"  eps_total={eps_total}: eps_k={eps_k:.4g} z={z:.4g}", flush=True)
    return rows


def markdown(grid_rows: list[dict], rq6_rows: list[dict]) -> str:
    lines = [
        f"Epsilon at delta = {GRID_DELTA:g} (dp-accounting RDP vs Opacus RDP):",
        "",
        "| z | q | T | eps dp-accounting | eps Opacus | rel. diff | s/call dp-acc. | s/call Opacus |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in grid_rows:
        lines.append(
            f"| {r['noise_multiplier']:g} | {r['sample_rate']:g} | {r['rounds']} "
            f"| {r['epsilon_rdp']:.4f} | {r['epsilon_opacus']:.4f} | {r['rel_diff']:+.2%} "
            f"| {r['seconds_rdp']:.3f} | {r['seconds_opacus']:.3f} |"
        )
    lines += [
        "",
        f"RQ6: K = {RQ6_CLIENTS} equal clients (beta = 0), q = {RQ6_Q:g}, T = {RQ6_ROUNDS}, "
        f"delta_k = {RQ6_DELTA_TOTAL:g} / {RQ6_CLIENTS}:",
        "",
        "| eps_total | eps_k | z for (eps_k, delta_k) over T | paper z (1 round) "
        "| eps spent by paper z over T | z if eps_k = eps_total | calibration s (evals) |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rq6_rows:
        flag = " (> 1000)" if r["exceeds_default_max"] else ""
        lines.append(
            f"| {r['epsilon_total']:g} | {r['epsilon_k']:.4g} | {r['noise_multiplier']:.4g}{flag} "
            f"| {r['paper_noise_multiplier']:.4g} | {r['epsilon_spent_by_paper_noise']:.4g} "
            f"| {r['noise_multiplier_if_whole_budget_per_client']:.4g} "
            f"| {r['calibration_seconds']:.2f} ({r['calibration_evaluations']}) |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("bench/results/privacy_accountants.json"))
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    make_accountant("rdp")
    make_accountant("opacus-rdp")  # imports outside the timings
    print("grid:", flush=True)
    grid_rows = grid(args.repeats)
    print("rq6:", flush=True)
    rq6_rows = rq6()
    result = {
        "machine": {
            "platform": platform.platform(),
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "load_average_at_end": os.getloadavg(),
        },
        "rdp_orders": {
            "dp_accounting": list(RDP_ORDERS),
            "opacus": [a for a in RDP_ORDERS if a <= OPACUS_MAX_ORDER],
        },
        "grid": grid_rows,
        "rq6": rq6_rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print()
    print(markdown(grid_rows, rq6_rows))
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    run_reporting_errors(main)
