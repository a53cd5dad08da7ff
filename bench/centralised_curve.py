"""Validation learning curve of one method trained centrally (one client holding everyone).

A quick, federation-free way to compare model variants before spending federated rounds:

    python bench/centralised_curve.py synthetic fedscope 20 train.lr=0.005 model.fusion_residual=false

prints validation HR@10/MRR (%) every 5 epochs on a fixed subset of 3,000 validation
instances (sampled protocol, 999 negatives), the last training loss and the wall time.
One torch thread, so two variants can run side by side on 2 cores.
"""

from __future__ import annotations

import sys
import time

import numpy as np
import torch

from fedscope.cli.errors import run_reporting_errors
from fedscope.config import load_config
from fedscope.data import load_dataset
from fedscope.evaluation import Evaluator
from fedscope.methods import DataShape, StepContext, method_class


def main() -> None:
    data, method, epochs, *sets = sys.argv[1:]
    torch.set_num_threads(1)
    cfg = load_config(None, [f"method={method}", f"data.name={data}", *sets])
    ds = load_dataset(data, cfg.data.data_dir, **cfg.data.options)
    ev = Evaluator(ds, "valid", "sampled", max_instances=3000)
    m = method_class(method)(cfg, DataShape.of(ds))
    model = m.build_model(cfg.seed)
    ex = m.prepare_client(ds, np.arange(ds.n_users), tuple(range(ds.n_domains)))
    t0, points, stats = time.perf_counter(), [], {}
    for epoch in range(1, int(epochs) + 1):
        stats = m.client_step(model, ex, StepContext(epoch, epoch, 0, 1))
        if epoch % 5 == 0 or epoch == int(epochs):
            r = ev.evaluate(m.scorer(model)).metrics["overall"]
            points.append(f"{epoch}:{100 * r['HR@10']:.1f}/{100 * r['MRR']:.1f}")
    print(
        f"{method} {' '.join(sets)} | {' '.join(points)} | loss {stats['loss']:.3f} | "
        f"{time.perf_counter() - t0:.0f}s",
        flush=True,
    )


if __name__ == "__main__":
    run_reporting_errors(main)
