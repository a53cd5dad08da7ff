"""Ranking metrics with ties resolved as random tie-breaking would, in expectation.

A target whose score is beaten by ``higher`` candidates and tied with ``equal``
others lands, under uniform random tie-breaking, on each position
``higher+1 ... higher+equal+1`` with equal probability. We report the
*expectation* of every metric over that draw, which makes results exact and
deterministic, and gives a scorer that cannot tell items apart (constant
scores) exactly chance-level numbers: HR@k = k / #candidates. The mean
position is ``1 + higher + equal/2``; a model that ranks by a fixed tie order
(e.g. item id) cannot profit from ties.
"""

from __future__ import annotations

import numpy as np

HR_KS = (1, 5, 10)
NDCG_KS = (5, 10)
METRIC_NAMES = (*(f"HR@{k}" for k in HR_KS), *(f"NDCG@{k}" for k in NDCG_KS), "MRR")

_cum_gain = np.zeros(1)  # _cum_gain[p] = sum_{i=1..p} 1/log2(i+1)
_cum_recip = np.zeros(1)  # _cum_recip[p] = sum_{i=1..p} 1/i


def _tables(max_position: int) -> tuple[np.ndarray, np.ndarray]:
    global _cum_gain, _cum_recip
    if _cum_gain.shape[0] <= max_position:
        positions = np.arange(1, max_position + 1, dtype=np.float64)
        _cum_gain = np.concatenate([[0.0], np.cumsum(1.0 / np.log2(positions + 1.0))])
        _cum_recip = np.concatenate([[0.0], np.cumsum(1.0 / positions)])
    return _cum_gain, _cum_recip


def expected_metrics(higher: np.ndarray, equal: np.ndarray) -> dict[str, np.ndarray]:
    """Per-instance expected metrics; ``higher``/``equal`` count competing candidates."""
    higher = np.asarray(higher, dtype=np.int64)
    equal = np.asarray(equal, dtype=np.int64)
    first = higher + 1  # best position the target can get
    n_pos = equal + 1  # number of equally likely positions
    last = first + equal
    max_k = max(max(HR_KS), max(NDCG_KS))
    gain, recip = _tables(int(last.max(initial=max_k)))
    out: dict[str, np.ndarray] = {}
    for k in HR_KS:
        out[f"HR@{k}"] = np.clip(k - first + 1, 0, n_pos) / n_pos
    for k in NDCG_KS:
        upto = np.minimum(last, k)
        out[f"NDCG@{k}"] = np.where(
            first <= k, (gain[np.maximum(upto, first - 1)] - gain[first - 1]) / n_pos, 0.0
        )
    out["MRR"] = (recip[last] - recip[first - 1]) / n_pos
    out["mean_rank"] = 1.0 + higher + equal / 2.0
    return out


def chance_level(n_candidates: int) -> dict[str, float]:
    """Metrics of a scorer that cannot tell ``n_candidates`` items apart."""
    m = expected_metrics(np.array([0]), np.array([n_candidates - 1]))
    return {k: float(v[0]) for k, v in m.items()}
