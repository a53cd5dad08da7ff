"""Paired comparison of two scorers ranked on the same instances against the same candidates.

Two models evaluated on one test set are not independent samples: an instance that is easy for
one is usually easy for the other. The standard error of the mean of the *per-instance
differences* is therefore much smaller than the two metrics' own sampling errors combined, and
it is the right yardstick for "is A better than B on this test set". It says nothing about the
spread over training seeds, which has to be measured by training again.

The per-instance competitor counts (``higher``, ``equal``) are what a run stores at evaluation
(``ranks.npz``); from them every metric is recomputed exactly as the evaluator does
(:func:`fedscope.evaluation.metrics.expected_metrics`, ties in expectation).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fedscope.evaluation.metrics import expected_metrics

# Two-sided 95% normal quantile: with hundreds of instances the mean difference is close to
# normal, and a t quantile would change the interval in the third digit.
Z95 = 1.959963984540054
IDENTITY_FIELDS = ("dataset_fingerprint", "split", "mode", "n_negatives", "candidate_seed")


class MismatchedEvaluationError(ValueError):
    """The two rankings were not made on the same instances and candidates."""


@dataclass(frozen=True)
class InstanceRanks:
    """One scorer's per-instance competitor counts on one split, in one ranking protocol.

    ``higher[i] == -1`` marks an instance that was not ranked (outside an evaluated subset).
    ``identity`` holds :data:`IDENTITY_FIELDS`; two rankings pair only when it is equal and
    they list the same users and domains in the same order.
    """

    scorer: str
    users: np.ndarray
    domains: np.ndarray  # index into domain_names, per instance
    domain_names: tuple[str, ...]
    higher: np.ndarray
    equal: np.ndarray
    identity: dict[str, Any]


@dataclass(frozen=True)
class PairedDifference:
    group: str
    metric: str
    n: int
    a: float  # mean of A over the group's instances (fraction)
    b: float
    difference: float  # a - b
    standard_error: float  # of the mean per-instance difference

    @property
    def interval95(self) -> tuple[float, float]:
        half = Z95 * self.standard_error
        return self.difference - half, self.difference + half

    @property
    def reading(self) -> str:
        low, high = self.interval95
        if low > 0:
            return "A higher"
        if high < 0:
            return "B higher"
        return "not shown"


def check_paired(a: InstanceRanks, b: InstanceRanks) -> None:
    """Raise :class:`MismatchedEvaluationError` naming the first thing that differs."""
    for field in IDENTITY_FIELDS:
        if a.identity.get(field) != b.identity.get(field):
            raise MismatchedEvaluationError(
                f"{field} differs: {a.identity.get(field)!r} for {a.scorer!r}, "
                f"{b.identity.get(field)!r} for {b.scorer!r}; a paired comparison needs the same "
                "data, split, protocol and candidates"
            )
    if a.domain_names != b.domain_names:
        raise MismatchedEvaluationError(
            f"domains differ: {a.domain_names} against {b.domain_names}"
        )
    if not (np.array_equal(a.users, b.users) and np.array_equal(a.domains, b.domains)):
        raise MismatchedEvaluationError(
            f"{a.scorer!r} and {b.scorer!r} list different evaluation instances"
        )
    if not np.array_equal(a.higher >= 0, b.higher >= 0):
        raise MismatchedEvaluationError(
            f"{a.scorer!r} and {b.scorer!r} ranked different subsets of the instances"
        )


def paired_differences(
    a: InstanceRanks, b: InstanceRanks, metrics: Sequence[str] = ("HR@10", "NDCG@10", "MRR")
) -> list[PairedDifference]:
    """A minus B per group (overall, then each domain) and metric, with the standard error of
    the mean per-instance difference. A group with fewer than two instances has no error
    (NaN)."""
    check_paired(a, b)
    ranked = a.higher >= 0
    per_a = expected_metrics(np.where(ranked, a.higher, 0), np.where(ranked, a.equal, 0))
    per_b = expected_metrics(np.where(ranked, b.higher, 0), np.where(ranked, b.equal, 0))
    unknown = [m for m in metrics if m not in per_a]
    if unknown:
        raise ValueError(f"unknown metric(s) {unknown}; known: {sorted(per_a)}")
    groups = {"overall": ranked}
    for d, name in enumerate(a.domain_names):
        groups[name] = ranked & (a.domains == d)
    out = []
    for group, mask in groups.items():
        n = int(mask.sum())
        if n == 0:
            continue
        for m in metrics:
            diff = per_a[m][mask] - per_b[m][mask]
            se = float(diff.std(ddof=1) / math.sqrt(n)) if n >= 2 else math.nan
            out.append(
                PairedDifference(
                    group,
                    m,
                    n,
                    float(per_a[m][mask].mean()),
                    float(per_b[m][mask].mean()),
                    float(diff.mean()),
                    se,
                )
            )
    return out


# --- storage: one ranks.npz per run ----------------------------------------------------------


def save_ranks(path: Path, rankings: dict[str, InstanceRanks]) -> None:
    """Write rankings keyed ``"<split>.<mode>.<role>"`` (role: ``model`` or ``popularity``).
    Instances (users, domains) are stored once per split and protocol."""
    arrays: dict[str, np.ndarray] = {}
    meta: dict[str, Any] = {}
    for key, r in rankings.items():
        base = key.rsplit(".", 1)[0]
        arrays[f"{base}.users"] = r.users.astype(np.int64)
        arrays[f"{base}.domains"] = r.domains.astype(np.int16)
        arrays[f"{key}.higher"] = r.higher.astype(np.int32)
        arrays[f"{key}.equal"] = r.equal.astype(np.int32)
        meta[key] = {
            "scorer": r.scorer,
            "domain_names": list(r.domain_names),
            "identity": r.identity,
        }
    arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    path = Path(path)
    tmp = path.with_suffix(".tmp.npz")
    np.savez_compressed(tmp, **arrays)
    tmp.replace(path)


def load_ranks(path: Path, key: str) -> InstanceRanks:
    """One ranking from a ``ranks.npz``; KeyError names the keys there are."""
    with np.load(path) as data:
        meta = json.loads(bytes(data["meta"]).decode())
        if key not in meta:
            raise KeyError(f"{path}: no ranking {key!r}; it has {sorted(meta)}")
        base = key.rsplit(".", 1)[0]
        return InstanceRanks(
            scorer=meta[key]["scorer"],
            users=data[f"{base}.users"],
            domains=data[f"{base}.domains"].astype(np.int64),
            domain_names=tuple(meta[key]["domain_names"]),
            higher=data[f"{key}.higher"].astype(np.int64),
            equal=data[f"{key}.equal"].astype(np.int64),
            identity=meta[key]["identity"],
        )
