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
from importlib import metadata
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

# Methods outside fedscope: an installed distribution declares
#   [project.entry-points."fedscope.methods"]
#   my-method = "my_package.my_module:MyMethod"
# and ``method = "my-method"`` then works everywhere a built-in method does. Entry points rather
# than an import path in the config: Flower's workers look the method up by name in their own
# processes, and an installed distribution is visible to every one of them.
PLUGIN_GROUP = "fedscope.methods"


class MethodPluginError(ValueError):
    """An installed method plugin that cannot be used (names the entry point and the problem)."""


def register(cls: type[Method]) -> type[Method]:
    _METHODS[cls.name] = cls
    return cls


def _plugin_entry_points() -> list[metadata.EntryPoint]:
    return sorted(metadata.entry_points(group=PLUGIN_GROUP), key=lambda ep: ep.name)


def _load_plugin(ep: metadata.EntryPoint) -> type[Method]:
    dist = f" of {ep.dist.name} {ep.dist.version}" if ep.dist is not None else ""
    where = f"method plugin {ep.name!r} ({ep.value}{dist}, entry point group {PLUGIN_GROUP!r})"
    try:
        cls = ep.load()
    except Exception as exc:
        raise MethodPluginError(f"{where}: cannot be loaded: {type(exc).__name__}: {exc}") from exc
    if not (isinstance(cls, type) and issubclass(cls, Method)):
        raise MethodPluginError(f"{where}: {cls!r} is not a subclass of fedscope.methods.Method")
    if getattr(cls, "name", None) != ep.name:
        raise MethodPluginError(
            f"{where}: the class is named {getattr(cls, 'name', None)!r}; its entry point must "
            "carry the same name, which is what configs and stored runs refer to"
        )
    taken = _METHODS.get(ep.name)
    if taken is not None and taken is not cls:
        raise MethodPluginError(
            f"{where}: the name is already taken by {taken.__module__}.{taken.__qualname__}"
        )
    _METHODS[ep.name] = cls
    return cls


def method_class(name: str) -> type[Method]:
    from fedscope import methods  # noqa: F401  (importing the package registers every method)

    if name in _METHODS:
        return _METHODS[name]
    plugins = _plugin_entry_points()
    for ep in plugins:
        if ep.name == name:
            return _load_plugin(ep)
    known = sorted({*_METHODS, *(ep.name for ep in plugins)})
    raise KeyError(f"unknown method {name!r}; known methods: {', '.join(known)}")


def available_methods() -> dict[str, str]:
    """Every method by name, built-in and installed plugins, with its description."""
    from fedscope import methods  # noqa: F401

    for ep in _plugin_entry_points():
        _load_plugin(ep)
    return {n: c.description for n, c in sorted(_METHODS.items())}
