"""Reference scorers that every results table carries as its floor."""

from __future__ import annotations

import numpy as np

from fedscope.data.dataset import CrossDomainDataset
from fedscope.evaluation.evaluator import EvalBatch


class PopularityScorer:
    """Scores an item by its number of interactions in the training data.

    Counts come from the training portions only, so a held-out target never
    counts towards its own popularity. Many tail items tie (often at zero);
    the evaluator resolves ties by their expectation, so the floor is fair.
    """

    name = "popularity"

    def __init__(self, dataset: CrossDomainDataset):
        self.dataset = dataset
        self.counts = dataset.train_item_counts().astype(np.float64)

    def score(self, batch: EvalBatch) -> np.ndarray:
        dom = self.dataset.domains[batch.domain]
        row = self.counts[dom.offset : dom.offset + dom.n_items]
        return np.broadcast_to(row, (len(batch), dom.n_items))


class RandomScorer:
    """Independent uniform scores: the chance level of each protocol."""

    name = "random"

    def __init__(self, dataset: CrossDomainDataset, seed: int = 0):
        self.dataset = dataset
        self.rng = np.random.default_rng(seed)

    def score(self, batch: EvalBatch) -> np.ndarray:
        return self.rng.random((len(batch), self.dataset.domains[batch.domain].n_items))


class ConstantScorer:
    """Scores every item the same: must come out exactly at chance level."""

    name = "constant"

    def __init__(self, dataset: CrossDomainDataset):
        self.dataset = dataset

    def score(self, batch: EvalBatch) -> np.ndarray:
        return np.zeros((len(batch), self.dataset.domains[batch.domain].n_items))
