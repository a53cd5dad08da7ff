"""Data set formats. Importing this package registers every format's data sets."""

from fedscope.data.formats import (  # noqa: F401
    c2dsr,
    hvideo,
    llmcdsr,
    movielens,
    synthetic,
    xmarket,
)
