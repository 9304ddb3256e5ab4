"""The generator settings of the synthetic benchmark (``data.synthetic``) and their checks.

:class:`SyntheticCfg` is the ``data.synthetic`` section of the run schema (:class:`pand.config.schema.DataCfg`
holds one); :func:`synthetic_cfg_dict` overlays a partial mapping (e.g. the CLI's options) on its defaults.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Optional, Union

from pand.errors import ConfigError, DataError

from .attributes import BEAK_SHAPES, BODY_COLORS, CRESTS, WING_PATTERNS

__all__ = ["SyntheticCfg", "SyntheticSettings", "synthetic_cfg_dict", "validate_settings", "axis_sizes"]

_LIMITS = {"num_body_colors": len(BODY_COLORS), "num_wing_patterns": len(WING_PATTERNS),
           "num_beak_shapes": len(BEAK_SHAPES), "num_crests": len(CRESTS)}


@dataclass
class SyntheticCfg:
    """Generator settings of the procedural FGVC benchmark (``data.name=synthetic``)."""

    seed: int = 0
    image_size: int = 64
    train_per_class: int = 40
    test_per_class: int = 20
    val_per_class: int = 0  # 0: validation is carved out of train like every other dataset
    web_per_class: int = 0  # captioned web-pool images per class (teacher pre-training), disjoint from the splits
    # attribute axes used; the class set is their cartesian product (>= 24 classes)
    num_body_colors: int = 4
    num_wing_patterns: int = 3
    num_beak_shapes: int = 2
    num_crests: int = 1
    base_fraction: float = 0.5
    clutter: int = 8  # at most this many low-saturation background shapes per image
    noise_std: float = 6.0  # additive Gaussian pixel noise (0-255 scale)


#: what the generator's functions take: the ``data.synthetic`` section (a :class:`SyntheticCfg` or its DictConfig) or a
#: partial mapping of its keys (the CLI's options); None = the defaults
SyntheticSettings = Union[SyntheticCfg, Mapping[str, Any]]


def synthetic_cfg_dict(cfg: Optional[SyntheticSettings] = None) -> Dict[str, Any]:
    """``SyntheticCfg`` defaults overlaid with ``cfg`` (a dataclass, DictConfig, mapping or None), as a dict."""
    out = dataclasses.asdict(SyntheticCfg())
    if cfg is None:
        return out
    if dataclasses.is_dataclass(cfg):
        given = dataclasses.asdict(cfg)
    elif hasattr(cfg, "items"):
        try:
            from omegaconf import OmegaConf

            given = OmegaConf.to_container(cfg, resolve=True) if OmegaConf.is_config(cfg) else dict(cfg)
        except ImportError:  # pragma: no cover - omegaconf is part of the train extra
            given = dict(cfg)
    else:
        raise TypeError(f"expected a SyntheticCfg, DictConfig or dict, got {type(cfg).__name__}")
    unknown = sorted(set(given) - set(out))
    if unknown:
        raise DataError(f"unknown data.synthetic key(s) {unknown}; valid keys: {', '.join(out)}")
    out.update(given)
    return out


def validate_settings(c: Dict[str, Any]) -> None:
    """Raise :class:`ConfigError` naming the first ``data.synthetic`` value out of range in the dict ``c``."""
    for key, hi in _LIMITS.items():
        if not 1 <= int(c[key]) <= hi:
            raise ConfigError(f"data.synthetic.{key}={c[key]}: must be in 1..{hi}")
    for key in ("train_per_class", "test_per_class"):
        if int(c[key]) < 1:
            raise ConfigError(f"data.synthetic.{key}={c[key]}: must be >= 1")
    if int(c["val_per_class"]) < 0:
        raise ConfigError(f"data.synthetic.val_per_class={c['val_per_class']}: must be >= 0")
    if int(c["image_size"]) < 16:
        raise ConfigError(f"data.synthetic.image_size={c['image_size']}: must be >= 16")
    if float(c["noise_std"]) < 0 or int(c["clutter"]) < 0:
        raise ConfigError("data.synthetic.noise_std and data.synthetic.clutter must be >= 0")
    if int(c["web_per_class"]) < 0:
        raise ConfigError(f"data.synthetic.web_per_class={c['web_per_class']}: must be >= 0")
    sizes = axis_sizes(c)
    groups = sizes[0] * sizes[1]
    if max(sizes[:2]) > groups // 2:
        raise ConfigError(
            f"data.synthetic: {sizes[0]} colours x {sizes[1]} wing patterns give {groups} colour/wing pairs; the base "
            f"half ({groups // 2} pairs) cannot hold all {max(sizes[:2])} values of the larger axis. Use at least two "
            f"values on the other axis."
        )


def axis_sizes(c: Dict[str, Any]) -> List[int]:
    """``[colours, wing patterns, beak shapes, crests]`` of the settings dict ``c``."""
    return [int(c["num_body_colors"]), int(c["num_wing_patterns"]), int(c["num_beak_shapes"]), int(c["num_crests"])]
