"""Evaluation: leave-one-out ranking in the sampled and the full-ranking protocol."""

from fedscope.evaluation.candidates import SampledCandidates, draw_candidates, load_or_draw
from fedscope.evaluation.evaluator import (
    DEFAULT_SLICES,
    EvalBatch,
    EvalResult,
    Evaluator,
    NonFiniteScoreError,
    Scorer,
    Slice,
)
from fedscope.evaluation.floors import ConstantScorer, PopularityScorer, RandomScorer
from fedscope.evaluation.metrics import METRIC_NAMES, chance_level, expected_metrics
from fedscope.evaluation.selection import Selection, select_on_validation

__all__ = [
    "DEFAULT_SLICES",
    "METRIC_NAMES",
    "ConstantScorer",
    "EvalBatch",
    "EvalResult",
    "Evaluator",
    "NonFiniteScoreError",
    "PopularityScorer",
    "RandomScorer",
    "SampledCandidates",
    "Scorer",
    "Selection",
    "Slice",
    "chance_level",
    "draw_candidates",
    "expected_metrics",
    "load_or_draw",
    "select_on_validation",
]
