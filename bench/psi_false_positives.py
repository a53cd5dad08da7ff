"""How often each openmined-psi data structure returns an identifier outside the other set.

    python bench/psi_false_positives.py --runs 300 --out bench/results/psi_false_positives.json

Each run is one ``fedscope.privacy.psi.intersect`` of the same two sets (|A| = 400,
|B| = 300, 120 shared, fpr 1e-9 by default) with fresh keys, so runs are independent draws.
Counted per structure: runs whose result holds an identifier not in B (false positive) and
runs that miss a shared identifier (which PSI must never do).
"""

from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path

from fedscope.cli.errors import run_reporting_errors
from fedscope.privacy.psi import DEFAULT_FPR, STRUCTURES, intersect


def two_sets(n_a: int, n_b: int, n_shared: int, seed: int) -> tuple[list[str], list[str]]:
    rng = random.Random(seed)
    pool = [f"u{rng.getrandbits(64):016x}" for _ in range(n_a + n_b - n_shared)]
    a = pool[:n_shared] + pool[n_shared:n_a]
    b = pool[:n_shared] + pool[n_a:]
    return a, b


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=300)
    ap.add_argument("--fpr", type=float, default=DEFAULT_FPR)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    a, b = two_sets(400, 300, 120, seed=7)
    truth = set(a) & set(b)
    rows = []
    for structure in STRUCTURES:
        started = time.perf_counter()
        with_extra = with_miss = 0
        for _ in range(args.runs):
            shared = set(intersect(a, b, args.fpr, structure=structure)[0])
            with_extra += bool(shared - truth)
            with_miss += bool(truth - shared)
        rows.append(
            {
                "structure": structure,
                "runs": args.runs,
                "runs_with_false_positive": with_extra,
                "runs_with_miss": with_miss,
                "seconds": round(time.perf_counter() - started, 1),
            }
        )
        print(
            f"{structure}: {with_extra} of {args.runs} runs with a false positive, "
            f"{with_miss} with a miss",
            flush=True,
        )
    if args.out is not None:
        summary = {"n_a": 400, "n_b": 300, "n_shared": 120, "fpr": args.fpr, "rows": rows}
        args.out.write_text(json.dumps(summary, indent=1) + "\n")


if __name__ == "__main__":
    run_reporting_errors(main)
