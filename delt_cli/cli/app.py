"""The `delt` command: one typer app, one module per subcommand.

Every subcommand reads a dataset (directory of Parquet shards), writes a new one
to ``-o/--output`` and prints only the output path on stdout, so steps chain::

    delt select raw -o sel --by score --top-r 0.5 | delt order - -o ord --method folding --by score
"""

import sys
from typing import Annotated, Optional

import typer

from delt_cli import __version__
from delt_cli.console import set_quiet

app = typer.Typer(
    name="delt",
    help="Data efficacy for LM training: score, select, order, train and evaluate on sharded Parquet datasets.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="markdown",
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        sys.stdout.write(f"delt {__version__}\n")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[Optional[bool], typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Only errors on stderr.")] = False,
) -> None:
    set_quiet(quiet)


def _register() -> None:
    from delt_cli.cli import assets, order, prepare, select, stats  # noqa: F401  (each module adds its command)

    for optional in ("score", "embed", "train", "evaluate", "report", "tasks", "distill"):
        try:
            __import__(f"delt_cli.cli.{optional}")
        except ModuleNotFoundError as exc:
            if exc.name != f"delt_cli.cli.{optional}":
                raise


_register()


def main(argv: Optional[list] = None) -> int:
    """Console-script entry point."""
    try:
        app(args=argv, prog_name="delt")
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    return 0
