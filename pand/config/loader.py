"""Compose a run configuration: schema defaults < group files < the CONFIG file < command-line overrides.

A CONFIG file (e.g. ``configs/tiny.yaml``) names one file per group in a Hydra-style ``defaults`` list::

    defaults:
      - data: synthetic
      - teacher: tiny_vit
      - student: resnet18
      - recipe: pand
      - trainer: cpu
    name: tiny
    nsd:
      epochs: 2

Each group file ``configs/<group>/<name>.yaml`` fills the section of the same name. A group file may
also carry a ``_global_:`` mapping that is merged at the root (a recipe sets its optimiser defaults
under ``nsd`` this way). Command-line overrides come in two forms: ``group=name`` picks another file
of a group (``data=oxford_pets``) and ``dotted.key=value`` sets a value (``nsd.nlrd.k=5``).

Every key and type is checked against :class:`pand.config.schema.RunCfg` (OmegaConf), then every value against what
its schema field declares (:data:`pand.config.schema.CHECKS`, :mod:`pand.config.checks`: one of the owner's choices,
counts integers >= 1, learning rates finite and > 0, ...); the errors name the key, the bad value and the valid
choices or range (:class:`ConfigError`). A YAML syntax error or a duplicate key names the file, the line and the
problem.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Iterable, Iterator, List, Optional, Sequence, Tuple

import yaml
from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import (
    ConfigAttributeError,
    ConfigKeyError,
    MissingMandatoryValue,
    OmegaConfBaseException,
    ValidationError,
)

from pand.errors import ConfigError
from pand.utils.io import atomic_write_text

from .schema import CHECKS, RunCfg

GROUPS = ("data", "teacher", "student", "recipe", "trainer")

__all__ = ["ConfigError", "GROUPS", "config_dir", "list_group", "load_config", "save_config", "to_yaml"]


def config_dir() -> Path:
    """The directory that holds the group folders (``$PAND_CONFIG_DIR`` or the repository's ``configs/``)."""
    env = os.environ.get("PAND_CONFIG_DIR")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[2] / "configs"


def list_group(group: str, root: Optional[Path] = None) -> List[str]:
    """Names of the YAML files available for ``group`` (sorted)."""
    d = (root or config_dir()) / group
    return sorted(p.stem for p in d.glob("*.yaml")) if d.is_dir() else []


def _split_overrides(overrides: Iterable[str]) -> Tuple[dict, List[str]]:
    groups, dotted = {}, []
    for ov in overrides:
        if "=" not in ov:
            raise ConfigError(f"override '{ov}' is not of the form key=value (e.g. nsd.nlrd.k=5 or data=oxford_pets)")
        key, value = ov.split("=", 1)
        key = key.strip()
        if key in GROUPS:
            groups[key] = value.strip()
        else:
            dotted.append(f"{key}={value}")
    return groups, dotted


def _parse_defaults(defaults, source: str) -> dict:
    out = {}
    if defaults is None:
        return out
    if not isinstance(defaults, (list, ListConfig)):
        raise ConfigError(f"{source}: 'defaults' must be a list like [{{data: synthetic}}, {{recipe: pand}}]")
    for item in defaults:
        if isinstance(item, (dict, DictConfig)) and len(item) == 1:
            (g, name), = item.items()
        else:
            raise ConfigError(f"{source}: bad defaults entry {item!r}; expected '- group: name'")
        if g not in GROUPS:
            raise ConfigError(f"{source}: unknown config group '{g}'. Valid groups: {', '.join(GROUPS)}")
        out[str(g)] = str(name)
    return out


def _load_group(group: str, name: str, root: Path) -> Tuple[DictConfig, Optional[DictConfig]]:
    path = root / group / f"{name}.yaml"
    if not path.is_file():
        p = Path(name)
        if p.suffix in (".yaml", ".yml") and p.is_file():
            path = p
        else:
            choices = ", ".join(list_group(group, root)) or "(none)"
            raise ConfigError(f"unknown {group} config '{name}'. Valid choices for {group}: {choices}")
    node = _load_yaml(path)
    glob = node.pop("_global_", None) if isinstance(node, DictConfig) else None
    return node, glob


def _valid_keys(cfg: DictConfig, full_key: str) -> str:
    parent = full_key.rsplit(".", 1)[0] if "." in full_key else ""
    node = OmegaConf.select(cfg, parent) if parent else cfg
    if isinstance(node, DictConfig):
        return ", ".join(sorted(str(k) for k in node.keys()))
    return "(not a mapping)"


def _merge(base: DictConfig, other, what: str) -> DictConfig:
    try:
        return OmegaConf.merge(base, other)
    except (ConfigKeyError, ConfigAttributeError) as e:
        key = getattr(e, "full_key", None) or str(e)
        raise ConfigError(
            f"{what}: unknown config key '{key}'. Valid keys here: {_valid_keys(base, str(key))}"
        ) from None
    except ValidationError as e:
        key = getattr(e, "full_key", "?")
        raise ConfigError(f"{what}: bad value for '{key}': {str(e).splitlines()[0]}") from None
    except OmegaConfBaseException as e:  # pragma: no cover - other OmegaConf failures
        raise ConfigError(f"{what}: {e}") from None


def _set_values(cfg: DictConfig, keys: Iterable[str]) -> Iterator[Tuple[str, Any]]:
    """``(key, value)`` of every dotted key of ``keys`` that has a value (a missing one is :func:`_check_missing`'s)."""
    for key in keys:
        try:
            value = OmegaConf.select(cfg, key, throw_on_missing=True)
        except MissingMandatoryValue:
            continue
        yield key, value


def _check_values(cfg: DictConfig) -> None:
    """Every set value against its schema field's :class:`pand.config.checks.Check` (choices, counts, ranges)."""
    for key, value in _set_values(cfg, CHECKS):
        check = CHECKS[key]
        if not check.accepts(value):
            raise ConfigError(f"bad value for '{key}': {key}={value!r}. {check.allowed()}")


def _load_yaml(path: Path) -> Any:
    """``OmegaConf.load`` with YAML errors (syntax, duplicate keys) as a :class:`ConfigError` naming the file, the
    line and the problem."""
    try:
        return OmegaConf.load(path)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark is not None else str(path)
        problem = " ".join(str(x) for x in (getattr(e, "problem", None), getattr(e, "context", None)) if x) \
            or str(e).splitlines()[0]
        raise ConfigError(f"{where}: YAML error: {problem}. Fix the file (each key once per mapping)") from None


def _check_missing(cfg: DictConfig) -> None:
    missing = sorted(OmegaConf.missing_keys(cfg))
    # promptkd.student_arch is only required by the promptkd recipe (recipe.name is None while it is unset)
    if cfg.recipe.get("name") != "promptkd":
        missing = [k for k in missing if not k.startswith("promptkd.")]
    if not cfg.recipe.use_teacher:
        missing = [k for k in missing if not k.startswith("teacher.")]
    if missing:
        raise ConfigError(
            "missing required config value(s): " + ", ".join(missing) + ". Set them in the config file or on the "
            "command line, e.g. " + f"{missing[0]}=..."
        )


def load_config(path: Optional[str | os.PathLike], overrides: Sequence[str] = (), root: Optional[Path] = None) -> DictConfig:
    """Load and validate a run configuration.

    Args:
        path: CONFIG YAML (may hold a ``defaults`` list of group files); None = schema defaults + overrides only.
        overrides: ``group=name`` and ``dotted.key=value`` strings, applied last.
        root: directory with the group folders (default :func:`config_dir`).

    Returns:
        A struct-mode ``DictConfig`` following :class:`RunCfg`.

    Raises:
        ConfigError: unknown key, wrong type, bad choice, value out of range or missing required value, naming the
            key, the value and what is allowed.
    """
    root = Path(root) if root else config_dir()
    body = OmegaConf.create()
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"config file not found: {p}")
        body = _load_yaml(p)
        if not isinstance(body, DictConfig):
            raise ConfigError(f"{p}: a config file must be a YAML mapping")
        if (p.parent / "data").is_dir() and root == config_dir() and "PAND_CONFIG_DIR" not in os.environ:
            root = p.parent  # a config folder next to the file wins (e.g. a user's own configs/)
    defaults = _parse_defaults(body.pop("defaults", None), str(path))
    group_sel, dotted = _split_overrides(overrides)
    defaults.update(group_sel)

    cfg = OmegaConf.structured(RunCfg)
    OmegaConf.set_struct(cfg, True)
    for group in GROUPS:
        if group not in defaults:
            continue
        node, glob = _load_group(group, defaults[group], root)
        cfg = _merge(cfg, {group: node}, f"{group}/{defaults[group]}.yaml")
        if glob is not None:
            cfg = _merge(cfg, glob, f"{group}/{defaults[group]}.yaml (_global_)")
    cfg = _merge(cfg, body, str(path))
    if dotted:
        try:
            cli = OmegaConf.from_dotlist(dotted)
        except Exception as e:  # malformed YAML value
            raise ConfigError(f"command-line overrides: {e}") from None
        cfg = _merge(cfg, cli, "command-line override")
    _check_missing(cfg)
    _check_values(cfg)
    return cfg


def to_yaml(cfg: DictConfig) -> str:
    """The resolved configuration as YAML text."""
    return OmegaConf.to_yaml(cfg, resolve=True)


def save_config(cfg: DictConfig, path: str | os.PathLike) -> None:
    """Write the resolved configuration atomically."""
    atomic_write_text(path, to_yaml(cfg))
