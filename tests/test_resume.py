"""A federated run ends exactly like an uninterrupted one after a SIGKILL mid-way and a resume,
and whatever the number of clients the simulation trains at once."""

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from fedscope.federation import run_dir as layout

pytestmark = pytest.mark.slow

SETTINGS = [
    "--set",
    'data.options={"n_users": 300, "n_items": 120}',
    "--set",
    "method=fedscope",
    "--set",
    "federation.rounds=6",
    "--set",
    "partition.n_clients=4",
    "--set",
    "federation.fraction=0.5",
    "--set",
    "train.batch_size=32",
    "--set",
    "eval.valid_subset=200",
]


def _start(args: list[str], log: Path) -> subprocess.Popen:
    env = dict(os.environ, COLUMNS="200", FLWR_DISABLE_UPDATE_CHECK="1", FLWR_TELEMETRY_ENABLED="0")
    # Own session: the run, Ray's daemons and its workers share one process group to kill.
    return subprocess.Popen(
        [sys.executable, "-m", "fedscope.cli", *args],
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
        env=env,
        start_new_session=True,
    )


def _stop(proc: subprocess.Popen, sig: int = signal.SIGKILL) -> None:
    with contextlib.suppress(ProcessLookupError):  # already gone
        os.killpg(proc.pid, sig)
    proc.wait(timeout=60)


def _run_to_end(args: list[str], log: Path) -> None:
    proc = _start(args, log)
    try:
        assert proc.wait(timeout=900) == 0, log.read_text()[-3000:]
    finally:
        _stop(proc)


@pytest.fixture(scope="module")
def straight(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The uninterrupted run, two clients training at once (the default)."""
    run_dir = tmp_path_factory.mktemp("straight") / "run"
    _run_to_end(["train", *SETTINGS, "--run-dir", str(run_dir)], run_dir.parent / "run.log")
    return run_dir


def _assert_same_run(a_dir: Path, b_dir: Path) -> None:
    a = layout.load_checkpoint(layout.last_checkpoint_path(a_dir))
    b = layout.load_checkpoint(layout.last_checkpoint_path(b_dir))
    assert a.round == b.round == 6
    for x, y in zip(a.weights, b.weights, strict=True):
        np.testing.assert_array_equal(x, y)
    rounds_a = [r["round"] for r in layout.read_metrics(a_dir)]
    rounds_b = [r["round"] for r in layout.read_metrics(b_dir)]
    assert rounds_a == rounds_b == [1, 2, 3, 4, 5, 6]
    ra = json.loads((a_dir / "results.json").read_text())
    rb = json.loads((b_dir / "results.json").read_text())
    assert ra["selected_round"] == rb["selected_round"]
    assert ra["test"] == rb["test"]


def test_sigkill_then_resume_equals_uninterrupted(straight: Path, tmp_path: Path) -> None:
    killed = tmp_path / "killed"
    proc = _start(["train", *SETTINGS, "--run-dir", str(killed)], tmp_path / "killed.log")
    try:
        deadline = time.time() + 600
        last = layout.last_checkpoint_path(killed)
        while time.time() < deadline:
            # Poll the checkpoint itself: a round's metrics line is written before its
            # checkpoint, and a kill between the two is a case resume must also handle.
            if last.exists() and layout.load_checkpoint(last).round >= 3:
                break
            assert proc.poll() is None, (tmp_path / "killed.log").read_text()[-3000:]
            time.sleep(0.2)
        else:
            pytest.fail("the run never reached round 3")
    finally:
        _stop(proc)  # SIGKILL to the whole process group, mid-run
    interrupted_at = layout.load_checkpoint(layout.last_checkpoint_path(killed)).round
    assert 3 <= interrupted_at < 6
    assert not (killed / "results.json").exists()

    _run_to_end(["train", "--resume", str(killed)], tmp_path / "resumed.log")
    _assert_same_run(straight, killed)


def test_how_many_clients_train_at_once_changes_nothing(straight: Path, tmp_path: Path) -> None:
    """One Ray worker running every sampled client in turn gives the two-worker run exactly:
    a client's training depends on (seed, round, client), never on the worker or its past."""
    one = tmp_path / "one-at-a-time"
    args = ["train", *SETTINGS, "--set", "federation.parallel_clients=1", "--run-dir", str(one)]
    _run_to_end(args, tmp_path / "one.log")
    assert json.loads((one / "config.json").read_text())["federation"]["parallel_clients"] == 1
    _assert_same_run(straight, one)
