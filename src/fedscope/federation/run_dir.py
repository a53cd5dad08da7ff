"""The run directory: the only thing every federation process shares.

Layout (paths relative to the run directory)::

    config.json            the experiment config (opaque here; read by the task factory)
    task.json              {"factory": "module.path:callable"}: builds the FederatedTask
    metrics.jsonl          one JSON line per finished round (written by the ServerApp)
    events.jsonl           notable events: run starts, failed rounds, resumes
    server_status.json     running / done / failed, with the error of a failed ServerApp
    checkpoints/last.npz   weights after the last finished round
    checkpoints/best.npz   weights of the best validated round so far
    .lock                  held (flock) by the one process writing the run; names it

Checkpoints are replaced atomically (temporary file, fsync, ``os.replace``), so a
SIGKILL at any moment leaves the previous or the new file, never a torn one.
"""

from __future__ import annotations

import importlib
import json
import math
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from fedscope.data.errors import DataError, Problem
from fedscope.files import atomic_write, atomic_write_text

try:
    import fcntl
except ImportError:  # not POSIX: runs are not locked there
    fcntl = None  # type: ignore[assignment]

if TYPE_CHECKING:
    from fedscope.federation.task import FederatedTask, Weights

CONFIG_FILE = "config.json"
TASK_FILE = "task.json"
METRICS_FILE = "metrics.jsonl"
EVENTS_FILE = "events.jsonl"
STATUS_FILE = "server_status.json"
CHECKPOINT_DIR = "checkpoints"
LAST_CHECKPOINT = f"{CHECKPOINT_DIR}/last.npz"
BEST_CHECKPOINT = f"{CHECKPOINT_DIR}/best.npz"
LOCK_FILE = ".lock"

_WEIGHT_KEY = "weight_{:04d}"


def config_path(run_dir: Path) -> Path:
    return Path(run_dir) / CONFIG_FILE


def metrics_path(run_dir: Path) -> Path:
    return Path(run_dir) / METRICS_FILE


def events_path(run_dir: Path) -> Path:
    return Path(run_dir) / EVENTS_FILE


def status_path(run_dir: Path) -> Path:
    return Path(run_dir) / STATUS_FILE


def last_checkpoint_path(run_dir: Path) -> Path:
    return Path(run_dir) / LAST_CHECKPOINT


def best_checkpoint_path(run_dir: Path) -> Path:
    return Path(run_dir) / BEST_CHECKPOINT


# --- task.json -----------------------------------------------------------------------------


def write_task_spec(run_dir: Path, factory: str) -> Path:
    """Name the callable ``(run_dir: Path) -> FederatedTask`` that builds this run's task."""
    module_name, sep, attr = factory.partition(":")
    if not sep or not module_name or not attr.isidentifier():
        raise ValueError(f"factory {factory!r} is not of the form 'module.path:callable'")
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / TASK_FILE
    atomic_write_text(path, json.dumps({"factory": factory}, indent=1) + "\n")
    return path


def read_task_spec(run_dir: Path) -> str:
    """The factory reference in ``task.json``; a DataError names the file if it is unusable."""
    path = Path(run_dir) / TASK_FILE
    if not path.is_file():
        raise DataError(
            [Problem(path, None, "task file not found (write it with write_task_spec)")]
        )
    try:
        spec = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise DataError([Problem(path, exc.lineno, f"not valid JSON: {exc.msg}")]) from exc
    if not isinstance(spec, dict) or not isinstance(spec.get("factory"), str):
        raise DataError(
            [Problem(path, None, 'expected an object {"factory": "module.path:callable"}')]
        )
    factory = spec["factory"]
    _split_factory(factory, path)
    return factory


def build_task(run_dir: Path) -> FederatedTask:
    """Import the factory named in ``task.json`` and call it with the run directory."""
    run_dir = Path(run_dir)
    path = run_dir / TASK_FILE
    factory_ref = read_task_spec(run_dir)
    module_name, attr = _split_factory(factory_ref, path)
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise DataError(
            [Problem(path, None, f"cannot import module {module_name!r}: {exc}")]
        ) from exc
    factory: Callable[[Path], FederatedTask] | None = getattr(module, attr, None)
    if factory is None or not callable(factory):
        raise DataError(
            [Problem(path, None, f"module {module_name!r} has no callable named {attr!r}")]
        )
    return factory(run_dir)


def _split_factory(factory: str, path: Path) -> tuple[str, str]:
    module_name, sep, attr = factory.partition(":")
    if not sep or not module_name or not attr or not attr.isidentifier():
        raise DataError(
            [Problem(path, None, f"factory {factory!r} is not of the form 'module.path:callable'")]
        )
    return module_name, attr


# --- checkpoints ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Checkpoint:
    """Global weights after ``round``, plus the best-so-far bookkeeping for model selection."""

    weights: Weights
    round: int
    best_value: float | None  # best selection-metric value up to ``round``; None before any
    best_round: int | None


def save_checkpoint(path: Path, checkpoint: Checkpoint) -> None:
    """Write a checkpoint atomically: readers see the old file or the new one, never a mix."""
    arrays: dict[str, Any] = {
        _WEIGHT_KEY.format(i): np.asarray(w) for i, w in enumerate(checkpoint.weights)
    }
    arrays["round"] = np.int64(checkpoint.round)
    arrays["best_value"] = np.float64(
        math.nan if checkpoint.best_value is None else checkpoint.best_value
    )
    arrays["best_round"] = np.int64(-1 if checkpoint.best_round is None else checkpoint.best_round)

    def write(fh: Any) -> None:
        np.savez(fh, **arrays)

    atomic_write(Path(path), write)


def load_checkpoint(path: Path) -> Checkpoint:
    """Read a checkpoint written by :func:`save_checkpoint`."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: checkpoint not found")
    try:
        with np.load(path, allow_pickle=False) as data:
            keys = sorted(
                (k for k in data.files if k.startswith("weight_")), key=lambda k: int(k[7:])
            )
            weights = [data[k] for k in keys]
            round_ = int(data["round"])
            best_value = float(data["best_value"])
            best_round = int(data["best_round"])
    except (OSError, ValueError, KeyError) as exc:
        raise DataError(
            [Problem(path, None, f"not a readable fedscope checkpoint: {exc}")]
        ) from exc
    return Checkpoint(
        weights=weights,
        round=round_,
        best_value=None if math.isnan(best_value) else best_value,
        best_round=None if best_round < 0 else best_round,
    )


# --- metrics.jsonl / events.jsonl ----------------------------------------------------------


def append_jsonl(path: Path, record: dict[str, Any]) -> None:
    """Append one JSON line and flush it to disk (a kill loses at most the line being written)."""
    line = json.dumps(record, allow_nan=True) + "\n"
    with Path(path).open("a", encoding="utf-8") as fh:
        fh.write(line)
        fh.flush()
        os.fsync(fh.fileno())


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """All records of a JSON-lines file ([] if it does not exist).

    A last line without its newline that does not parse is a write torn by a kill and is
    ignored; any other unreadable line is an error naming the file and line.
    """
    path = Path(path)
    if not path.is_file():
        return []
    text = path.read_text(encoding="utf-8")
    lines = text.split("\n")
    records: list[dict[str, Any]] = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            torn_tail = number == len(lines) and not text.endswith("\n")
            if torn_tail:
                break
            raise DataError([Problem(path, number, f"not valid JSON: {exc.msg}")]) from exc
        if not isinstance(record, dict):
            raise DataError([Problem(path, number, "expected a JSON object")])
        records.append(record)
    return records


def read_metrics(run_dir: Path) -> list[dict[str, Any]]:
    """One record per finished round, in the order the rounds finished."""
    return read_jsonl(metrics_path(run_dir))


def read_events(run_dir: Path) -> list[dict[str, Any]]:
    return read_jsonl(events_path(run_dir))


def append_event(run_dir: Path, event: str, **fields: Any) -> None:
    append_jsonl(events_path(run_dir), {"event": event, "time": time.time(), **fields})


def keep_metrics_up_to(run_dir: Path, last_round: int) -> int:
    """Drop metrics lines of rounds after ``last_round`` (rounds a kill left unfinished).

    Returns how many lines were dropped. The file is replaced atomically.
    """
    path = metrics_path(run_dir)
    if not path.is_file():
        return 0
    records = read_jsonl(path)
    kept = [r for r in records if int(r.get("round", 0)) <= last_round]
    raw_lines = [ln for ln in path.read_text(encoding="utf-8").split("\n") if ln.strip()]
    if len(kept) == len(raw_lines):
        return 0
    atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in kept))
    return len(raw_lines) - len(kept)


# --- one writer per run ----------------------------------------------------------------------


class RunInUseError(FileExistsError):
    """Another process is writing this run directory (training, resuming or evaluating it)."""

    def __init__(self, message: str, holder: str) -> None:
        super().__init__(message)
        self.holder = holder


# Run directories this process holds: resolved path -> (lock file descriptor, nesting depth,
# whether the lock created the directory). A directory the lock created and nothing else wrote
# to is removed on release, so a refused attempt (an infeasible privacy budget) leaves nothing.
_held: dict[Path, tuple[int, int, bool]] = {}
_held_guard = threading.Lock()


@contextmanager
def exclusive(run_dir: Path) -> Iterator[None]:
    """Hold ``run_dir`` against every other process while writing it.

    Two processes training or resuming one run would interleave its metrics and overwrite each
    other's checkpoints and status. The lock is the kernel's (``flock`` on ``.lock``), so it
    ends with its process, even under SIGKILL: a crashed run never leaves a stale lock. It is
    re-entrant within a process, because the simulation's ServerApp runs in a thread of the
    process that started it.
    """
    key = Path(run_dir).resolve()
    with _held_guard:
        if key in _held:
            fd, depth, created = _held[key]
            _held[key] = (fd, depth + 1, created)
        else:
            created = not key.is_dir()
            fd = _acquire(key) if fcntl is not None else -1
            _held[key] = (fd, 1, created)
    try:
        yield
    finally:
        with _held_guard:
            fd, depth, created = _held.pop(key)
            if depth > 1:
                _held[key] = (fd, depth - 1, created)
            else:
                if (
                    created
                    and key.is_dir()
                    and [p.name for p in key.iterdir()] in ([LOCK_FILE], [])
                ):
                    (key / LOCK_FILE).unlink(missing_ok=True)
                    key.rmdir()
                if fd >= 0:
                    os.close(fd)  # releases the lock


def in_use_by(run_dir: Path) -> str | None:
    """Who holds ``run_dir`` ("process PID (command)"), or None when no other process does."""
    key = Path(run_dir).resolve()
    if fcntl is None or key in _held or not (key / LOCK_FILE).is_file():
        return None
    try:
        os.close(_acquire(key, probe=True))
    except RunInUseError as exc:
        return exc.holder
    return None


def _acquire(run_dir: Path, probe: bool = False) -> int:
    """The locked descriptor of ``run_dir``'s lock file, naming this process in it (a probe
    only tests the lock, once, and writes nothing)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(run_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    # A probe (in_use_by) holds the lock for microseconds: a writer that meets one retries
    # briefly instead of reporting the run as in use.
    tries = 1 if probe else 5
    for attempt in range(tries):
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except BlockingIOError:
            if attempt + 1 < tries:
                time.sleep(0.05)
    else:
        holder = os.pread(fd, 1024, 0).decode("utf-8", errors="replace").strip()
        os.close(fd)
        holder = holder or "another process"
        raise RunInUseError(
            f"{run_dir} is in use by {holder}; one run directory has one writer. Wait for that "
            "process to finish, or stop it and continue with --resume",
            holder,
        )
    if probe:
        return fd
    os.ftruncate(fd, 0)
    command = " ".join(sys.argv)
    os.pwrite(fd, f"process {os.getpid()} ({command[:300]})\n".encode(), 0)
    return fd


# --- server status ---------------------------------------------------------------------------


def write_status(run_dir: Path, state: str, **fields: Any) -> None:
    """Record the ServerApp's state; the simulation driver reads it after Flower returns."""
    record = {"state": state, "time": time.time(), **fields}
    atomic_write_text(status_path(run_dir), json.dumps(record, indent=1) + "\n")


def read_status(run_dir: Path) -> dict[str, Any] | None:
    path = status_path(run_dir)
    if not path.is_file():
        return None
    try:
        status = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise DataError([Problem(path, exc.lineno, f"not valid JSON: {exc.msg}")]) from exc
    return status if isinstance(status, dict) else None
