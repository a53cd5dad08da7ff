"""The Gaussian mechanism on a clipped client update.

With clipping threshold C (the L2 sensitivity of the update) and noise multiplier z, the noise
standard deviation is sigma = z * C; z alone determines the privacy accounting.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from fedscope.privacy.budget import PrivacySettingsError
from fedscope.privacy.clipping import clip_update, require_floating_update


def add_gaussian_noise(
    update: Sequence[np.ndarray], sigma: float, rng: np.random.Generator
) -> list[np.ndarray]:
    """``update`` plus independent N(0, sigma^2) noise on every entry.

    Noise is drawn and added in float64, then cast back to each array's dtype (shapes kept).
    sigma = 0 returns copies of the input.
    """
    std = _check_sigma(sigma)
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"rng must be a numpy.random.Generator, got {type(rng).__name__}")
    arrays = [np.asarray(a) for a in update]
    require_floating_update(arrays)
    if std == 0.0:
        return [a.copy() for a in arrays]
    return [
        (a.astype(np.float64) + rng.normal(0.0, std, size=a.shape)).astype(a.dtype) for a in arrays
    ]


def gaussian_privatise(
    update: Sequence[np.ndarray],
    clip_threshold: float,
    noise_multiplier: float,
    rng: np.random.Generator,
) -> tuple[list[np.ndarray], float]:
    """Clip to ``clip_threshold`` then add N(0, (noise_multiplier * clip_threshold)^2).

    Returns the privatised update and the pre-clip norm (for the adaptive clipping history).
    """
    z = float(noise_multiplier)
    if not (math.isfinite(z) and z >= 0):
        raise PrivacySettingsError(
            f"noise multiplier must be finite and >= 0, got {noise_multiplier!r}"
        )
    clipped, norm = clip_update(update, clip_threshold)
    return add_gaussian_noise(clipped, z * float(clip_threshold), rng), norm


def _check_sigma(sigma: float) -> float:
    try:
        value = float(sigma)
    except (TypeError, ValueError):
        raise PrivacySettingsError(f"noise sigma must be a number, got {sigma!r}") from None
    if not (math.isfinite(value) and value >= 0):
        raise PrivacySettingsError(f"noise sigma must be finite and >= 0, got {sigma!r}")
    return value
