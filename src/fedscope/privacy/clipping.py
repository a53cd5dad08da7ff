"""L2 clipping of a client's update and FedSCOPE's adaptive clipping threshold.

An update is a list of arrays (one per model tensor); its norm is the L2 norm of all entries
together, so clipping bounds the sensitivity of the whole update, which is what the Gaussian
mechanism's noise is scaled to.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from fedscope.federation.task import DIVERGED, DivergenceError
from fedscope.privacy.budget import PrivacySettingsError

# Rounding when the clipped float64 values are cast back (float32, float16) can put the norm a
# few ulps above the threshold; a couple of extra shrink passes always restore norm <= C.
_MAX_SHRINK_PASSES = 4


def update_norm(update: Sequence[np.ndarray]) -> float:
    """Global L2 norm of all entries of all arrays, accumulated in float64."""
    total = 0.0
    for array in update:
        flat = np.asarray(array, dtype=np.float64).ravel()
        total += float(np.dot(flat, flat))
    return math.sqrt(total)


def clip_update(update: Sequence[np.ndarray], threshold: float) -> tuple[list[np.ndarray], float]:
    """``update * min(1, threshold / ||update||)`` and the norm before clipping.

    The clipped arrays keep each input's dtype and shape and are always new arrays. An update
    whose norm is already <= threshold comes back with the same values; a zero update stays
    zero. After the cast back to each dtype the returned update's norm (as ``update_norm``
    measures it) is guaranteed to be <= threshold.
    """
    limit = check_threshold(threshold)
    arrays = [np.asarray(a) for a in update]
    require_floating_update(arrays)
    norm = update_norm(arrays)
    if not math.isfinite(norm):
        raise DivergenceError(
            f"{DIVERGED}: the update has a non-finite L2 norm ({norm}); refusing to clip "
            "and privatise it"
        )
    if norm <= limit:
        return [a.copy() for a in arrays], norm

    scale = limit / norm
    clipped = _scaled(arrays, scale)
    for _ in range(_MAX_SHRINK_PASSES):
        clipped_norm = update_norm(clipped)
        if clipped_norm <= limit:
            break
        scale *= (limit / clipped_norm) * (1.0 - _coarsest_epsilon(arrays))
        clipped = _scaled(arrays, scale)
    else:
        raise ArithmeticError(
            f"could not clip an update of norm {norm} to {limit} in the arrays' precision"
        )
    return clipped, norm


def check_threshold(threshold: float, name: str = "clipping threshold") -> float:
    """``threshold`` as a float, or PrivacySettingsError unless positive and finite."""
    try:
        value = float(threshold)
    except (TypeError, ValueError):
        raise PrivacySettingsError(f"{name} must be a number, got {threshold!r}") from None
    if not (math.isfinite(value) and value > 0):
        raise PrivacySettingsError(f"{name} must be positive and finite, got {threshold!r}")
    return value


@dataclass(frozen=True)
class ClippingRule:
    """The clipping threshold C_k^t of one client, fixed or adaptive.

    ``gamma=None`` is fixed clipping: always ``initial`` (the uniform-DP baseline).

    Otherwise FedSCOPE's adaptive rule C_k <- gamma * median(||Delta_k^(t')||, t' = t-M..t-1)
    with M = ``window``, where ``history`` holds the client's pre-clip update norms of earlier
    rounds in order (oldest first). The paper leaves the start open; here:

    * no earlier norm (the client's first round): C = ``initial``;
    * fewer than M earlier norms: gamma * median of those that exist (so the threshold adapts
      from the second round on rather than waiting M rounds);
    * a median of 0 (all recent updates were zero): C = ``initial``, since a zero threshold
      cannot be used.

    Privacy caveat: the adaptive threshold is computed from the client's own unclipped norms,
    which depend on its data. The noise multiplier z = sigma / C and hence the accountant are
    unchanged, but the threshold itself is data-dependent and is not covered by the accounted
    guarantee (a formally private variant estimates the quantile with noise, e.g. Andrew et al.,
    2021, "Differentially private learning with adaptive clipping").
    """

    initial: float
    gamma: float | None = 1.0
    window: int = 5

    def __post_init__(self) -> None:
        check_threshold(self.initial, "initial clipping threshold")
        if self.gamma is not None:
            gamma = float(self.gamma)
            if not (math.isfinite(gamma) and gamma > 0):
                raise PrivacySettingsError(
                    f"clipping gamma must be positive and finite (or None for fixed clipping), "
                    f"got {self.gamma!r}"
                )
        if isinstance(self.window, bool) or int(self.window) != self.window or self.window < 1:
            raise PrivacySettingsError(
                f"clipping window must be a whole number >= 1, got {self.window!r}"
            )

    @property
    def adaptive(self) -> bool:
        return self.gamma is not None

    def threshold(self, history: Sequence[float]) -> float:
        """C for the next round given the pre-clip norms of the earlier rounds (oldest first)."""
        if self.gamma is None:
            return float(self.initial)
        norms = [float(n) for n in history]
        for position, value in enumerate(norms):
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(
                    f"norm history entry {position} is {value}; update norms must be finite "
                    "and >= 0"
                )
        recent = norms[-int(self.window) :]
        if not recent:
            return float(self.initial)
        median = statistics.median(recent)
        if median <= 0:
            return float(self.initial)
        return float(self.gamma) * median


def require_floating_update(arrays: Sequence[np.ndarray]) -> None:
    """TypeError naming the first array that is not floating point (clipping and noise would
    silently truncate integers)."""
    for position, array in enumerate(arrays):
        if not np.issubdtype(array.dtype, np.floating):
            raise TypeError(
                f"update array {position} has dtype {array.dtype}; updates must be floating point"
            )


def _scaled(arrays: Sequence[np.ndarray], scale: float) -> list[np.ndarray]:
    return [(a.astype(np.float64) * scale).astype(a.dtype) for a in arrays]


def _coarsest_epsilon(arrays: Sequence[np.ndarray]) -> float:
    return max((float(np.finfo(a.dtype).eps) for a in arrays), default=float(np.finfo(float).eps))
