"""Command-line options that ``pand-export --format trt`` and ``pand-engine`` share (one definition each): the
TensorRT build settings."""
from __future__ import annotations

from typing import Callable

import click

__all__ = ["tf32_option", "workspace_option", "timing_cache_option"]


def tf32_option(help_text: str) -> Callable:
    """``--tf32/--no-tf32`` (default off): keep TensorRT's TF32 convolutions in an fp32 engine."""
    return click.option("--tf32/--no-tf32", default=False, show_default=True, help=help_text)


def workspace_option() -> Callable:
    """``--workspace GiB`` -> ``workspace_gb`` (default 1, 0 = TensorRT's default)."""
    return click.option("--workspace", "workspace_gb", type=click.FloatRange(min=0), default=1.0, show_default=True,
                        help="TensorRT workspace pool limit in GiB (0 = TensorRT's default).")


def timing_cache_option(default_text: str) -> Callable:
    """``--timing-cache FILE`` (default None: ``default_text`` says where the command puts it)."""
    return click.option("--timing-cache", type=click.Path(dir_okay=False), default=None,
                        help=f"TensorRT timing cache file, reused across builds (default {default_text}).")
