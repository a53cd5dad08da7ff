"""The ServerApp: fedscope's own round loop around Flower's per-round fit workflows.

Flower's ``DefaultWorkflow`` always runs rounds ``1..T``, so it cannot resume; this loop
drives one Flower fit workflow per round (``SecAggPlusWorkflow`` or
``default_fit_workflow``) through a ``LegacyContext`` and does the rest itself:

1. whoami query: which node holds which partition (node ids are random);
2. start at round 1, or at checkpoint round + 1 when resuming;
3. per round: fit workflow, then a check that the round really aggregated (SecAgg+
   halts *silently* when too few clients answer), central validation every
   ``eval_every`` rounds and at round T, a ``metrics.jsonl`` line, the last checkpoint,
   and the best checkpoint by ``selection_metric`` (higher is better).

Bytes on the wire: every message of a round passes through :class:`ReplyErrorLog`, which
adds up the size of each message's content as protobuf (Flower's ``recorddict_to_proto``),
computed from the arrays' lengths without serialising them (see :func:`content_wire_bytes`).
The metrics line gets ``bytes_to_clients`` (every message sent: a client downloads its own
copy), ``bytes_from_clients`` (every reply), the message counts, and under SecAgg+ the same
per protocol stage (``secagg_stage_wire``). Message metadata (ids, type, ttl: 120 to 190
bytes a message) and Flower 1.41's object-tree framing (a header per array chunk) are not
counted, nor is the ServerApp's upload to the SuperLink in a deployment, which sends an
object that several messages share (the global weights) only once.

SecAgg+ dropouts: SecAgg+ is run with ``num_shares=1.0`` (every sampled client holds a
share of every other's keys) and ``reconstruction_threshold=0.7``, so Flower sets the
threshold to ``max(2, round(0.7 * m))`` for m sampled clients. A client that fails after
sharing its keys (its train handler raised) drops out; while at least the threshold of
clients is left the round completes over the survivors (a ``clients_dropped_out`` event
names the others), below it SecAgg+ cannot reconstruct the masks and the round fails with
the counts (sampled, replied, threshold) in the error and the ``round_failed`` event.

Lost nodes (deployment): with ``round-timeout`` > 0, every exchange of a round (the one
train exchange of a plain round, each of SecAgg+'s four stages) waits at most that many
seconds; a sampled node that has not replied by then, or for which the SuperLink answers
"node unavailable" (it missed its heartbeats), is *lost*: it counts as a dropout, and the
round completes with the clients that replied (plain rounds: the size-weighted step over
them; SecAgg+: as long as the reconstruction threshold is met). Sampling stays a function
of (seed, round) over all K partitions, so a lost node sampled again is a dropout again;
once the SuperLink no longer lists it, it is not even sent the round (no waiting). Each
loss is a ``client_lost`` event (round, partition, node, stage, reason, seconds waited) and
the round's metrics line lists ``lost``. With ``round-timeout`` 0 (the default, and the
simulation) rounds wait for every reply, as before.

Run config keys (``context.run_config`` merged with the factory's overrides):

``run-dir``              the run directory (required)
``resume``               continue from ``checkpoints/last.npz`` if it exists (default false)
``stop-after-round``     stop after this round even if T is larger (0: run to T)
``on-failed-round``      ``"fail"`` (default): raise; ``"skip"``: record it, keep the weights
``discovery-timeout``    seconds to wait for all K client nodes (default 300)
``round-timeout``        seconds an exchange waits for replies; then missing nodes are lost
                         (default 0: wait for all)
``audit-received``       save what the server receives each round under ``audit/``
"""

from __future__ import annotations

import math
import os
import re
import time
import traceback
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.app.message_type import MessageType
from flwr.common import FitIns, Parameters
from flwr.common.constant import ErrorCode
from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_CONFIGS, Stage
from flwr.common.secure_aggregation.secaggplus_constants import Key as SecAggKey
from flwr.common.serde import config_record_to_proto, metric_record_to_proto
from flwr.proto.recorddict_pb2 import Array as ProtoArray
from flwr.server import LegacyContext, ServerConfig
from flwr.server.client_manager import ClientManager
from flwr.server.client_proxy import ClientProxy
from flwr.server.compat.app_utils import start_update_client_manager_thread
from flwr.server.compat.grid_client_proxy import GridClientProxy
from flwr.server.workflow import SecAggPlusWorkflow
from flwr.server.workflow.constant import MAIN_CONFIGS_RECORD, MAIN_PARAMS_RECORD, Key
from flwr.server.workflow.default_workflows import default_fit_workflow
from flwr.serverapp import Grid, ServerApp
from flwr.supercore.run import Run

from fedscope.federation import run_dir as layout
from fedscope.federation import wire
from fedscope.federation.client_app import RUN_DIR_KEY, WHOAMI, RunConfigValue
from fedscope.federation.exchange import RepresentationRelay, relay_path
from fedscope.federation.strategy import RoundRecord, SizeWeightedDeltaStrategy, sample_size
from fedscope.federation.task import (
    DIVERGED,
    DivergenceError,
    FederatedTask,
    FederationSettings,
    Weights,
    is_divergence_report,
    load_task,
)

_ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;]*m")  # Ray colours its tracebacks
MAX_ERROR_CHARS = 4000  # per client error kept in events.jsonl (Ray adds long tracebacks)


class RoundFailedError(RuntimeError):
    """A round did not aggregate (a client failed, or SecAgg+ halted)."""


@dataclass(frozen=True)
class ServerOptions:
    run_dir: Path
    resume: bool = False
    stop_after_round: int = 0
    on_failed_round: str = "fail"
    discovery_timeout_s: float = 300.0
    audit_received: bool = False
    round_timeout_s: float = 0.0  # 0: wait for every reply (no lost nodes)

    @staticmethod
    def from_run_config(config: Mapping[str, RunConfigValue]) -> ServerOptions:
        if RUN_DIR_KEY not in config:
            raise KeyError(f"the run config has no {RUN_DIR_KEY!r} (keys: {sorted(config)})")
        on_failed = str(config.get("on-failed-round", "fail"))
        if on_failed not in ("fail", "skip"):
            raise ValueError(
                f"run config on-failed-round must be 'fail' or 'skip', got {on_failed!r}"
            )
        stop_after = int(config.get("stop-after-round", 0))
        if stop_after < 0:
            raise ValueError(f"run config stop-after-round must be >= 0, got {stop_after}")
        round_timeout = float(config.get("round-timeout", 0.0))
        if not round_timeout >= 0:
            raise ValueError(f"run config round-timeout must be >= 0 seconds, got {round_timeout}")
        return ServerOptions(
            run_dir=Path(str(config[RUN_DIR_KEY])),
            resume=_as_bool(config.get("resume", False)),
            stop_after_round=stop_after,
            on_failed_round=on_failed,
            discovery_timeout_s=float(config.get("discovery-timeout", 300.0)),
            audit_received=_as_bool(config.get("audit-received", False)),
            round_timeout_s=round_timeout,
        )


def build_server_app(overrides: Mapping[str, RunConfigValue] | None = None) -> ServerApp:
    """A ServerApp whose run config is ``context.run_config`` updated with ``overrides``."""
    fixed = dict(overrides or {})
    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        options = ServerOptions.from_run_config({**context.run_config, **fixed})
        # Refused before the status is touched: it belongs to the process holding the run.
        with layout.exclusive(options.run_dir):
            layout.write_status(options.run_dir, "running", pid=os.getpid())
            try:
                summary = serve(grid, context, options)
            except BaseException as exc:
                layout.write_status(
                    options.run_dir,
                    "failed",
                    error=f"{type(exc).__name__}: {exc}",
                    traceback=traceback.format_exc(),
                )
                raise
            layout.write_status(options.run_dir, "done", **summary)

    return app


def serve(grid: Grid, context: Context, options: ServerOptions) -> dict[str, Any]:
    """Discovery, then the round loop; returns a summary for ``server_status.json``."""
    started = time.perf_counter()
    run_dir = options.run_dir
    task = load_task(run_dir)
    settings = task.settings()
    check_settings(settings)
    strategy_class = LostNodeStrategy if options.round_timeout_s > 0 else SizeWeightedDeltaStrategy
    strategy = strategy_class(
        seed=settings.seed,
        fraction=settings.fraction,
        secagg=settings.secagg,
        size_bound=settings.size_bound,
        audit_dir=run_dir / "audit" if options.audit_received else None,
    )
    legacy = LegacyContext(
        context=context, config=ServerConfig(num_rounds=settings.rounds), strategy=strategy
    )
    thread, stop_client_manager, client_manager_ready = start_update_client_manager_thread(
        grid, legacy.client_manager
    )
    try:
        client_manager_ready.wait()
        strategy.set_partitions(
            discover_partitions(grid, settings.n_clients, options.discovery_timeout_s)
        )
        discovery_s = time.perf_counter() - started
        return _round_loop(grid, legacy, task, settings, strategy, options) | {
            "discovery_s": discovery_s,
            "server_s": time.perf_counter() - started,
        }
    finally:
        stop_client_manager.set()
        thread.join(timeout=10)


def check_settings(settings: FederationSettings) -> None:
    problems = []
    if settings.n_clients < 1:
        problems.append(f"n_clients must be >= 1, got {settings.n_clients}")
    if not 0 < settings.fraction <= 1:
        problems.append(f"fraction must be in (0, 1], got {settings.fraction}")
    if settings.rounds < 1:
        problems.append(f"rounds must be >= 1, got {settings.rounds}")
    if settings.eval_every < 1:
        problems.append(f"eval_every must be >= 1, got {settings.eval_every}")
    if settings.size_bound < 1:
        problems.append(f"size_bound must be >= 1, got {settings.size_bound}")
    if settings.on_divergence not in ("fail", "stop"):
        problems.append(f"on_divergence must be 'fail' or 'stop', got {settings.on_divergence!r}")
    sizes_valid = settings.n_clients >= 1 and 0 < settings.fraction <= 1
    if settings.secagg and sizes_valid and sample_size(settings.n_clients, settings.fraction) < 2:
        problems.append("SecAgg+ needs at least 2 clients per round (n_clients >= 2)")
    if problems:
        raise ValueError("invalid FederationSettings: " + "; ".join(problems))


def discover_partitions(grid: Grid, n_clients: int, timeout_s: float) -> dict[int, int]:
    """Ask every node which partition it holds: ``{partition_id: node_id}`` for 0..K-1."""
    deadline = time.monotonic() + timeout_s
    node_ids = sorted(grid.get_node_ids())
    while len(node_ids) < n_clients:
        if time.monotonic() > deadline:
            raise TimeoutError(
                f"only {len(node_ids)} of {n_clients} client nodes connected within {timeout_s:g} s"
            )
        time.sleep(0.2)
        node_ids = sorted(grid.get_node_ids())
    queries = [
        Message(RecordDict(), dst_node_id=n, message_type=f"{MessageType.QUERY}.{WHOAMI}")
        for n in node_ids
    ]
    replies = list(grid.send_and_receive(queries, timeout=max(deadline - time.monotonic(), 1.0)))
    errors = [f"node {r.metadata.src_node_id}: {r.error.reason}" for r in replies if r.has_error()]
    if errors:
        raise RuntimeError("client discovery (whoami) failed:\n" + "\n".join(errors))
    if len(replies) < len(node_ids):
        raise TimeoutError(f"only {len(replies)} of {len(node_ids)} nodes answered whoami")
    node_of_partition: dict[int, int] = {}
    for reply in replies:
        partition = int(reply.content.config_records[WHOAMI]["partition-id"])
        if partition in node_of_partition:
            raise RuntimeError(f"two nodes claim partition-id {partition}")
        node_of_partition[partition] = reply.metadata.src_node_id
    if sorted(node_of_partition) != list(range(n_clients)):
        raise RuntimeError(
            f"expected partition ids 0..{n_clients - 1} (FederationSettings.n_clients = "
            f"{n_clients}), the nodes hold {sorted(node_of_partition)}"
        )
    return node_of_partition


@dataclass
class _Start:
    weights: Weights
    first_round: int
    best_value: float | None
    best_round: int | None


def _prepare_start(run_dir: Path, task: FederatedTask, options: ServerOptions) -> _Start:
    last_path = layout.last_checkpoint_path(run_dir)
    initial = task.initial_weights()
    if options.resume and last_path.is_file():
        ckpt = layout.load_checkpoint(last_path)
        expected = [np.shape(w) for w in initial]
        if [np.shape(w) for w in ckpt.weights] != expected:
            raise ValueError(
                f"{last_path}: checkpoint arrays {[np.shape(w) for w in ckpt.weights]} do not "
                f"match the task's weights {expected}"
            )
        # A kill can land after a round's metrics line and before its checkpoint.
        dropped = layout.keep_metrics_up_to(run_dir, ckpt.round)
        _repair_best_checkpoint(run_dir, ckpt)
        layout.append_event(
            run_dir, "run_resumed", from_round=ckpt.round, dropped_metrics_lines=dropped
        )
        return _Start(ckpt.weights, ckpt.round + 1, ckpt.best_value, ckpt.best_round)
    if last_path.is_file():
        raise FileExistsError(
            f"{last_path} exists: this run directory already holds a run; resume it "
            "(run config resume=true) or start in a new directory"
        )
    dropped = layout.keep_metrics_up_to(run_dir, 0)
    layout.best_checkpoint_path(run_dir).unlink(missing_ok=True)
    layout.append_event(
        run_dir, "run_started", resume_requested=options.resume, dropped_metrics_lines=dropped
    )
    return _Start(initial, 1, None, None)


def _repair_best_checkpoint(run_dir: Path, last: layout.Checkpoint) -> None:
    # The last checkpoint is written before the best one, so best.npz can only lag when
    # the last round was itself the best; its weights are then the last checkpoint's.
    if last.best_round is None or last.best_round != last.round:
        return
    best_path = layout.best_checkpoint_path(run_dir)
    if best_path.is_file() and layout.load_checkpoint(best_path).round == last.round:
        return
    layout.save_checkpoint(best_path, last)


def _round_loop(
    grid: Grid,
    legacy: LegacyContext,
    task: FederatedTask,
    settings: FederationSettings,
    strategy: SizeWeightedDeltaStrategy,
    options: ServerOptions,
) -> dict[str, Any]:
    run_dir = options.run_dir
    loop_started = time.perf_counter()
    start = _prepare_start(run_dir, task, options)
    weights, best_value, best_round = start.weights, start.best_value, start.best_round
    if settings.exchange:
        strategy.relay = _load_relay(run_dir, start.first_round - 1)
    last_round = settings.rounds
    if options.stop_after_round:
        last_round = min(last_round, options.stop_after_round)

    legacy.state.array_records[MAIN_PARAMS_RECORD] = wire.weights_to_record(weights)
    round_config = ConfigRecord({Key.START_TIME: time.time(), Key.CURRENT_ROUND: 0})
    legacy.state.config_records[MAIN_CONFIGS_RECORD] = round_config
    fit_workflow = (
        SecAggPlusWorkflow(
            num_shares=1.0,  # a fraction: every sampled client is every other's neighbour
            reconstruction_threshold=0.7,  # max(2, round(0.7 m)) of the m shares
            max_weight=1.0,  # clients send num_examples = 1; the size weight is in the vector
            clipping_range=settings.secagg_clipping_range,
        )
        if settings.secagg
        else default_fit_workflow
    )
    observed = ReplyErrorLog(grid, options.round_timeout_s)
    skipped: list[int] = []
    stopped: dict[str, Any] | None = None
    for rnd in range(start.first_round, last_round + 1):
        round_started = time.perf_counter()
        round_config[Key.CURRENT_ROUND] = rnd
        observed.new_round()
        fit_workflow(observed, legacy)
        fit_s = time.perf_counter() - round_started
        record = strategy.rounds.get(rnd) or RoundRecord(sampled=[])
        lost = _record_lost_nodes(rnd, strategy, observed, run_dir)
        if not record.applied and settings.on_divergence == "stop":
            errors = [reason for _, reason in observed.errors] or record.failures
            if errors and all(is_divergence_report(e) for e in errors):
                stopped = _stop_diverged(rnd, errors, weights, task, settings, run_dir)
                value = stopped["validation_value"]
                if _improves(value, best_value):
                    best_value, best_round = value, rnd - 1
                    layout.save_checkpoint(
                        layout.best_checkpoint_path(run_dir),
                        layout.Checkpoint(weights, rnd - 1, best_value, best_round),
                    )
                break
        if not record.applied:
            _report_failed_round(rnd, record, observed, strategy, settings, options)
            skipped.append(rnd)
        elif record.dropped:
            layout.append_event(
                run_dir,
                "clients_dropped_out",
                round=rnd,
                sampled=record.sampled,
                dropped=record.dropped,
                secagg_threshold=observed.secagg_threshold,
                errors=[reason[:MAX_ERROR_CHARS] for _, reason in observed.errors],
            )
        weights = wire.record_to_weights(legacy.state.array_records[MAIN_PARAMS_RECORD])
        traffic = observed.traffic

        validation: dict[str, float] | None = None
        eval_s: float | None = None
        improved = False
        if rnd % settings.eval_every == 0 or rnd == settings.rounds:
            eval_started = time.perf_counter()
            try:
                validation = _validate(task, weights, rnd, settings)
            except DivergenceError as exc:
                if settings.on_divergence != "stop":
                    raise
                stopped = _stop_record(
                    run_dir, rnd, "the global model's validation scores are non-finite", str(exc)
                )
                break
            eval_s = time.perf_counter() - eval_started
            value = validation[settings.selection_metric]
            if _improves(value, best_value):
                best_value, best_round, improved = value, rnd, True

        layout.append_jsonl(
            layout.metrics_path(run_dir),
            {
                "round": rnd,
                "sampled": record.sampled,
                "aggregated": record.applied,
                "dropped": record.dropped,
                "lost": lost,
                "mean_size_weight": record.mean_size_weight,
                "step_skipped": record.step_skipped,
                "secagg": settings.secagg,
                "fit_s": fit_s,
                "eval_s": eval_s,
                "validation": validation,
                "client_train": record.client_metrics,
                "server_distinct_updates": record.distinct_updates,
                "bytes_to_clients": traffic.bytes_to_clients,
                "bytes_from_clients": traffic.bytes_from_clients,
                "messages": traffic.messages_to_clients + traffic.messages_from_clients,
                "messages_to_clients": traffic.messages_to_clients,
                "messages_from_clients": traffic.messages_from_clients,
                "secagg_stage_wire": (
                    [vars(tally) for tally in observed.secagg_stages] if settings.secagg else None
                ),
                "best_round": best_round,
                "best_value": best_value,
                "round_s": time.perf_counter() - round_started,
                "elapsed_s": time.perf_counter() - loop_started,
                "time": time.time(),
            },
        )
        if strategy.relay is not None:
            # before the checkpoint: a resume from round r must find round r's mailbox
            _save_relay(run_dir, rnd, strategy.relay)
        checkpoint = layout.Checkpoint(weights, rnd, best_value, best_round)
        # last before best: see _repair_best_checkpoint
        layout.save_checkpoint(layout.last_checkpoint_path(run_dir), checkpoint)
        if improved:
            layout.save_checkpoint(layout.best_checkpoint_path(run_dir), checkpoint)
    if stopped is not None and best_round is None:
        raise RoundFailedError(
            f"training stopped in round {stopped['round']} ({stopped['reason']}) before any "
            "round was validated, so there is no model to select: validate more often "
            f"(eval.every) or make training stable (error: {stopped['error']}; all errors in "
            f"{layout.events_path(run_dir)})"
        )
    return {
        "stopped": stopped,
        "first_round": start.first_round,
        "last_round": last_round if stopped is None else stopped["last_completed_round"],
        "rounds_total": settings.rounds,
        "skipped_rounds": skipped,
        "best_round": best_round,
        "best_value": best_value,
    }


def _load_relay(run_dir: Path, last_round: int) -> RepresentationRelay:
    if last_round < 1:
        return RepresentationRelay()
    path = relay_path(run_dir, last_round)
    if not path.is_file():
        raise FileNotFoundError(
            f"{path}: the representation mailbox of round {last_round} is missing, so the "
            "resumed run could not repeat the interrupted one; start a new run directory"
        )
    return RepresentationRelay.load(path)


def _save_relay(run_dir: Path, rnd: int, relay: RepresentationRelay) -> None:
    relay.save(relay_path(run_dir, rnd))
    # Two kept: the checkpoint may still be the previous round's when a kill lands here.
    stale = relay_path(run_dir, rnd - 2)
    stale.unlink(missing_ok=True)


def _record_lost_nodes(
    rnd: int, strategy: SizeWeightedDeltaStrategy, observed: ReplyErrorLog, run_dir: Path
) -> list[int]:
    """``client_lost`` events for the round's lost nodes; returns their partitions."""
    lost: list[LostNode] = list(observed.lost.values())
    if isinstance(strategy, LostNodeStrategy):
        lost += [
            LostNode(node, "sampling", "not connected when the round was sampled", 0.0)
            for node in strategy.absent.get(rnd, [])
        ]
    partitions = []
    for loss in lost:
        partition = strategy.partition_of_node(loss.node_id)
        layout.append_event(
            run_dir,
            "client_lost",
            round=rnd,
            partition=partition,
            node_id=loss.node_id,
            stage=loss.stage,
            reason=loss.reason,
            waited_s=loss.waited_s,
        )
        if partition is not None:
            partitions.append(partition)
    return sorted(set(partitions))


@dataclass(frozen=True)
class LostNode:
    """A sampled node that did not reply to an exchange (timeout, or gone from the SuperLink)."""

    node_id: int
    stage: str  # "train" for plain rounds, the SecAgg+ stage, or "sampling"
    reason: str
    waited_s: float


class _WithAbsentNodes:
    """A client manager view that also lists placeholder proxies for absent nodes, so the
    seeded sampling (over all K partitions) can name them; they are never sent anything."""

    def __init__(self, manager: ClientManager, absent: list[int]) -> None:
        self._manager = manager
        self._absent = absent

    def all(self) -> dict[str, ClientProxy]:
        proxies = dict(self._manager.all())
        for node in self._absent:
            proxies[str(node)] = GridClientProxy(node_id=node, grid=None, run_id=0)  # type: ignore[arg-type]
        return proxies


class LostNodeStrategy(SizeWeightedDeltaStrategy):
    """The size-weighted strategy, with sampled partitions whose node is gone (the
    SuperLink no longer lists it) left out of the round as dropouts instead of an error."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.absent: dict[int, list[int]] = {}  # round -> node ids sampled but not connected

    def configure_fit(
        self, server_round: int, parameters: Parameters, client_manager: ClientManager
    ) -> list[tuple[ClientProxy, FitIns]]:
        connected = {int(getattr(p, "node_id", cid)) for cid, p in client_manager.all().items()}
        absent = [
            self.node_of_partition[p]
            for p in self.sample_partitions(server_round)
            if self.node_of_partition[p] not in connected
        ]
        self.absent[server_round] = absent
        if not absent:
            return super().configure_fit(server_round, parameters, client_manager)
        view = _WithAbsentNodes(client_manager, absent)
        instructions = super().configure_fit(server_round, parameters, view)  # type: ignore[arg-type]
        return [(proxy, ins) for proxy, ins in instructions if int(proxy.cid) not in absent]


def _validate(
    task: FederatedTask, weights: Weights, rnd: int, settings: FederationSettings
) -> dict[str, float]:
    validation = {k: float(v) for k, v in task.evaluate(weights, rnd).items()}
    if settings.selection_metric not in validation:
        raise KeyError(
            f"task.evaluate returned no {settings.selection_metric!r} (the selection "
            f"metric); it returned {sorted(validation)}"
        )
    return validation


def _improves(value: float | None, best_value: float | None) -> bool:
    """A finite validation value above the best so far selects its round."""
    return value is not None and math.isfinite(value) and (best_value is None or value > best_value)


def _stop_diverged(
    rnd: int,
    errors: list[str],
    weights: Weights,
    task: FederatedTask,
    settings: FederationSettings,
    run_dir: Path,
) -> dict[str, Any]:
    """Round ``rnd``: every sampled client's local step diverged, and training stops. The
    last good model (after round ``rnd - 1``) is validated now unless its round already was,
    so that a run stopped between validations can still select it."""
    prev = rnd - 1
    validation: dict[str, float] | None = None
    if prev >= 1 and prev % settings.eval_every != 0:
        try:
            validation = _validate(task, weights, prev, settings)
        except DivergenceError as exc:
            layout.append_event(run_dir, "validation_non_finite", round=prev, error=str(exc))
    value = None if validation is None else validation[settings.selection_metric]
    first = _first_line_with(errors, DIVERGED) or errors[0]
    return _stop_record(
        run_dir,
        rnd,
        "every failed client's local step diverged",
        first,
        validation=validation,
        validation_value=value if value is not None and math.isfinite(value) else None,
    )


def _stop_record(run_dir: Path, rnd: int, reason: str, error: str, **fields: Any) -> dict[str, Any]:
    stopped = {
        "round": rnd,
        "last_completed_round": rnd - 1,
        "reason": reason,
        "error": error.strip()[:MAX_ERROR_CHARS],
        "validation": None,
        "validation_value": None,
    } | fields
    layout.append_event(run_dir, "training_stopped", action="stop", **stopped)
    return stopped


def _report_failed_round(
    rnd: int,
    record: RoundRecord,
    observed: ReplyErrorLog,
    strategy: SizeWeightedDeltaStrategy,
    settings: FederationSettings,
    options: ServerOptions,
) -> None:
    failed_clients = sorted(
        {p for p in (strategy.partition_of_node(n) for n, _ in observed.errors) if p is not None}
    )
    errors = [reason[:MAX_ERROR_CHARS] for _, reason in observed.errors] or record.failures
    if not record.aggregate_called:
        what = (
            _secagg_halt_reason(observed)
            if settings.secagg
            else "the fit workflow returned without aggregating"
        )
    else:
        what = "client updates failed; the size-weighted step needs every sampled client"
    layout.append_event(
        options.run_dir,
        "round_failed",
        round=rnd,
        secagg=settings.secagg,
        sampled=record.sampled,
        failed_clients=failed_clients,
        aggregate_called=record.aggregate_called,
        reason=what,
        secagg_threshold=observed.secagg_threshold,
        secagg_stages=[vars(tally) for tally in observed.secagg_stages],
        errors=[e[:MAX_ERROR_CHARS] for e in errors],
        action=options.on_failed_round,
    )
    if options.on_failed_round == "fail":
        first_error = _first_line_with(errors, "failed in round") or (errors[0] if errors else "")
        raise RoundFailedError(
            f"round {rnd} did not aggregate: {what}; sampled clients {record.sampled}, "
            f"failed clients {failed_clients}. First error: {first_error.strip()[:500]} "
            f"(all errors in {layout.events_path(options.run_dir)})"
        )


def _secagg_halt_reason(observed: ReplyErrorLog) -> str:
    what = "SecAgg+ halted without aggregating"
    short = observed.secagg_shortfall()
    if short is None or observed.secagg_threshold is None:
        return (
            f"{what} (Flower's SecAggPlusWorkflow returns silently when too few sampled "
            "clients answer)"
        )
    sampled = observed.secagg_stages[0].sent
    return (
        f"{what}: it could not reconstruct the aggregate because too many clients dropped "
        f"out ({sampled} sampled, {short.replied} replied in its "
        f"{short.stage.replace('_', ' ')!r} stage, fewer than the reconstruction threshold "
        f"of {observed.secagg_threshold}; a round survives at most "
        f"{max(sampled - observed.secagg_threshold, 0)} dropouts)"
    )


def _first_line_with(errors: list[str], needle: str) -> str | None:
    for error in errors:
        for line in error.splitlines():
            if needle in line:
                return line
    return None


@dataclass
class SecAggStageTally:
    """One SecAgg+ stage of a round: messages sent, replies without an error, and the
    content bytes each way (:func:`content_wire_bytes`)."""

    stage: str
    sent: int
    replied: int
    bytes_to_clients: int = 0
    bytes_from_clients: int = 0


@dataclass
class WireTally:
    """Messages and content bytes of one round, both directions (every stage)."""

    messages_to_clients: int = 0
    messages_from_clients: int = 0
    bytes_to_clients: int = 0
    bytes_from_clients: int = 0


class ReplyErrorLog(Grid):
    """Flower's Grid, passed through unchanged, keeping the error replies it returns.

    Fit workflows turn client errors into anonymous exceptions (or, SecAgg+, drop them),
    so the loop reads the failing nodes from here to name the clients of a failed round.
    It also tallies SecAgg+'s stages and keeps the threshold Flower sent in its setup
    message, since the workflow reports neither when it halts, and it counts the messages
    and content bytes of the round (``traffic``).
    """

    def __init__(self, grid: Grid, round_timeout_s: float = 0.0) -> None:
        self._grid = grid
        self.round_timeout_s = round_timeout_s
        self.lost: dict[int, LostNode] = {}  # node id -> first exchange of the round it missed
        self.errors: list[tuple[int, str]] = []
        self.secagg_stages: list[SecAggStageTally] = []
        self.secagg_threshold: int | None = None
        self.traffic = WireTally()

    def new_round(self) -> None:
        self.lost.clear()
        self.errors.clear()
        self.secagg_stages.clear()
        self.secagg_threshold = None
        self.traffic = WireTally()

    def secagg_shortfall(self) -> SecAggStageTally | None:
        """The first stage that left fewer clients than the threshold (SecAgg+ halts there)."""
        if self.secagg_threshold is None:
            return None
        return next((t for t in self.secagg_stages if t.replied < self.secagg_threshold), None)

    def set_run(self, run: Run) -> None:
        self._grid.set_run(run)

    @property
    def run(self) -> Run:
        return self._grid.run

    def create_message(
        self,
        content: RecordDict,
        message_type: str,
        dst_node_id: int,
        group_id: str,
        ttl: float | None = None,
    ) -> Message:
        return self._grid.create_message(content, message_type, dst_node_id, group_id, ttl)

    def get_node_ids(self) -> Iterable[int]:
        return self._grid.get_node_ids()

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        messages = list(messages)
        self._count_sent(messages)
        return self._grid.push_messages(messages)

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        replies = self._note(self._grid.pull_messages(message_ids))
        self._count_received(replies)
        return replies

    def send_and_receive(
        self, messages: Iterable[Message], *, timeout: float | None = None
    ) -> Iterable[Message]:
        messages = list(messages)
        # Both read before sending: in the simulation clients may pop keys of the very
        # objects sent (the SecAgg+ stage key among them).
        stage = self._secagg_stage(messages)
        sent_bytes = self._count_sent(messages)
        if timeout is None and self.round_timeout_s > 0:
            timeout = self.round_timeout_s  # Flower's workflows pass None: wait forever
        started = time.monotonic()
        raw = list(self._grid.send_and_receive(messages, timeout=timeout))
        if self.round_timeout_s > 0:
            raw = self._drop_lost(messages, raw, stage or "train", time.monotonic() - started)
        replies = self._note(raw)
        received_bytes = self._count_received(replies)
        if stage is not None:
            ok = sum(not reply.has_error() for reply in replies)
            self.secagg_stages.append(
                SecAggStageTally(stage, len(messages), ok, sent_bytes, received_bytes)
            )
        return replies

    def _drop_lost(
        self, messages: list[Message], replies: list[Message], stage: str, waited_s: float
    ) -> list[Message]:
        """Replies without the SuperLink's "node unavailable" errors; every node sent a
        message without a reply left is recorded as lost (the workflows then see it as a
        node that did not answer: a dropout)."""
        kept = [
            r for r in replies if not (r.has_error() and r.error.code == ErrorCode.NODE_UNAVAILABLE)
        ]
        unavailable = len(replies) - len(kept)
        answered = {r.metadata.src_node_id for r in kept}
        for message in messages:
            node = message.metadata.dst_node_id
            if node in answered or node in self.lost:
                continue
            reason = (
                "the SuperLink reports the node unavailable (missed heartbeats)"
                if unavailable
                else f"no reply within the round timeout of {self.round_timeout_s:g} s"
            )
            self.lost[node] = LostNode(node, stage, reason, waited_s)
        return kept

    def _count_sent(self, messages: list[Message]) -> int:
        size = sum(content_wire_bytes(m.content) for m in messages if m.has_content())
        self.traffic.messages_to_clients += len(messages)
        self.traffic.bytes_to_clients += size
        return size

    def _count_received(self, replies: list[Message]) -> int:
        # An error reply has no content: it counts as a message of 0 content bytes.
        size = sum(content_wire_bytes(r.content) for r in replies if r.has_content())
        self.traffic.messages_from_clients += len(replies)
        self.traffic.bytes_from_clients += size
        return size

    def _secagg_stage(self, messages: list[Message]) -> str | None:
        if not messages or RECORD_KEY_CONFIGS not in messages[0].content.config_records:
            return None
        config = messages[0].content.config_records[RECORD_KEY_CONFIGS]
        stage = config.get(SecAggKey.STAGE)
        if stage == Stage.SETUP:
            self.secagg_threshold = int(config[SecAggKey.THRESHOLD])
        return str(stage) if stage is not None else None

    def _note(self, replies: Iterable[Message]) -> list[Message]:
        replies = list(replies)
        for reply in replies:
            if reply.has_error():
                reason = _ANSI_ESCAPE.sub("", reply.error.reason)
                self.errors.append((reply.metadata.src_node_id, reason))
        return replies


def content_wire_bytes(content: RecordDict) -> int:
    """Bytes of ``content`` serialised as Flower's protobuf ``RecordDict``.

    Equal to ``recorddict_to_proto(content).ByteSize()``, but the bulk (array data, and
    the bytes values of config records, which carry SecAgg+'s masked vectors) is counted
    from its length instead of being copied into a protobuf: that copy costs about 40 ms
    per 16 MB message on our machine, this a few microseconds per array.
    """
    items = 0
    for key, record in content.items():
        if isinstance(record, ArrayRecord):
            size = _array_record_bytes(record)
        elif isinstance(record, ConfigRecord):
            size = _config_record_bytes(record)
        elif isinstance(record, MetricRecord):
            size = metric_record_to_proto(record).ByteSize()
        else:
            raise TypeError(f"record {key!r}: unsupported record type {type(record).__name__}")
        # RecordDict.Item: key (1), one of the records (2-4, always present)
        items += _delimited(_string_field(key) + _delimited(size))
    return items


# Protobuf sizes. Every field used here has a number below 16 (a one-byte tag) except
# ConfigRecordValue.bytes_list (26: a two-byte tag).
def _varint_bytes(value: int) -> int:
    return max(1, (value.bit_length() + 6) // 7)


def _delimited(payload: int, tag_bytes: int = 1) -> int:
    """A length-delimited field (string, bytes, sub-message) carrying ``payload`` bytes."""
    return tag_bytes + _varint_bytes(payload) + payload


def _string_field(text: str) -> int:
    return _delimited(len(text.encode())) if text else 0  # proto3 leaves out "" fields


def _array_record_bytes(record: ArrayRecord) -> int:
    total = 0
    for key, array in record.items():
        header = ProtoArray(dtype=array.dtype, shape=array.shape, stype=array.stype)
        n_data = len(array.data)
        size = header.ByteSize() + (_delimited(n_data) if n_data else 0)
        total += _delimited(_string_field(key) + _delimited(size))  # ArrayRecord.Item
    return total


def _config_record_bytes(record: ConfigRecord) -> int:
    bulky: dict[str, int] = {}
    for key, value in record.items():
        if isinstance(value, bytes):
            bulky[key] = _delimited(len(value))  # ConfigRecordValue.bytes (6)
        elif isinstance(value, list) and value and all(isinstance(v, bytes) for v in value):
            listed = sum(_delimited(len(v)) for v in value)  # BytesList.vals (1)
            bulky[key] = _delimited(listed, tag_bytes=2)  # ConfigRecordValue.bytes_list (26)
    rest = ConfigRecord({k: v for k, v in record.items() if k not in bulky}, keep_input=True)
    total = config_record_to_proto(rest).ByteSize() if len(rest) else 0
    for key, value_size in bulky.items():
        total += _delimited(_string_field(key) + _delimited(value_size))  # ConfigRecord.Item
    return total


def _as_bool(value: RunConfigValue) -> bool:
    if isinstance(value, str):
        if value.lower() in ("true", "1", "yes"):
            return True
        if value.lower() in ("false", "0", "no", ""):
            return False
        raise ValueError(f"expected a boolean, got {value!r}")
    return bool(value)


app = build_server_app()
