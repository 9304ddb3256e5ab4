"""Captions of the synthetic birds: the canonical ones of the student's splits and the varied ones of the web pool.

Every image of the train / val / test splits gets one of :data:`CAPTION_TEMPLATES` naming every attribute
(:func:`caption_for`). Web-pool captions (:func:`web_caption`) vary: attribute order, synonyms, and partial
descriptions that leave attributes out, each returned with the attributes it mentions so that a contrastive loss
knows which images it fits (:func:`caption_fits`).
"""
from __future__ import annotations

from typing import Any, Dict, Sequence, Tuple

import numpy as np

from .classes import BirdClass

__all__ = ["CAPTION_TEMPLATES", "SYNONYMS", "WEB_TEMPLATES", "caption_for", "web_caption", "caption_fits"]

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
