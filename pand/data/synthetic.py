"""Synthetic fine-grained benchmark: procedural "birds" whose classes differ by one visual attribute.

Classes are the cartesian product of four attributes (``data.synthetic``: :class:`pand.config.schema.SyntheticCfg`):

* body colour (``num_body_colors`` of red, blue, yellow, green, purple, orange, pink, cyan),
* wing pattern (``num_wing_patterns`` of plain, striped, spotted, checkered),
* beak shape (``num_beak_shapes`` of hooked, straight, conical),
* crest (``num_crests``: 1 = never, 2 = absent / present).

The default 4 x 3 x 2 x 1 gives 24 classes; the nearest classes differ in exactly one attribute, which is what
makes the task fine-grained. Each image draws one bird (body, head, eye, beak, wing with its pattern, tail,
legs, optional crest) with a random pose (rotation, horizontal flip), scale and position over a background of
low-saturation gradients and clutter shapes (never a body colour and always behind the bird, so the class
stays unambiguous), plus Gaussian pixel noise. It renders at ``4 x image_size`` and is downsampled
(antialiasing), so the default 24 x 60 images take a few seconds on one CPU core.

Everything is a pure function of the config: image ``k`` of class ``c`` in split ``s`` is drawn from
``numpy.random.default_rng([seed, s, c, k])``, so the same seed gives the same pixels and bytes.

**Class order.** The base-to-novel protocol makes the first ``ceil(C/2)`` class ids the base classes. Classes
come in *twin groups*: one (body colour, wing pattern) pair with every beak shape and crest (:func:`class_order`).
The groups are ordered so that the first ``max(colours, wings)`` groups already contain every colour and every
wing pattern, and each group's twins are consecutive ids, so the base half holds both beaks of half of the
colour/wing pairs: base captions teach every attribute word (the beak included, because twins that differ only
in the beak are both there), and the novel classes are new colour/wing combinations of seen words.

**Web pool.** ``web_per_class > 0`` also renders a captioned *web pool* of every class (the stand-in for the
web-scale image-text data a CLIP teacher is pre-trained on, e.g. LAION holding CUB species). Its images come from
their own random streams (split code 3), so they are disjoint from the student's train, val and test images. Its
captions vary (:func:`web_caption`): attribute order, synonyms, and partial descriptions that leave attributes
out, each stored with the attributes it mentions so that a contrastive loss knows which images it fits.

On disk (ImageFolder layout, written atomically: a temp folder renamed into place)::

    train/<NNN.slug>/<kkkkk>.png   test/...   val/... (only when val_per_class > 0)   web/... (web_per_class > 0)
    classes.json    {"format": "pand-synthetic", "class_names", "classes": [{id, name, dir, attributes}],
                     "attributes", "base_classes", "novel_classes", "config", "hash", ...}
    captions.json   {"train/<NNN.slug>/<kkkkk>.png": "a photo of a red bird with striped wings and ...", ...}
    web.json        [{"path": "web/<NNN.slug>/<kkkkk>.png", "label", "caption", "mentions": {axis: value}}, ...]

CLI: ``python -m pand.data.synthetic OUT_DIR [--seed N --image-size N --train-per-class N ...]``.
"""
from __future__ import annotations

import colorsys
import dataclasses
import hashlib
import itertools
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from pand.errors import DataError

from .registry import RawSplits, register_dataset

__all__ = [
    "BODY_COLORS", "WING_PATTERNS", "BEAK_SHAPES", "CRESTS", "BirdClass", "synthetic_cfg_dict", "synthetic_hash",
    "class_order", "synthetic_classes", "caption_for", "web_caption", "caption_fits", "render_bird",
    "generate_synthetic", "ensure_synthetic", "load_synthetic", "WebSample", "load_web_pool",
]

GENERATOR_VERSION = 2  # bump when the renderer changes, so cached benchmarks are regenerated
FORMAT = "pand-synthetic"
SUPERSAMPLE = 4
SPLIT_CODES = {"train": 0, "val": 1, "test": 2, "web": 3}
BEAK_SCALE = 1.7  # beaks are drawn this much larger than the head's proportions, so the shape survives 64 px

BODY_COLORS: Tuple[Tuple[str, Tuple[int, int, int]], ...] = (
    ("red", (212, 30, 36)),
    ("blue", (30, 78, 222)),
    ("yellow", (240, 208, 24)),
    ("green", (34, 156, 52)),
    ("purple", (132, 44, 184)),
    ("orange", (246, 128, 20)),
    ("pink", (240, 84, 168)),
    ("cyan", (24, 192, 212)),
)
WING_PATTERNS = ("plain", "striped", "spotted", "checkered")
BEAK_SHAPES = ("hooked", "straight", "conical")
CRESTS = ("no crest", "crested")
AXES = ("body_color", "wing_pattern", "beak_shape", "crest")
_LIMITS = {"num_body_colors": len(BODY_COLORS), "num_wing_patterns": len(WING_PATTERNS),
           "num_beak_shapes": len(BEAK_SHAPES), "num_crests": len(CRESTS)}

CAPTION_TEMPLATES = (
    "a photo of a {color} bird with {parts}.",
    "a {color} bird that has {parts}.",
    "a picture of a bird with {body_parts}.",
    "this {color} bird has {parts}.",
)

# Web-pool captions use these words besides the canonical ones (the canonical word, which class names use, is
# first and picked most often), so a teacher learns the attribute, not one caption string.
SYNONYMS: Dict[str, Tuple[str, ...]] = {
    "red": ("red", "crimson"), "blue": ("blue", "azure"), "yellow": ("yellow", "golden"),
    "green": ("green", "emerald"), "purple": ("purple", "violet"), "orange": ("orange", "amber"),
    "pink": ("pink", "rose"), "cyan": ("cyan", "turquoise"),
    "plain": ("plain", "solid", "unpatterned"), "striped": ("striped", "banded", "stripy"),
    "spotted": ("spotted", "dotted", "speckled"), "checkered": ("checkered", "chequered", "checked"),
    "hooked": ("hooked", "curved", "hook-shaped"), "straight": ("straight", "pointed", "dagger-like"),
    "conical": ("conical", "cone-shaped", "stubby"),
}
WEB_TEMPLATES = (
    "a bird with {parts}.",
    "this bird has {parts}.",
    "{parts_cap}: a small bird.",
    "a photo of a bird with {parts}.",
)


@dataclass(frozen=True)
class BirdClass:
    """One synthetic class: its id, attribute values and the words derived from them."""

    id: int
    body_color: str
    wing_pattern: str
    beak_shape: str
    crest: bool

    @property
    def name(self) -> str:
        """Prompt-ready class name, e.g. ``"red striped hooked-beak bird"`` or ``"red crested ... bird"``."""
        crest = " crested" if self.crest else ""
        return f"{self.body_color}{crest} {self.wing_pattern} {self.beak_shape}-beak bird"

    @property
    def dirname(self) -> str:
        """Class folder name; zero-padded id first, so sorted folders are in label order."""
        return f"{self.id:03d}." + "_".join(
            [self.body_color, self.wing_pattern, self.beak_shape] + (["crested"] if self.crest else []))

    def attributes(self) -> Dict[str, Any]:
        return {"body_color": self.body_color, "wing_pattern": self.wing_pattern, "beak_shape": self.beak_shape,
                "crest": self.crest}


# ------------------------------------------------------------------------------------------------ config


def synthetic_cfg_dict(cfg: Any = None) -> Dict[str, Any]:
    """``SyntheticCfg`` defaults overlaid with ``cfg`` (a dataclass, DictConfig, mapping or None), as a dict."""
    from pand.config.schema import SyntheticCfg

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


def _validate(c: Dict[str, Any]) -> None:
    from pand.config import ConfigError

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
    if float(c.get("noise_std", 0)) < 0 or int(c.get("clutter", 0)) < 0:
        raise ConfigError("data.synthetic.noise_std and data.synthetic.clutter must be >= 0")
    if int(c.get("web_per_class", 0)) < 0:
        raise ConfigError(f"data.synthetic.web_per_class={c['web_per_class']}: must be >= 0")
    sizes = _axis_sizes(c)
    groups = sizes[0] * sizes[1]
    if max(sizes[:2]) > groups // 2:
        raise ConfigError(
            f"data.synthetic: {sizes[0]} colours x {sizes[1]} wing patterns give {groups} colour/wing pairs; the base "
            f"half ({groups // 2} pairs) cannot hold all {max(sizes[:2])} values of the larger axis. Use at least two "
            f"values on the other axis."
        )


def _axis_sizes(c: Dict[str, Any]) -> List[int]:
    return [int(c["num_body_colors"]), int(c["num_wing_patterns"]), int(c["num_beak_shapes"]), int(c["num_crests"])]


def synthetic_hash(cfg: Any = None) -> str:
    """16 hex digits identifying the benchmark a config produces (config + generator version)."""
    c = synthetic_cfg_dict(cfg)
    blob = json.dumps({"generator_version": GENERATOR_VERSION, **c}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


# ------------------------------------------------------------------------------------------------ classes


def _balanced_order(sizes: Sequence[int]) -> List[Tuple[int, ...]]:
    """All index tuples of the product ``sizes``: first the diagonal ``(i mod n_1, ..., i mod n_k)`` for
    ``i < max(sizes)`` (every value of every axis), then, greedily, the remaining tuple whose values have been used
    least so far (smallest sum of per-value counts, then of per-value-pair co-occurrence counts, then
    lexicographically first). Any prefix of length ``>= max(sizes)`` covers all values, and value counts stay
    balanced."""
    sizes = [int(s) for s in sizes]
    n = len(sizes)
    remaining = list(itertools.product(*[range(s) for s in sizes]))
    counts = [[0] * s for s in sizes]
    pairs: Dict[Tuple[int, int, int, int], int] = {}
    order: List[Tuple[int, ...]] = []

    def pair_keys(t: Tuple[int, ...]):
        return [(a, t[a], b, t[b]) for a in range(n) for b in range(a + 1, n)]

    def take(t: Tuple[int, ...]) -> None:
        remaining.remove(t)
        order.append(t)
        for axis, v in enumerate(t):
            counts[axis][v] += 1
        for k in pair_keys(t):
            pairs[k] = pairs.get(k, 0) + 1

    def key(t: Tuple[int, ...]):
        return (sum(counts[a][v] for a, v in enumerate(t)), sum(pairs.get(k, 0) for k in pair_keys(t)), t)

    for i in range(max(sizes)):
        take(tuple(i % s for s in sizes))
    while remaining:
        take(min(remaining, key=key))
    return order


def class_order(sizes: Sequence[int]) -> List[Tuple[int, ...]]:
    """All attribute-index tuples ``(colour, wing, beak, crest)`` of the product ``sizes``, in label order.

    Classes come in twin groups: each (colour, wing) pair, taken in a balanced order whose first
    ``max(colours, wings)`` pairs hold every colour and every wing pattern, is followed by all its (beak, crest)
    variants as consecutive ids. With an even number of groups the base half (the first ``ceil(C/2)`` ids) is
    exactly the first half of the groups with every beak and crest: base classes teach every attribute value, and
    the twins that differ only in the beak are both base or both novel.
    """
    sizes = [int(s) for s in sizes]
    inner = list(itertools.product(*[range(s) for s in sizes[2:]]))
    return [(c, w, *rest) for c, w in _balanced_order(sizes[:2]) for rest in inner]


def synthetic_classes(cfg: Any = None) -> List[BirdClass]:
    """The classes of a synthetic config, in label order (see :func:`class_order`)."""
    c = synthetic_cfg_dict(cfg)
    _validate(c)
    out = []
    for i, (b, w, k, r) in enumerate(class_order(_axis_sizes(c))):
        out.append(BirdClass(id=i, body_color=BODY_COLORS[b][0], wing_pattern=WING_PATTERNS[w],
                             beak_shape=BEAK_SHAPES[k], crest=bool(r)))
    return out


def _join(parts: Sequence[str]) -> str:
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]


def caption_for(cls: BirdClass, variant: int) -> str:
    """Caption ``variant`` (mod the number of phrasings) of a class; names every attribute word."""
    parts = [f"{cls.wing_pattern} wings", f"a {cls.beak_shape} beak"] + (["a crest"] if cls.crest else [])
    template = CAPTION_TEMPLATES[variant % len(CAPTION_TEMPLATES)]
    return template.format(color=cls.body_color, parts=_join(parts),
                           body_parts=_join([f"a {cls.body_color} body"] + parts))


def _word(value: str, rng: np.random.Generator) -> str:
    words = SYNONYMS.get(value, (value,))
    return words[0] if rng.uniform() < 0.55 else words[int(rng.integers(1, len(words)))] if len(words) > 1 \
        else words[0]


def web_caption(cls: BirdClass, rng: np.random.Generator) -> Tuple[str, Dict[str, Any]]:
    """A varied caption of ``cls`` for the web pool and the attributes it mentions.

    A quarter of the captions is the canonical class name ("a photo of a red striped hooked-beak bird."); the rest
    describe the bird in words drawn from :data:`SYNONYMS`, in a random order, and about a third of them leave out
    one or two attributes (a partial description fits several classes). Returns ``(caption, mentions)`` where
    ``mentions`` maps each mentioned axis to the class's canonical value.
    """
    every = {"body_color": cls.body_color, "wing_pattern": cls.wing_pattern, "beak_shape": cls.beak_shape,
             "crest": cls.crest}
    if rng.uniform() < 0.25:
        return f"a photo of a {cls.name}.", every
    axes = ["body_color", "wing_pattern", "beak_shape"] + (["crest"] if cls.crest else [])
    if rng.uniform() < 0.35:
        drop = rng.choice(len(axes), size=int(rng.integers(1, min(3, len(axes)))), replace=False)
        axes = [a for i, a in enumerate(axes) if i not in set(drop.tolist())]
    mentions = {a: every[a] for a in axes}
    colour = _word(cls.body_color, rng) if "body_color" in mentions else ""
    parts = []
    if "wing_pattern" in mentions:
        parts.append(f"{_word(cls.wing_pattern, rng)} wings")
    if "beak_shape" in mentions:
        parts.append(f"a {_word(cls.beak_shape, rng)} beak")
    if "crest" in mentions:
        parts.append("a crest")
    order = rng.permutation(len(parts)).tolist()
    parts = [parts[i] for i in order]
    if not parts or rng.uniform() < 0.4:  # "a red bird with striped wings" / "a red bird"
        desc = f"{colour} bird".strip() + (f" with {_join(parts)}" if parts else "")
        return (f"a photo of a {desc}." if rng.uniform() < 0.5 else f"a {desc}."), mentions
    if colour:
        parts.insert(int(rng.integers(0, len(parts) + 1)), f"{colour} feathers")
    template = WEB_TEMPLATES[int(rng.integers(0, len(WEB_TEMPLATES)))]
    text = _join(parts)
    return template.format(parts=text, parts_cap=text[0].upper() + text[1:]), mentions


def caption_fits(mentions: Dict[str, Any], cls: BirdClass) -> bool:
    """Whether a caption mentioning ``mentions`` is true of every image of ``cls`` (used as a positive pair)."""
    attrs = cls.attributes()
    return all(attrs[k] == v for k, v in mentions.items())


# ------------------------------------------------------------------------------------------------ rendering


def _rand_muted(rng: np.random.Generator, v_lo: float = 0.35, v_hi: float = 0.92) -> Tuple[int, int, int]:
    """A low-saturation colour (HSV saturation <= 0.22): backgrounds and clutter never look like a body colour."""
    r, g, b = colorsys.hsv_to_rgb(rng.uniform(0, 1), rng.uniform(0, 0.22), rng.uniform(v_lo, v_hi))
    return int(r * 255), int(g * 255), int(b * 255)


def _shade(rgb: Sequence[float], f: float) -> Tuple[int, int, int]:
    return tuple(min(255, max(0, int(round(float(c) * f)))) for c in rgb)  # type: ignore[return-value]


def _background(size: int, rng: np.random.Generator, clutter: int):
    from PIL import Image, ImageDraw

    top, bottom = np.array(_rand_muted(rng), float), np.array(_rand_muted(rng), float)
    t = np.linspace(0.0, 1.0, size)[:, None, None]
    column = (top * (1 - t) + bottom * t).astype(np.uint8)  # [size, 1, 3] vertical gradient
    img = Image.fromarray(np.ascontiguousarray(np.repeat(column, size, axis=1)), "RGB")
    draw = ImageDraw.Draw(img)
    for _ in range(int(rng.integers(0, clutter + 1))):
        kind = int(rng.integers(0, 4))
        col = _rand_muted(rng, 0.2, 0.95)
        x0, y0 = rng.uniform(-0.1, 1.0, 2) * size
        w, h = rng.uniform(0.08, 0.45, 2) * size
        box = [x0, y0, x0 + w, y0 + h]
        if kind == 0:
            draw.ellipse(box, fill=col)
        elif kind == 1:
            draw.rectangle(box, fill=col)
        elif kind == 2:  # branch-like line
            draw.line([x0, y0, x0 + w * rng.choice([-1, 1]), y0 + h * 0.5], fill=col,
                      width=max(1, int(size * rng.uniform(0.015, 0.04))))
        else:
            pts = [(x0 + rng.uniform(0, w), y0 + rng.uniform(0, h)) for _ in range(3)]
            draw.polygon(pts, fill=col)
    return img


def _wing_pattern(draw, pattern: str, box: Sequence[float], color, rng: np.random.Generator, u: float) -> None:
    x0, y0, x1, y1 = box
    if pattern == "striped":
        step, width = 0.11 * u, max(1, int(0.045 * u))  # coarse enough to survive 64 px
        off = rng.uniform(0, step)
        x = x0 - (y1 - y0) + off
        while x < x1 + step:
            draw.line([x, y1, x + (y1 - y0) * 0.6, y0], fill=color, width=width)
            x += step
    elif pattern == "spotted":
        r, step = 0.036 * u, 0.11 * u
        ox, oy = rng.uniform(0, step, 2)
        for row, y in enumerate(np.arange(y0 + oy - step, y1 + step, step * 0.8)):
            shift = step / 2 if row % 2 else 0.0
            for x in np.arange(x0 + ox - step + shift, x1 + step, step):
                draw.ellipse([x - r, y - r, x + r, y + r], fill=color)
    elif pattern == "checkered":
        s = 0.08 * u
        ox, oy = rng.uniform(0, 2 * s, 2)
        for i, y in enumerate(np.arange(y0 + oy - 2 * s, y1 + s, s)):
            for j, x in enumerate(np.arange(x0 + ox - 2 * s, x1 + s, s)):
                if (i + j) % 2 == 0:
                    draw.rectangle([x, y, x + s, y + s], fill=color)
    elif pattern != "plain":  # pragma: no cover - guarded by the class list
        raise ValueError(pattern)


def _beak_polygon(shape: str, u: float) -> List[Tuple[float, float]]:
    pts = {
        "straight": [(0.74, 0.345), (0.97, 0.39), (0.74, 0.425)],
        "hooked": [(0.74, 0.33), (0.85, 0.325), (0.92, 0.36), (0.94, 0.43), (0.91, 0.47), (0.895, 0.415),
                   (0.85, 0.405), (0.74, 0.425)],
        "conical": [(0.735, 0.305), (0.86, 0.385), (0.735, 0.465)],
    }[shape]
    ax, ay = 0.74, 0.38  # where the beak meets the head; scaled about it
    return [((ax + (x - ax) * BEAK_SCALE) * u, (ay + (y - ay) * BEAK_SCALE) * u) for x, y in pts]


def _bird_layer(cls: BirdClass, u: int, rng: np.random.Generator):
    """The bird facing right on a transparent ``u x u`` RGBA canvas."""
    from PIL import Image, ImageDraw

    base = dict(BODY_COLORS)[cls.body_color]
    body = _shade(np.array(base) + rng.uniform(-10, 10, 3), rng.uniform(0.88, 1.08))
    dark = _shade(body, 0.55)
    layer = Image.new("RGBA", (u, u), (0, 0, 0, 0))
    d = ImageDraw.Draw(layer)
    leg = (50, 45, 40, 255)
    lw = max(1, int(0.018 * u))
    d.line([0.36 * u, 0.66 * u, 0.33 * u, 0.84 * u], fill=leg, width=lw)
    d.line([0.46 * u, 0.66 * u, 0.48 * u, 0.84 * u], fill=leg, width=lw)
    d.polygon([(0.2 * u, 0.5 * u), (0.03 * u, 0.38 * u), (0.05 * u, 0.66 * u)], fill=dark)  # tail
    if cls.crest:
        for x0, tip in ((0.58, (0.52, 0.12)), (0.63, (0.6, 0.08)), (0.68, (0.69, 0.11))):
            d.polygon([(x0 * u, 0.32 * u), (tip[0] * u, tip[1] * u), ((x0 + 0.05) * u, 0.3 * u)], fill=dark)
    d.ellipse([0.15 * u, 0.4 * u, 0.65 * u, 0.7 * u], fill=body)  # body
    d.ellipse([0.53 * u, 0.26 * u, 0.77 * u, 0.5 * u], fill=body)  # head
    d.polygon(_beak_polygon(cls.beak_shape, u), fill=(38, 38, 38, 255))
    ex, ey, er = 0.685 * u, 0.355 * u, 0.028 * u
    d.ellipse([ex - er, ey - er, ex + er, ey + er], fill=(255, 255, 255, 255))
    d.ellipse([ex - er * 0.55, ey - er * 0.55, ex + er * 0.55, ey + er * 0.55], fill=(10, 10, 10, 255))
    # wing: dark ellipse with a light pattern clipped to it
    wbox = [0.22 * u, 0.44 * u, 0.56 * u, 0.64 * u]
    wing = Image.new("RGBA", (u, u), (0, 0, 0, 0))
    wd = ImageDraw.Draw(wing)
    wd.rectangle(wbox, fill=dark)
    _wing_pattern(wd, cls.wing_pattern, wbox, (236, 236, 228, 255), rng, u)
    mask = Image.new("L", (u, u), 0)
    ImageDraw.Draw(mask).ellipse(wbox, fill=255)
    layer.paste(wing, (0, 0), mask)
    ImageDraw.Draw(layer).ellipse(wbox, outline=_shade(dark, 0.6), width=max(1, int(0.01 * u)))
    return layer


def render_bird(cls: BirdClass, rng: np.random.Generator, image_size: int = 64, clutter: int = 8,
                noise_std: float = 6.0) -> np.ndarray:
    """Draw one image of class ``cls``.

    Args:
        cls: the class (attributes).
        rng: the image's random stream; the output is a pure function of its state.
        image_size: output side ``S``.
        clutter: at most this many background shapes.
        noise_std: std of the additive Gaussian pixel noise (0-255 scale).

    Returns:
        ``[S, S, 3]`` uint8 RGB array.
    """
    from PIL import Image

    big = image_size * SUPERSAMPLE
    img = _background(big, rng, clutter)
    scale = rng.uniform(0.62, 0.95)
    u = max(8, int(big * scale))
    bird = _bird_layer(cls, u, rng)
    angle = rng.uniform(-25, 25)
    flip = bool(rng.uniform() < 0.5)
    if flip:
        bird = bird.transpose(Image.FLIP_LEFT_RIGHT)
    bird = bird.rotate(angle, resample=Image.BILINEAR, expand=True)
    bbox = bird.getbbox() or (0, 0, bird.width, bird.height)
    bird = bird.crop(bbox)
    # position: keep at least 85% of the bird inside the image
    mx, my = 0.15 * bird.width, 0.15 * bird.height
    x = int(rng.uniform(-mx, max(-mx + 1, big - bird.width + mx)))
    y = int(rng.uniform(-my, max(-my + 1, big - bird.height + my)))
    img.paste(bird, (x, y), bird)
    small = np.asarray(img.resize((image_size, image_size), Image.BOX), dtype=np.float32)
    if noise_std > 0:
        small = small + rng.normal(0.0, noise_std, small.shape)
    return np.clip(np.rint(small), 0, 255).astype(np.uint8)


# ------------------------------------------------------------------------------------------------ writing


def _render_split(root: Path, split: str, per_class: int, classes: Sequence[BirdClass], c: Dict[str, Any],
                  captions: Dict[str, str], web: List[Dict[str, Any]], progress) -> None:
    from PIL import Image

    for cls in classes:
        d = root / split / cls.dirname
        d.mkdir(parents=True, exist_ok=True)
        for k in range(per_class):
            rng = np.random.default_rng([int(c["seed"]) & 0xFFFFFFFF, SPLIT_CODES[split], cls.id, k])
            arr = render_bird(cls, rng, int(c["image_size"]), int(c.get("clutter", 8)), float(c.get("noise_std", 6.0)))
            rel = f"{split}/{cls.dirname}/{k:05d}.png"
            Image.fromarray(arr, "RGB").save(root / rel, format="PNG")
            if split == "web":
                text, mentions = web_caption(cls, rng)
                web.append({"path": rel, "label": cls.id, "caption": text, "mentions": mentions})
            else:
                captions[rel] = caption_for(cls, int(rng.integers(0, len(CAPTION_TEMPLATES))))
            progress.update(1)


def _classes_json(classes: Sequence[BirdClass], c: Dict[str, Any]) -> Dict[str, Any]:
    from .splits import base_novel_split

    base, novel = base_novel_split([k.id for k in classes])
    sizes = _axis_sizes(c)
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


def generate_synthetic(out_dir: str | os.PathLike, cfg: Any = None, overwrite: bool = False,
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
    from tqdm.auto import tqdm

    from pand.utils.io import atomic_write_json

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
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        splits = [(s, int(c.get(f"{s}_per_class", 0))) for s in ("train", "val", "test", "web")]
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


def ensure_synthetic(cache_dir: str | os.PathLike, cfg: Any = None) -> Path:
    """The benchmark of ``cfg`` under ``<cache_dir>/synthetic/<hash>/``, generated on first use."""
    out = Path(cache_dir) / "synthetic" / synthetic_hash(cfg)
    if _matches(out, synthetic_hash(cfg)):
        return out
    return generate_synthetic(out, cfg)


# ------------------------------------------------------------------------------------------------ loading


@register_dataset("synthetic", "<root>/{train/, test/, optional val/, classes.json, captions.json} written by "
                               "'python -m pand.data.synthetic <root>' (or data.root=null to generate it in cache_dir)")
def load_synthetic(root: Path, cfg: Any) -> RawSplits:
    """Read a written synthetic benchmark as an ImageFolder, with names from classes.json and captions."""
    from .imagefolder import load_imagefolder

    if not (root / "classes.json").is_file():
        raise DataError(
            f"synthetic: {root} has no classes.json, so it is not a synthetic benchmark folder. Write one with "
            f"'python -m pand.data.synthetic {root}', or set data.root=null to generate it under cache_dir."
        )
    raw = load_imagefolder(root, cfg, dataset="synthetic")
    meta = json.loads((root / "classes.json").read_text(encoding="utf-8"))
    dirs = [k.get("dir") for k in meta.get("classes", [])]
    found = sorted(p.name for p in (root / "train").iterdir() if p.is_dir())
    if meta.get("format") != FORMAT or dirs != found:
        raise DataError(f"synthetic: {root / 'classes.json'} does not describe the class folders of {root / 'train'}; "
                        f"regenerate the benchmark")
    captions_path = root / "captions.json"
    if captions_path.is_file():
        rel = json.loads(captions_path.read_text(encoding="utf-8"))
        raw.captions = {str(root / k): v for k, v in rel.items()}
    return raw


@dataclass(frozen=True)
class WebSample:
    """One captioned web-pool image: absolute ``path``, class ``label``, ``caption`` and the ``mentions`` it makes."""

    path: str
    label: int
    caption: str
    mentions: Dict[str, Any]


def load_web_pool(root: str | os.PathLike) -> List[WebSample]:
    """The web pool of a written benchmark (``web.json``), or a :class:`DataError` naming the setting to enable."""
    path = Path(root) / "web.json"
    if not path.is_file():
        raise DataError(f"synthetic: {root} has no web pool (web.json); generate it with data.synthetic.web_per_class > 0")
    return [WebSample(str(Path(root) / r["path"]), int(r["label"]), r["caption"], dict(r["mentions"]))
            for r in json.loads(path.read_text(encoding="utf-8"))]


def main(argv: Optional[Sequence[str]] = None) -> None:
    """CLI entry point (``python -m pand.data.synthetic OUT_DIR ...``)."""
    import click

    from pand.config.schema import SyntheticCfg

    defaults = SyntheticCfg()

    @click.command(context_settings={"help_option_names": ["-h", "--help"]})
    @click.argument("out_dir", type=click.Path(file_okay=False))
    @click.option("--seed", type=int, default=defaults.seed, show_default=True)
    @click.option("--image-size", type=int, default=defaults.image_size, show_default=True)
    @click.option("--train-per-class", type=int, default=defaults.train_per_class, show_default=True)
    @click.option("--val-per-class", type=int, default=defaults.val_per_class, show_default=True)
    @click.option("--test-per-class", type=int, default=defaults.test_per_class, show_default=True)
    @click.option("--web-per-class", type=int, default=defaults.web_per_class, show_default=True,
                  help="Captioned web-pool images per class (teacher pre-training), disjoint from the splits.")
    @click.option("--num-body-colors", type=int, default=defaults.num_body_colors, show_default=True)
    @click.option("--num-wing-patterns", type=int, default=defaults.num_wing_patterns, show_default=True)
    @click.option("--num-beak-shapes", type=int, default=defaults.num_beak_shapes, show_default=True)
    @click.option("--num-crests", type=int, default=defaults.num_crests, show_default=True)
    @click.option("--clutter", type=int, default=defaults.clutter, show_default=True)
    @click.option("--noise-std", type=float, default=defaults.noise_std, show_default=True)
    @click.option("--overwrite", is_flag=True, help="Replace OUT_DIR if it holds something else.")
    def cli(out_dir, overwrite, **kwargs):
        """Write the synthetic fine-grained benchmark to OUT_DIR (ImageFolder layout + classes/captions JSON)."""
        from pand.config import ConfigError
        from pand.errors import PandError

        try:
            out = generate_synthetic(out_dir, kwargs, overwrite=overwrite)
        except (ConfigError, PandError) as e:
            raise click.ClickException(str(e)) from None
        meta = json.loads((out / "classes.json").read_text(encoding="utf-8"))
        click.echo(f"wrote {out}: {len(meta['class_names'])} classes "
                   f"(base {len(meta['base_classes'])}, novel {len(meta['novel_classes'])})")

    cli.main(args=list(argv) if argv is not None else None, prog_name="python -m pand.data.synthetic")


if __name__ == "__main__":
    main()
