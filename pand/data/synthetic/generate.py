"""Writing a synthetic benchmark to disk (:func:`generate_synthetic`) and finding it again (:func:`ensure_synthetic`).

Everything is a pure function of the settings: image ``k`` of class ``c`` in split ``s`` is drawn from
``numpy.random.default_rng([seed, s, c, k])`` (:data:`SPLIT_CODES`), so the same settings give the same pixels
and bytes. The web pool (``web_per_class > 0``) has its own split code, so its images are disjoint from the
student's train, val and test images.

On disk (ImageFolder layout, written atomically: a temp folder renamed into place)::

    train/<NNN.slug>/<kkkkk>.png   test/...   val/... (only when val_per_class > 0)   web/... (web_per_class > 0)
    classes.json    {"format": "pand-synthetic", "class_names", "classes": [{id, name, dir, attributes}],
                     "attributes", "base_classes", "novel_classes", "config", "hash", ...}
    captions.json   {"train/<NNN.slug>/<kkkkk>.png": "a photo of a red bird with striped wings and ...", ...}
    web.json        [{"path": "web/<NNN.slug>/<kkkkk>.png", "label", "caption", "mentions": {axis: value}}, ...]
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import numpy as np
from PIL import Image

from pand.errors import DataError
from pand.utils.io import atomic_write_json, make_staging_dir

from ..splits import base_novel_split
from .attributes import BEAK_SHAPES, BODY_COLORS, WING_PATTERNS
from .captions import CAPTION_TEMPLATES, caption_for, web_caption
from .classes import BirdClass, synthetic_classes
from .render import render_bird
from .settings import SyntheticSettings, axis_sizes, synthetic_cfg_dict

__all__ = ["GENERATOR_VERSION", "FORMAT", "SPLIT_CODES", "synthetic_hash", "generate_synthetic", "ensure_synthetic"]

GENERATOR_VERSION = 2  # bump when the renderer changes, so cached benchmarks are regenerated
FORMAT = "pand-synthetic"
SPLIT_CODES = {"train": 0, "val": 1, "test": 2, "web": 3}


def synthetic_hash(cfg: Optional[SyntheticSettings] = None) -> str:
    """16 hex digits identifying the benchmark a config produces (config + generator version)."""
    c = synthetic_cfg_dict(cfg)
    blob = json.dumps({"generator_version": GENERATOR_VERSION, **c}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _render_split(root: Path, split: str, per_class: int, classes: Sequence[BirdClass], c: Dict[str, Any],
                  captions: Dict[str, str], web: List[Dict[str, Any]], progress) -> None:
    for cls in classes:
        d = root / split / cls.dirname
        d.mkdir(parents=True, exist_ok=True)
        for k in range(per_class):
            rng = np.random.default_rng([int(c["seed"]) & 0xFFFFFFFF, SPLIT_CODES[split], cls.id, k])
            arr = render_bird(cls, rng, int(c["image_size"]), int(c["clutter"]), float(c["noise_std"]))
            rel = f"{split}/{cls.dirname}/{k:05d}.png"
            Image.fromarray(arr, "RGB").save(root / rel, format="PNG")
            if split == "web":
                text, mentions = web_caption(cls, rng)
                web.append({"path": rel, "label": cls.id, "caption": text, "mentions": mentions})
            else:
                captions[rel] = caption_for(cls, int(rng.integers(0, len(CAPTION_TEMPLATES))))
            progress.update(1)


def _classes_json(classes: Sequence[BirdClass], c: Dict[str, Any]) -> Dict[str, Any]:
    base, novel = base_novel_split([k.id for k in classes])
    sizes = axis_sizes(c)
    return {
        "format": FORMAT,
        "generator_version": GENERATOR_VERSION,
        "hash": synthetic_hash(c),
        "config": c,
        "class_names": [k.name for k in classes],
        "classes": [{"id": k.id, "name": k.name, "dir": k.dirname, "attributes": k.attributes()} for k in classes],
        "attributes": {
            "body_color": [n for n, _ in BODY_COLORS[: sizes[0]]],
            "wing_pattern": list(WING_PATTERNS[: sizes[1]]),
            "beak_shape": list(BEAK_SHAPES[: sizes[2]]),
            "crest": [False, True][: sizes[3]],
        },
        "base_classes": base,
        "novel_classes": novel,
    }


def _matches(out: Path, digest: str) -> bool:
    try:
        meta = json.loads((out / "classes.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return meta.get("format") == FORMAT and meta.get("hash") == digest and (out / "captions.json").is_file()


def generate_synthetic(out_dir: str | os.PathLike, cfg: Optional[SyntheticSettings] = None, overwrite: bool = False,
                       progress: bool = True) -> Path:
    """Write the synthetic benchmark of ``cfg`` to ``out_dir`` (ImageFolder layout + classes/captions JSON).

    The tree is rendered into a temporary sibling folder and renamed onto ``out_dir`` at the end, so an
    interrupted run never leaves a partial benchmark. If ``out_dir`` already holds the benchmark of the same
    config (same hash), it is reused as is.

    Args:
        out_dir: target folder; must not exist, be empty, hold the same benchmark, or ``overwrite`` must be set.
        cfg: a ``SyntheticCfg`` / DictConfig / dict (missing keys take the defaults).
        overwrite: replace a different existing ``out_dir``.
        progress: show a tqdm progress bar.

    Returns:
        ``out_dir`` as a Path.
    """
    from tqdm.auto import tqdm  # the train extra's progress bar, imported when a benchmark is rendered

    c = synthetic_cfg_dict(cfg)
    classes = synthetic_classes(c)
    digest = synthetic_hash(c)
    out = Path(out_dir)
    if out.exists():
        if _matches(out, digest):
            return out
        if not out.is_dir() or (any(out.iterdir()) and not overwrite):
            raise DataError(f"{out} already exists and holds something else; choose an empty folder or overwrite it "
                            f"(--overwrite / overwrite=True)")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = make_staging_dir(out.parent, out.name)
    try:
        splits = [(s, int(c[f"{s}_per_class"])) for s in ("train", "val", "test", "web")]
        total = sum(n for _, n in splits) * len(classes)
        captions: Dict[str, str] = {}
        web: List[Dict[str, Any]] = []
        with tqdm(total=total, desc=f"synthetic benchmark ({len(classes)} classes)", unit="img",
                  disable=not progress, leave=False) as bar:
            for split, n in splits:
                if n > 0:
                    _render_split(tmp, split, n, classes, c, captions, web, bar)
        atomic_write_json(tmp / "captions.json", captions)
        if web:
            atomic_write_json(tmp / "web.json", web)
        atomic_write_json(tmp / "classes.json", _classes_json(classes, c))  # written last: marks completion
        _move_into_place(tmp, out, digest)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return out


def _move_into_place(tmp: Path, out: Path, digest: str) -> None:
    old = None
    if out.exists():
        old = out.with_name(f".{out.name}.old-{os.getpid()}")
        os.rename(out, old)
    try:
        os.rename(tmp, out)
    except OSError:
        if _matches(out, digest):  # another process (e.g. a DDP rank) finished the same benchmark first
            return
        raise
    finally:
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)


def ensure_synthetic(cache_dir: str | os.PathLike, cfg: Optional[SyntheticSettings] = None) -> Path:
    """The benchmark of ``cfg`` under ``<cache_dir>/synthetic/<hash>/``, generated on first use."""
    out = Path(cache_dir) / "synthetic" / synthetic_hash(cfg)
    if _matches(out, synthetic_hash(cfg)):
        return out
    return generate_synthetic(out, cfg)
