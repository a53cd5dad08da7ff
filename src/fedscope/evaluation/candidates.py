"""Sampled negatives for the paper's protocol, drawn once and stored.

For each evaluation instance, ``n_negatives`` items are drawn uniformly without
replacement from the target domain's items the user never interacted with (in
any of their sequences, any split). The draw depends only on the data set's
fingerprint, the split and the seed, and is cached on disk, so every method,
run and process ranks the target against exactly the same candidates.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fedscope.data import cache
from fedscope.data.dataset import CrossDomainDataset


@dataclass(frozen=True)
class SampledCandidates:
    negatives: np.ndarray  # int64 [E, n_negatives], local ids in the target's domain; -1 pads
    n_valid: np.ndarray  # int64 [E]: real negatives per row (< n_negatives when a domain is small)
    n_negatives: int
    seed: int

    @property
    def capped(self) -> int:
        """Instances that got fewer negatives than asked for (their domain is too small)."""
        return int((self.n_valid < self.n_negatives).sum())


def _draw_excluding(rng: np.random.Generator, n: int, excluded: np.ndarray, k: int) -> np.ndarray:
    """``k`` distinct values from ``range(n)`` minus the sorted unique ``excluded``."""
    free = n - excluded.shape[0]
    if free <= k:
        keep = np.ones(n, dtype=bool)
        keep[excluded] = False
        return np.nonzero(keep)[0]
    draws = np.sort(rng.choice(free, size=k, replace=False))
    # Map the r-th free value to its item id by skipping the excluded ids at or below it.
    return draws + np.searchsorted(excluded - np.arange(excluded.shape[0]), draws, side="right")


def draw_candidates(
    dataset: CrossDomainDataset, split: str, n_negatives: int = 999, seed: int = 0
) -> SampledCandidates:
    sp = dataset.eval_split(split)
    user_items = dataset.user_item_sets()
    domains = dataset.target_domains(sp)
    rng = np.random.default_rng([seed, 0 if split == "valid" else 1])
    negatives = np.full((len(sp), n_negatives), -1, dtype=np.int64)
    n_valid = np.zeros(len(sp), dtype=np.int64)
    for i in range(len(sp)):
        d = int(domains[i])
        dom = dataset.domains[d]
        seen = user_items[int(dataset.seq_user[sp.seq[i]])]
        in_dom = seen[(seen >= dom.offset) & (seen < dom.offset + dom.n_items)] - dom.offset
        drawn = _draw_excluding(rng, dom.n_items, in_dom, n_negatives)
        negatives[i, : drawn.shape[0]] = drawn
        n_valid[i] = drawn.shape[0]
    return SampledCandidates(negatives, n_valid, n_negatives, seed)


def load_or_draw(
    dataset: CrossDomainDataset, split: str, n_negatives: int = 999, seed: int = 0
) -> SampledCandidates:
    """Candidates from the on-disk store, drawn and stored on first use."""
    if not dataset.fingerprint:
        return draw_candidates(dataset, split, n_negatives, seed)
    path = (
        cache.cache_dir() / "candidates" / f"{dataset.fingerprint}-{split}-{n_negatives}-{seed}.npz"
    )
    if path.is_file():
        try:
            with np.load(path, allow_pickle=False) as z:
                if z["negatives"].shape[0] == len(dataset.eval_split(split)):
                    return SampledCandidates(z["negatives"], z["n_valid"], n_negatives, seed)
        except (OSError, ValueError, KeyError):
            pass  # a damaged file is redrawn (the draw is deterministic)
    cands = draw_candidates(dataset, split, n_negatives, seed)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp.npz")
        np.savez(tmp, negatives=cands.negatives, n_valid=cands.n_valid)
        tmp.replace(path)
    except OSError:
        pass
    return cands
