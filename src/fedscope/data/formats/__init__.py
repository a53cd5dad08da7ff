"""Data set formats. Importing this package registers every format's data sets."""

from fedscope.data.formats import (  # noqa: F401
    c2dsr,
    hvideo,
    interactions,
    llmcdsr,
    movielens,
    synthetic,
    xmarket,
)
