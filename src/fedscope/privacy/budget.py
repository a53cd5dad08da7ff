"""Personalised privacy budgets: how (epsilon_total, delta_total) is split across K clients.

FedSCOPE (Sec. "Adaptive allocation") gives client k

    epsilon_k = epsilon_total * |U_k|^beta / sum_j |U_j|^beta,     delta_k = delta_total / K,

where |U_k| is the number of users on client k and beta in [0, 1] sets how strongly budgets
follow data size: beta = 0 is uniform DP (every client gets epsilon_total / K), beta = 1 is
proportional to |U_k|.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


class PrivacySettingsError(ValueError):
    """Privacy settings that cannot be used; the message names the value and the reason."""


@dataclass(frozen=True)
class ClientBudget:
    """The (epsilon, delta) budget of one client over the whole run."""

    client_id: int
    n_users: int
    epsilon: float
    delta: float


def check_epsilon(epsilon: float, name: str = "epsilon") -> float:
    """``epsilon`` as a float, or PrivacySettingsError unless it is positive and finite."""
    value = _as_float(epsilon, name)
    if not (math.isfinite(value) and value > 0):
        raise PrivacySettingsError(f"{name} must be positive and finite, got {epsilon!r}")
    return value


def check_delta(delta: float, name: str = "delta") -> float:
    """``delta`` as a float, or PrivacySettingsError unless 0 < delta < 1."""
    value = _as_float(delta, name)
    if not (0.0 < value < 1.0):
        raise PrivacySettingsError(f"{name} must lie strictly between 0 and 1, got {delta!r}")
    return value


def allocate_budgets(
    n_users: Sequence[int], epsilon: float, delta: float, beta: float
) -> list[ClientBudget]:
    """Split (epsilon, delta) over clients 0..K-1 with ``n_users[k]`` users each.

    ``client_id`` is the position in ``n_users``. With beta = 0 every client's epsilon is the
    same float (all weights are exactly 1.0); the epsilons always sum to ``epsilon`` up to
    floating-point rounding.
    """
    total_epsilon = check_epsilon(epsilon, "epsilon (total)")
    total_delta = check_delta(delta, "delta (total)")
    beta_value = _as_float(beta, "beta")
    if not (0.0 <= beta_value <= 1.0):
        raise PrivacySettingsError(f"beta must lie in [0, 1], got {beta!r}")
    counts = list(n_users)
    if not counts:
        raise PrivacySettingsError("n_users is empty: there must be at least one client")
    for client_id, count in enumerate(counts):
        if isinstance(count, bool) or not _is_integral(count):
            raise PrivacySettingsError(
                f"client {client_id}: number of users must be a whole number, got {count!r}"
            )
        if count < 1:
            raise PrivacySettingsError(
                f"client {client_id} has {count} users; every client needs at least 1 user "
                "(drop empty clients before allocating budgets)"
            )

    weights = np.power(np.asarray(counts, dtype=np.float64), beta_value)
    shares = weights / weights.sum()
    per_client_delta = total_delta / len(counts)
    return [
        ClientBudget(
            client_id=client_id,
            n_users=int(count),
            epsilon=float(total_epsilon * share),
            delta=per_client_delta,
        )
        for client_id, (count, share) in enumerate(zip(counts, shares, strict=True))
    ]


def _as_float(value: float, name: str) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        raise PrivacySettingsError(f"{name} must be a number, got {value!r}") from None


def _is_integral(value: object) -> bool:
    try:
        as_float = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return False
    return math.isfinite(as_float) and as_float == int(as_float)
