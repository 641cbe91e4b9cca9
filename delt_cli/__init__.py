"""delt_cli: data efficacy for language-model training.

Score, select, order, train and evaluate on directories of Parquet shards.
Every command-line step is a thin layer over a function in this package, so
the same pipeline can be driven from Python.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("delt_cli")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]
