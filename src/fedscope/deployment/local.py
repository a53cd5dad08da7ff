"""``fedscope deploy local``: a SuperLink and N SuperNodes as separate processes on 127.0.0.1.

The same ServerApp and ClientApp as the simulation, under Flower's deployment engine:

1. node bundles (:mod:`fedscope.deployment.bundle`) and TLS certificates
   (:mod:`fedscope.deployment.certs`) in the run directory;
2. ``flower-superlink`` with TLS and a state database under ``<run_dir>/deploy``;
3. one ``flower-supernode`` per client, trusting the run's CA, with
   ``--node-config "partition-id=k num-partitions=N node-dir='<bundle>'"``, its data
   environment pointed at its own bundle (``FEDSCOPE_CACHE_DIR``) and away from the shared
   data (``FEDSCOPE_DATA_DIR`` names a path that does not exist);
4. ``flwr run <app> local --stream`` with ``run-dir`` (and ``resume``) in the run config;
5. completion or failure read from the run directory's ``server_status.json``.

Every process is started in its own session and recorded (pid, command, log) in
``<run_dir>/deploy/processes.json``. Flower starts helpers of its own (each SuperLink and
SuperNode starts a ``flower-superexec``, the SuperLink's in a new session; those start the
``flwr-serverapp`` / ``flwr-clientapp`` processes), so a watcher thread records every
descendant, and everything is stopped by pid (SIGTERM to the process group and to each
recorded descendant, SIGKILL after a grace period) when the deployment ends, fails, is
interrupted (SIGINT/SIGTERM), or times out.

Faults for tests and benchmarks (:class:`FaultPlan`): kill a SuperNode (SIGKILL to its
whole process group: the machine is gone) while a given round is running, or kill the
SuperLink during a round and start a new one, resubmitting the run with ``resume=true``.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from fedscope.deployment import certs as tls
from fedscope.deployment.audit import AUDIT_ENV
from fedscope.deployment.bundle import NODES_DIR, node_dir, read_node_info
from fedscope.federation import run_dir as layout
from fedscope.processes import process_table, signals_raise_interrupt

DEPLOY_DIR = "deploy"
PROCESSES_FILE = "processes.json"
FEDERATION = "local"
HOST = "127.0.0.1"
SERVER_APP = "fedscope.federation.server_app:app"
CLIENT_APP = "fedscope.federation.client_app:app"

# No update checks, telemetry or usage reporting from any child.
QUIET_NETWORK_ENV = {
    "FLWR_DISABLE_UPDATE_CHECK": "1",
    "FLWR_TELEMETRY_ENABLED": "0",
    "RAY_USAGE_STATS_ENABLED": "0",
}

# Run-config keys the apps read, with their defaults: `flwr run --run-config` only
# overrides keys the app's pyproject declares.
APP_RUN_CONFIG: dict[str, bool | int | float | str] = {
    "run-dir": "",
    "resume": False,
    "torch-threads": 0,
    "stop-after-round": 0,
    "on-failed-round": "fail",
    "discovery-timeout": 300.0,
    "round-timeout": 0.0,
    "audit-received": False,
}


class DeploymentError(RuntimeError):
    """The deployment did not finish; the message says where to look."""


@dataclass(frozen=True)
class FaultPlan:
    """Faults to inject (tests and bench/deploy_faults.py); nothing by default."""

    kill_node: int | None = None  # partition whose SuperNode is killed ...
    kill_node_round: int = 2  # ... while this round's training runs on it
    restart_superlink_round: int | None = None  # kill the SuperLink during this round, restart


@dataclass(frozen=True)
class DeployOptions:
    n_nodes: int
    resume: bool = False
    timeout_s: float = 3600.0  # the whole training, start-up included
    startup_timeout_s: float = 180.0  # SuperLink accepting connections
    # seconds the server waits for a round's replies before counting the rest as
    # dropouts (0: wait forever, Flower's default)
    round_timeout_s: float = 0.0
    torch_threads: int = 1  # per ClientApp process: N of them share the machine's cores
    grace_s: float = 10.0  # SIGTERM to SIGKILL
    audit_opens: bool = False  # record every file each node's ClientApp opens (tests)
    faults: FaultPlan = field(default_factory=FaultPlan)
    extra_run_config: Mapping[str, bool | int | float | str] = field(default_factory=dict)


@dataclass
class DeployReport:
    """What the launcher saw, written to ``<run_dir>/deploy/report.json``."""

    n_nodes: int
    wall_s: float = 0.0
    startup_s: float = 0.0  # launch until the SuperLink accepted TLS connections
    submissions: int = 0
    status: dict[str, Any] | None = None
    faults: list[dict[str, Any]] = field(default_factory=list)


# --- processes -----------------------------------------------------------------------------------


@dataclass
class Child:
    name: str
    command: list[str]
    log: Path
    popen: subprocess.Popen[bytes]
    started: float

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None


class ProcessGroup:
    """Children started in their own sessions, their descendants, and stopping them by pid."""

    def __init__(self, record: Path, log_dir: Path, watch_interval_s: float = 0.25) -> None:
        self.record = record
        self.log_dir = log_dir
        self.children: dict[str, Child] = {}
        self.retired: list[dict[str, Any]] = []  # children stopped and replaced
        # (pid, start ticks) -> (name, owner child); helpers Flower starts in new sessions
        self.descendants: dict[tuple[int, int], tuple[str, str]] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._interval = watch_interval_s
        self._watcher: threading.Thread | None = None

    def __enter__(self) -> ProcessGroup:
        self._watcher = threading.Thread(target=self._watch, name="deploy-watch", daemon=True)
        self._watcher.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop_all()

    def start(self, name: str, command: list[str], env: Mapping[str, str]) -> Child:
        if name in self.children and self.children[name].alive():
            raise RuntimeError(
                f"process {name!r} is already running (pid {self.children[name].pid})"
            )
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log = self.log_dir / f"{name}.log"
        with open(log, "ab") as sink:
            popen = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=sink,
                stderr=subprocess.STDOUT,
                env=dict(env),
                start_new_session=True,  # its own process group: stoppable as a whole
            )
        with self._lock:
            old = self.children.get(name)
            if old is not None:
                self.retired.append(self._describe(old))
            self.children[name] = Child(name, command, log, popen, time.time())
        self._write_record()
        self._scan()
        return self.children[name]

    def kill_now(self, name: str) -> list[int]:
        """SIGKILL a child's process group and its recorded descendants (a crash, no goodbye)."""
        self._scan()
        child = self.children[name]
        pids = self._pids_of(name)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(child.pid, signal.SIGKILL)
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            child.popen.wait(timeout=10)
        self._write_record()
        return [child.pid, *pids]

    def stop_all(self, grace_s: float = 10.0) -> list[str]:
        """SIGTERM every child's group and every recorded descendant, SIGKILL what is left
        after ``grace_s``; returns what was still alive at the end (should be nothing)."""
        self._stop.set()
        if self._watcher is not None:
            self._watcher.join(timeout=5)
        with contextlib.suppress(Exception):  # stopping must go on whatever the scan hit
            self._scan()
        for child in self.children.values():
            if child.alive():
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(child.pid, signal.SIGTERM)
        for pid in self._alive_descendants():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        while time.monotonic() < deadline and (self._alive_children() or self._alive_descendants()):
            time.sleep(0.1)
        for child in self._alive_children():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(child.pid, signal.SIGKILL)
        for pid in self._alive_descendants():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        for child in self.children.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                child.popen.wait(timeout=5)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and self._alive_descendants():
            time.sleep(0.1)
        self._write_record()
        return [f"{c.name} (pid {c.pid})" for c in self._alive_children()] + [
            f"pid {p}" for p in self._alive_descendants()
        ]

    def all_pids(self) -> list[int]:
        """Every pid started or seen under this group (for checks that nothing is left)."""
        pids = [c.pid for c in self.children.values()] + [r["pid"] for r in self.retired]
        return pids + [pid for pid, _ in self.descendants]

    def has_descendant(self, name: str, needle: str) -> bool:
        """Whether a live process under child ``name`` has ``needle`` in its command line."""
        self._scan()
        table = process_table()
        for (pid, start), (_, owner) in list(self.descendants.items()):
            alive = pid in table and table[pid].start == start
            if owner == name and alive and needle in _cmdline(pid):
                return True
        return False

    # --- internals ---------------------------------------------------------------------------
    def _describe(self, child: Child) -> dict[str, Any]:
        return {
            "name": child.name,
            "pid": child.pid,
            "command": child.command,
            "log": str(child.log),
            "started": child.started,
            "returncode": child.popen.poll(),
        }

    def _write_record(self) -> None:
        with self._lock:
            record = {
                "launcher_pid": os.getpid(),
                "children": [self._describe(c) for c in self.children.values()],
                "retired": self.retired,
                "descendants": [
                    {"pid": pid, "name": name, "under": owner}
                    for (pid, _), (name, owner) in self.descendants.items()
                ],
            }
        self.record.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.record.with_suffix(".tmp")
        tmp.write_text(json.dumps(record, indent=1) + "\n")
        os.replace(tmp, self.record)

    def _watch(self) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(OSError, ValueError, IndexError):
                self._scan()  # a process that vanished mid-read; the next scan sees it right
            self._stop.wait(self._interval)

    def _scan(self) -> None:
        table = process_table()
        children_of: dict[int, list[int]] = {}
        for pid, entry in table.items():
            children_of.setdefault(entry.ppid, []).append(pid)
        # Flower's detached helpers name their parent on the command line instead.
        adopted: dict[int, list[int]] = {}
        for pid in table:
            parent = _parent_pid_flag(pid)
            if parent is not None:
                adopted.setdefault(parent, []).append(pid)
        found = False
        with self._lock:
            roots = [(c.name, c.pid) for c in self.children.values()]
            for owner, root in roots:
                stack = [*children_of.get(root, []), *adopted.get(root, [])]
                while stack:
                    pid = stack.pop()
                    if pid not in table:
                        continue
                    key = (pid, table[pid].start)
                    if key not in self.descendants:
                        self.descendants[key] = (table[pid].name, owner)
                        found = True
                    stack.extend(children_of.get(pid, []))
                    stack.extend(adopted.get(pid, []))
        if found:
            self._write_record()

    def _pids_of(self, name: str) -> list[int]:
        table = process_table()
        return [
            pid
            for (pid, start), (_, owner) in list(self.descendants.items())
            if owner == name and pid in table and table[pid].start == start
        ]

    def _alive_children(self) -> list[Child]:
        return [c for c in self.children.values() if c.alive()]

    def _alive_descendants(self) -> list[int]:
        table = process_table()
        return [
            pid
            for (pid, start) in list(self.descendants)
            if pid in table and table[pid].start == start and table[pid].state != "Z"
        ]


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def _parent_pid_flag(pid: int) -> int | None:
    parts = _cmdline(pid).split()
    if "--parent-pid" in parts:
        i = parts.index("--parent-pid")
        if i + 1 < len(parts) and parts[i + 1].isdigit():
            return int(parts[i + 1])
    return None


def pid_alive(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return state[state.rfind(")") + 2 :].split()[0] != "Z"


# --- the app directory and the flwr CLI's home ------------------------------------------------------


def free_ports(n: int, host: str = HOST) -> list[int]:
    """``n`` distinct ports free on ``host`` right now (the OS picks them)."""
    sockets, ports = [], []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind((host, 0))
            sockets.append(s)
            ports.append(s.getsockname()[1])
    finally:
        for s in sockets:
            s.close()
    return ports


def write_app_dir(directory: Path) -> Path:
    """A Flower app that names fedscope's components; fedscope itself is the installed one."""
    directory.mkdir(parents=True, exist_ok=True)
    config = "\n".join(f"{k} = {json.dumps(v)}" for k, v in APP_RUN_CONFIG.items())
    (directory / "pyproject.toml").write_text(
        f"""[build-system]
requires = ["hatchling"]
build-backend = "hatchling.build"

[project]
name = "fedscope-deploy"
version = "1.0.0"
description = "fedscope's ServerApp and ClientApp (fedscope is installed on every machine)"
license = "MIT"
# Empty on purpose: the SuperLink runs with --disable-runtime-dependency-installation.
dependencies = []

[tool.hatch.build.targets.wheel]
packages = ["."]

[tool.flwr.app]
publisher = "fedscope"

[tool.flwr.app.components]
serverapp = "{SERVER_APP}"
clientapp = "{CLIENT_APP}"

[tool.flwr.app.config]
{config}
"""
    )
    return directory


def write_flwr_home(home: Path, address: str, ca_cert: Path) -> Path:
    home.mkdir(parents=True, exist_ok=True)
    (home / "config.toml").write_text(
        f'[superlink.{FEDERATION}]\naddress = "{address}"\n'
        f"root-certificates = {json.dumps(str(ca_cert))}\n"
    )
    return home


def run_config_arg(values: Mapping[str, bool | int | float | str]) -> str:
    """``flwr run --run-config`` text: space-separated TOML key=value pairs."""
    parts = []
    for key, value in values.items():
        if isinstance(value, bool):
            parts.append(f"{key}={'true' if value else 'false'}")
        elif isinstance(value, int | float):
            parts.append(f"{key}={value!r}")
        else:
            parts.append(f"{key}={json.dumps(str(value))}")
    return " ".join(parts)


# --- the launcher ---------------------------------------------------------------------------------


class LocalDeployment:
    """One SuperLink and ``n_nodes`` SuperNodes for the run in ``run_dir`` (see module doc)."""

    def __init__(self, run_dir: Path, options: DeployOptions) -> None:
        self.run_dir = Path(run_dir).resolve()
        self.options = options
        self.deploy_dir = self.run_dir / DEPLOY_DIR
        self.bin_dir = Path(sys.executable).parent
        self.group = ProcessGroup(self.deploy_dir / PROCESSES_FILE, self.deploy_dir / "logs")
        self.report = DeployReport(n_nodes=options.n_nodes)
        self.superlink_port = 0
        self.node_ports: list[int] = []
        self.certificates = tls.CertificateSet(self.deploy_dir / "certs")

    # --- set-up ------------------------------------------------------------------------------
    def prepare(self) -> None:
        n = self.options.n_nodes
        for k in range(n):
            info = read_node_info(node_dir(self.run_dir, k))
            if info.partition_id != k or info.n_clients != n:
                raise ValueError(
                    f"{node_dir(self.run_dir, k)}: bundle of partition {info.partition_id} of "
                    f"{info.n_clients}, expected {k} of {n}"
                )
        if not self.certificates.exists():
            tls.generate_certificates(self.certificates.directory, hosts=[HOST])
        ports = free_ports(n + 1)
        self.superlink_port, self.node_ports = ports[0], ports[1:]
        write_app_dir(self.deploy_dir / "app")
        write_flwr_home(
            self.deploy_dir / "flwr-home" / "cli",
            f"{HOST}:{self.superlink_port}",
            self.certificates.ca_cert,
        )

    def _env(self, **extra: str) -> dict[str, str]:
        env = dict(os.environ)
        env.update(QUIET_NETWORK_ENV)
        env.pop(AUDIT_ENV, None)
        # Flower starts its helpers by name (flower-superexec, flwr-serverapp, ...).
        env["PATH"] = f"{self.bin_dir}{os.pathsep}{env.get('PATH', '')}"
        env["PYTHONWARNINGS"] = "ignore"  # protobuf gencode warnings on every start
        env.update(extra)
        return env

    def start_superlink(self) -> Child:
        c = self.certificates
        command = [
            str(self.bin_dir / "flower-superlink"),
            "--ssl-ca-certfile",
            str(c.ca_cert),
            "--ssl-certfile",
            str(c.server_cert),
            "--ssl-keyfile",
            str(c.server_key),
            "--host",
            HOST,
            "--port",
            str(self.superlink_port),
            "--disable-runtime-dependency-installation",
            "--database",
            str(self.deploy_dir / "superlink-state.db"),
        ]
        home = self.deploy_dir / "flwr-home" / "superlink"
        return self.group.start("superlink", command, self._env(FLWR_HOME=str(home)))

    def start_supernode(self, k: int) -> Child:
        bundle = node_dir(self.run_dir, k)
        node_config = f"partition-id={k} num-partitions={self.options.n_nodes} node-dir={json.dumps(str(bundle))}"
        command = [
            str(self.bin_dir / "flower-supernode"),
            "--root-certificates",
            str(self.certificates.ca_cert),
            "--superlink",
            f"{HOST}:{self.superlink_port}",
            "--host",
            HOST,
            "--port",
            str(self.node_ports[k]),
            "--node-config",
            node_config,
        ]
        env = self._env(
            FLWR_HOME=str(bundle / ".flwr"),
            FEDSCOPE_CACHE_DIR=str(bundle),
            # A path that does not exist: the node cannot fall back to the shared data.
            FEDSCOPE_DATA_DIR=str(bundle / "no-shared-data"),
        )
        if self.options.audit_opens:
            env[AUDIT_ENV] = str(self.audit_log(k))
        return self.group.start(f"node-{k}", command, env)

    def audit_log(self, k: int) -> Path:
        return self.deploy_dir / "audit" / f"node-{k}-opens.tsv"

    def wait_superlink(self, timeout_s: float) -> float:
        """Seconds until the SuperLink completes a TLS handshake trusting the run's CA."""
        import ssl

        started = time.monotonic()
        context = ssl.create_default_context(cafile=str(self.certificates.ca_cert))
        link = self.group.children["superlink"]
        while True:
            if not link.alive():
                raise DeploymentError(
                    f"the SuperLink exited with code {link.popen.returncode} while starting; "
                    f"see {link.log}"
                )
            try:
                with (
                    socket.create_connection((HOST, self.superlink_port), timeout=2) as raw,
                    context.wrap_socket(raw, server_hostname=HOST),
                ):
                    return time.monotonic() - started
            except OSError:
                pass
            if time.monotonic() - started > timeout_s:
                raise DeploymentError(
                    f"the SuperLink did not accept TLS connections on {HOST}:{self.superlink_port} "
                    f"within {timeout_s:g} s; see {link.log}"
                )
            time.sleep(0.25)

    def submit(self, resume: bool) -> Child:
        """``flwr run`` for this run; a fresh server_status.json will tell how it ended."""
        layout.status_path(self.run_dir).unlink(missing_ok=True)
        values: dict[str, bool | int | float | str] = {
            "run-dir": str(self.run_dir),
            "resume": resume,
            "torch-threads": self.options.torch_threads,
            "round-timeout": float(self.options.round_timeout_s),
            **self.options.extra_run_config,
        }
        command = [
            str(self.bin_dir / "flwr"),
            "run",
            str(self.deploy_dir / "app"),
            FEDERATION,
            "--stream",
            "--run-config",
            run_config_arg(values),
        ]
        self.report.submissions += 1
        env = self._env(FLWR_HOME=str(self.deploy_dir / "flwr-home" / "cli"))
        return self.group.start(f"flwr-run-{self.report.submissions}", command, env)

    # --- the whole thing -----------------------------------------------------------------------
    def run(self, on_poll: Callable[[], None] | None = None) -> DeployReport:
        """Start everything, train, stop everything; raise DeploymentError on failure."""
        started = time.monotonic()
        self.prepare()
        with self.group, signals_raise_interrupt():
            try:
                self.start_superlink()
                for k in range(self.options.n_nodes):
                    self.start_supernode(k)
                self.wait_superlink(self.options.startup_timeout_s)
                self.report.startup_s = time.monotonic() - started
                self._train(started, on_poll)
            finally:
                leftovers = self.group.stop_all(self.options.grace_s)
                self.report.wall_s = time.monotonic() - started
                self._write_report()
                if leftovers:
                    raise DeploymentError(f"processes still alive after stopping: {leftovers}")
        return self.report

    def _train(self, started: float, on_poll: Callable[[], None] | None) -> None:
        resume = self.options.resume
        flwr_run = self.submit(resume)
        faults = self.options.faults
        node_killed = faults.kill_node is None
        link_restarted = faults.restart_superlink_round is None
        while True:
            if on_poll is not None:
                on_poll()
            status = layout.read_status(self.run_dir)
            if status is not None and status.get("state") in ("done", "failed"):
                self.report.status = status
                if status["state"] == "failed":
                    raise DeploymentError(
                        f"the ServerApp failed: {status.get('error')} (logs in "
                        f"{self.deploy_dir / 'logs'})"
                    )
                return
            if not flwr_run.alive() and status is None:
                # flwr run ended without the ServerApp ever starting (or writing its state)
                time.sleep(2)
                if layout.read_status(self.run_dir) is None:
                    raise DeploymentError(
                        f"flwr run exited with code {flwr_run.popen.returncode} before the "
                        f"ServerApp started; see {flwr_run.log}"
                    )
            if not self.group.children["superlink"].alive() and link_restarted:
                raise DeploymentError(
                    f"the SuperLink exited with code "
                    f"{self.group.children['superlink'].popen.returncode}; see "
                    f"{self.group.children['superlink'].log}"
                )
            if time.monotonic() - started > self.options.timeout_s:
                raise DeploymentError(
                    f"training did not finish within {self.options.timeout_s:g} s "
                    f"(see {self.deploy_dir / 'logs'})"
                )
            rounds_done = len(layout.read_metrics(self.run_dir))
            if not node_killed and self._training_in_round(
                f"node-{faults.kill_node}", faults.kill_node_round, rounds_done
            ):
                self._kill_node(int(faults.kill_node or 0), faults.kill_node_round)
                node_killed = True
            if not link_restarted and self._training_in_round(
                None, int(faults.restart_superlink_round or 0), rounds_done
            ):
                flwr_run = self._restart_superlink(int(faults.restart_superlink_round or 0))
                link_restarted = True
            time.sleep(0.2)

    def _training_in_round(self, node: str | None, rnd: int, rounds_done: int) -> bool:
        if rounds_done != rnd - 1:
            return False
        names = [node] if node else [f"node-{k}" for k in range(self.options.n_nodes)]
        return any(self.group.has_descendant(n, "flwr-clientapp") for n in names)

    def _kill_node(self, k: int, rnd: int) -> None:
        pids = self.group.kill_now(f"node-{k}")
        fault = {"fault": "supernode_killed", "partition": k, "round": rnd, "time": time.time()}
        self.report.faults.append(fault | {"pids": pids})
        layout.append_event(self.run_dir, "supernode_killed", partition=k, round=rnd, pids=pids)

    def _restart_superlink(self, rnd: int) -> Child:
        killed_at = time.time()
        pids = self.group.kill_now("superlink")
        for name, child in list(self.group.children.items()):
            if name.startswith("flwr-run-") and child.alive():
                self.group.kill_now(name)
        layout.append_event(self.run_dir, "superlink_killed", round=rnd, pids=pids)
        self.start_superlink()
        ready_s = self.wait_superlink(self.options.startup_timeout_s)
        last = layout.load_checkpoint(layout.last_checkpoint_path(self.run_dir)).round
        layout.append_event(
            self.run_dir, "superlink_restarted", round=rnd, resume_from=last, ready_s=ready_s
        )
        self.report.faults.append(
            {
                "fault": "superlink_restarted",
                "round": rnd,
                "time": killed_at,
                "ready_time": time.time(),
                "resume_from_round": last,
            }
        )
        return self.submit(resume=True)

    def _write_report(self) -> None:
        path = self.deploy_dir / "report.json"
        path.write_text(json.dumps(asdict(self.report), indent=1, default=str) + "\n")


def collect_privacy_ledgers(run_dir: Path, n_nodes: int) -> int:
    """Copy each node's DP ledger into ``<run_dir>/privacy`` for the run's privacy report.

    On one machine the launcher can read them; in a real deployment each client keeps its
    own ledger and reports its spent epsilon (docs/deployment.md).
    """
    from fedscope.privacy.client import ledger_path

    copied = 0
    for k in range(n_nodes):
        source = ledger_path(node_dir(run_dir, k), k)
        if source.is_file():
            target = ledger_path(run_dir, k)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, target)
            copied += 1
    return copied


def deploy_local(
    run_dir: Path, options: DeployOptions, on_poll: Callable[[], None] | None = None
) -> tuple[DeployReport, dict[str, Any]]:
    """Bundles (if not there yet), the deployment, then the run's final evaluation."""
    from fedscope.deployment.bundle import export_node_bundles
    from fedscope.experiments import runner

    run_dir = Path(run_dir).resolve()
    config = runner.read_config(run_dir)
    meta = json.loads((run_dir / runner.RUN_FILE).read_text())
    if int(meta["n_clients"]) != options.n_nodes:
        raise ValueError(
            f"{run_dir / runner.RUN_FILE}: the run has {meta['n_clients']} clients, "
            f"--nodes is {options.n_nodes}"
        )
    if config.federation.regime != "federated":
        raise ValueError(
            f"{run_dir}: federation.regime is {config.federation.regime!r}; deploy needs 'federated'"
        )
    last = layout.last_checkpoint_path(run_dir)
    if last.is_file() and not options.resume:
        raise FileExistsError(f"{last} exists: resume the run (--resume) or use a new directory")
    if not (run_dir / NODES_DIR).is_dir():
        export_node_bundles(run_dir)
    report = LocalDeployment(run_dir, options).run(on_poll)
    if config.privacy.enabled:
        collect_privacy_ledgers(run_dir, options.n_nodes)
    return report, runner.finalise(run_dir)
