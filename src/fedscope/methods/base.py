"""What a recommendation method is: a model, its losses, and its client step.

The training loop, the federation and the evaluation harness are shared; a
method only says how to build its model, how one client trains it for a
number of local epochs, and how the model scores items. New methods (FeCoSR,
SF-UBM, a GNN recommender, ...) are added as new subclasses registered with
:func:`register`, never by forking a loop.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

import numpy as np
from torch import nn

from fedscope.config import ExperimentConfig
from fedscope.data.dataset import CrossDomainDataset
from fedscope.evaluation.evaluator import Scorer

if TYPE_CHECKING:
    from fedscope.federation.exchange import PartnerRepresentations


@dataclass(frozen=True)
class DataShape:
    """What a method may know about the data when it builds its model."""

    domain_names: tuple[str, ...]
    domain_offsets: tuple[int, ...]
    domain_sizes: tuple[int, ...]
    item_semantic_dim: int = 0  # width of f_A for items (0: no item semantics)
    user_semantic_dim: int = 0  # width of f_A for users (0: no user semantics)

    @staticmethod
    def of(
        dataset: CrossDomainDataset, item_semantic_dim: int = 0, user_semantic_dim: int = 0
    ) -> DataShape:
        return DataShape(
            tuple(d.name for d in dataset.domains),
            tuple(d.offset for d in dataset.domains),
            tuple(d.n_items for d in dataset.domains),
            item_semantic_dim,
            user_semantic_dim,
        )


@dataclass(frozen=True)
class StepContext:
    """Where a client step happens: for seeding and for logging."""

    seed: int  # derived from (experiment seed, round, client) by the caller
    server_round: int
    client_id: int
    epochs: int
    progress: float = 0.0  # where this step sits in the whole schedule: 0 first round, 1 last
    # PSI partners' representations of this client's shared users (None: no exchange, or
    # nothing received yet); see fedscope.federation.exchange
    partners: PartnerRepresentations | None = None


def scheduled_lr(config: ExperimentConfig, progress: float) -> float:
    """The learning rate at ``progress`` in [0, 1] of the schedule (TrainConfig.lr_schedule)."""
    t = config.train
    if t.lr_schedule == "constant":
        return t.lr
    floor = t.lr * t.lr_min_ratio
    return floor + (t.lr - floor) * 0.5 * (1.0 + math.cos(math.pi * min(max(progress, 0.0), 1.0)))


class Method(ABC):
    name: ClassVar[str]
    description: ClassVar[str]
    # Parameters of the model's item embedding table: kept frozen and unshared under
    # federation.shared_parameters="no-item-table".
    item_table_names: ClassVar[tuple[str, ...]] = ("items.weight",)

    def __init__(self, config: ExperimentConfig, shape: DataShape):
        self.config = config
        self.shape = shape

    @abstractmethod
    def build_model(self, seed: int) -> nn.Module:
        """A freshly initialised model, deterministic in ``seed``."""

    @abstractmethod
    def prepare_client(
        self, dataset: CrossDomainDataset, users: np.ndarray, domains: tuple[int, ...]
    ) -> object:
        """Everything a client step needs from the client's own data (built once per client)."""

    @abstractmethod
    def client_step(
        self, model: nn.Module, client_data: object, ctx: StepContext
    ) -> dict[str, float]:
        """Train ``model`` in place on one client's data for ``ctx.epochs`` local epochs;
        return mean training losses for logging."""

    @abstractmethod
    def scorer(self, model: nn.Module) -> Scorer:
        """Scores for the evaluator (eval mode, no gradients)."""

    def shared_representations(
        self, model: nn.Module, client_data: object
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(users [U], reps [D, U, dim], present [D, U])``: the client's users (global
        indices) with their per-domain representations, for
        ``federation.exchange_representations``. Methods without a cross-domain user
        representation do not support the exchange."""
        raise NotImplementedError(
            f"method {self.name!r} has no per-domain user representation to exchange "
            "(federation.exchange_representations)"
        )


_METHODS: dict[str, type[Method]] = {}


def register(cls: type[Method]) -> type[Method]:
    _METHODS[cls.name] = cls
    return cls


def method_class(name: str) -> type[Method]:
    from fedscope import methods  # noqa: F401  (importing the package registers every method)

    if name not in _METHODS:
        raise KeyError(f"unknown method {name!r}; known methods: {', '.join(sorted(_METHODS))}")
    return _METHODS[name]


def available_methods() -> dict[str, str]:
    from fedscope import methods  # noqa: F401

    return {n: c.description for n, c in sorted(_METHODS.items())}
