"""Rows that other distributions add to ``pand-bench``, found through an entry-point group (pytest's ``pytest11``).

The runtime imports nothing of the training side: ``pand-bench --pytorch RUN`` gets its rows from a plugin that the
main ``pand`` distribution registers in the entry-point group :data:`PLUGIN_GROUP` (its ``setup.cfg``), under the name
:data:`PYTORCH_PLUGIN`. A plugin is a callable ``(run: Path, bundles: Sequence[Path], opts: BenchOptions) ->
List[BenchRow]``; it may raise ``ImportError`` (torch missing), which the caller turns into error rows. This module
names the group only, never a module of another distribution.

Example:
    >>> from pand_runtime.bench_plugins import find_plugin
    >>> find_plugin("pytorch")  # None where only pand-runtime is installed
"""
from __future__ import annotations

from importlib import metadata
from typing import Any, Callable, Optional

from .errors import PandError

__all__ = ["PLUGIN_GROUP", "PYTORCH_PLUGIN", "PluginMissing", "find_plugin", "require_plugin"]

#: The entry-point group pand-bench discovers plugins in.
PLUGIN_GROUP = "pand_runtime.bench_plugins"
#: The plugin behind ``--pytorch`` (registered by the main ``pand`` distribution).
PYTORCH_PLUGIN = "pytorch"


class PluginMissing(PandError):
    """No installed distribution registers the plugin an option needs."""


def _entry_points(group: str):
    """The installed entry points of ``group`` (one place, so tests can stand in for the installed set)."""
    return metadata.entry_points(group=group)


def find_plugin(name: str) -> Optional[Any]:
    """The entry point ``name`` of :data:`PLUGIN_GROUP`, or None when no installed distribution registers it."""
    return next((ep for ep in _entry_points(PLUGIN_GROUP) if ep.name == name), None)


def require_plugin(name: str, option: str) -> Callable[..., Any]:
    """The entry point ``name`` (not loaded yet: loading may raise ``ImportError``), or :class:`PluginMissing` naming
    ``option`` and what to install."""
    ep = find_plugin(name)
    if ep is None:
        raise PluginMissing(
            f"{option} needs the '{name}' pand-bench plugin (entry-point group {PLUGIN_GROUP}), which the main pand "
            f"distribution registers; only pand-runtime is installed here. Install it: pip install pand (with torch "
            f"for the PyTorch rows: pip install 'pand[train]'; from a checkout: pip install '.[train]')")
    return ep
