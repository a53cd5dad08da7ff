"""Progress lines for the runs an experiment command is training.

A run of the paper's grid takes minutes to hours, and an experiment command runs many of them,
in this process or (``--jobs``) in others. The watcher reads what every run already writes, its
metrics JSON lines, so it works the same for a run trained here or in a worker process, and
prints a line per run now and then: a log file, unlike a terminal, has no progress bar.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from fedscope.experiments import runner
from fedscope.federation import run_dir as layout
from fedscope.training.task import schedule_length

Echo = Callable[[str], None]


@dataclass(frozen=True)
class RunProgress:
    """How far one run is: ``done`` of ``total`` steps (rounds, passes, or client passes)."""

    unit: str
    done: int
    total: int
    best_value: float | None = None
    best_round: int | None = None
    metric: str = "MRR"


def run_progress(run_dir: Path) -> RunProgress | None:
    """What ``run_dir``'s files say of its training so far; None before it is prepared.

    A federated run counts rounds; a centralised one passes; a local-only run the passes of
    all its clients together (each client trains alone, one after another)."""
    run_dir = Path(run_dir)
    if not (run_dir / runner.CONFIG_FILE).is_file():
        return None
    config = runner.read_config(run_dir)
    regime = config.federation.regime
    length = schedule_length(config)
    metric = config.eval.selection_metric
    if regime == "local":
        n_clients = json.loads((run_dir / runner.RUN_FILE).read_text())["n_clients"]
        done = 0
        for k in range(n_clients):
            rows = layout.read_metrics(runner.client_dir(run_dir, k))
            done += rows[-1]["round"] if rows else 0
        return RunProgress("client passes", done, length * n_clients, metric=metric)
    rows = layout.read_metrics(run_dir)
    last = rows[-1] if rows else {}
    return RunProgress(
        "round" if regime == "federated" else "pass",
        int(last.get("round", 0)),
        length,
        last.get("best_value"),
        last.get("best_round"),
        metric,
    )


def duration(seconds: float) -> str:
    """``45 s``, ``12 min``, ``2.3 h``."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def progress_line(shown: str, p: RunProgress, seconds: float, rate: float | None) -> str:
    """``shown: round 75/200 (38%), best validation MRR 5.45 (round 15), 12 min in, about
    20 min left``: ``seconds`` trained so far, ``rate`` in steps per second (None: unknown)."""
    parts = [f"{p.unit} {p.done}/{p.total} ({100 * p.done / max(p.total, 1):.0f}%)"]
    if p.best_value is not None:
        parts.append(f"best validation {p.metric} {100 * p.best_value:.2f} (round {p.best_round})")
    parts.append(f"{duration(seconds)} in")
    if rate:
        parts.append(f"about {duration((p.total - p.done) / rate)} left")
    return f"  {shown}: " + ", ".join(parts)


@dataclass
class _Watched:
    run_dir: Path
    # (time, done) at the last poll before the count moved: where the run's training began
    base: tuple[float, int] | None = None
    said_done: int | None = None


class ProgressWatcher:
    """Every ``every`` seconds, a line for each watched run that has moved since its last line
    (none with ``every <= 0``).

    The rate (and so the time left) is measured from the last poll before a run's count first
    moved, so a run queued behind others (``--jobs``) or resumed from a checkpoint is not
    credited with time it did not train or steps it did not take."""

    def __init__(self, echo: Echo, every: float = 60.0, poll: float = 5.0):
        self.echo, self.every = echo, every
        self.poll_s = min(poll, every) if every > 0 else poll
        self._runs: dict[str, _Watched] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._last_lines = 0.0

    def watch(self, shown: str, run_dir: Path) -> None:
        with self._lock:
            self._runs[shown] = _Watched(Path(run_dir))

    def forget(self, shown: str) -> None:
        with self._lock:
            self._runs.pop(shown, None)

    def poll(self, now: float, speak: bool) -> list[str]:
        """Read every watched run at time ``now`` (seconds, monotonic); with ``speak``, return
        (and echo) a line for each that moved since its last line."""
        lines = []
        with self._lock:
            watched = list(self._runs.items())
        for shown, w in watched:
            try:
                p = run_progress(w.run_dir)
            except (OSError, ValueError, KeyError):  # a file mid-write: read it next time
                continue
            if p is None:
                continue
            if w.base is None or p.done == w.base[1]:
                w.base = (now, p.done)
                continue
            if not speak or p.done == w.said_done or p.done >= p.total:
                continue
            elapsed = now - w.base[0]
            rate = (p.done - w.base[1]) / elapsed if elapsed > 0 else None
            lines.append(progress_line(shown, p, elapsed, rate))
            w.said_done = p.done
        for line in lines:
            self.echo(line)
        return lines

    def _loop(self) -> None:
        while not self._stop.wait(self.poll_s):
            now = time.monotonic()
            speak = now - self._last_lines >= self.every
            if self.poll(now, speak) and speak:
                self._last_lines = now

    def __enter__(self) -> ProgressWatcher:
        self._last_lines = time.monotonic()
        if self.every <= 0:  # lines turned off
            return self
        self._thread = threading.Thread(target=self._loop, name="progress", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
