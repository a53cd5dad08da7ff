"""Load benchmark of `fedscope serve`: throughput and latency on loopback, from a second process.

    python bench/serve_load.py RUN_DIR [--clients 1 8 64] [--duration 10] [--batch-size 32]
        [--top-k 10] [--threads 1 2] [--out bench/results/serve_load.json]

Starts `fedscope serve RUN_DIR` as a subprocess on 127.0.0.1 (a free port, access log off),
waits for /health, then for each number of concurrent clients drives it for ``--duration``
seconds with (a) single requests (POST /recommend, one history, every domain, top ``--top-k``)
and (b) batches (POST /recommend/batch of ``--batch-size`` histories). The clients are asyncio
tasks sharing one httpx connection pool in this process; each keeps exactly one request in
flight. Histories are the run's own data set's test histories (item keys), cycled.

Reports requests/s, histories/s and latency percentiles (p50, p90, p99; milliseconds, from send
to full answer) per setting, and writes them with the machine, the command, the run, the
server's torch threads and the load average at start to ``--out``. The server is stopped by
its pid at the end, also on failure. On a shared machine the load average says how much of it
the benchmark had: client and server share the same cores. ``--threads 1 2`` repeats the
whole sweep with a fresh server per torch thread count.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from fedscope.cli.errors import run_reporting_errors
from fedscope.data import load_dataset
from fedscope.experiments import runner

REPO = Path(__file__).resolve().parents[1]


def machine() -> dict[str, Any]:
    cpu = platform.processor() or ""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem_gib = None
    meminfo = Path("/proc/meminfo")
    if meminfo.is_file():
        for line in meminfo.read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_gib = round(int(line.split()[1]) / 2**20, 1)
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gib": mem_gib,
        "platform": platform.platform(),
        "python": platform.python_version(),
    }


def test_histories(run_dir: Path) -> tuple[list[list[str]], dict[str, Any]]:
    """The run's data set's test histories as item keys, and a description of the run."""
    config = runner.read_config(run_dir)
    ds = load_dataset(config.data.name, config.data.data_dir, **config.data.options)
    histories = []
    for i in range(len(ds.test)):
        items = ds.history(ds.test, i)
        doms, local = ds.domain_of(items), ds.to_local(items)
        histories.append(
            [ds.domains[int(d)].item_keys[int(j)] for d, j in zip(doms, local, strict=True)]
        )
    lengths = np.array([len(h) for h in histories])
    run = {
        "run_dir": str(run_dir),
        "dataset": ds.name,
        "data_options": config.data.options,
        "method": config.method,
        "regime": config.federation.regime,
        "domains": {d.name: d.n_items for d in ds.domains},
        "model": {"dim": config.model.dim, "max_len": config.model.max_len},
        "test_histories": len(histories),
        "history_length_mean": round(float(lengths.mean()), 2),
        "history_length_max": int(lengths.max()),
    }
    return histories, run


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server(run_dir: Path, port: int, threads: int | None, log: Path) -> subprocess.Popen:
    args = [sys.executable, "-m", "fedscope.cli", "serve", str(run_dir), "--port", str(port)]
    args += ["--no-access-log"] + (["--threads", str(threads)] if threads else [])
    with log.open("w") as out:
        return subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT)


def wait_until_up(proc: subprocess.Popen, base: str, log: Path, timeout_s: float = 300) -> dict:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            r = httpx.get(f"{base}/health", timeout=5)
            if r.status_code == 200:
                return r.json()
        except httpx.TransportError:
            pass
        time.sleep(0.25)
    raise RuntimeError(f"server not up after {timeout_s} s:\n{log.read_text()[-3000:]}")


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=20)


async def drive(
    base: str,
    path: str,
    bodies: list[dict[str, Any]],
    clients: int,
    duration_s: float,
    warmup: int,
) -> dict[str, Any]:
    """``clients`` tasks, one request in flight each, for ``duration_s`` seconds."""
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=base, limits=limits, timeout=120) as client:
        for body in bodies[:warmup]:
            (await client.post(path, json=body)).raise_for_status()
        latencies: list[float] = []
        errors: dict[str, int] = {}
        next_body = 0
        stop_at = time.perf_counter() + duration_s

        async def worker() -> None:
            nonlocal next_body
            while time.perf_counter() < stop_at:
                body = bodies[next_body % len(bodies)]
                next_body += 1
                t0 = time.perf_counter()
                try:
                    r = await client.post(path, json=body)
                    ok = r.status_code == 200
                    key = str(r.status_code)
                except httpx.HTTPError as exc:
                    ok, key = False, type(exc).__name__
                if ok:
                    latencies.append(time.perf_counter() - t0)
                else:
                    errors[key] = errors.get(key, 0) + 1

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(clients)))
        elapsed = time.perf_counter() - started
    lat_ms = np.array(latencies) * 1000
    return {
        "requests": len(latencies),
        "errors": errors,
        "elapsed_s": round(elapsed, 3),
        "requests_per_s": round(len(latencies) / elapsed, 2),
        "latency_ms": {
            "mean": round(float(lat_ms.mean()), 2) if len(lat_ms) else None,
            **{
                f"p{q}": round(float(np.percentile(lat_ms, q)), 2) if len(lat_ms) else None
                for q in (50, 90, 99)
            },
        },
    }


def sweep(
    run_dir: Path,
    threads: int,
    clients_list: list[int],
    settings: list[tuple[str, str, list[dict[str, Any]], int]],
    duration_s: float,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """One server with ``threads`` torch threads through every setting; stopped at the end."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    log = Path(tempfile.mkdtemp(prefix="serve_load-")) / "server.log"
    proc = start_server(run_dir, port, threads, log)
    results = []
    try:
        t0 = time.perf_counter()
        health = wait_until_up(proc, base, log)
        startup_s = time.perf_counter() - t0
        print(f"server up in {startup_s:.1f}s: {health['run_id']}, {threads} torch thread(s)")
        for kind, path, bodies, per_request in settings:
            for clients in clients_list:
                r = asyncio.run(drive(base, path, bodies, clients, duration_s, warmup=3))
                r = {
                    "kind": kind,
                    "torch_threads": health["torch_threads"],
                    "clients": clients,
                    "histories_per_request": per_request,
                    **r,
                    "histories_per_s": round(r["requests_per_s"] * per_request, 1),
                    "loadavg_after": [round(x, 2) for x in os.getloadavg()],
                }
                results.append(r)
                lat = r["latency_ms"]
                print(
                    f"{kind:6s} threads={threads} clients={clients:3d}: "
                    f"{r['requests_per_s']:8.1f} req/s {r['histories_per_s']:8.1f} histories/s  "
                    f"p50 {lat['p50']} ms  p99 {lat['p99']} ms  errors {r['errors'] or 0}"
                )
    finally:
        stop(proc)
    server = {"startup_s": round(startup_s, 2), "log": str(log), "health": health}
    return server, results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path, help="a finished federated or centralised run")
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 8, 64])
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per setting")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--top-k", type=int, default=10)
    parser.add_argument(
        "--threads", type=int, nargs="+", default=[1], help="server torch threads (one sweep each)"
    )
    parser.add_argument("--out", type=Path, default=REPO / "bench/results/serve_load.json")
    args = parser.parse_args()

    load_at_start = os.getloadavg()
    histories, run = test_histories(args.run_dir)
    singles = [{"history": h, "top_k": args.top_k} for h in histories]
    batches = [
        {"requests": singles[i : i + args.batch_size]}
        for i in range(0, len(singles) - args.batch_size + 1, args.batch_size)
    ]
    settings = [
        ("single", "/recommend", singles, 1),
        ("batch", "/recommend/batch", batches, args.batch_size),
    ]
    servers, results = [], []
    for threads in args.threads:
        server, rows = sweep(args.run_dir, threads, args.clients, settings, args.duration)
        servers.append(server)
        results += rows
    health = servers[0]["health"]
    out = {
        "benchmark": "serve_load",
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "machine": machine(),
        "loadavg_at_start": [round(x, 2) for x in load_at_start],
        "loadavg_at_end": [round(x, 2) for x in os.getloadavg()],
        "run": run | {"run_id": health["run_id"], "selected_round": health["selected_round"]},
        "server": {
            "workers": 1,
            "torch_threads": [s["health"]["torch_threads"] for s in servers],
            "startup_s": [s["startup_s"] for s in servers],
            "top_k": args.top_k,
            "batch_size": args.batch_size,
            "duration_s_per_setting": args.duration,
            "client": "httpx.AsyncClient in a second process, one request in flight per client",
        },
        "results": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    run_reporting_errors(main)
