"""Model selection on validation only; the test split is touched once, for the winner."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from fedscope.evaluation.evaluator import EvalResult, Evaluator, Scorer


@dataclass
class Selection:
    best: str
    metric: str
    group: str
    validation: dict[str, EvalResult]  # every candidate's validation result
    test: EvalResult  # the selected candidate's test result only


def select_on_validation(
    candidates: Mapping[str, Scorer],
    valid: Evaluator,
    test: Evaluator,
    metric: str = "MRR",
    group: str = "overall",
) -> Selection:
    """Pick the candidate with the best validation ``metric`` and evaluate it on test.

    The paper selects the model with the highest validation MRR; so do we.
    Ties go to the first candidate in iteration order.
    """
    if valid.split_name != "valid" or test.split_name != "test":
        raise ValueError(
            "select_on_validation needs a validation and a test evaluator, in that order"
        )
    if not candidates:
        raise ValueError("no candidates to select from")
    results = {name: valid.evaluate(scorer) for name, scorer in candidates.items()}
    best = max(results, key=lambda n: results[n].metrics[group][metric])
    return Selection(best, metric, group, results, test.evaluate(candidates[best]))
