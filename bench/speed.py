"""Issue #3 speed: local training throughput, federated round time, its overhead, K scaling.

    python bench/speed.py throughput --data food-kitchen            # harness vs bare loop
    python bench/speed.py rounds --data food-kitchen --clients 20 50 100 500 --rounds 3
    python bench/speed.py bank --data food-kitchen-llmcdsr --users 1062   # IIDCL's bank

`throughput`: sequences (users) per second of one client step over 2,000 users on 2 threads,
through fedscope's client step (batching, negative sampling, IIDCL bank, Adam) against a bare
PyTorch loop over the same model and losses with every batch and negative prepared up front
(the ceiling).

`bank`: IIDCL's representation bank for one client, as built now (users sorted by length,
small batches) against row order in batches of 1,024 (how it was built before commit 674df9c),
one thread, alternating, median of ``--reps``; and one whole client step with each, to show
what the bank is of a step. The vectors must be equal.

`rounds`: real federated runs through Flower's simulation engine (K clients, C=0.2, paper
batch 256, E=1). Per round: the fit time the server measured, and the model computation the
sampled clients reported (`compute_s`); with two simulated clients at a time the ideal fit
time is sum(compute) / 2, and the rest is overhead (Flower messaging, Ray, (de)serialising
the weights). Rounds after the first are averaged (the first also loads data in every worker).
The overhead is split in worker-seconds with what each client reports (`update_s`: the task's
whole update; `app_s`: the whole ClientApp, mods included): bookkeeping, record
(de)serialisation and mods, and the time spent outside the ClientApp.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from fedscope.cli.errors import run_reporting_errors
from fedscope.config import load_config
from fedscope.data import load_dataset
from fedscope.experiments import runner
from fedscope.federation import run_dir as layout
from fedscope.losses import inter_domain_loss, intra_domain_loss, next_item_bce, sample_negatives
from fedscope.methods import DataShape, StepContext, method_class


def throughput(data: str, method: str, n_users: int, reps: int) -> dict:
    torch.set_num_threads(2)
    cfg = load_config(None, [f"method={method}", f"data.name={data}"])
    ds = load_dataset(data, cfg.data.data_dir)
    users = np.sort(np.random.default_rng(0).permutation(ds.n_users)[:n_users])
    m = method_class(method)(cfg, DataShape.of(ds))
    ex = m.prepare_client(ds, users, tuple(range(ds.n_domains)))
    n_seq = int((ex.target >= 0).any(axis=1).sum())

    model = m.build_model(0)
    m.client_step(model, ex, StepContext(0, 0, 0, 1))  # warm-up
    t = []
    for r in range(reps):
        t0 = time.perf_counter()
        m.client_step(model, ex, StepContext(r + 1, r + 1, 0, 1))
        t.append(time.perf_counter() - t0)
    harness = n_seq / float(np.median(t))

    # The ceiling: the same model and losses, batches and negatives built before timing.
    model = m.build_model(0)
    model.train()
    opt = torch.optim.Adam(model.parameters(), lr=cfg.train.lr, fused=True)  # as the harness
    gen = torch.Generator().manual_seed(0)
    batches = list(ex.batches(cfg.train.batch_size, np.random.default_rng(0)))
    shape = m.shape
    prepared = []
    for b in batches:
        negs = {}
        for d, (off, size) in enumerate(zip(shape.domain_offsets, shape.domain_sizes, strict=True)):
            sel = b.target_domain == d
            if bool(sel.any()):
                negs[d] = (sel, sample_negatives(b.target[sel] - off, size, 1, gen) + off)
        prepared.append((b, negs))
    contrastive = method == "fedscope"

    def bare_epoch() -> None:
        for b, negs in prepared:
            states, last = model.forward_train(b)
            loss = states.sum() * 0.0
            for sel, neg in negs.values():
                loss = loss + next_item_bce(
                    states[sel], model.item_vectors(b.target[sel]), model.item_vectors(neg)
                )
            if contrastive:
                for d in range(len(shape.domain_sizes)):
                    mask = b.present[d]
                    if bool(mask.any()):
                        pool = last[d][mask].detach()
                        idx = torch.arange(pool.shape[0])
                        loss = loss + 0.05 * intra_domain_loss(last[d][mask], pool, idx, n_users)
                loss = loss + 0.05 * inter_domain_loss(last, b.present, n_negatives=100).sum()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

    bare_epoch()
    t = []
    for _ in range(reps):
        t0 = time.perf_counter()
        bare_epoch()
        t.append(time.perf_counter() - t0)
    bare = n_seq / float(np.median(t))
    return {
        "method": method,
        "sequences": n_seq,
        "harness_seq_per_s": round(harness, 1),
        "bare_seq_per_s": round(bare, 1),
        "harness_share_of_ceiling": round(harness / bare, 3),
    }


@torch.no_grad()
def _bank_in_row_order(m, model, ex) -> tuple[torch.Tensor, torch.Tensor]:
    """The bank as built before commit 674df9c: rows in order, 1,024 a batch."""
    was = model.training
    model.eval()
    reps, present = [], []
    for batch in ex.all_rows(1024):
        _, last = model.forward_train(batch)
        reps.append(last)
        present.append(batch.present)
    model.train(was)
    return torch.cat(reps, dim=1), torch.cat(present, dim=1)


def bank(data: str, n_users: int, reps: int) -> dict:
    torch.set_num_threads(1)
    cfg = load_config(None, ["method=fedscope", f"data.name={data}"])
    ds = load_dataset(data, cfg.data.data_dir)
    users = np.sort(np.random.default_rng(0).permutation(ds.n_users)[:n_users])
    m = method_class("fedscope")(cfg, DataShape.of(ds))
    ex = m.prepare_client(ds, users, tuple(range(ds.n_domains)))
    model = m.build_model(0)
    ways = {
        "sorted": lambda: m._bank(model, ex),
        "row order": lambda: _bank_in_row_order(m, model, ex),
    }
    first = {name: f() for name, f in ways.items()}
    diff = (first["sorted"][0] - first["row order"][0]).abs().max().item()
    if not torch.equal(first["sorted"][1], first["row order"][1]):
        raise AssertionError("the two banks disagree on which users have which domain")
    bank_s: dict[str, list[float]] = {name: [] for name in ways}
    step_s: dict[str, list[float]] = {name: [] for name in ways}
    original = type(m)._bank
    for r in range(reps):
        for name, f in ways.items():
            t0 = time.perf_counter()
            f()
            bank_s[name].append(time.perf_counter() - t0)
            type(m)._bank = original if name == "sorted" else _bank_in_row_order
            try:
                step_model = m.build_model(0)
                t0 = time.perf_counter()
                m.client_step(step_model, ex, StepContext(r + 1, r + 1, 0, 1))
                step_s[name].append(time.perf_counter() - t0)
            finally:
                type(m)._bank = original
    lengths = (ex.mixed > 0).sum(axis=1)
    return {
        "data": data,
        "users": int(ex.n_users),
        "length_median": float(np.median(lengths)),
        "length_max": int(lengths.max()),
        "banks_max_abs_diff": diff,
        "bank_s": {k: round(float(np.median(v)), 3) for k, v in bank_s.items()},
        "client_step_s": {k: round(float(np.median(v)), 3) for k, v in step_s.items()},
    }


WORKERS = 2  # simulated clients running at a time (one torch thread each, 2 cores)


def rounds(data: str, method: str, n_clients: int, n_rounds: int, sets: list[str]) -> dict:
    cfg = load_config(
        None,
        [
            f"data.name={data}",
            f"method={method}",
            f"partition.n_clients={n_clients}",
            f"federation.rounds={n_rounds}",
            "eval.every=1000",
            *sets,
        ],
    )
    with tempfile.TemporaryDirectory() as tmp:
        run_dir = runner.prepare_run(cfg, Path(tmp) / "run")
        from fedscope.federation.simulation import run_simulation

        t0 = time.perf_counter()
        run_simulation(run_dir, n_clients, run_config={"torch-threads": 1})
        wall = time.perf_counter() - t0
        rows = layout.read_metrics(run_dir)
    later = [r for r in rows if r["round"] > 1 and r["round"] < n_rounds] or rows[1:] or rows
    fit = float(np.mean([r["fit_s"] for r in later]))

    def per_round_total(key: str) -> float:
        # nan where the clients do not report it (a build before the timing split)
        return float(
            np.mean([r["client_train"].get(key, np.nan) * len(r["sampled"]) for r in later])
        )

    compute, update, app = (per_round_total(k) for k in ("compute_s", "update_s", "app_s"))
    ideal = compute / WORKERS
    return {
        "K": n_clients,
        "sampled_per_round": len(rows[-1]["sampled"]),
        "fit_s_per_round": round(fit, 2),
        "client_compute_s_per_round_total": round(compute, 2),
        "ideal_fit_s_on_2_workers": round(ideal, 2),
        "overhead_share": round(max(0.0, fit - ideal) / fit, 3),
        # Where the overhead goes, in worker-seconds per round (WORKERS x fit time in all):
        # the task's bookkeeping around the model step (weights in, delta out, checks), the
        # ClientApp's record (de)serialisation and mods, and time outside the ClientApp
        # (Ray and Flower transport, scheduling, waiting for the server or a straggler).
        "worker_s_bookkeeping": round(update - compute, 2),
        "worker_s_records_and_mods": round(app - update, 2),
        "worker_s_outside_client_app": round(WORKERS * fit - app, 2),
        "run_wall_s": round(wall, 1),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("what", choices=["throughput", "rounds", "bank"])
    ap.add_argument("--data", default="food-kitchen")
    ap.add_argument("--methods", nargs="+", default=["fedscope", "sasrec"])
    ap.add_argument("--users", type=int, default=2000)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--clients", type=int, nargs="+", default=[20, 50, 100, 500])
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--set", dest="sets", action="append", default=[])
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    print("$ python " + " ".join(sys.argv), flush=True)
    out = []
    if args.what == "bank":
        out.append(bank(args.data, args.users, args.reps))
        print(json.dumps(out[-1]), flush=True)
    elif args.what == "throughput":
        for method in args.methods:
            out.append(throughput(args.data, method, args.users, args.reps))
            print(json.dumps(out[-1]), flush=True)
    else:
        for method in args.methods:
            for k in args.clients:
                res = {"method": method, **rounds(args.data, method, k, args.rounds, args.sets)}
                out.append(res)
                print(json.dumps(res), flush=True)
    if args.out:
        args.out.write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    run_reporting_errors(main)
