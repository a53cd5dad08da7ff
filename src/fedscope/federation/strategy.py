"""Client sampling and the paper's size-weighted delta step, as a legacy Flower Strategy.

FedSCOPE's update is ``w <- w + sum_k |U_k| Delta_k / sum_k |U_k|`` over the clients
sampled in a round. Clients send ``[(|U_k|/S) Delta_k, |U_k|/S]`` (S: a public bound on
|U_k|), so the plain mean of what the server receives is enough:
``mean[:-1] / mean[-1] = sum |U_k| Delta_k / sum |U_k|`` (the client count cancels).
SecAgg+ reveals exactly that mean and nothing else, so this one strategy serves plain
and SecAgg+ rounds unchanged (under SecAgg+ every FitRes holds the same aggregate),
and |U_k| never travels in the clear.

Two cases bend the plain picture:

- *Dropouts under SecAgg+*: clients that fail after sharing their keys drop out, and
  SecAgg+ unmasks the mean over the survivors as long as at least its reconstruction
  threshold of clients is left; the decoded step is then the size-weighted average over
  the survivors. Plain rounds still need every sampled client.
- *Zero weights*: a client may send ``|U_k| = 0`` (e.g. its privacy budget is spent). Its
  vector is all zeros, so it drops out of both sums; when every contributor sends zero the
  round leaves the weights unchanged instead of dividing by zero.

It is a *legacy* Strategy because Flower's ``SecAggPlusWorkflow`` accepts only those.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from flwr.common import (
    EvaluateIns,
    EvaluateRes,
    FitIns,
    FitRes,
    Parameters,
    Scalar,
    ndarrays_to_parameters,
)
from flwr.server.client_manager import ClientManager
from flwr.server.client_proxy import ClientProxy
from flwr.server.strategy import Strategy

from fedscope.federation import wire
from fedscope.federation.exchange import INBOX_KEY, OUTBOX_KEY, RepresentationRelay
from fedscope.federation.task import Weights


def sample_size(n_clients: int, fraction: float) -> int:
    """m = max(2, round(C*K)) (SecAgg+ needs two clients), capped at K; 1 when K == 1."""
    if n_clients < 1:
        raise ValueError(f"need at least one client, got {n_clients}")
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction C must be in (0, 1], got {fraction}")
    if n_clients == 1:
        return 1
    return min(n_clients, max(2, round(fraction * n_clients)))


def sample_partitions(
    seed: int, server_round: int, partition_ids: list[int], fraction: float
) -> list[int]:
    """The partitions trained in ``server_round``: a function of (seed, round) only, so a
    resumed run and every engine pick the same clients."""
    ids = sorted(int(p) for p in partition_ids)
    m = sample_size(len(ids), fraction)
    rng = np.random.default_rng([seed, server_round])
    return sorted(int(p) for p in rng.choice(ids, size=m, replace=False))


def encode_weighted(delta: Weights, n_users: int, size_bound: int) -> Weights:
    """``[(|U|/S) * Delta..., [|U|/S]]``: the size weight rides inside the (maskable) vector.

    ``n_users = 0`` is allowed (a client that must not move the model) and gives zeros.
    """
    if n_users < 0:
        raise ValueError(f"|U_k| must be at least 0, got {n_users}")
    if n_users > size_bound:
        raise ValueError(
            f"|U_k| = {n_users} exceeds the public size bound S = {size_bound}; "
            "raise FederationSettings.size_bound"
        )
    weight = n_users / size_bound
    if n_users == 0:
        # Zeros built directly, not 0 * Delta: 0 * nan is nan, and a weightless client's
        # update must not be able to reach the sum whatever it holds.
        return [
            np.zeros(np.shape(d), dtype=np.result_type(np.asarray(d), weight)) for d in delta
        ] + [np.array([0.0], dtype=np.float64)]
    return [np.asarray(d) * weight for d in delta] + [np.array([weight], dtype=np.float64)]


def mean_size_weight(mean_vector: Weights) -> float:
    """The last entry of a mean of encoded vectors: ``sum_k |U_k| / (n S)``."""
    return float(np.asarray(mean_vector[-1]).reshape(-1)[0])


def decode_weighted_mean(mean_vector: Weights) -> Weights:
    """``Delta = mean[:-1] / mean[-1]`` from the mean of encoded client vectors."""
    total_weight = mean_size_weight(mean_vector)
    if not total_weight > 0:
        raise ValueError(f"mean size weight must be positive, got {total_weight}")
    return [np.asarray(m) / total_weight for m in mean_vector[:-1]]


def mean_of_vectors(vectors: list[Weights]) -> Weights:
    """The entrywise mean in float64, summed in list order.

    Accumulated in place: stacking the clients' vectors first (np.mean over a new axis)
    gave the same bits but allocated n float64 copies of the model and was the largest
    single cost of a round's server side.
    """
    if not vectors:
        raise ValueError("mean of no vectors")
    total = [np.array(a, dtype=np.float64) for a in vectors[0]]
    for vector in vectors[1:]:
        for acc, a in zip(total, vector, strict=True):
            np.add(acc, a, out=acc)
    for acc in total:
        acc /= len(vectors)
    return total


@dataclass
class RoundRecord:
    """What happened to one round's fit, for the server loop's checks and metrics."""

    sampled: list[int]
    aggregate_called: bool = False  # False after a fit workflow: it halted (SecAgg+) silently
    applied: bool = False  # the round aggregated and set the global weights (see step_skipped)
    contributors: list[int] = field(default_factory=list)
    dropped: list[int] = field(default_factory=list)  # sampled, not in a SecAgg+ aggregate
    failures: list[str] = field(default_factory=list)
    mean_size_weight: float | None = None  # sum_k |U_k| / (n S) over the n contributors
    step_skipped: str | None = None  # why an aggregated round left the weights unchanged
    client_metrics: dict[str, float] | None = None  # means over clients (plain rounds only)
    distinct_updates: int = 0  # how many different update vectors the server was handed


class SizeWeightedDeltaStrategy(Strategy):
    """Seeded partition sampling plus the size-weighted delta step.

    ``set_partitions`` must be called with the partition-id -> node-id map (found by the
    server's whoami query) before the first round. ``size_bound`` is the public bound S
    the clients encode with; with it, a round whose decoded total of users is below one
    half counts as carrying no weight, which absorbs SecAgg+'s quantisation residue
    (without it, only a mean size weight <= 0 does).
    """

    def __init__(
        self,
        *,
        seed: int,
        fraction: float,
        secagg: bool = False,
        size_bound: int | None = None,
        audit_dir: Path | None = None,
    ) -> None:
        self.seed = seed
        self.fraction = fraction
        self.secagg = secagg
        self.size_bound = size_bound
        # When set, every round's received FitRes vectors are saved for privacy audits/tests.
        self.audit_dir = audit_dir
        self.node_of_partition: dict[int, int] = {}
        self.rounds: dict[int, RoundRecord] = {}
        self._round_weights: dict[int, Weights] = {}
        # Set by the server loop when clients exchange representations (federation.exchange).
        self.relay: RepresentationRelay | None = None

    def __repr__(self) -> str:
        return f"SizeWeightedDeltaStrategy(seed={self.seed}, fraction={self.fraction}, secagg={self.secagg})"

    def set_partitions(self, node_of_partition: dict[int, int]) -> None:
        self.node_of_partition = {int(p): int(n) for p, n in node_of_partition.items()}

    def partition_of_node(self, node_id: int) -> int | None:
        for partition, node in self.node_of_partition.items():
            if node == node_id:
                return partition
        return None

    def sample_partitions(self, server_round: int) -> list[int]:
        if not self.node_of_partition:
            raise RuntimeError("no partitions known: call set_partitions() first")
        return sample_partitions(
            self.seed, server_round, list(self.node_of_partition), self.fraction
        )

    # --- Strategy interface ----------------------------------------------------------------

    def initialize_parameters(self, client_manager: ClientManager) -> Parameters | None:
        return None  # the ServerApp sets the weights itself (fresh start or checkpoint)

    def configure_fit(
        self, server_round: int, parameters: Parameters, client_manager: ClientManager
    ) -> list[tuple[ClientProxy, FitIns]]:
        self._round_weights = {server_round: wire.parameters_to_weights(parameters)}
        chosen = self.sample_partitions(server_round)
        self.rounds[server_round] = RoundRecord(sampled=chosen)
        proxies: dict[int, ClientProxy] = {
            int(getattr(p, "node_id", cid)): p for cid, p in client_manager.all().items()
        }
        missing = [p for p in chosen if self.node_of_partition[p] not in proxies]
        if missing:
            raise RuntimeError(
                f"round {server_round}: sampled partitions {missing} have no connected node"
            )
        base: dict[str, Scalar] = {"server_round": server_round, "secagg": self.secagg}
        instructions = []
        for p in chosen:
            config = dict(base)
            inbox = self.relay.inbox_for(p) if self.relay is not None else None
            if inbox is not None:
                config[INBOX_KEY] = inbox
            instructions.append((proxies[self.node_of_partition[p]], FitIns(parameters, config)))
        return instructions

    def aggregate_fit(
        self,
        server_round: int,
        results: list[tuple[ClientProxy, FitRes]],
        failures: list[tuple[ClientProxy, FitRes] | BaseException],
    ) -> tuple[Parameters | None, dict[str, Scalar]]:
        record = self.rounds.setdefault(server_round, RoundRecord(sampled=[]))
        record.aggregate_called = True
        record.contributors = sorted(
            p
            for p in (self.partition_of_node(int(proxy.cid)) for proxy, _ in results)
            if p is not None
        )
        record.failures = [self._describe_failure(f) for f in failures]
        if not results:
            record.failures = record.failures or ["no client returned an update"]
            return None, {}
        if failures and not self.secagg:
            # The paper's step averages over all sampled clients; a partial average is not
            # it, so the round is reported instead (the server loop decides fail or skip).
            return None, {}
        # SecAgg+ calls this only after unmasking the sum over the clients that sent masked
        # vectors (too many dropouts halt it before), so every FitRes holds the survivors'
        # mean and the decoded step is their size-weighted average: the failures are
        # dropouts the protocol recovered from.
        record.dropped = sorted(set(record.sampled) - set(record.contributors))
        if server_round not in self._round_weights:
            raise RuntimeError(f"aggregate_fit for round {server_round} before configure_fit")
        current = self._round_weights[server_round]
        # Replies arrive in any order; a fixed order makes the float sums bit-reproducible.
        results = sorted(results, key=lambda r: self.partition_of_node(int(r[0].cid)) or 0)
        vectors = [wire.parameters_to_weights(fitres.parameters) for _, fitres in results]
        for (proxy, _), vector in zip(results, vectors, strict=True):
            self._check_layout(server_round, proxy, vector, current)
        record.distinct_updates = len({_digest(v) for v in vectors})
        if self.audit_dir is not None:
            self._audit(server_round, results, vectors)
        mean = mean_of_vectors(vectors)
        record.mean_size_weight = mean_size_weight(mean)
        if self._carries_no_weight(record.mean_size_weight, len(vectors)):
            record.step_skipped = "every contributing client sent zero weight (|U_k| = 0)"
            new_weights = [np.array(w, copy=True) for w in current]
        else:
            delta = decode_weighted_mean(mean)
            new_weights = [
                (np.asarray(w) + d).astype(np.asarray(w).dtype, copy=False)
                for w, d in zip(current, delta, strict=True)
            ]
        record.client_metrics = _mean_metrics([fitres.metrics for _, fitres in results])
        if self.relay is not None:
            for proxy, fitres in results:
                outbox = fitres.metrics.get(OUTBOX_KEY)
                sender = self.partition_of_node(int(proxy.cid))
                if isinstance(outbox, bytes) and sender is not None:
                    self.relay.absorb(sender, outbox)
        record.applied = True
        return ndarrays_to_parameters(new_weights), {}

    def configure_evaluate(
        self, server_round: int, parameters: Parameters, client_manager: ClientManager
    ) -> list[tuple[ClientProxy, EvaluateIns]]:
        return []  # validation is central (the task's evaluate), never on clients

    def aggregate_evaluate(
        self,
        server_round: int,
        results: list[tuple[ClientProxy, EvaluateRes]],
        failures: list[tuple[ClientProxy, EvaluateRes] | BaseException],
    ) -> tuple[float | None, dict[str, Scalar]]:
        return None, {}

    def evaluate(
        self, server_round: int, parameters: Parameters
    ) -> tuple[float, dict[str, Scalar]] | None:
        return None  # the server loop calls the task's evaluate itself, on its own schedule

    # --- helpers -----------------------------------------------------------------------------

    def _carries_no_weight(self, mean_weight: float, n_vectors: int) -> bool:
        if self.size_bound is None:
            return not mean_weight > 0
        # mean * S * n is sum_k |U_k|, a whole number of users; SecAgg+ quantises the mean
        # (step about 4e-6), so "zero" is "rounds to no user", never "exactly 0.0".
        return mean_weight * self.size_bound * n_vectors < 0.5

    def _describe_failure(self, failure: tuple[ClientProxy, FitRes] | BaseException) -> str:
        if isinstance(failure, BaseException):
            return str(failure)
        proxy, fitres = failure
        partition = self.partition_of_node(int(proxy.cid))
        return f"client {partition}: status {fitres.status.code.name}: {fitres.status.message}"

    def _check_layout(
        self, server_round: int, proxy: ClientProxy, vector: Weights, current: Weights
    ) -> None:
        expected = [np.shape(w) for w in current] + [(1,)]
        got = [np.shape(v) for v in vector]
        if got != expected:
            partition = self.partition_of_node(int(proxy.cid))
            raise ValueError(
                f"round {server_round}: update from client {partition} has array shapes "
                f"{got}, expected {expected} (weights plus the size weight)"
            )

    def _audit(
        self, server_round: int, results: list[tuple[ClientProxy, FitRes]], vectors: list[Weights]
    ) -> None:
        assert self.audit_dir is not None
        self.audit_dir.mkdir(parents=True, exist_ok=True)
        arrays = {
            f"array_{i:04d}": np.stack([np.asarray(v[i]) for v in vectors])
            for i in range(len(vectors[0]))
        }
        arrays["num_examples"] = np.array([fitres.num_examples for _, fitres in results])
        arrays["metric_keys"] = np.array(
            sorted({k for _, fitres in results for k in fitres.metrics}), dtype=str
        )
        np.savez(self.audit_dir / f"round_{server_round:05d}.npz", **arrays)


def _digest(vector: Weights) -> str:
    h = hashlib.sha256()
    for array in vector:
        h.update(np.ascontiguousarray(array).data)  # the same bytes, without a copy
    return h.hexdigest()


def _mean_metrics(metrics: list[dict[str, Scalar]]) -> dict[str, float] | None:
    numeric = [
        {
            k: float(v)
            for k, v in m.items()
            if isinstance(v, int | float) and not isinstance(v, bool)
        }
        for m in metrics
    ]
    if not numeric or not any(numeric):
        return None
    shared = set.intersection(*(set(m) for m in numeric))
    return {k: float(np.mean([m[k] for m in numeric])) for k in sorted(shared)} or None
