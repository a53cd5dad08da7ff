"""What the Flower apps need from a learning task, and nothing more.

The federation layer (server app, client app, strategy, mods) is written against
this protocol only, so it does not know about recommenders, and any method that
implements the protocol trains federatedly without touching Flower code.

A task is built from a *run directory* (see :mod:`fedscope.federation.run_dir`);
every process (the ServerApp, each simulated or deployed client) builds its own
instance from the same directory, so nothing but weights and updates crosses
process boundaries.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np

Weights = list[np.ndarray]


# Error replies cross Ray and gRPC as text, so the server recognises a diverged client by
# this phrase in the reply, not by the exception's type.
DIVERGED = "training diverged"


class DivergenceError(ValueError):
    """Training produced non-finite weights or scores. A task's ``client_update`` raises it
    for a non-finite local update (and DP clipping refuses to privatise one), its
    ``evaluate`` for a global model whose validation scores are non-finite; the server
    then stops or fails the run as ``FederationSettings.on_divergence`` says."""


def check_finite_update(delta: Weights, what: str) -> None:
    """Raise :class:`DivergenceError` naming ``what`` when any entry is NaN or infinite."""
    bad = [i for i, d in enumerate(delta) if not np.isfinite(d).all()]
    if bad:
        total = sum(int((~np.isfinite(delta[i])).sum()) for i in bad)
        raise DivergenceError(
            f"{what}: {DIVERGED}: the local update has {total} non-finite values in "
            f"{len(bad)} of {len(delta)} weight arrays (first: array {bad[0]})"
        )


def is_divergence_report(error: str) -> bool:
    return DIVERGED in error


@dataclass(frozen=True)
class ClientUpdate:
    delta: Weights  # w_k^{t+1} - w^t, same shapes as the global weights
    n_users: int  # |U_k|: the weight of this client in size-weighted averaging
    # e.g. the train loss; never sent under SecAgg+, where metrics travel in plaintext
    metrics: dict[str, float] = field(default_factory=dict)
    # Representations for the client's PSI partners (fedscope.federation.exchange), or None.
    outbox: bytes | None = None


@dataclass(frozen=True)
class FederationSettings:
    """The federation's own parameters, read by the server app."""

    n_clients: int  # K
    fraction: float  # C: share of clients sampled per round
    rounds: int  # T
    seed: int
    eval_every: int  # validate every this many rounds (and always at the last round)
    selection_metric: str  # validation metric that picks the best round, e.g. "MRR"
    size_bound: int  # public upper bound S on |U_k|, for encoding weights under SecAgg+
    secagg: bool = False
    # SecAgg+ clips every encoded entry to +-this range before quantising (2^22 levels); the
    # client refuses updates outside it rather than let them be clipped silently.
    secagg_clipping_range: float = 8.0
    # Clients exchange representations of PSI-aligned users through the server's relay.
    exchange: bool = False
    # "fail": a round whose clients' local steps diverged fails the run; "stop": training
    # ends there and the run keeps its best validated round (config federation.on_divergence).
    on_divergence: str = "fail"


class FederatedTask(Protocol):
    """A learning task as the Flower apps see it."""

    def settings(self) -> FederationSettings: ...

    def initial_weights(self) -> Weights:
        """Deterministic initial global weights (a function of the configured seed)."""
        ...

    def client_update(
        self, client_id: int, weights: Weights, server_round: int, inbox: bytes | None = None
    ) -> ClientUpdate:
        """Local training of client ``client_id`` from the global ``weights``.

        ``inbox``: what the server relays to this client from its partners when
        ``settings().exchange`` is on. Must be deterministic given (seed, round, client,
        inbox), so a resumed run repeats an uninterrupted one exactly.
        """
        ...

    def evaluate(self, weights: Weights, server_round: int) -> dict[str, float]:
        """Validation metrics of the global model (server side); must include the
        selection metric. Never touches the test split."""
        ...


def load_task(run_dir: Path) -> FederatedTask:
    """The task a run directory describes, cached per process (Ray workers serve many clients).

    The cache key includes the modification times of the files that define the task, so an
    edited config is never served from a stale entry.
    """
    from fedscope.federation import run_dir as layout

    path = Path(run_dir).resolve()
    stamps = tuple(
        (path / f).stat().st_mtime_ns if (path / f).exists() else 0
        for f in (layout.CONFIG_FILE, layout.TASK_FILE)
    )
    key = (str(path), stamps)
    if key not in _TASKS:
        _TASKS[key] = layout.build_task(path)
    return _TASKS[key]


_TASKS: dict[tuple[str, tuple[int, ...]], FederatedTask] = {}
