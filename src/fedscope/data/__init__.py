"""Data layer: loaders, split protocols, partitioning into clients."""

from fedscope.data.dataset import CrossDomainDataset, Domain, EvalSplit
from fedscope.data.errors import DataError, DatasetNotFoundError, Problem
from fedscope.data.registry import available, load_dataset, resolve_data_dir

__all__ = [
    "CrossDomainDataset",
    "DataError",
    "DatasetNotFoundError",
    "Domain",
    "EvalSplit",
    "Problem",
    "available",
    "load_dataset",
    "resolve_data_dir",
]
