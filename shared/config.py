"""Configs: nested dataclasses are the schema, YAML files hold experiments, `--set key=value` overrides.

A track declares its schema as nested dataclasses whose fields each carry a docstring (the string
literal right under the field, as in cleanrl's ``Args``); that docstring is the field's help.
Fields with a fixed set of values declare it with ``choice(...)``::

    @dataclass
    class TrainConfig:
        steps: int = 100
        \"\"\"Optimizer steps in total.\"\"\"
        scale: str = choice("group", "group", "batch", "none")
        \"\"\"How advantages are scaled.\"\"\"

Merging goes schema defaults <- YAML file (and the files it ``extends``) <- dotted overrides, with
OmegaConf structured configs (so types are checked as in EasyR1). Every error is a `ConfigError`
that names the dotted key; the CLI turns it into exit code 2 before any run folder exists.
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import textwrap
from collections.abc import Sequence
from functools import cache
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")

EXTENDS_KEY = "extends"
"""Top-level YAML key naming another config of the same folder to start from."""


class ConfigError(ValueError):
    """A config problem; `key` is the dotted key at fault (or None for file-level problems)."""

    def __init__(self, key: str | None, message: str):
        self.key = key
        super().__init__(f"{key}: {message}" if key else message)


def choice(default: str, *allowed: str) -> Any:
    """A string field restricted to `allowed` (checked after merging, with the set in the error)."""
    if default not in allowed:
        raise ValueError(f"default {default!r} is not among {allowed}")
    return dataclasses.field(default=default, metadata={"choices": tuple(allowed)})


def nested(cls: type) -> Any:
    """A sub-config field: ``train: TrainConfig = nested(TrainConfig)``."""
    return dataclasses.field(default_factory=cls)


# --------------------------------------------------------------------------------------- field help


@cache
def field_docs(cls: type) -> dict[str, str]:
    """Docstrings written under each field of dataclass `cls` (and its bases)."""
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if not dataclasses.is_dataclass(klass):
            continue
        try:
            tree = ast.parse(textwrap.dedent(inspect.getsource(klass)))
        except (OSError, TypeError, SyntaxError):
            continue
        body = tree.body[0].body if tree.body and isinstance(tree.body[0], ast.ClassDef) else []
        for node, nxt in zip(body, body[1:], strict=False):
            if (
                isinstance(node, ast.AnnAssign)
                and isinstance(node.target, ast.Name)
                and isinstance(nxt, ast.Expr)
                and isinstance(nxt.value, ast.Constant)
                and isinstance(nxt.value.value, str)
            ):
                docs[node.target.id] = inspect.cleandoc(nxt.value.value)
    return docs


def iter_fields(cls: type, prefix: str = ""):
    """Yield (dotted_key, field, owner_class) for every leaf field of a nested dataclass schema."""
    for f in dataclasses.fields(cls):
        key = f"{prefix}{f.name}"
        sub = _dataclass_type(cls, f)
        if sub is not None:
            yield from iter_fields(sub, key + ".")
        else:
            yield key, f, cls


def _dataclass_type(owner: type, f: dataclasses.Field) -> type | None:
    typ = _resolved_hints(owner).get(f.name, f.type)
    return typ if isinstance(typ, type) and dataclasses.is_dataclass(typ) else None


@cache
def _resolved_hints(cls: type) -> dict[str, Any]:
    import typing

    try:
        return typing.get_type_hints(cls)
    except Exception:  # noqa: BLE001 - forward refs that cannot resolve: fall back to raw annotations
        return {}


def describe_config(schema: type) -> str:
    """Every field with its type, default and help: the text of ``--help-config``."""
    instance = schema()
    lines = []
    for key, f, owner in iter_fields(schema):
        default = _get_dotted(instance, key)
        typ = _resolved_hints(owner).get(f.name, f.type)
        tname = getattr(typ, "__name__", None) or str(typ).replace("typing.", "")
        lines.append(f"{key}: {tname} = {default!r}")
        choices = f.metadata.get("choices")
        if choices:
            lines.append(f"    one of: {', '.join(choices)}")
        doc = field_docs(owner).get(f.name, "")
        for para in doc.splitlines() or ["(no help)"]:
            lines.append(f"    {para}")
    return "\n".join(lines)


def _get_dotted(obj: Any, key: str) -> Any:
    for part in key.split("."):
        obj = getattr(obj, part)
    return obj


# ------------------------------------------------------------------------------------------ loading


def resolve_config_file(config: str | Path, configs_dir: Path | None) -> Path:
    """A config name (``grpo`` -> ``configs_dir/grpo.yaml``) or a path to a YAML file."""
    path = Path(config)
    if path.suffix in (".yaml", ".yml"):
        if not path.exists():
            raise ConfigError(None, f"config file {path} does not exist")
        return path
    if configs_dir is not None:
        candidate = configs_dir / f"{config}.yaml"
        if candidate.exists():
            return candidate
        names = sorted(p.stem for p in configs_dir.glob("*.yaml"))
        raise ConfigError(None, f"no config named {config!r}; available: {', '.join(names) or '(none)'}")
    raise ConfigError(None, f"config {config!r} is neither a .yaml path nor a known config name")


def _read_yaml(path: Path, configs_dir: Path | None, seen: tuple[Path, ...] = ()) -> Any:
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    if path.resolve() in seen:
        raise ConfigError(EXTENDS_KEY, f"{path}: circular 'extends' chain")
    try:
        node = OmegaConf.load(path)
    except (OmegaConfBaseException, OSError, ValueError) as err:  # yaml errors subclass ValueError? not always
        raise ConfigError(None, f"{path}: cannot parse YAML: {err}") from err
    except Exception as err:  # noqa: BLE001 - yaml.YAMLError and friends
        raise ConfigError(None, f"{path}: cannot parse YAML: {err}") from err
    if node is None or not OmegaConf.is_dict(node):
        raise ConfigError(None, f"{path}: a config file must hold a mapping of keys")
    parent = node.pop(EXTENDS_KEY, None)
    if parent is None:
        return node
    base = _read_yaml(resolve_config_file(str(parent), path.parent), configs_dir, (*seen, path.resolve()))
    return OmegaConf.merge(base, node)


def load_config(
    schema: type[T],
    config: str | Path | None = None,
    overrides: Sequence[str] = (),
    configs_dir: Path | None = None,
    base_yaml: str | None = None,
) -> T:
    """Merge schema defaults, a YAML config (by name or path) or `base_yaml` text, and dotted overrides.

    Returns an instance of `schema` (so ``__post_init__`` validation runs). Raises `ConfigError`.
    """
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    merged = OmegaConf.structured(schema)
    layers = []
    if config is not None:
        layers.append(_read_yaml(resolve_config_file(config, configs_dir), configs_dir))
    if base_yaml is not None:
        layers.append(OmegaConf.create(base_yaml))
    for item in overrides:
        if "=" not in item:
            raise ConfigError(item, "an override must look like key=value (e.g. train.steps=50)")
    if overrides:
        try:
            layers.append(OmegaConf.from_dotlist(list(overrides)))
        except OmegaConfBaseException as err:
            raise ConfigError(getattr(err, "full_key", None), str(err).splitlines()[0]) from err
    for layer in layers:
        try:
            merged = OmegaConf.merge(merged, layer)
        except OmegaConfBaseException as err:
            raise _translate(err) from err
    try:
        obj = OmegaConf.to_object(merged)
    except OmegaConfBaseException as err:
        raise _translate(err) from err
    check_choices(obj)
    return obj  # type: ignore[return-value]


def _translate(err: Exception) -> ConfigError:
    key = getattr(err, "full_key", None) or None
    msg = str(err).splitlines()[0]
    if "not in" in msg and "Key" in msg:
        msg = "unknown key"
    return ConfigError(key, msg)


def check_choices(obj: Any, prefix: str = "") -> None:
    """Raise ConfigError for a string field whose value is outside its declared choices."""
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        key = f"{prefix}{f.name}"
        if dataclasses.is_dataclass(value):
            check_choices(value, key + ".")
            continue
        choices = f.metadata.get("choices")
        if choices and value not in choices:
            raise ConfigError(key, f"{value!r} is not allowed; choose one of: {', '.join(choices)}")


def to_yaml(obj: Any) -> str:
    """The resolved config as YAML text (what a run saves as config.yaml)."""
    from omegaconf import OmegaConf

    return OmegaConf.to_yaml(OmegaConf.structured(obj))


def require(condition: bool, key: str, message: str) -> None:
    """For ``__post_init__`` checks: raise ConfigError(key, message) unless `condition`."""
    if not condition:
        raise ConfigError(key, message)
