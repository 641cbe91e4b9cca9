"""The `delt` command: one typer app, one module per subcommand.

Every subcommand reads a dataset (directory of Parquet shards), writes a new one
to ``-o/--output`` and prints only the output path on stdout, so steps chain::

    delt select raw -o sel --by score --top-r 0.5 | delt order - -o ord --method folding --by score

Importing this module registers every command (`app` is the whole CLI, for tests and
documentation). The console script, `delt_cli.cli.main`, registers only the command
named on the command line.
"""

from delt_cli.cli.base import app, register  # noqa: F401  (app: the whole CLI)

register()
