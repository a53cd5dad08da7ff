"""Small hand-made data sets for tests, and the CLI as a user runs it."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np

from fedscope.data.dataset import CrossDomainDataset, Domain
from fedscope.data.protocols import leave_one_out


def tiny_dataset(seqs: list[list[int]], n_items: tuple[int, int] = (20, 30)) -> CrossDomainDataset:
    """Two domains; each list is a user's chronological sequence of global item ids."""
    a, b = n_items
    domains = [
        Domain(
            "A",
            0,
            tuple(f"a{i}" for i in range(a)),
            {"title": tuple(f"item a{i}" for i in range(a))},
        ),
        Domain("B", a, tuple(f"b{i}" for i in range(b)), {}),
    ]
    ds = leave_one_out(
        name="tiny",
        protocol="tiny-loo",
        protocol_note="hand-made",
        domains=domains,
        user_keys=[f"u{i}" for i in range(len(seqs))],
        user_seqs=[np.array(s, dtype=np.int64) for s in seqs],
        user_times=[np.arange(len(s), dtype=np.int64) for s in seqs],
    )
    ds.fingerprint = "tiny-" + "-".join("_".join(map(str, s)) for s in seqs)[:40]
    ds.check_consistency()
    return ds


def run_cli(*args: str) -> subprocess.CompletedProcess:
    """``fedscope ARGS`` in a subprocess, wide enough that tables do not wrap, without the
    debug switch that would turn one-line errors into tracebacks."""
    env = dict(os.environ, COLUMNS="200")
    env.pop("FEDSCOPE_DEBUG", None)
    return subprocess.run(
        [sys.executable, "-m", "fedscope.cli", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
