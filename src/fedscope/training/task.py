"""The recommendation task behind the Flower apps (:class:`FederatedTask`).

Every process — the ServerApp and each client worker — builds one from the run
directory: the configuration, the data set (from the content-keyed cache), the
client partition and the method. Clients only ever read their own users' data.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch

from fedscope.config import ExperimentConfig
from fedscope.data import load_dataset
from fedscope.data.dataset import CrossDomainDataset
from fedscope.data.partition import Partitioning, load_partitioning
from fedscope.evaluation import Evaluator
from fedscope.federation.run_dir import CONFIG_FILE
from fedscope.federation.task import ClientUpdate, FederationSettings, Weights
from fedscope.methods import DataShape, Method, StepContext, method_class

PARTITION_FILE = "partition.json"


def derived_seed(*parts: int) -> int:
    """A 31-bit seed that depends on every part (experiment seed, round, client, ...)."""
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(1)[0] & 0x7FFFFFFF)


def get_weights(model: torch.nn.Module) -> Weights:
    return [p.detach().cpu().numpy().copy() for p in model.parameters()]


def set_weights(model: torch.nn.Module, weights: Weights) -> None:
    params = list(model.parameters())
    if len(params) != len(weights):
        raise ValueError(f"model has {len(params)} parameter tensors, got {len(weights)} arrays")
    with torch.no_grad():
        for p, w in zip(params, weights, strict=True):
            if tuple(p.shape) != tuple(w.shape):
                raise ValueError(f"parameter shape {tuple(p.shape)} does not match array {w.shape}")
            p.copy_(torch.from_numpy(np.asarray(w, dtype=np.float32)))


def validation_metrics(result_metrics: dict[str, dict[str, float]]) -> dict[str, float]:
    """Flatten an EvalResult's metrics: "MRR" etc. for overall, "<domain>/MRR" per domain."""
    out: dict[str, float] = {}
    for group, values in result_metrics.items():
        if "|" in group:
            continue
        for metric in ("HR@5", "HR@10", "NDCG@5", "NDCG@10", "MRR"):
            key = metric if group == "overall" else f"{group}/{metric}"
            out[key] = values[metric]
    return out


class RecommendationTask:
    def __init__(
        self,
        config: ExperimentConfig,
        dataset: CrossDomainDataset,
        partitioning: Partitioning,
    ):
        self.config = config
        self.dataset = dataset
        self.partitioning = partitioning
        self.method: Method = method_class(config.method)(config, DataShape.of(dataset))
        self.model = self.method.build_model(config.seed)
        self._clients: dict[int, object] = {}
        self._evaluator: Evaluator | None = None

    @staticmethod
    def from_run_dir(run_dir: Path) -> RecommendationTask:
        run_dir = Path(run_dir)
        config = ExperimentConfig.model_validate_json((run_dir / CONFIG_FILE).read_text())
        dataset = load_dataset(config.data.name, config.data.data_dir, **config.data.options)
        return RecommendationTask(config, dataset, load_partitioning(run_dir / PARTITION_FILE))

    # --- FederatedTask ---------------------------------------------------------------------
    def settings(self) -> FederationSettings:
        sizes = self.partitioning.sizes()
        return FederationSettings(
            n_clients=self.partitioning.n_clients,
            fraction=self.config.federation.fraction,
            rounds=self.config.federation.rounds,
            seed=self.config.seed,
            eval_every=self.config.eval.every,
            selection_metric=self.config.eval.selection_metric,
            size_bound=int(sizes.max()),
        )

    def initial_weights(self) -> Weights:
        return get_weights(self.method.build_model(self.config.seed))

    def client_data(self, client_id: int) -> object:
        if client_id not in self._clients:
            part = self.partitioning.clients[client_id]
            self._clients[client_id] = self.method.prepare_client(
                self.dataset, part.users, part.domains
            )
        return self._clients[client_id]

    def client_update(self, client_id: int, weights: Weights, server_round: int) -> ClientUpdate:
        set_weights(self.model, weights)
        ctx = StepContext(
            seed=derived_seed(self.config.seed, server_round, client_id),
            server_round=server_round,
            client_id=client_id,
            epochs=self.config.train.local_epochs,
        )
        data = self.client_data(client_id)  # built once per process and client
        started = time.perf_counter()
        stats = self.method.client_step(self.model, data, ctx)
        # model computation only: what the speed benchmark compares the round time against
        stats["compute_s"] = time.perf_counter() - started
        delta = [new - old for new, old in zip(get_weights(self.model), weights, strict=True)]
        n_users = int(self.partitioning.clients[client_id].users.shape[0])
        return ClientUpdate(delta=delta, n_users=n_users, metrics=stats)

    def validation_evaluator(self) -> Evaluator:
        if self._evaluator is None:
            ev = self.config.eval
            self._evaluator = Evaluator(
                self.dataset,
                "valid",
                "sampled",
                n_negatives=ev.n_negatives,
                seed=ev.candidate_seed,
                max_instances=ev.valid_subset,
            )
        return self._evaluator

    def evaluate(self, weights: Weights, server_round: int) -> dict[str, float]:
        set_weights(self.model, weights)
        result = self.validation_evaluator().evaluate(self.method.scorer(self.model))
        return validation_metrics(result.metrics)


def task_factory(run_dir: Path) -> RecommendationTask:
    """Entry point named in the run directory's task.json."""
    return RecommendationTask.from_run_dir(run_dir)
