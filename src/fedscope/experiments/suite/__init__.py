"""The paper's experiments as named, resumable experiments (``fedscope experiment NAME``).

One module per experiment; :data:`EXPERIMENTS` is the registry, in the paper's order.
"""

from __future__ import annotations

from fedscope.experiments.suite.base import MODES, Experiment, Mode, Plan, RunSpec

EXPERIMENTS: dict[str, Experiment] = {}


def _register() -> None:
    from fedscope.experiments.suite import (
        convergence,
        rq1_overall,
        rq2_generative,
        rq2_semantics,
        rq3_iidcl,
        rq4_cold_start,
        rq5_standalone,
        rq6_privacy,
        rq7_robustness,
    )

    for module in (
        rq1_overall,
        convergence,
        rq2_semantics,
        rq2_generative,
        rq3_iidcl,
        rq4_cold_start,
        rq5_standalone,
        rq6_privacy,
        rq7_robustness,
    ):
        EXPERIMENTS[module.EXPERIMENT.name] = module.EXPERIMENT


def get(name: str) -> Experiment:
    if not EXPERIMENTS:
        _register()
    if name not in EXPERIMENTS:
        raise KeyError(f"unknown experiment {name!r}; known: {', '.join(EXPERIMENTS)}")
    return EXPERIMENTS[name]


def available() -> dict[str, Experiment]:
    if not EXPERIMENTS:
        _register()
    return dict(EXPERIMENTS)


__all__ = ["MODES", "Experiment", "Mode", "Plan", "RunSpec", "available", "get"]
