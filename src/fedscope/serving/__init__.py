"""Serving a finished run's recommendations: in process (:class:`Recommender`) and over HTTP
(:func:`fedscope.serving.app.create_app`, ``fedscope serve``)."""

from fedscope.serving.recommender import (
    EmptyHistoryError,
    InvalidTopKError,
    ItemIndex,
    Query,
    RecommendationError,
    RecommendedItem,
    Recommender,
    RunNotServableError,
    UnknownDomainError,
    UnknownItemsError,
    check_servable,
)

__all__ = [
    "EmptyHistoryError",
    "InvalidTopKError",
    "ItemIndex",
    "Query",
    "RecommendationError",
    "RecommendedItem",
    "Recommender",
    "RunNotServableError",
    "UnknownDomainError",
    "UnknownItemsError",
    "check_servable",
]
