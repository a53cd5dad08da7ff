"""The recommendation task behind the Flower apps (:class:`FederatedTask`).

Every process — the ServerApp and each client worker — builds one from the run
directory: the configuration, the data set (from the content-keyed cache), the
client partition and the method. Clients only ever read their own users' data.
"""

from __future__ import annotations

import math
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from fedscope.config import EvalConfig, ExperimentConfig
from fedscope.data import load_dataset
from fedscope.data.dataset import CrossDomainDataset
from fedscope.data.partition import PARTITION_FILE, Partitioning, load_partitioning
from fedscope.evaluation import Evaluator, NonFiniteScoreError
from fedscope.federation.client_mods import Privatiser
from fedscope.federation.exchange import pack_outbox, unpack_inbox
from fedscope.federation.run_dir import CONFIG_FILE
from fedscope.federation.task import (
    DIVERGED,
    ClientUpdate,
    DivergenceError,
    FederationSettings,
    Weights,
    check_finite_update,
)
from fedscope.methods import DataShape, Method, StepContext, method_class
from fedscope.privacy.alignment import ClientAlignment, load_client_alignment
from fedscope.privacy.client import DpPrivatiser
from fedscope.privacy.plan import load_plan
from fedscope.semantics.store import SemanticFeatures, SemanticStore


def derived_seed(*parts: int) -> int:
    """A 31-bit seed that depends on every part (experiment seed, round, client, ...)."""
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(1)[0] & 0x7FFFFFFF)


def _copy_into(params: list[torch.nn.Parameter], weights: Weights) -> None:
    if len(params) != len(weights):
        raise ValueError(f"model has {len(params)} parameter tensors, got {len(weights)} arrays")
    with torch.no_grad(), warnings.catch_warnings():
        # Weights decoded from a message are read-only views of its bytes; torch warns
        # about any read-only array, but copy_ only reads the source.
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        for p, w in zip(params, weights, strict=True):
            if tuple(p.shape) != tuple(w.shape):
                raise ValueError(f"parameter shape {tuple(p.shape)} does not match array {w.shape}")
            p.copy_(torch.from_numpy(np.asarray(w, dtype=np.float32)))


def validation_evaluator(dataset: CrossDomainDataset, eval_config: EvalConfig) -> Evaluator:
    """The evaluator every round's validation uses: the sampled protocol on the fixed
    ``eval.valid_subset`` of validation instances, with the configured candidates."""
    return Evaluator(
        dataset,
        "valid",
        "sampled",
        n_negatives=eval_config.n_negatives,
        seed=eval_config.candidate_seed,
        max_instances=eval_config.valid_subset,
    )


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


def check_semantics(config: ExperimentConfig, dataset: CrossDomainDataset) -> bool:
    """Whether the config asks for semantic features; a store that cannot give them for
    ``dataset`` is refused (a StoreError naming the store and the problem)."""
    sem = config.semantics
    if sem.store is None or not (sem.items or sem.users):
        return False
    SemanticStore.check(sem.store, dataset, items=sem.items, users=sem.users)
    return True


def load_semantics(
    config: ExperimentConfig, dataset: CrossDomainDataset
) -> SemanticFeatures | None:
    """f_A for the sides the config asks for, from the store `fedscope augment` wrote.

    The simulation loads every client's user file at once (each client's rows are only ever
    used for its own users' batches); in a deployment a client loads its own file only.
    """
    sem = config.semantics
    if not check_semantics(config, dataset):
        return None
    features = SemanticStore.load(sem.store, dataset=dataset)
    return SemanticFeatures(
        features.item_features if sem.items else None,
        features.item_mask if sem.items else None,
        features.user_features if sem.users else None,
        features.user_mask if sem.users else None,
        features.dim,
        features.manifest,
    )


def schedule_length(config: ExperimentConfig) -> int:
    """Rounds of a federated run; passes of E local epochs for local-only and centralised runs.

    A party training alone gets the epochs a federated client does in expectation,
    ``T * C * E``, as ``ceil(T * C)`` passes of E epochs.
    """
    f = config.federation
    if f.regime == "federated":
        return f.rounds
    return max(1, math.ceil(f.rounds * f.fraction))


class RecommendationTask:
    def __init__(
        self,
        config: ExperimentConfig,
        dataset: CrossDomainDataset,
        partitioning: Partitioning,
        privatiser: Privatiser | None = None,
        alignment_root: Path | None = None,
    ):
        self.config = config
        # The client mods' DP hook (fedscope.federation.client_mods.Privatiser); None: no DP.
        self.privatiser = privatiser
        self.dataset = dataset
        self.partitioning = partitioning
        self.semantics = load_semantics(config, dataset)
        item_dim = user_dim = 0
        if self.semantics is not None:
            item_dim = self.semantics.dim if self.semantics.item_features is not None else 0
            user_dim = self.semantics.dim if self.semantics.user_features is not None else 0
        shape = DataShape.of(dataset, item_dim, user_dim)
        self.method: Method = method_class(config.method)(config, shape)
        self.model = self.build_model()
        if self.semantics is not None and hasattr(self.model, "set_semantics"):
            s = self.semantics
            self.model.set_semantics(
                None if s.item_features is None else torch.from_numpy(s.item_features),
                None if s.user_features is None else torch.from_numpy(s.user_features),
            )
        self._clients: dict[int, object] = {}
        self._evaluator: Evaluator | None = None
        # where alignment/client-<k>.json lives (the run directory, or a node's bundle)
        self.alignment_root = alignment_root
        self._alignments: dict[int, ClientAlignment] = {}

    @staticmethod
    def from_run_dir(run_dir: Path) -> RecommendationTask:
        run_dir = Path(run_dir)
        config = ExperimentConfig.model_validate_json((run_dir / CONFIG_FILE).read_text())
        dataset = load_dataset(config.data.name, config.data.data_dir, **config.data.options)
        privatiser = None
        if config.privacy.enabled:
            privatiser = DpPrivatiser(load_plan(run_dir), run_dir, config.seed)
        return RecommendationTask(
            config,
            dataset,
            load_partitioning(run_dir / PARTITION_FILE),
            privatiser,
            alignment_root=run_dir,
        )

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
            secagg=self.config.federation.secure_aggregation,
            secagg_clipping_range=self._secagg_range(),
            exchange=self.config.federation.exchange_representations,
            on_divergence=self.config.federation.on_divergence,
        )

    def _secagg_range(self) -> float:
        f = self.config.federation
        if f.secagg_clipping_range is not None:
            return f.secagg_clipping_range
        if isinstance(self.privatiser, DpPrivatiser):
            return max(8.0, self.privatiser.plan.secagg_clipping_range())
        return 8.0

    def initial_weights(self) -> Weights:
        return self.shared_weights(self.build_model())

    # --- which parameters are federated --------------------------------------------------
    def build_model(self) -> torch.nn.Module:
        """The method's model from the run seed, with unshared parameters frozen.

        Unshared parameters keep their seeded initial values on every party, so the server,
        every client and a later `evaluate` all hold the same ones without sending them.
        """
        model = self.method.build_model(self.config.seed)
        unshared = set(self._unshared_names(model))
        for name, param in model.named_parameters():
            if name in unshared:
                param.requires_grad_(False)
        return model

    def _unshared_names(self, model: torch.nn.Module) -> tuple[str, ...]:
        if self.config.federation.shared_parameters == "all":
            return ()
        names = self.method.item_table_names
        known = {n for n, _ in model.named_parameters()}
        missing = [n for n in names if n not in known]
        if missing:
            raise ValueError(
                f"method {self.method.name!r} has no parameter {missing[0]!r}: it cannot run with "
                "federation.shared_parameters=no-item-table"
            )
        return names

    def _shared_params(self, model: torch.nn.Module) -> list[torch.nn.Parameter]:
        unshared = set(self._unshared_names(model))
        return [p for n, p in model.named_parameters() if n not in unshared]

    def shared_weights(self, model: torch.nn.Module | None = None) -> Weights:
        """The federated parameters of ``model`` (default: this task's model) as arrays."""
        params = self._shared_params(self.model if model is None else model)
        return [p.detach().cpu().numpy().copy() for p in params]

    def load_shared_weights(self, weights: Weights) -> None:
        """Set this task's model from federated weights (unshared ones stay as built)."""
        _copy_into(self._shared_params(self.model), weights)

    def client_data(self, client_id: int) -> object:
        if client_id not in self._clients:
            part = self.partitioning.clients[client_id]
            self._clients[client_id] = self.method.prepare_client(
                self.dataset, part.users, part.domains
            )
        return self._clients[client_id]

    def client_alignment(self, client_id: int) -> ClientAlignment:
        """Client ``client_id``'s PSI partners and shared users (read once)."""
        if client_id not in self._alignments:
            if self.alignment_root is None:
                raise ValueError(
                    "federation.exchange_representations needs the task built from a run "
                    "directory or node bundle holding the PSI alignment"
                )
            n_users = int(self.partitioning.clients[client_id].users.shape[0])
            self._alignments[client_id] = load_client_alignment(
                self.alignment_root, client_id, n_users
            )
        return self._alignments[client_id]

    def client_update(
        self, client_id: int, weights: Weights, server_round: int, inbox: bytes | None = None
    ) -> ClientUpdate:
        exchange = self.config.federation.exchange_representations
        if inbox is not None and not exchange:
            raise ValueError(
                f"client {client_id}: received partners' representations, but this run has "
                "federation.exchange_representations off"
            )
        update_started = time.perf_counter()
        partners = None
        part_users = self.partitioning.clients[client_id].users
        if exchange:
            partners = unpack_inbox(
                inbox,
                self.client_alignment(client_id),
                part_users,
                self.dataset.n_domains,
                client_id,
            )
        self.load_shared_weights(weights)
        ctx = StepContext(
            seed=derived_seed(self.config.seed, server_round, client_id),
            server_round=server_round,
            client_id=client_id,
            epochs=self.config.train.local_epochs,
            progress=(server_round - 1) / max(schedule_length(self.config) - 1, 1),
            partners=partners,
        )
        data = self.client_data(client_id)  # built once per process and client
        started = time.perf_counter()
        stats = self.method.client_step(self.model, data, ctx)
        # model computation only: what the speed benchmark compares the round time against
        stats["compute_s"] = time.perf_counter() - started
        delta = [new - old for new, old in zip(self.shared_weights(), weights, strict=True)]
        check_finite_update(delta, f"client {client_id}, round {server_round}")
        n_users = int(part_users.shape[0])
        outbox = self._outbox(client_id, data, server_round) if exchange else None
        # compute plus loading the weights, the delta and its check (and data, the first time)
        stats["update_s"] = time.perf_counter() - update_started
        return ClientUpdate(delta=delta, n_users=n_users, metrics=stats, outbox=outbox)

    def _outbox(self, client_id: int, data: object, server_round: int) -> bytes | None:
        alignment = self.client_alignment(client_id)
        if not alignment:
            return None
        users, reps, present = self.method.shared_representations(self.model, data)
        part_users = self.partitioning.clients[client_id].users
        # by partition row; users without a training sequence stay absent
        by_row = np.zeros((reps.shape[0], part_users.shape[0], reps.shape[2]), dtype=np.float32)
        present_by_row = np.zeros((reps.shape[0], part_users.shape[0]), dtype=bool)
        row_of = {int(u): r for r, u in enumerate(part_users)}
        rows = np.array([row_of[int(u)] for u in users], dtype=np.int64)
        by_row[:, rows] = reps
        present_by_row[:, rows] = present
        rng = np.random.default_rng([self.config.seed, server_round, client_id, 0xE8C4])
        return pack_outbox(
            alignment, by_row, present_by_row, self.config.federation.exchange_noise, rng
        )

    def validation_evaluator(self) -> Evaluator:
        if self._evaluator is None:
            self._evaluator = validation_evaluator(self.dataset, self.config.eval)
        return self._evaluator

    def evaluate(self, weights: Weights, server_round: int) -> dict[str, float]:
        self.load_shared_weights(weights)
        try:
            result = self.validation_evaluator().evaluate(self.method.scorer(self.model))
        except NonFiniteScoreError as exc:
            raise DivergenceError(
                f"global model after round {server_round}: {DIVERGED}: {exc}"
            ) from exc
        return validation_metrics(result.metrics)


def task_factory(run_dir: Path) -> RecommendationTask:
    """Entry point named in the run directory's task.json."""
    return RecommendationTask.from_run_dir(run_dir)
