"""How much of a training batch is padding, with random and with length-sorted batches.

    FEDSCOPE_DATA_DIR=../shared/data python bench/padding.py \
        --data food-kitchen-llmcdsr food-kitchen --out bench/results/padding.json

A batch is as wide as its longest user (``ClientExamples.batch``), so on long-tailed data most
cells of a random batch are padding, and the model's cost follows the cells, not the
positions. For every client of the data set's partition (``configs/food-kitchen.toml`` with
``--set`` overrides, the comparison's K = 50 by default) this builds the client's real training
examples and cuts one epoch of batches both ways (``train.length_buckets`` off and on), and
reports the share of batch cells that are real positions. It also reports how many users'
training sequences ``model.max_len`` would truncate, for a few values of it.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np

from fedscope.cli.errors import run_reporting_errors
from fedscope.config import load_config
from fedscope.data import load_dataset
from fedscope.experiments import runner
from fedscope.methods import DataShape, method_class

REPO = Path(__file__).resolve().parents[1]


def used_share(dataset_name: str, sets: list[str], max_lens: list[int]) -> dict[str, Any]:
    cfg = load_config(REPO / "configs" / "food-kitchen.toml", [f"data.name={dataset_name}", *sets])
    ds = load_dataset(cfg.data.name, cfg.data.data_dir, **cfg.data.options)
    method = method_class(cfg.method)(cfg, DataShape.of(ds))
    partitioning = runner.make_partitioning(cfg, ds)
    cells = {"random": [0, 0], "by_length": [0, 0]}  # [real positions, all cells]
    users = 0
    for client in partitioning.clients:
        ex = method.prepare_client(ds, client.users, client.domains)
        users += ex.n_users
        for name, by_length in (("random", False), ("by_length", True)):
            rng = np.random.default_rng(client.client_id)
            for batch in ex.batches(cfg.train.batch_size, rng, by_length=by_length):
                cells[name][0] += int((batch.target >= 0).sum())
                cells[name][1] += int(batch.target.numel())
    train_len = np.asarray(ds.train_len)
    train_len = train_len[train_len > 1]  # sequences that give at least one target
    return {
        "data": dataset_name,
        "clients": partitioning.n_clients,
        "users": users,
        "batch_size": cfg.train.batch_size,
        "max_len": cfg.model.max_len,
        "positions_per_user": cells["random"][0] / users,
        "share_used": {k: v[0] / v[1] for k, v in cells.items()},
        "cells": {k: v[1] for k, v in cells.items()},
        # a training sequence of n items gives n - 1 positions; max_len keeps the last max_len + 1
        "truncated_share": {str(m): float((train_len > m + 1).mean()) for m in max_lens},
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", nargs="+", default=["food-kitchen-llmcdsr", "food-kitchen"])
    ap.add_argument("--set", dest="sets", action="append", default=[])
    ap.add_argument("--max-lens", type=int, nargs="+", default=[20, 50])
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    rows = [used_share(name, args.sets, args.max_lens) for name in args.data]
    print(
        "| data | users | positions per user | share of batch cells used, random | sorted by length | cells, sorted / random | truncated by max_len |"
    )
    print("|---|---:|---:|---:|---:|---:|---|")
    for r in rows:
        trunc = ", ".join(f"{m}: {100 * v:.1f}%" for m, v in r["truncated_share"].items())
        print(
            f"| {r['data']} | {r['users']:,} | {r['positions_per_user']:.2f} | {100 * r['share_used']['random']:.1f}% | "
            f"{100 * r['share_used']['by_length']:.1f}% | "
            f"{r['cells']['by_length'] / r['cells']['random']:.2f} | {trunc} |"
        )
    if args.out:
        args.out.write_text(json.dumps({"rows": rows}, indent=1))
        print(f"wrote {args.out}")


if __name__ == "__main__":
    run_reporting_errors(main)
