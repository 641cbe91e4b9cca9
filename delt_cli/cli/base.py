"""The typer app object and its root options; each module of delt_cli.cli adds one command to it.

`delt_cli.cli.app` imports every command module (the whole CLI, for tests and help);
`delt_cli.cli.main`, the console script, imports only the module of the command
being run, so `delt select ...` does not pay for importing torch or transformers.
"""

import importlib
import sys
from typing import Annotated, Optional

import typer

from delt_cli import __version__
from delt_cli.infra.console import set_quiet

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


# command name -> module of delt_cli.cli that defines it
COMMANDS = {
    "prepare": "prepare",
    "score": "score",
    "fit": "fit",
    "finish": "finish",
    "select": "select",
    "order": "order",
    "stats": "stats",
    "embed": "embed",
    "distill": "distill",
    "train": "train",
    "eval": "evaluate",
    "report": "report",
    "tasks": "tasks",
    "assets": "assets",
}
_registered: set[str] = set()


def register(names=None) -> None:
    """Import the modules of the named commands (all by default) so they add themselves to `app`."""
    for name in COMMANDS if names is None else names:
        module = COMMANDS[name]
        if module in _registered:
            continue
        try:
            importlib.import_module(f"delt_cli.cli.{module}")
        except ModuleNotFoundError as exc:  # an optional command whose own dependency is missing
            if exc.name != f"delt_cli.cli.{module}":
                raise
        _registered.add(module)
