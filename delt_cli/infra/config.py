"""YAML configuration files whose keys are a command's flag names.

``delt select raw -o sel --config configs/select/top-half.yaml``: the file's
keys are the long flag names of the command (``top-r`` or ``top_r``); values
fill every flag that was not given on the command line (command-line flags
win); an unknown key is an error that names it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from delt_cli.infra.errors import DeltError


def normalize_key(key: str) -> str:
    return str(key).strip().lstrip("-").replace("-", "_")


def _strict_loader():
    """A SafeLoader that refuses duplicate keys (PyYAML silently keeps the last one).

    Built on first use: yaml is imported only when a --config file is given.
    """
    import yaml

    class StrictLoader(yaml.SafeLoader):
        pass

    def mapping_without_duplicates(loader, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = loader.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(None, None, f"key '{key}' is given twice", key_node.start_mark)
            seen.add(key)
        return loader.construct_mapping(node, deep=deep)

    StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, mapping_without_duplicates)
    return StrictLoader


def load_config(path: Path) -> dict[str, Any]:
    """Read a YAML mapping; keys are normalised to Python parameter names (dashes to underscores)."""
    path = Path(path)
    if not path.is_file():
        raise DeltError(f"--config {path}: no such file")
    import yaml

    try:
        data = yaml.load(path.read_text(), Loader=_strict_loader())
    except yaml.YAMLError as exc:
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise DeltError(f"--config {path}: not valid YAML ({problem}{where})") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise DeltError(f"--config {path}: expected a mapping of flag names to values, got {type(data).__name__}")
    out: dict[str, Any] = {}
    for key, value in data.items():
        name = normalize_key(key)
        if name in out:
            raise DeltError(f"--config {path}: key '{key}' is given twice")
        out[name] = value
    return out


def check_keys(config: dict[str, Any], allowed: set[str], path: Path, flag_names: dict[str, str]) -> None:
    unknown = sorted(set(config) - allowed)
    if unknown:
        valid = ", ".join(sorted(flag_names[a] for a in allowed))
        raise DeltError(f"--config {path}: unknown key '{unknown[0].replace('_', '-')}' (valid keys: {valid})")
