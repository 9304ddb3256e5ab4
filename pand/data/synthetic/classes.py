"""The class space of the synthetic benchmark: one class per attribute combination, in label order.

**Class order.** The base-to-novel protocol makes the first ``ceil(C/2)`` class ids the base classes. Classes
come in *twin groups*: one (body colour, wing pattern) pair with every beak shape and crest (:func:`class_order`).
The groups are ordered so that the first ``max(colours, wings)`` groups already contain every colour and every
wing pattern, and each group's twins are consecutive ids, so the base half holds both beaks of half of the
colour/wing pairs: base captions teach every attribute word (the beak included, because twins that differ only
in the beak are both there), and the novel classes are new colour/wing combinations of seen words.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple

from .attributes import BEAK_SHAPES, BODY_COLORS, WING_PATTERNS
from .settings import SyntheticSettings, axis_sizes, synthetic_cfg_dict, validate_settings

__all__ = ["BirdClass", "class_order", "synthetic_classes"]


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


def synthetic_classes(cfg: Optional[SyntheticSettings] = None) -> List[BirdClass]:
    """The classes of a synthetic config, in label order (see :func:`class_order`)."""
    c = synthetic_cfg_dict(cfg)
    validate_settings(c)
    out = []
    for i, (b, w, k, r) in enumerate(class_order(axis_sizes(c))):
        out.append(BirdClass(id=i, body_color=BODY_COLORS[b][0], wing_pattern=WING_PATTERNS[w],
                             beak_shape=BEAK_SHAPES[k], crest=bool(r)))
    return out
