"""Run a federation in Flower's simulation engine (Ray backend) on this machine.

``flwr.simulation.run_simulation`` returns None and passes no run config, so the apps
are built with ``{"run-dir": ...}`` injected, and success or failure is read back from
``server_status.json``, which the ServerApp writes in the run directory.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import time
import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fedscope.federation import run_dir as layout
from fedscope.federation.client_app import RUN_DIR_KEY, TORCH_THREADS_KEY, RunConfigValue
from fedscope.federation.task import load_task
from fedscope.processes import process_table

# No update checks, telemetry or usage reporting: runs must not talk to the internet.
# RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0: Ray 2.55 "resolves" _node_ip_address=127.0.0.1 to
# the machine's external address and then listens there (and on all interfaces); in
# single-node mode it keeps 127.0.0.1 and every Ray server binds to loopback only.
_QUIET_NETWORK_ENV = {
    "FLWR_DISABLE_UPDATE_CHECK": "1",
    "FLWR_TELEMETRY_ENABLED": "0",
    "RAY_USAGE_STATS_ENABLED": "0",
    "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
}
_NOISY_LOGGERS = ("flwr", "ray")
# Emitted by every ray.init; about a future default that does not concern CPU-only clients.
_RAY_GPU_TIP = r"Tip: In future versions of Ray, Ray will no longer override accelerator"


class FederationError(RuntimeError):
    """The federation did not finish; the message carries the ServerApp's error."""


@dataclass(frozen=True)
class SimulationResult:
    run_dir: Path
    first_round: int  # first round run by this call (> 1 when it resumed)
    last_round: int
    skipped_rounds: list[int]
    best_round: int | None
    best_value: float | None
    wall_s: float  # whole call, Ray start and shutdown included
    server_s: float  # the ServerApp, from its start to its last checkpoint
    # federation.on_divergence=stop ended training early: round, reason, error (else None)
    stopped: dict[str, Any] | None = None


def backend_config(max_parallel: int, quiet: bool) -> dict[str, Any]:
    """Ray on 127.0.0.1 only, ``max_parallel`` one-CPU client workers, no dashboard."""
    return {
        "client_resources": {"num_cpus": 1, "num_gpus": 0.0},
        "init_args": {
            "num_cpus": max_parallel,
            "_node_ip_address": "127.0.0.1",
            "include_dashboard": False,
            "logging_level": "ERROR" if quiet else "WARNING",
            # Worker stdout/stderr; client errors still reach the server as error replies.
            "log_to_driver": not quiet,
        },
    }


def run_simulation(
    run_dir: Path,
    num_supernodes: int,
    *,
    max_parallel: int = 2,
    quiet: bool = True,
    resume: bool = False,
    run_config: Mapping[str, RunConfigValue] | None = None,
) -> SimulationResult:
    """Run the task in ``run_dir`` with ``num_supernodes`` simulated clients; block until done.

    ``resume`` continues from ``checkpoints/last.npz``. ``run_config`` adds ServerApp
    options (see :mod:`fedscope.federation.server_app`), e.g. ``{"stop-after-round": 2}``.
    Raises :class:`FederationError` when the ServerApp failed, and
    :class:`~fedscope.federation.run_dir.RunInUseError` when another process is writing
    ``run_dir``. Ray is shut down before returning, whatever happened.
    """
    _isolate_network()

    from fedscope.federation.server_app import check_settings

    run_dir = Path(run_dir).resolve()
    if max_parallel < 1:
        raise ValueError(f"max_parallel must be >= 1, got {max_parallel}")
    settings = load_task(run_dir).settings()  # fails early, before Ray starts
    check_settings(settings)
    if num_supernodes != settings.n_clients:
        raise ValueError(
            f"num_supernodes = {num_supernodes}, but the task in {run_dir} has "
            f"n_clients = {settings.n_clients} (one simulated node per client)"
        )
    last_checkpoint = layout.last_checkpoint_path(run_dir)
    if not resume and last_checkpoint.is_file():
        # The ServerApp refuses too, but only after Ray has started.
        raise FileExistsError(
            f"{last_checkpoint} exists: this run directory already holds a run; pass "
            "resume=True to continue it or use a new directory"
        )
    overrides: dict[str, RunConfigValue] = {
        TORCH_THREADS_KEY: 1,  # one torch thread per Ray worker unless run_config says otherwise
        **(run_config or {}),
        RUN_DIR_KEY: str(run_dir),
        "resume": resume,
    }
    with layout.exclusive(run_dir):
        return _simulate(run_dir, num_supernodes, overrides, max_parallel, quiet)


def _simulate(
    run_dir: Path,
    num_supernodes: int,
    overrides: dict[str, RunConfigValue],
    max_parallel: int,
    quiet: bool,
) -> SimulationResult:
    from flwr.simulation import run_simulation as flower_run_simulation

    from fedscope.federation.client_app import build_client_app
    from fedscope.federation.server_app import build_server_app

    status_path = layout.status_path(run_dir)
    status_path.unlink(missing_ok=True)  # a stale "done" must not pass for this run's

    started = time.perf_counter()
    engine_error: BaseException | None = None
    interrupted = False
    watch = DescendantWatch()
    with watch, _quiet_loggers(quiet), warnings.catch_warnings(), _sigterm_restored():
        if quiet:
            warnings.filterwarnings("ignore", message=_RAY_GPU_TIP, category=FutureWarning)
        try:
            flower_run_simulation(
                server_app=build_server_app(overrides),
                client_app=build_client_app(overrides),
                num_supernodes=num_supernodes,
                backend_config=backend_config(max_parallel, quiet),
            )
        except Exception as exc:  # re-raised below with the ServerApp's own account
            engine_error = exc
        except (KeyboardInterrupt, SystemExit) as exc:
            # Stopped from outside (Ctrl-C, or SIGTERM, which ray.init turns into
            # sys.exit(SIGTERM)). The round in progress is lost, checkpoints/last.npz is not.
            # Shutting Ray down kills the actors under Flower's feet; the errors it then logs
            # are the expected consequence, not news, so they are hidden for the rest of this
            # process's life (Flower's threads may log them after this block has ended).
            if isinstance(exc, SystemExit) and exc.code != signal.SIGTERM:
                raise
            silence_engine_logs()
            interrupted = True
        finally:
            _shutdown_ray()
    # Ray's workers outlive the raylet by a moment (re-parented to init); wait them out so
    # nothing of this run is left when we return. What is still there after that (seen after
    # an interruption that caught Ray half-way) is killed.
    leftovers = watch.wait_gone(timeout_s=15.0)
    if leftovers:
        watch.kill_alive()
        logging.getLogger(__name__).warning(
            "Ray processes still alive 15 s after shutdown, killed: %s", ", ".join(leftovers)
        )
    if interrupted:
        raise KeyboardInterrupt(f"federation in {run_dir} interrupted")
    wall_s = time.perf_counter() - started

    status = layout.read_status(run_dir)
    if status is None or status.get("state") != "done":
        if status is None:
            reason = f"the ServerApp never started (no {status_path})"
        elif status.get("state") == "failed":
            reason = str(status.get("error"))
        else:
            reason = f"the ServerApp stopped in state {status.get('state')!r}"
        if engine_error is not None and status is None:
            reason += f"; Flower raised {type(engine_error).__name__}: {engine_error}"
        raise FederationError(f"federation in {run_dir} failed: {reason}") from engine_error
    if engine_error is not None:
        raise FederationError(
            f"federation in {run_dir}: the ServerApp finished but Flower's engine raised "
            f"{type(engine_error).__name__}: {engine_error}"
        ) from engine_error
    return SimulationResult(
        run_dir=run_dir,
        first_round=int(status["first_round"]),
        last_round=int(status["last_round"]),
        skipped_rounds=[int(r) for r in status.get("skipped_rounds", [])],
        best_round=status.get("best_round"),
        best_value=status.get("best_value"),
        wall_s=wall_s,
        server_s=float(status.get("server_s", float("nan"))),
        stopped=status.get("stopped"),
    )


def _isolate_network() -> None:
    for key, value in _QUIET_NETWORK_ENV.items():
        os.environ[key] = value
    constants = sys.modules.get("ray._private.ray_constants")
    if constants is not None and getattr(constants, "ENABLE_RAY_CLUSTER", False):
        # Ray was imported before the variable was set; it reads this flag at call time.
        constants.ENABLE_RAY_CLUSTER = False


@contextmanager
def _quiet_loggers(quiet: bool) -> Iterator[None]:
    """Hide Flower's and Ray's INFO/WARNING chatter (errors still show); restore afterwards."""
    if not quiet:
        yield
        return
    loggers = [logging.getLogger(name) for name in _NOISY_LOGGERS]
    previous = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for lg, level in zip(loggers, previous, strict=True):
            lg.setLevel(level)


def silence_engine_logs() -> None:
    """Hide Flower's and Ray's logs for the rest of this process's life.

    For a process being stopped: as its simulation shuts down, Flower logs every actor it
    loses as an error with a traceback, which is expected then and says nothing new. A
    signal handler calls it before anything starts shutting down."""
    for name in _NOISY_LOGGERS:
        logging.getLogger(name).disabled = True


@contextmanager
def _sigterm_restored() -> Iterator[None]:
    """Give SIGTERM back its handler from before the simulation: ray.init replaces it with
    ``sys.exit`` and leaves it so after ``ray.shutdown``, which would turn a later SIGTERM
    into a bare exit with status 15 instead of what this process had arranged."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.getsignal(signal.SIGTERM)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _shutdown_ray() -> None:
    # Flower's Ray backend shuts Ray down itself; this covers paths where it did not get
    # that far (e.g. the engine raised while building the actor pool).
    try:
        import ray
    except ImportError:
        return
    if ray.is_initialized():
        ray.shutdown()


class DescendantWatch:
    """Remembers the processes descended from this one while a run goes on (Linux /proc).

    Ray starts gcs_server and the raylet as children and its workers as grandchildren;
    when the raylet exits, workers are re-parented to init and no longer look like ours,
    so they are recorded while the run is going and waited for afterwards.
    """

    def __init__(self, interval_s: float = 0.5) -> None:
        self.interval_s = interval_s
        self.seen: dict[tuple[int, int], str] = {}  # (pid, start time) -> name
        self._before: set[tuple[int, int]] = set()  # the caller's own children: not ours
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> DescendantWatch:
        if Path("/proc/self/stat").exists():
            self._record()
            self._before = set(self.seen)
            self.seen.clear()
            self._thread = threading.Thread(target=self._run, name="ray-process-watch", daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self._record()

    def _run(self) -> None:
        while not self._stop.is_set():
            self._record()
            self._stop.wait(self.interval_s)

    def _record(self) -> None:
        table = process_table()
        children: dict[int, list[int]] = {}
        for pid, entry in table.items():
            children.setdefault(entry.ppid, []).append(pid)
        stack = list(children.get(os.getpid(), []))
        while stack:
            pid = stack.pop()
            key = (pid, table[pid].start)
            if key not in self._before:
                self.seen[key] = table[pid].name
            stack.extend(children.get(pid, []))

    def _running(self) -> list[tuple[int, str]]:
        """(pid, name) of the recorded processes still running: the same pid and start time."""
        table = process_table()
        return [
            (pid, name)
            for (pid, start), name in self.seen.items()
            if pid in table and table[pid].start == start
        ]

    def alive(self) -> list[str]:
        return [f"{name} (pid {pid})" for pid, name in self._running()]

    def kill_alive(self) -> None:
        """SIGKILL every recorded process still running (the same pid and start time)."""
        for pid, _ in self._running():
            with suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)

    def wait_gone(self, timeout_s: float) -> list[str]:
        deadline = time.monotonic() + timeout_s
        while (alive := self.alive()) and time.monotonic() < deadline:
            time.sleep(0.1)
        return alive
