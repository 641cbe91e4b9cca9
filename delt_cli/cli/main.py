"""The `delt` console script (and `python -m delt_cli`): registers only the command being run.

Each command module imports what it needs, so `delt select ...` or `delt order ...` do
not import torch, transformers or the other commands' modules; `delt --help` and an
unknown command name register all of them.
"""

import gc
import os
import sys
from typing import Optional

from delt_cli.cli.base import COMMANDS, app, register
from delt_cli.infra.console import error

# Commands that only move Arrow data and never hand pandas objects to pyarrow.
ARROW_ONLY = {"prepare", "select", "order", "stats"}


class _NoPandas:
    """A meta-path finder that makes `import pandas` fail (used for one probe only)."""

    def find_spec(self, name, path=None, target=None):
        if name == "pandas" or name.startswith("pandas."):
            raise ModuleNotFoundError("pandas is not needed here", name=name)
        return None


def prepare_arrow_process() -> None:
    """Start-up of a data command, before pyarrow is imported: jemalloc as Arrow's allocator
    on Linux (its wheels ship it; it returns freed memory sooner than the default mimalloc:
    select and order peaked 20-25% lower at 1M rows, docs/benchmarks.md), unless the user set
    ARROW_DEFAULT_MEMORY_POOL; then no pandas import (below)."""
    if sys.platform == "linux" and "pyarrow" not in sys.modules:
        os.environ.setdefault("ARROW_DEFAULT_MEMORY_POOL", "jemalloc")
    load_numpy_single_threaded()
    skip_pyarrow_pandas_probe()


def load_numpy_single_threaded() -> None:
    """Import numpy with one OpenBLAS thread, unless the user set OPENBLAS_NUM_THREADS.

    OpenBLAS starts a thread per core when numpy loads it, and those threads spin for a
    while: `import numpy` cost ~120 ms wall and ~135-200 ms CPU here, against ~80 ms of
    both with one thread (docs/benchmarks.md, "Select and order"). The data commands
    multiply no matrices. OpenBLAS reads the variable once, at load, so it is removed
    again and child processes do not inherit it.
    """
    if "numpy" in sys.modules or "OPENBLAS_NUM_THREADS" in os.environ:
        return
    os.environ["OPENBLAS_NUM_THREADS"] = "1"
    try:
        import numpy  # noqa: F401
    finally:
        os.environ.pop("OPENBLAS_NUM_THREADS", None)


def skip_pyarrow_pandas_probe() -> None:
    """Let pyarrow's one-time pandas probe find no pandas.

    pyarrow imports pandas the first time it converts or reads anything, only to
    recognise pandas objects (0.5-0.9 s and ~35 MB here, more than the rest of a
    data command's start-up). The data commands never give it any. pandas itself
    stays importable: pyarrow imports it on demand for `to_pandas`, and code that
    imports pandas gets it as usual.
    """
    if "pandas" in sys.modules:
        return
    finder = _NoPandas()
    sys.meta_path.insert(0, finder)
    try:
        import pyarrow

        pyarrow.array([0])  # runs the probe
    finally:
        sys.meta_path.remove(finder)


def _command_word(argv: list[str]) -> Optional[str]:
    """The subcommand of a command line: the first argument that is not a root option."""
    for arg in argv:
        if not arg.startswith("-"):
            return arg
    return None


def _is_a(exc: BaseException, name: str) -> bool:
    """Whether exc is one of click's exceptions (typer vendors click from 0.28 on; earlier versions
    raise click's own), told by class name so that click need not be imported to check."""
    return any(kind.__name__ == name for kind in type(exc).__mro__)


def usage_error(exc: Exception) -> int:
    """Print a click usage error (bad choice or value, missing or unknown option, unknown command) as
    one `error:` line naming the flag, with where to find help; return its exit status (2)."""
    if type(exc).__name__ == "NoArgsIsHelpError":  # `delt tasks` alone: the help is printed already
        return exc.exit_code
    message = " ".join(exc.format_message().split()).rstrip(".")
    ctx = getattr(exc, "ctx", None)
    if ctx is not None and ctx.help_option_names:
        message += f" (see `{ctx.command_path} {ctx.help_option_names[0]}`)"
    error(message)
    return exc.exit_code


def main(argv: Optional[list] = None) -> int:
    """Console-script entry point."""
    args = sys.argv[1:] if argv is None else list(argv)
    word = _command_word(args)
    if word in ARROW_ONLY:
        prepare_arrow_process()
    register([word] if word in COMMANDS else None)
    try:
        # Not standalone: click's usage errors come back here as exceptions instead of typer's
        # boxed multi-line message, and become one `error:` line like every other mistake.
        code = app(args=args, prog_name="delt", standalone_mode=False)
        return code if isinstance(code, int) else 0  # an int is an Exit's code; commands return None
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except Exception as exc:
        if _is_a(exc, "Abort"):
            error("aborted")
            return 1
        if not _is_a(exc, "ClickException"):
            raise
        return usage_error(exc)
    finally:
        if argv is None:  # a console-script run: the process exits next
            # Python's last collection at exit walks every object that the imports made
            # (typer, rich, pyarrow, numpy: 25-35 ms here, a tenth of a quick command);
            # frozen objects are skipped. Outputs are closed and renamed by now, and
            # atexit handlers still run.
            gc.freeze()
            release_stdout()
    return 0


def release_stdout() -> None:
    """Hand stdout's end of a pipe back before the interpreter tears down (~15-20 ms after a
    data command): `delt select ... | delt order -` reads its input path up to end of file,
    so it starts that much sooner. Everything written is flushed first; fd 1 then points at
    /dev/null, so a late write (an atexit handler) still succeeds."""
    try:
        sys.stdout.flush()
        null = os.open(os.devnull, os.O_WRONLY)
    except (OSError, ValueError, AttributeError):  # a closed or missing stdout: nothing to hand back
        return
    try:
        os.dup2(null, 1)
    except OSError:
        pass
    finally:
        os.close(null)
