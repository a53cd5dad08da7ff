"""The ClientApp: one client's local training, behind Flower's message API.

The train handler reads the legacy ``fitins`` layout, calls the task's
``client_update`` and replies in the ``fitres`` layout, which is what Flower's
``secaggplus_mod`` needs. The update then passes the mods of
:mod:`fedscope.federation.client_mods` (privatise, size-weight encode, SecAgg+).

Run config keys read here (``context.run_config`` merged with the factory's overrides):

``run-dir``        the run directory (required unless the node has a bundle, below)
``torch-threads``  if > 0, torch intra-op threads for this client process (set once per
                   process; the simulation driver uses 1 so parallel Ray workers do not
                   oversubscribe the cores)

Node config (``flower-supernode --node-config``): ``partition-id`` (required), and in a
deployment ``node-dir``, the node's bundle (:mod:`fedscope.deployment.bundle`): the client
then builds its task from that directory alone, never from the run directory or the
shared data. Without ``node-dir`` (the simulation) the task comes from ``run-dir``.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from pathlib import Path

import numpy as np
from flwr.app import ConfigRecord, Context, Message, RecordDict
from flwr.clientapp import ClientApp
from flwr.common import Scalar

from fedscope.deployment.audit import install_open_audit_from_env
from fedscope.federation import wire
from fedscope.federation.client_mods import client_state, client_update_mods, partition_id
from fedscope.federation.exchange import INBOX_KEY, OUTBOX_KEY
from fedscope.federation.task import FederatedTask, load_task

RUN_DIR_KEY = "run-dir"
NODE_DIR_KEY = "node-dir"  # node config: this SuperNode's bundle directory
TORCH_THREADS_KEY = "torch-threads"
WHOAMI = "whoami"  # query action: which partition does this node hold?

RunConfigValue = bool | int | float | str


class ClientUpdateError(RuntimeError):
    """A client's local training raised; the message names the client and the round."""


def build_client_app(overrides: Mapping[str, RunConfigValue] | None = None) -> ClientApp:
    """A ClientApp whose run config is ``context.run_config`` updated with ``overrides``.

    ``flwr.simulation.run_simulation`` passes no run config, so the simulation driver
    injects ``{"run-dir": ...}`` here; deployment uses the module-level :data:`app` with
    the run config from ``flwr run --run-config``.
    """
    fixed = dict(overrides or {})
    app = ClientApp()

    def run_config(ctx: Context) -> dict[str, RunConfigValue]:
        # Context.run_config is read-only inside Flower's Ray engine: merge, never mutate.
        return {**ctx.run_config, **fixed}

    def task_of(ctx: Context) -> FederatedTask:
        bundle = ctx.node_config.get(NODE_DIR_KEY)
        if bundle:
            return _node_task(Path(str(bundle)), partition_id(ctx))
        config = run_config(ctx)
        if RUN_DIR_KEY not in config:
            raise KeyError(f"the run config has no {RUN_DIR_KEY!r} (keys: {sorted(config)})")
        return load_task(Path(str(config[RUN_DIR_KEY])))

    @app.query(WHOAMI)
    def whoami(msg: Message, ctx: Context) -> Message:
        _prepare_process(run_config(ctx))
        task_of(ctx)  # a task that cannot be built fails here, at discovery, not in round 1
        who = ConfigRecord({"partition-id": partition_id(ctx)})
        return Message(RecordDict({WHOAMI: who}), reply_to=msg)

    @app.train(mods=client_update_mods(task_of))
    def train(msg: Message, ctx: Context) -> Message:
        config = run_config(ctx)
        _prepare_process(config)
        task = task_of(ctx)
        client = partition_id(ctx)
        weights, fit_config = wire.read_fitins(msg)
        server_round = int(fit_config["server_round"])
        inbox = fit_config.get(INBOX_KEY)
        if inbox is not None and not isinstance(inbox, bytes):
            raise ClientUpdateError(f"client {client}: the fit config's {INBOX_KEY} is not bytes")
        try:
            # Only exchange-enabled runs pass an inbox: tasks without the exchange need not
            # accept one.
            update = (
                task.client_update(client, weights, server_round)
                if inbox is None
                else task.client_update(client, weights, server_round, inbox)
            )
        except Exception as exc:
            raise ClientUpdateError(
                f"client {client} failed in round {server_round}: {type(exc).__name__}: {exc}"
            ) from exc
        _prepare_process(config)  # torch may have been imported by the task just now
        _check_update(update.delta, weights, client)
        state = client_state(ctx)
        state["rounds-trained"] = int(state.get("rounds-trained", 0)) + 1
        state["last-round"] = server_round
        # Under SecAgg+ only the parameters are masked; metrics would travel in plaintext.
        secagg = wire.secure_round(msg)
        metrics: dict[str, Scalar] = (
            {} if secagg else {k: float(v) for k, v in update.metrics.items()}
        )
        if update.outbox is not None and not secagg:
            metrics[OUTBOX_KEY] = update.outbox
        return wire.fitres_reply(msg, update.delta, int(update.n_users), metrics)

    return app


def _node_task(bundle: Path, partition: int) -> FederatedTask:
    from fedscope.deployment.node_task import load_node_task

    task = load_node_task(bundle)
    if task.partition_id != partition:
        raise ValueError(
            f"node config partition-id={partition}, but the bundle {bundle} holds partition "
            f"{task.partition_id}"
        )
    return task


def _check_update(delta: list[np.ndarray], weights: list[np.ndarray], client: int) -> None:
    got = [np.shape(d) for d in delta]
    expected = [np.shape(w) for w in weights]
    if got != expected:
        raise ClientUpdateError(
            f"client {client}: update has array shapes {got}, the global weights {expected}"
        )


_torch_threads_set: int | None = None


def _prepare_process(config: Mapping[str, RunConfigValue]) -> None:
    global _torch_threads_set
    threads = int(config.get(TORCH_THREADS_KEY, 0))
    if threads <= 0 or _torch_threads_set == threads:
        return
    if "torch" in sys.modules:
        import torch

        torch.set_num_threads(threads)
        _torch_threads_set = threads
    else:
        # Not imported yet in this process: torch reads OMP_NUM_THREADS when it loads, so
        # no import (seconds per worker) is spent on tasks that never use torch.
        os.environ["OMP_NUM_THREADS"] = str(threads)


# Deployment tests audit which files a node's ClientApp process opens (off unless asked).
install_open_audit_from_env()

app = build_client_app()
