"""``fedscope serve``: the HTTP recommendation service of a finished run."""

from __future__ import annotations

import ipaddress
import os
import socket
from pathlib import Path
from typing import Annotated

import typer

from fedscope.cli.app import app, console, err_console
from fedscope.config import ConfigError


def _url(host: str, port: int) -> str:
    shown = "127.0.0.1" if host in ("0.0.0.0", "") else ("::1" if host == "::" else host)
    return f"http://[{shown}]:{port}" if ":" in shown else f"http://{shown}:{port}"


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _check_port_free(host: str, port: int) -> None:
    """A clear one-line error now, rather than uvicorn's log line after the model is loaded."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        # uvicorn sets SO_REUSEADDR too: a port in TIME_WAIT is free for it and for this probe.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from exc


@app.command()
def serve(
    run_dir: Annotated[Path, typer.Argument(help="A finished federated or centralised run.")],
    host: Annotated[
        str, typer.Option(help="Address to listen on (loopback by default: no authentication).")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.", min=1, max=65535)] = 8000,
    workers: Annotated[
        int, typer.Option(help="Server processes, each with its own copy of the model.", min=1)
    ] = 1,
    threads: Annotated[
        int | None,
        typer.Option(help="Torch threads per worker (default 1: see docs/serving.md).", min=1),
    ] = None,
    access_log: Annotated[
        bool, typer.Option("--access-log/--no-access-log", help="Log every request.")
    ] = True,
) -> None:
    """Serve top-K recommendations of a finished run over HTTP (OpenAPI docs at /docs)."""
    import uvicorn

    from fedscope.serving.app import RUN_DIR_ENV, THREADS_ENV, app_from_environment, create_app
    from fedscope.serving.recommender import check_servable

    check_servable(run_dir)
    _check_port_free(host, port)
    # One intra-op thread by default: a request's tensors are small, requests are serialised
    # per worker anyway, and on a busy machine a second OpenMP thread that spins for a core
    # made single requests 15-50x slower (measured; docs/serving.md). Scale with --workers.
    threads = threads or 1
    if workers == 1:
        # Loaded here, so a run that cannot be served fails before the server starts.
        service = create_app(run_dir, threads=threads)
        target: object = service
    else:
        os.environ[RUN_DIR_ENV] = str(run_dir.resolve())
        os.environ[THREADS_ENV] = str(threads)
        target = f"{app_from_environment.__module__}:{app_from_environment.__name__}"
    url = _url(host, port)
    # soft_wrap: a URL must stay on one line, whatever the terminal width
    console.print(
        f"serving run {run_dir.resolve().name} at {url} "
        f"({workers} worker(s), {threads} torch thread(s) each)",
        highlight=False,
        soft_wrap=True,
    )
    console.print(
        f"API docs: {url}/docs  ·  OpenAPI: {url}/openapi.json", highlight=False, soft_wrap=True
    )
    if not _is_loopback(host):
        err_console.print(
            f"[yellow]warning:[/] listening on {host}: the service has no authentication; "
            "expose it only behind a proxy that adds it",
            highlight=False,
        )
    uvicorn.run(
        target,  # type: ignore[arg-type]
        host=host,
        port=port,
        workers=workers,
        factory=workers > 1,
        access_log=access_log,
        log_level="info",
    )
