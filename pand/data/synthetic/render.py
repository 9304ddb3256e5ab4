"""Drawing one synthetic bird image (:func:`render_bird`), a pure function of its class and random stream.

Each image draws one bird (body, head, eye, beak, wing with its pattern, tail, legs, optional crest) with a random
pose (rotation, horizontal flip), scale and position over a background of low-saturation gradients and clutter
shapes (never a body colour and always behind the bird, so the class stays unambiguous), plus Gaussian pixel noise.
It renders at ``SUPERSAMPLE x image_size`` and is downsampled (antialiasing). The order of the draws from the
stream is part of the output: changing it changes every image (bump
:data:`pand.data.synthetic.generate.GENERATOR_VERSION` then).
"""
from __future__ import annotations

import colorsys
from typing import List, Sequence, Tuple

import numpy as np
from PIL import Image, ImageDraw

from .attributes import BODY_COLORS
from .classes import BirdClass

__all__ = ["SUPERSAMPLE", "BEAK_SCALE", "render_bird"]

SUPERSAMPLE = 4
BEAK_SCALE = 1.7  # beaks are drawn this much larger than the head's proportions, so the shape survives 64 px


def _rand_muted(rng: np.random.Generator, v_lo: float = 0.35, v_hi: float = 0.92) -> Tuple[int, int, int]:
    """A low-saturation colour (HSV saturation <= 0.22): backgrounds and clutter never look like a body colour."""
    r, g, b = colorsys.hsv_to_rgb(rng.uniform(0, 1), rng.uniform(0, 0.22), rng.uniform(v_lo, v_hi))
    return int(r * 255), int(g * 255), int(b * 255)


def _shade(rgb: Sequence[float], f: float) -> Tuple[int, int, int]:
    return tuple(min(255, max(0, int(round(float(c) * f)))) for c in rgb)  # type: ignore[return-value]


def _background(size: int, rng: np.random.Generator, clutter: int):
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
