"""What every subcommand shares: `--config`, `--debug`, one-line errors, stdout discipline.

`step` wraps a command function so that

* it gains ``--config FILE.yaml`` (flag names as keys, flags win) and ``--debug``;
* a `DeltError` becomes ``error: <message>`` on stderr and exit status 1 (2 for
  usage errors), with the traceback only under ``--debug`` or ``DELT_DEBUG=1``;
* the resolved arguments are available to the command as a `RunInfo` for provenance.
"""

import enum
import functools
import inspect
import os
import sys
import typing
from pathlib import Path
from typing import Annotated, Any, Callable, Optional

import typer

from delt_cli.infra.config import check_keys, load_config
from delt_cli.infra.console import error
from delt_cli.dataset.provenance import RunInfo
from delt_cli.dataset.writer import compression_options
from delt_cli.infra.errors import DeltError

COMMON = "Common options"
SCALE = "Several processes (docs/scale.md)"  # the --help panel of --rank/--world-size/--processes


def rank_opt(part: str):
    """--rank of a per-shard command; `part` says what rank R of WORLD_SIZE takes."""
    return Annotated[
        Optional[int],
        typer.Option("--rank", help=f"{part}, alone (default: SLURM_ARRAY_TASK_ID); `delt finish` writes the manifest.", rich_help_panel=SCALE),
    ]


WorldSizeOpt = Annotated[Optional[int], typer.Option("--world-size", help="Number of independent ranks (default: SLURM_ARRAY_TASK_COUNT).", rich_help_panel=SCALE)]

_current_run: Optional[RunInfo] = None


def current_run() -> RunInfo:
    """The RunInfo of the command being executed (command name and resolved arguments)."""
    assert _current_run is not None, "current_run() called outside a delt command"
    return _current_run


def _silence_stdout() -> None:
    """Point stdout at /dev/null so that the interpreter's final flush does not fail again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):  # no real stdout (in-process tests)
        pass


def emit(path: Any) -> None:
    """Print the command's output location: the only thing a command writes to stdout."""
    from delt_cli.dataset.remote import display  # an s3:// output went through Path (s3:/...)

    sys.stdout.write(f"{display(path)}\n")
    sys.stdout.flush()


def _python_type(annotation: Any) -> Any:
    """Unwrap Annotated[...] and Optional[...] to the base type."""
    if typing.get_origin(annotation) is Annotated:
        annotation = typing.get_args(annotation)[0]
    if typing.get_origin(annotation) in (typing.Union, getattr(__import__("types"), "UnionType", ())):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(args) == 1:
            annotation = args[0]
    return annotation


def _convert(ctx: typer.Context, param: Any, annotation: Any, value: Any, path: Path) -> Any:
    """Convert and validate a YAML value the way the same flag is converted on the command line."""
    if value is None:
        return None
    if isinstance(value, dict) or (isinstance(value, list) and not (param.multiple or param.nargs != 1)):
        raise DeltError(f"--config {path}: key '{param.name.replace('_', '-')}': expected a single value, got {type(value).__name__}")
    try:
        converted = param.process_value(ctx, value)
    except Exception as exc:  # typer raises its (vendored) click BadParameter
        message = getattr(exc, "message", None) or str(exc)
        raise DeltError(f"--config {path}: key '{param.name.replace('_', '-')}': {message}") from exc
    base = _python_type(annotation)
    if inspect.isclass(base) and issubclass(base, enum.Enum) and not isinstance(converted, base):
        return base(converted)
    if base is Path and converted is not None and not isinstance(converted, Path):
        return Path(converted)
    return converted


def _apply_config(ctx: typer.Context, fn: Callable, kwargs: dict, config_path: Optional[Path]) -> dict:
    if config_path is None:
        return kwargs
    config = load_config(config_path)
    options = {
        p.name: p
        for p in ctx.command.params
        if getattr(p, "param_type_name", "") == "option" and p.name not in ("config", "debug")
    }
    flag_names = {name: max(p.opts, key=len).lstrip("-") for name, p in options.items()}
    check_keys(config, set(options), config_path, flag_names)
    annotations = typing.get_type_hints(fn, include_extras=True)
    out = dict(kwargs)
    for name, value in config.items():
        source = ctx.get_parameter_source(name)
        if source is None or source.name in ("DEFAULT", "DEFAULT_MAP"):
            out[name] = _convert(ctx, options[name], annotations.get(name), value, config_path)
    return out


def step(fn: Callable) -> Callable:
    """Decorate a typer command: add --config/--debug, resolve config, turn errors into one line."""
    sig = inspect.signature(fn)
    extra = [
        inspect.Parameter("ctx", inspect.Parameter.KEYWORD_ONLY, annotation=typer.Context),
        inspect.Parameter(
            "config",
            inspect.Parameter.KEYWORD_ONLY,
            default=None,
            annotation=Annotated[
                Optional[Path],
                typer.Option(
                    "--config",
                    help="YAML file whose keys are this command's flag names; flags given on the command line win.",
                    rich_help_panel=COMMON,
                ),
            ],
        ),
        inspect.Parameter(
            "debug",
            inspect.Parameter.KEYWORD_ONLY,
            default=False,
            annotation=Annotated[
                bool,
                typer.Option("--debug", help="Show the full traceback on errors (also DELT_DEBUG=1).", rich_help_panel=COMMON),
            ],
        ),
    ]

    @functools.wraps(fn)
    def wrapper(**kwargs):
        global _current_run
        config_path = kwargs.pop("config", None)
        debug = kwargs.pop("debug", False) or os.environ.get("DELT_DEBUG", "") not in ("", "0")
        ctx = kwargs.pop("ctx")
        try:
            kwargs = _apply_config(ctx, fn, kwargs, config_path)
            compression_options()  # a bad DELT_PARQUET_COMPRESSION fails before any work
            resolved = dict(kwargs)
            if config_path is not None:
                resolved["config"] = str(config_path)
            _current_run = RunInfo(command=ctx.info_name or fn.__name__, args=resolved)
            return fn(**kwargs)
        except DeltError as exc:
            if debug:
                raise
            error(str(exc))
            raise typer.Exit(exc.exit_code) from None
        except KeyboardInterrupt:
            if debug:
                raise
            error("interrupted")
            raise typer.Exit(130) from None
        except BrokenPipeError:  # `delt ... | head`: the reader has gone; end quietly, as a Unix tool would
            _silence_stdout()
            raise typer.Exit(141) from None
        except Exception as exc:  # a bug, or an error we did not anticipate
            if debug or type(exc).__module__.startswith(("typer", "click")):
                raise
            message = str(exc).splitlines()[0] if str(exc) else ""
            error(f"{type(exc).__name__}: {message} (rerun with --debug for the traceback)")
            raise typer.Exit(1) from None
        finally:
            _current_run = None

    wrapper.__signature__ = sig.replace(parameters=[*sig.parameters.values(), *extra])
    wrapper.__annotations__ = {**getattr(fn, "__annotations__", {}), **{p.name: p.annotation for p in extra}}
    return wrapper


# Option types shared by the subcommands (Annotated aliases keep signatures short).
InputArg = Annotated[
    str,
    typer.Argument(
        metavar="IN",
        help="Input dataset: a directory of *.parquet shards (or JSON lines, Arrow files, a datasets save_to_disk directory), a glob, one file, an s3:// prefix, or - to read the path from stdin.",
        show_default=False,
    ),
]
OutputOpt = Annotated[Path, typer.Option("--output", "-o", help="Output dataset directory.", show_default=False)]
OverwriteOpt = Annotated[bool, typer.Option("--overwrite", help="Replace an existing non-empty output.", rich_help_panel=COMMON)]
ResumeOpt = Annotated[
    bool,
    typer.Option("--resume", help="Keep finished work in the output and do only what is missing.", rich_help_panel=COMMON),
]
IdColumnOpt = Annotated[str, typer.Option("--id-column", help="Name of the id column.", rich_help_panel=COMMON)]
TextColumnOpt = Annotated[str, typer.Option("--text-column", help="Name of the text column.", rich_help_panel=COMMON)]
SeedOpt = Annotated[int, typer.Option("--seed", help="Random seed.")]
