"""delt_cli: data efficacy for language-model training.

Score, select, order, train and evaluate on directories of Parquet shards.
Every command-line step is a thin layer over a function in this package, so
the same pipeline can be driven from Python.
"""

# The one place the version is written: pyproject.toml reads it from here (a literal, so
# that `import delt_cli` does not pay ~30 ms for importlib.metadata on every command).
__version__ = "0.1.0"

__all__ = ["__version__"]
