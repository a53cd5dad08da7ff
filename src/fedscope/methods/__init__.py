"""Recommendation methods; importing this package registers each of them."""

from fedscope.methods import fedcsr, fedscope, gru4rec, sasrec  # noqa: F401
from fedscope.methods.base import DataShape, Method, StepContext, available_methods, method_class

__all__ = ["DataShape", "Method", "StepContext", "available_methods", "method_class"]
