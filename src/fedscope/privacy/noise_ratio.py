"""How large the server's averaged DP noise is against the update it hides, before training.

A budget fixes each client's noise multiplier z_k (the plan), but whether the model can still
learn depends on what the noise does after aggregation: every sampled client adds
N(0, (z_k C)^2) to each of the d shared numbers, and the server takes the size-weighted mean
(weights w_k = |U_k|). Per coordinate the mean's noise has standard deviation
C * sqrt(sum_k (w_k z_k)^2) / sum_k w_k, so its norm is about sqrt(d) times that, while the
mean of the clipped updates has norm at most C. Their ratio,

    rho = sqrt(d * sum_k (w_k z_k)^2) / sum_k w_k        (= z * sqrt(d / m) for m equal clients)

does not depend on C and is a lower bound on noise-to-signal for the round: rho >> 1 means the
noise outweighs any update the clients could send. It is computed for every round of the
seeded client sampling, so that suspended clients and unequal sizes count as they will.

No library computes this (it combines the run's plan, its client sampling and the model's
shared size), hence this small module.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from fedscope.privacy.plan import PrivacyPlan


@dataclass(frozen=True)
class NoiseRatio:
    """rho over the rounds of a run (rounds where no sampled client may send are left out)."""

    n_params: int  # d, the shared numbers each client noises
    clients_per_round: int  # m
    per_round: tuple[float, ...]

    @property
    def median(self) -> float:
        return float(np.median(self.per_round)) if self.per_round else math.nan

    @property
    def smallest(self) -> float:
        return min(self.per_round) if self.per_round else math.nan

    def summary(self) -> dict[str, float | int]:
        """The record a run keeps (``run.json``'s ``privacy_noise_ratio``) and tables read."""
        return {
            "median": self.median,
            "smallest": self.smallest,
            "n_params": self.n_params,
            "clients_per_round": self.clients_per_round,
        }


def averaged_noise_ratio(
    plan: PrivacyPlan, n_params: int, seed: int, fraction: float
) -> NoiseRatio:
    """rho (module docstring) for every round of the run's seeded client sampling."""
    from fedscope.federation.strategy import sample_partitions, sample_size

    if n_params < 1:
        raise ValueError(f"need at least one shared parameter, got {n_params}")
    ids = [c.client_id for c in plan.clients]
    sizes = {c.client_id: c.n_users for c in plan.clients}
    sent = dict.fromkeys(ids, 0)
    ratios = []
    for t in range(1, plan.rounds + 1):
        weighted_z_sq = 0.0
        weight = 0.0
        for k in sample_partitions(seed, t, ids, fraction):
            z = plan.clients[k].noise_multiplier(plan.step(t, sent[k]))
            if z is None:  # suspended: sends nothing that counts
                continue
            sent[k] += 1
            weighted_z_sq += (sizes[k] * z) ** 2
            weight += sizes[k]
        if weight > 0:
            ratios.append(math.sqrt(n_params * weighted_z_sq) / weight)
    return NoiseRatio(n_params, sample_size(len(ids), fraction), tuple(ratios))
