"""The method options of `delt score` and `delt fit`, generated from the scorers' option dataclasses.

Every field of every registered scorer's ``Options`` (delt_cli/scoring/options.py) becomes one
flag (and one YAML config key), in the --help panel of its method or of the shared base that
declares it. Flags default to "not given", so each method applies its own default; with
``--fit`` the artifact's options apply instead, and a given option that would change the fit
is an error.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from delt_cli.infra.errors import UsageError
from delt_cli.scoring.options import OptionSpec, specs

# Options every method accepts (the command uses them to read the input); recorded by the methods that declare them.
COMMAND_LEVEL = {"id_column", "text_column", "seed"}


@dataclass
class MethodOption:
    spec: OptionSpec
    panel: Optional[str]
    defaults: dict[str, Any] = field(default_factory=dict)  # method -> its default

    @property
    def methods(self) -> list[str]:
        return list(self.defaults)


def _base_type(annotation: Any) -> Any:
    if typing.get_origin(annotation) in (typing.Union, getattr(__import__("types"), "UnionType", ())):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return annotation


def _show(value: Any) -> str:
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) >= 10_000:
        return f"{value:_}"
    return str(value)


def method_options() -> dict[str, MethodOption]:
    """Every scorer option by field name, in registry order (one flag each)."""
    from delt_cli.scoring.registry import scorer_classes

    out: dict[str, MethodOption] = {}
    for method, cls in scorer_classes().items():
        for spec in specs(cls.Options):
            entry = out.get(spec.name)
            if entry is None:
                own = spec.name in vars(cls.Options).get("__annotations__", {})
                panel = spec.panel or (f"{cls.title} options (--method {method})" if own else None)
                entry = out[spec.name] = MethodOption(spec, panel)
            elif (entry.spec.help, entry.spec.flags, _base_type(entry.spec.type)) != (spec.help, spec.flags, _base_type(spec.type)):
                raise RuntimeError(f"scorer option '{spec.name}' is declared twice with different flags, help or type ({method}); declare it once on a shared base")
            entry.defaults[method] = spec.default
    return out


def _help(option: MethodOption, total: int) -> str:
    shown = {m: d for m, d in option.defaults.items() if d not in (None, False)}
    text = option.spec.help
    if len(option.defaults) > 1 and shown and len(set(map(repr, shown.values()))) > 1:
        text += " (default: " + ", ".join(f"{_show(d)} {m}" for m, d in shown.items()) + ")"
    elif shown and len(shown) == len(option.defaults):
        text += f" (default: {_show(next(iter(shown.values())))})"
    if "(--method " not in (option.panel or "") and option.spec.name not in COMMAND_LEVEL and len(option.defaults) < total:
        text += f" [{', '.join(option.methods)}]"
    return text


def method_parameters() -> list[inspect.Parameter]:
    """typer parameters for every scorer option (all default to None: not given)."""
    from delt_cli.scoring.registry import SCORERS

    params = []
    for name, option in method_options().items():
        base = _base_type(option.spec.type)
        info = typer.Option(*option.spec.flags, help=_help(option, len(SCORERS)), rich_help_panel=option.panel, show_default=False)
        params.append(inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=None, annotation=Annotated[Optional[base], info]))
    return params


def make_command(fn, fixed: list[inspect.Parameter]):
    """`fn(**kwargs)` with a signature of `fixed` parameters plus every scorer option (for typer and `@step`)."""
    params = [*fixed, *method_parameters()]
    params.sort(key=lambda p: p.kind)  # positional arguments first
    fn.__signature__ = inspect.Signature(params)
    fn.__annotations__ = {p.name: p.annotation for p in params}
    return fn


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(str(value) if isinstance(value, Path) else value))


def resolve_scorer(method: Optional[str], given: dict[str, Any], *, fit: Optional[Path] = None, default_method: Optional[str] = None):
    """The scorer a command line asks for: `given` holds the method options that were given
    (not None). With `fit`, the method and options come from the artifact; given options must
    be runtime ones or equal the artifact's."""
    from delt_cli.scoring import artifact
    from delt_cli.scoring.registry import scorer_class

    all_options = method_options()
    stored: dict[str, Any] = {}
    if fit is not None:
        manifest = artifact.read_manifest(fit)
        if method is not None and method != manifest["method"]:
            raise UsageError(f"--method {method}: --fit {fit} was fitted for --method {manifest['method']}")
        method = manifest["method"]
        stored = manifest.get("options") or {}
    method = method or default_method
    if method is None:
        raise UsageError("--method: required (one of the scoring methods, see --help)")
    cls = scorer_class(method)
    own = {s.name: s for s in specs(cls.Options)}
    for name, value in given.items():
        spec = own.get(name)
        if spec is None:
            if name in COMMAND_LEVEL:
                continue
            flag = all_options[name].spec.flags[0]
            raise UsageError(f"{flag}: not an option of --method {method} (it is one of {', '.join(all_options[name].methods)})")
        if fit is not None and not spec.runtime and name in stored and stored[name] != _jsonable(value):
            made = f"fitted on column {stored[name]!r}" if name.endswith("_column") else f"made with {stored[name]!r}"
            raise UsageError(f"{spec.flag} {value}: --fit {fit} was {made}; a transform cannot change the fit (drop the flag, or refit with `delt fit`)")
    values = {k: v for k, v in stored.items() if k in own}
    values.update({k: v for k, v in given.items() if k in own})
    return cls(cls.Options(**values))


def command_args(scorer, fixed: dict[str, Any]) -> dict[str, Any]:
    """The run's resolved arguments: the command's own, then the method's options."""
    return {**fixed, "method": scorer.name, **dataclasses.asdict(scorer.options)}
