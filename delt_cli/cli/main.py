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
    skip_pyarrow_pandas_probe()


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


def main(argv: Optional[list] = None) -> int:
    """Console-script entry point."""
    args = sys.argv[1:] if argv is None else list(argv)
    word = _command_word(args)
    if word in ARROW_ONLY:
        prepare_arrow_process()
    register([word] if word in COMMANDS else None)
    try:
        app(args=args, prog_name="delt")
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    finally:
        if argv is None:  # a console-script run: the process exits next
            # Python's last collection at exit walks every object that the imports made
            # (typer, rich, pyarrow, numpy: 25-35 ms here, a tenth of a quick command);
            # frozen objects are skipped. Outputs are closed and renamed by now, and
            # atexit handlers still run.
            gc.freeze()
    return 0
