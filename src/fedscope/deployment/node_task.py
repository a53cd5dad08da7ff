"""The client side of a deployed run: the task a SuperNode builds from its own bundle.

:class:`NodeTask` is a :class:`~fedscope.training.task.RecommendationTask` over the node's
restricted data set (see :mod:`fedscope.deployment.bundle`), so local training runs the
very same method code as in the simulation. Because the users are re-indexed and other
clients are absent, it holds K partitions of which only its own has users; the client ids,
and with them the derived training seeds and the DP noise streams, are the run's own, so
a node's update equals the one the same client computes from the whole data set.

A node never evaluates the global model (validation is central, on the server) and refuses
to train any partition but its own.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import numpy as np

from fedscope.config import ExperimentConfig
from fedscope.data import cache as data_cache
from fedscope.data.errors import DataError, Problem
from fedscope.data.partition import ClientPartition, Partitioning, load_partitioning
from fedscope.deployment.bundle import (
    DATASET_DIR,
    NODE_FILE,
    SEMANTICS_DIR,
    NodeInfo,
    read_node_info,
)
from fedscope.federation.run_dir import CONFIG_FILE
from fedscope.federation.task import ClientUpdate, FederationSettings, Weights
from fedscope.privacy.client import DpPrivatiser
from fedscope.privacy.plan import ClientPlan, PrivacyPlan, load_plan
from fedscope.training.task import PARTITION_FILE, RecommendationTask


class NodeTask(RecommendationTask):
    """Client ``info.partition_id``'s task, built from its bundle directory only."""

    def __init__(self, bundle: Path):
        bundle = Path(bundle).resolve()
        info = read_node_info(bundle)
        config = ExperimentConfig.model_validate_json((bundle / CONFIG_FILE).read_text())
        if info.semantics:
            sem = config.semantics.model_copy(update={"store": str(bundle / SEMANTICS_DIR)})
            config = config.model_copy(update={"semantics": sem})
        dataset = data_cache.load(bundle / DATASET_DIR)
        own = _own_partition(bundle, info, dataset.n_users)
        # K entries, so client ids index as in the run; the others are empty placeholders.
        clients = tuple(
            own
            if k == info.partition_id
            else ClientPartition(k, np.zeros(0, dtype=np.int64), own.domains)
            for k in range(info.n_clients)
        )
        partitioning = Partitioning("node-bundle", config.partition.seed, clients)
        privatiser = None
        if info.privacy:
            # The ledger is the node's own file, in its bundle.
            privatiser = DpPrivatiser(_padded_plan(bundle, info), bundle, config.seed)
        super().__init__(config, dataset, partitioning, privatiser, alignment_root=bundle)
        self.bundle = bundle
        self.info = info

    @property
    def partition_id(self) -> int:
        return self.info.partition_id

    def settings(self) -> FederationSettings:
        # S and the SecAgg+ range are run-wide; this node alone cannot compute them.
        return dataclasses.replace(
            super().settings(),
            n_clients=self.info.n_clients,
            size_bound=self.info.size_bound,
            secagg_clipping_range=self.info.secagg_clipping_range,
        )

    def client_update(
        self, client_id: int, weights: Weights, server_round: int, inbox: bytes | None = None
    ) -> ClientUpdate:
        if client_id != self.partition_id:
            raise ValueError(
                f"{self.bundle}: this node holds partition {self.partition_id}, "
                f"not {client_id}; check the SuperNode's --node-config partition-id"
            )
        return super().client_update(client_id, weights, server_round, inbox)

    def evaluate(self, weights: Weights, server_round: int) -> dict[str, float]:
        raise RuntimeError("a node does not evaluate the global model; validation is central")


def _own_partition(bundle: Path, info: NodeInfo, n_users: int) -> ClientPartition:
    path = bundle / PARTITION_FILE
    parts = load_partitioning(path).clients
    if len(parts) != 1 or parts[0].client_id != info.partition_id:
        found = [p.client_id for p in parts]
        raise DataError(
            [Problem(path, None, f"expected partition {info.partition_id} alone, found {found}")]
        )
    if parts[0].users.shape[0] != info.n_users or parts[0].users.shape[0] != n_users:
        raise DataError(
            [
                Problem(
                    path,
                    None,
                    f"partition has {parts[0].users.shape[0]} users, {bundle / NODE_FILE} says "
                    f"{info.n_users} and the bundle's data set holds {n_users}",
                )
            ]
        )
    return parts[0]


def _padded_plan(bundle: Path, info: NodeInfo) -> PrivacyPlan:
    plan = load_plan(bundle)
    if len(plan.clients) != 1 or plan.clients[0].client_id != info.partition_id:
        raise DataError(
            [
                Problem(
                    bundle / "privacy_plan.json",
                    None,
                    f"expected the plan of client {info.partition_id} alone",
                )
            ]
        )
    mine = plan.clients[0]
    # Placeholders: no users, no budget, never consulted (a node privatises only itself).
    empty = [
        ClientPlan(k, 0, 0.0, 0.0, 0, 0, ()) if k != info.partition_id else mine
        for k in range(info.n_clients)
    ]
    return dataclasses.replace(plan, clients=tuple(empty))


def load_node_task(bundle: Path) -> NodeTask:
    """The bundle's task, cached per process (keyed by the bundle files' modification times)."""
    path = Path(bundle).resolve()
    stamps = tuple(
        os.stat(path / f).st_mtime_ns if (path / f).exists() else 0
        for f in (NODE_FILE, CONFIG_FILE, PARTITION_FILE)
    )
    key = (str(path), stamps)
    if key not in _NODE_TASKS:
        _NODE_TASKS[key] = NodeTask(path)
    return _NODE_TASKS[key]


_NODE_TASKS: dict[tuple[str, tuple[int, ...]], NodeTask] = {}
