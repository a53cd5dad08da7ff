"""The client update path as small composable Flower mods.

``@app.train(mods=[optional_secaggplus_mod, timing_mod, encode_weighted_mod, privatise_mod])``:
the first mod listed is the outermost, so a train reply travels

    handler (local training, Delta_k) -> privatise -> encode -> (timing) -> SecAgg+ masking
    -> wire

which is the paper's order: local optimisation, privacy sanitisation, secure aggregation.
Each mod only touches TRAIN messages; queries pass straight through.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, Protocol

import numpy as np
from flwr.app import ConfigRecord, Context, Message
from flwr.app.message_type import MessageType
from flwr.client.mod import secaggplus_mod
from flwr.clientapp.typing import ClientAppCallable, Mod

from fedscope.federation import wire
from fedscope.federation.strategy import encode_weighted
from fedscope.federation.task import FederatedTask, Weights

# This client's small persistent state (survives rounds within one run, not across runs).
STATE_RECORD = "fedscope.client"

TaskOf = Callable[[Context], FederatedTask]

APP_SECONDS = "app_s"  # train reply metric: seconds in the ClientApp (see timing_mod)


class Privatiser(Protocol):
    """The differential-privacy hook a task may expose as its ``privatiser`` attribute.

    Called on the client with its raw update Delta_k (before size weighting and SecAgg+);
    returns the privatised update with the same shapes, or None when the client must not
    send (its privacy budget is spent): it then sends zeros with zero weight, which moves
    nothing in the size-weighted average and keeps SecAgg+'s participant set intact.
    ``ctx.state`` may hold the client's own state; it never reaches the server.
    """

    def __call__(
        self, update: Weights, client_id: int, server_round: int, ctx: Context
    ) -> Weights | None: ...


def partition_id(ctx: Context) -> int:
    return int(ctx.node_config["partition-id"])


def client_state(ctx: Context) -> ConfigRecord:
    """This client's persistent record in Context.state (created on first use)."""
    if STATE_RECORD not in ctx.state.config_records:
        ctx.state.config_records[STATE_RECORD] = ConfigRecord({})
    return ctx.state.config_records[STATE_RECORD]


def optional_secaggplus_mod(msg: Message, ctx: Context, call_next: ClientAppCallable) -> Message:
    """Flower's ``secaggplus_mod``, only when the server runs SecAgg+ for this message.

    ``secaggplus_mod`` rejects train messages without its config record, so gating it lets
    one ClientApp serve plain and SecAgg+ runs.
    """
    if msg.metadata.message_type == MessageType.TRAIN and wire.runs_secaggplus(msg):
        return secaggplus_mod(msg, ctx, call_next)
    return call_next(msg, ctx)


def timing_mod(msg: Message, ctx: Context, call_next: ClientAppCallable) -> Message:
    """Report ``app_s``: the seconds this train message spent in the ClientApp, from the
    handler's first line (reading the weights) to the encoded update, mods included.

    Against the task's ``update_s`` and ``compute_s`` it splits a round's time into model
    computation, client-side bookkeeping, record (de)serialisation, and what happens
    outside the ClientApp (transport, scheduling, the server). Under SecAgg+ no metric is
    sent at all (metrics travel in plaintext), so neither is this one.
    """
    if msg.metadata.message_type != MessageType.TRAIN or wire.secure_round(msg):
        return call_next(msg, ctx)
    started = time.perf_counter()
    reply = call_next(msg, ctx)
    if not reply.has_error():
        wire.add_metric(reply, APP_SECONDS, time.perf_counter() - started)
    return reply


def make_encode_weighted_mod(task_of: TaskOf) -> Mod:
    """Replace Delta_k by ``[(|U_k|/S) Delta_k, |U_k|/S]`` and num_examples by 1.

    num_examples is plaintext metadata even under SecAgg+, so |U_k| must not go there.
    """

    def encode_weighted_mod(msg: Message, ctx: Context, call_next: ClientAppCallable) -> Message:
        if msg.metadata.message_type != MessageType.TRAIN:
            return call_next(msg, ctx)
        reply = call_next(msg, ctx)
        if reply.has_error():
            return reply
        settings = task_of(ctx).settings()
        size_bound, clip_range = settings.size_bound, settings.secagg_clipping_range
        client = partition_id(ctx)
        try:
            encoded = encode_weighted(
                wire.get_update(reply), wire.get_num_examples(reply), size_bound
            )
        except ValueError as exc:
            raise ValueError(f"client {client}: {exc}") from exc
        if wire.runs_secaggplus(msg):
            largest = max(float(np.max(np.abs(a))) if a.size else 0.0 for a in encoded)
            if largest > clip_range:
                raise ValueError(
                    f"client {client}: size-weighted update entry {largest:.4g} is outside "
                    f"SecAgg+'s range +-{clip_range:g} and would be clipped silently; "
                    "clip the update (DP) or lower the learning rate"
                )
        wire.set_update(reply, encoded)
        wire.set_num_examples(reply, 1)
        return reply

    return encode_weighted_mod


def make_privatise_mod(task_of: TaskOf) -> Mod:
    """Apply the task's ``privatiser`` hook to the raw update (identity when it has none)."""

    def privatise_mod(msg: Message, ctx: Context, call_next: ClientAppCallable) -> Message:
        if msg.metadata.message_type != MessageType.TRAIN:
            return call_next(msg, ctx)
        reply = call_next(msg, ctx)
        if reply.has_error():
            return reply
        privatiser: Privatiser | None = getattr(task_of(ctx), "privatiser", None)
        if privatiser is None:
            return reply
        client = partition_id(ctx)
        server_round = int(wire.read_fit_config(msg)["server_round"])
        update = wire.get_update(reply)
        private = privatiser(update, client, server_round, ctx)
        if private is None:  # suspended
            wire.set_update(reply, [np.zeros_like(a) for a in update])
            wire.set_num_examples(reply, 0)
            return reply
        _check_same_shapes(update, private, client)
        wire.set_update(reply, [np.asarray(a) for a in private])
        return reply

    return privatise_mod


def client_update_mods(task_of: TaskOf) -> list[Mod]:
    """The train mods in list order (outermost first)."""
    return [
        optional_secaggplus_mod,
        timing_mod,
        make_encode_weighted_mod(task_of),
        make_privatise_mod(task_of),
    ]


def _check_same_shapes(before: Weights, after: Any, client: int) -> None:
    shapes_before = [np.shape(a) for a in before]
    shapes_after = [np.shape(a) for a in after]
    if shapes_before != shapes_after:
        raise ValueError(
            f"client {client}: privatiser changed the update's shapes from {shapes_before} "
            f"to {shapes_after}"
        )
