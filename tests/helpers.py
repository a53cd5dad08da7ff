"""Small hand-made data sets for tests, and the CLI as a user runs it."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType

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


@contextmanager
def run_held_by_another_process(run_dir: Path) -> Iterator[subprocess.Popen]:
    """Another Python process holding ``run_dir``'s writer lock until the block ends (or until
    the caller kills it: the kernel drops the lock with the process)."""
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import time\n"
            "from fedscope.federation.run_dir import exclusive\n"
            f"with exclusive({str(run_dir)!r}):\n"
            "    print('held', flush=True)\n"
            "    time.sleep(120)\n",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        yield holder
    finally:
        if holder.poll() is None:
            holder.kill()
        holder.wait(timeout=30)


def load_bench_script(name: str) -> ModuleType:
    """Import ``bench/<name>.py`` (bench/ is scripts, not a package) as module ``name``."""
    path = Path(__file__).resolve().parents[1] / "bench" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None, f"cannot import {path}"
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module
