"""What private set intersection costs fedscope: time and bytes, two parties and K clients.

    python bench/psi_cost.py --out bench/results/psi_cost.json
    python bench/psi_cost.py --sizes 1000 --structures gcs --skip-align   # quick look

Two parties (``fedscope.privacy.psi.intersect``): both hold n identifiers, half of them
shared, n in {1k, 10k, 16,579} (16,579 is Food-Kitchen's user count), for each data
structure the library offers. Reported: the three message sizes, each party's compute time,
and whether the result equals the exact intersection.

K clients (``align_clients``, every unordered pair once), users split by domain the way
``partition(scheme="by-domain")`` does it: even clients hold domain 0, odd clients domain
1, and a user active in both domains sits on one even and one odd client. Scenarios:

* ``50x330``: 50 clients of 330 users each (16,500 client-user slots) where half of the
  distinct users are on two clients (11,000 distinct users, 5,500 of them split).
* ``food-kitchen``: 16,579 users, all active in both domains (as in C2DSR's Food-Kitchen),
  over 50 clients (about 663 users per client).

Besides the all-pairs cost, the cost of the pairs that join an even and an odd client is
reported: only those can share users when clients announce the domain they hold.

Times are wall-clock on the machine it runs on; the load average is recorded, since other
jobs sharing the CPU slow the numbers down.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import sys
import time
from pathlib import Path

import private_set_intersection.python as psi

from fedscope.cli.errors import run_reporting_errors
from fedscope.privacy.psi import DEFAULT_FPR, STRUCTURES, align_clients, intersect


def two_party(n: int, overlap: float, structure: str, seed: int) -> dict:
    rng = random.Random(seed)
    n_shared = round(n * overlap)
    pool = [f"user-{rng.getrandbits(64):016x}" for _ in range(2 * n - n_shared)]
    a = pool[:n]
    b = pool[:n_shared] + pool[n:]
    rng.shuffle(a)
    rng.shuffle(b)
    start = time.perf_counter()
    shared, t = intersect(a, b, DEFAULT_FPR, structure=structure)  # type: ignore[arg-type]
    wall = time.perf_counter() - start
    in_b = set(b)
    return {
        "n_initiator": n,
        "n_responder": n,
        "n_shared": n_shared,
        "structure": structure,
        "fpr": t.fpr,
        "setup_bytes": t.setup_bytes,
        "request_bytes": t.request_bytes,
        "response_bytes": t.response_bytes,
        "total_bytes": t.total_bytes,
        "initiator_s": round(t.initiator_seconds, 3),
        "responder_s": round(t.responder_seconds, 3),
        "wall_s": round(wall, 3),
        "exact": shared == [u for u in a if u in in_b],
    }


def by_domain_clients(
    n_clients: int, n_users: int, two_client_share: float, seed: int
) -> dict[int, list[str]]:
    """Users split by domain: a user active in both domains is on one even and one odd client."""
    rng = random.Random(seed)
    ids = [f"user-{rng.getrandbits(64):016x}" for _ in range(n_users)]
    n_two = round(n_users * two_client_share)
    both, single = ids[:n_two], ids[n_two:]
    sides: list[list[str]] = [list(both), list(both)]
    for n, user in enumerate(single):
        sides[n % 2].append(user)
    clients: dict[int, list[str]] = {}
    for domain, users in enumerate(sides):
        rng.shuffle(users)
        owners = [k for k in range(n_clients) if k % 2 == domain]
        for i, k in enumerate(owners):
            clients[k] = users[i * len(users) // len(owners) : (i + 1) * len(users) // len(owners)]
    return clients


def align(name: str, n_clients: int, n_users: int, two_client_share: float, seed: int) -> dict:
    clients = by_domain_clients(n_clients, n_users, two_client_share, seed)
    start = time.perf_counter()
    result = align_clients(clients)
    wall = time.perf_counter() - start

    owners: dict[str, list[int]] = {}
    for k, users in clients.items():
        for u in users:
            owners.setdefault(u, []).append(k)
    expected = {k: [u for u in users if len(owners[u]) > 1] for k, users in clients.items()}
    cross = [t for (i, j), t in result.transcripts.items() if i % 2 != j % 2]
    sizes = [len(u) for u in clients.values()]
    return {
        "scenario": name,
        "n_clients": n_clients,
        "distinct_users": n_users,
        "users_on_two_clients": sum(len(o) == 2 for o in owners.values()),
        "users_per_client_min": min(sizes),
        "users_per_client_max": max(sizes),
        "pairs": result.n_pairs,
        "fpr_total": DEFAULT_FPR,
        "fpr_per_pair": result.fpr_per_pair,
        "total_bytes": result.total_bytes,
        "total_party_s": round(result.total_seconds, 1),
        "wall_s": round(wall, 1),
        "mean_pair_s": round(result.total_seconds / result.n_pairs, 4),
        "mean_pair_bytes": round(result.total_bytes / result.n_pairs),
        "cross_domain_pairs": len(cross),
        "cross_domain_bytes": sum(t.total_bytes for t in cross),
        "cross_domain_party_s": round(sum(t.total_seconds for t in cross), 1),
        "exact": result.overlapping_users == expected,
        "false_positives_dropped": result.false_positives_dropped,
    }


def _kb(n: int) -> str:
    return f"{n / 1000:,.1f}"


def markdown(report: dict) -> str:
    lines = [
        "Two parties, 50% overlap, fpr 1e-9 (sizes in kB; seconds of compute per party)",
        "",
        "| n per party | structure | setup kB | request kB | response kB | total kB "
        "| initiator s | responder s | exact |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in report["two_party"]:
        lines.append(
            f"| {r['n_initiator']:,} | {r['structure']} | {_kb(r['setup_bytes'])} "
            f"| {_kb(r['request_bytes'])} | {_kb(r['response_bytes'])} | {_kb(r['total_bytes'])} "
            f"| {r['initiator_s']:.2f} | {r['responder_s']:.2f} | {r['exact']} |"
        )
    if report["align"]:
        lines += [
            "",
            "align_clients, users split by domain, fpr 1e-9 over all pairs (GCS)",
            "",
            "| scenario | K | users | on 2 clients | users/client | pairs | total MB "
            "| party s | wall s | s/pair | cross-domain pairs | their MB | their s | exact |",
            "|---|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---|",
        ]
        for r in report["align"]:
            lines.append(
                f"| {r['scenario']} | {r['n_clients']} | {r['distinct_users']:,} "
                f"| {r['users_on_two_clients']:,} "
                f"| {r['users_per_client_min']}-{r['users_per_client_max']} | {r['pairs']} "
                f"| {r['total_bytes'] / 1e6:,.1f} | {r['total_party_s']:.1f} | {r['wall_s']:.1f} "
                f"| {r['mean_pair_s']:.3f} | {r['cross_domain_pairs']} "
                f"| {r['cross_domain_bytes'] / 1e6:,.1f} | {r['cross_domain_party_s']:.1f} "
                f"| {r['exact']} |"
            )
    meta = report["meta"]
    lines += [
        "",
        f"openmined-psi {meta['openmined_psi']}, {meta['cpus']} CPUs, load average "
        f"{meta['load_before'][0]:.2f} before / {meta['load_after'][0]:.2f} after (1 min).",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000, 16579])
    parser.add_argument("--overlap", type=float, default=0.5)
    parser.add_argument(
        "--structures", nargs="+", choices=list(STRUCTURES), default=list(STRUCTURES)
    )
    parser.add_argument("--skip-align", action="store_true")
    parser.add_argument(
        "--scenarios",
        nargs="+",
        choices=["50x330", "food-kitchen"],
        default=["50x330", "food-kitchen"],
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--note", default="", help="free text saved with the results")
    parser.add_argument("--out", type=Path, default=Path("/tmp/psi_cost.json"))
    args = parser.parse_args(argv)

    report: dict = {
        "meta": {
            "openmined_psi": psi.__version__,
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "load_before": os.getloadavg(),
            "note": args.note,
        },
        "two_party": [],
        "align": [],
    }
    for n in args.sizes:
        for structure in args.structures:
            row = two_party(n, args.overlap, structure, args.seed)
            report["two_party"].append(row)
            print(json.dumps(row), file=sys.stderr, flush=True)
    if not args.skip_align:
        scenarios = {
            # 50 x 330 slots; with half the users on two clients that is 16,500 / 1.5 users.
            "50x330": (50, 11_000, 0.5),
            "food-kitchen": (50, 16_579, 1.0),
        }
        for name in args.scenarios:
            row = align(name, *scenarios[name], seed=args.seed)
            report["align"].append(row)
            print(json.dumps(row), file=sys.stderr, flush=True)
    report["meta"]["load_after"] = os.getloadavg()

    table = markdown(report)
    report["markdown"] = table
    print(table)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nsaved {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(run_reporting_errors(main))
