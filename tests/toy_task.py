"""A tiny numpy FederatedTask for the federation tests: linear regression per client.

Everything is a deterministic function of config.json, so the tests can recompute any
run in plain numpy (:func:`reference_run`) and compare with what Flower's engine did.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from fedscope.federation.run_dir import config_path, write_task_spec
from fedscope.federation.task import (
    ClientUpdate,
    FederationSettings,
    Weights,
    check_finite_update,
)

if TYPE_CHECKING:
    from flwr.app import Context

FACTORY = "tests.toy_task:build"
DIM = 4

DEFAULTS: dict[str, Any] = {
    "n_clients": 6,
    "fraction": 0.5,
    "rounds": 3,
    "seed": 11,
    "eval_every": 1,
    "size_bound": 50,
    "secagg": False,
    "lr": 0.2,
    "local_steps": 2,
    "fail_clients": [],  # these clients raise in fail_round (tests of failed rounds)
    "fail_round": 0,
    # {"round": [clients]} (JSON keys are strings): these clients raise in that round. Under
    # SecAgg+ the train handler runs in the collect-masked-vectors stage, after the client
    # shared its keys, so this is a dropout SecAgg+ must reconstruct around.
    "fail_schedule": {},
    # These clients report |U_k| = 0 in every round (as a client whose privacy budget is
    # spent will); their delta is still the real one, so only the weight keeps it out.
    "zero_weight_clients": [],
    "privatiser_scale": 0.0,  # > 0: the task exposes a privatiser hook (see ToyTask)
    # From this round on the clients' learning rate is 1e300: their gradient steps overflow
    # to inf and NaN, a real divergence, checked as the recommender task checks it.
    "diverge_from_round": 0,
    "on_divergence": "fail",
}


def make_run_dir(run_dir: Path, **overrides: Any) -> Path:
    unknown = set(overrides) - set(DEFAULTS)
    if unknown:
        raise KeyError(f"unknown toy config keys {sorted(unknown)}")
    run_dir.mkdir(parents=True, exist_ok=True)
    config_path(run_dir).write_text(json.dumps({**DEFAULTS, **overrides}, indent=1))
    write_task_spec(run_dir, FACTORY)
    return run_dir


@dataclass
class ClientData:
    x: np.ndarray
    y: np.ndarray


class ToyPrivatiser:
    """Deterministic stand-in for DP: scales client k's update by 1 - scale * (k % 2) and
    counts its calls in the client's Context.state."""

    def __init__(self, scale: float) -> None:
        self.scale = scale

    def factor(self, client_id: int) -> float:
        return 1.0 - self.scale * (client_id % 2)

    def __call__(
        self, update: Weights, client_id: int, server_round: int, ctx: Context | None
    ) -> Weights:
        if ctx is not None:
            from flwr.app import ConfigRecord  # lazily: keeps Flower out of plain imports

            record = ctx.state.config_records.setdefault("toy.privatiser", ConfigRecord({}))
            record["calls"] = int(record.get("calls", 0)) + 1
        return [u * self.factor(client_id) for u in update]


class ToyTask:
    def __init__(self, config: dict[str, Any]) -> None:
        self.config = config
        rng = np.random.default_rng(config["seed"])
        self.w_true = rng.normal(size=DIM)
        self.b_true = float(rng.normal())
        sizes = rng.integers(3, config["size_bound"] + 1, size=config["n_clients"])
        self.clients = [self._sample(rng, int(n)) for n in sizes]
        self.valid = self._sample(rng, 200)
        scale = float(config["privatiser_scale"])
        self.privatiser = ToyPrivatiser(scale) if scale > 0 else None

    def _sample(self, rng: np.random.Generator, n: int) -> ClientData:
        x = rng.normal(size=(n, DIM))
        y = x @ self.w_true + self.b_true + 0.05 * rng.normal(size=n)
        return ClientData(x, y)

    def settings(self) -> FederationSettings:
        c = self.config
        return FederationSettings(
            n_clients=c["n_clients"],
            fraction=c["fraction"],
            rounds=c["rounds"],
            seed=c["seed"],
            eval_every=c["eval_every"],
            selection_metric="MRR",
            size_bound=c["size_bound"],
            secagg=c["secagg"],
            on_divergence=c["on_divergence"],
        )

    def initial_weights(self) -> Weights:
        return [np.zeros(DIM), np.zeros(1)]

    def client_update(self, client_id: int, weights: Weights, server_round: int) -> ClientUpdate:
        if client_id in self.config["fail_clients"] and server_round == self.config["fail_round"]:
            raise RuntimeError(f"injected failure of toy client {client_id}")
        if client_id in self.scheduled_failures(server_round):
            raise RuntimeError(f"injected dropout of toy client {client_id}")
        data = self.clients[client_id]
        w, b = weights[0].copy(), weights[1].copy()
        loss0 = _mse(data, w, b)
        diverging = 0 < self.config["diverge_from_round"] <= server_round
        lr = 1e300 if diverging else self.config["lr"]
        with np.errstate(over="ignore", invalid="ignore"):
            for _ in range(self.config["local_steps"]):
                residual = data.x @ w + b[0] - data.y
                w -= lr * data.x.T @ residual / len(data.y)
                b -= lr * np.array([residual.mean()])
        delta = [w - weights[0], b - weights[1]]
        check_finite_update(delta, f"toy client {client_id}, round {server_round}")
        weightless = client_id in self.config["zero_weight_clients"]
        return ClientUpdate(
            delta=delta,
            n_users=0 if weightless else len(data.y),
            metrics={"loss": loss0},
        )

    def scheduled_failures(self, server_round: int) -> list[int]:
        return [int(k) for k in self.config["fail_schedule"].get(str(server_round), [])]

    def evaluate(self, weights: Weights, server_round: int) -> dict[str, float]:
        mse = _mse(self.valid, weights[0], weights[1])
        # A stand-in ranking metric: higher is better, like MRR.
        return {"MRR": 1.0 / (1.0 + mse), "loss": mse}


def _mse(data: ClientData, w: np.ndarray, b: np.ndarray) -> float:
    return float(np.mean((data.x @ w + b[0] - data.y) ** 2))


def build(run_dir: Path) -> ToyTask:
    return ToyTask(json.loads(config_path(run_dir).read_text()))


@dataclass
class Reference:
    weights: Weights
    sampled: dict[int, list[int]]
    validation: dict[int, dict[str, float]]


def reference_run(
    config_overrides: dict[str, Any], rounds: int, skip_rounds: tuple[int, ...] = ()
) -> Reference:
    """The paper's update computed directly: w += sum |U_k| Delta_k / sum |U_k|.

    Rounds in ``skip_rounds`` sample clients but leave the weights unchanged (a failed
    round under ``on-failed-round = "skip"``). Clients in ``fail_schedule`` for a round
    are left out of its sums (SecAgg+ dropouts), and a round whose sum of |U_k| is zero
    leaves the weights unchanged.
    """
    task = ToyTask({**DEFAULTS, **config_overrides})
    c = task.config
    k_all, fraction = c["n_clients"], c["fraction"]
    m = 1 if k_all == 1 else max(2, round(fraction * k_all))
    weights = task.initial_weights()
    sampled: dict[int, list[int]] = {}
    validation: dict[int, dict[str, float]] = {}
    for rnd in range(1, rounds + 1):
        chosen = sorted(
            int(k) for k in np.random.default_rng([c["seed"], rnd]).choice(k_all, m, replace=False)
        )
        sampled[rnd] = chosen
        if rnd in skip_rounds:
            validation[rnd] = task.evaluate(weights, rnd)
            continue
        total = 0
        step = [np.zeros_like(w) for w in weights]
        for k in chosen:
            if k in task.scheduled_failures(rnd):
                continue
            update = task.client_update(k, weights, rnd)
            delta = update.delta
            if task.privatiser is not None:
                delta = task.privatiser(delta, k, rnd, None)
            total += update.n_users
            step = [s + update.n_users * d for s, d in zip(step, delta, strict=True)]
        if total > 0:
            weights = [w + s / total for w, s in zip(weights, step, strict=True)]
        validation[rnd] = task.evaluate(weights, rnd)
    return Reference(weights, sampled, validation)
