"""``fedscope deploy local``: the run across a SuperLink and N SuperNode processes (TLS)."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Annotated

import typer

from fedscope.cli.app import ConfigFile, NewRunDir, Overrides, app, console
from fedscope.cli.train_commands import RoundProgress, _poll_metrics, _print_results
from fedscope.config import ConfigError, ExperimentConfig, load_config
from fedscope.experiments import runner
from fedscope.federation import run_dir as layout

deploy_app = typer.Typer(
    help="Run training with Flower's deployment engine (separate processes, TLS).",
    no_args_is_help=True,
)
app.add_typer(deploy_app, name="deploy")

N_CLIENTS_KEY = "partition.n_clients"


def config_for_nodes(
    config_file: Path | None, overrides: list[str] | None, nodes: int
) -> ExperimentConfig:
    """The experiment config with ``partition.n_clients = nodes`` (one client per node)."""
    if nodes < 1:
        raise ConfigError(f"--nodes must be at least 1, got {nodes}")
    for item in overrides or []:
        key, _, value = item.partition("=")
        if key.strip() == N_CLIENTS_KEY and value.strip() != str(nodes):
            raise ConfigError(
                f"--set {item} conflicts with --nodes {nodes}: every node holds one client, "
                f"so {N_CLIENTS_KEY} is --nodes"
            )
    config = load_config(config_file, [*(overrides or []), f"{N_CLIENTS_KEY}={nodes}"])
    if config.federation.regime != "federated":
        raise ConfigError(
            f"federation.regime is {config.federation.regime!r}; deploy runs federated training"
        )
    return config.model_copy(
        update={"federation": config.federation.model_copy(update={"engine": "deployment"})}
    )


@deploy_app.command("local")
def local(
    nodes: Annotated[int, typer.Option("--nodes", help="SuperNodes (= clients) to start.")],
    config: ConfigFile = None,
    overrides: Overrides = None,
    run_dir: NewRunDir = None,
    resume: Annotated[
        bool, typer.Option("--resume", help="Continue the run in --run-dir from its checkpoint.")
    ] = False,
    timeout: Annotated[
        float, typer.Option("--timeout", help="Give up (and stop everything) after this many s.")
    ] = 24 * 3600.0,
    round_timeout: Annotated[
        float,
        typer.Option(
            "--round-timeout",
            help="Seconds a round waits for replies; missing ones count as dropouts (0: forever).",
        ),
    ] = 600.0,
) -> None:
    """A SuperLink and N SuperNodes on 127.0.0.1 with TLS, each node reading only its own
    client's bundle; trains, evaluates, and stops every process it started."""
    from fedscope.deployment.local import DeployOptions, deploy_local

    if resume:
        if run_dir is None:
            raise ConfigError("--resume needs --run-dir (the run to continue)")
        if config is not None or overrides:
            raise ConfigError(
                "--resume continues a run with its stored configuration; drop --config/--set"
            )
        if not (run_dir / runner.CONFIG_FILE).is_file():
            raise ConfigError(f"{run_dir}: not a run directory (no {runner.CONFIG_FILE})")
        target = run_dir
    else:
        cfg = config_for_nodes(config, overrides, nodes)
        target = run_dir or runner.default_run_dir(cfg)
        runner.prepare_run(cfg, target)
    console.print(f"run directory: {target}")
    options = DeployOptions(
        n_nodes=nodes, resume=resume, timeout_s=timeout, round_timeout_s=round_timeout
    )
    total = runner.read_config(target).federation.rounds
    bar = RoundProgress(total, f"round ({nodes} nodes)")
    stop = threading.Event()
    started = time.perf_counter()
    with bar.progress:
        poller = threading.Thread(target=_poll_metrics, args=(target, bar, stop), daemon=True)
        poller.start()
        try:
            report, results = deploy_local(target, options)
        finally:
            stop.set()
            poller.join(timeout=5)
            for row in layout.read_metrics(target)[-1:]:
                bar.update(row)
    _print_results(results, target)
    console.print(
        f"[dim]{time.perf_counter() - started:.0f}s ({report.startup_s:.0f}s start-up, "
        f"{report.submissions} submission(s)) · processes: "
        f"{target / 'deploy' / 'processes.json'} · results: {target / runner.RESULTS_FILE}[/]"
    )
