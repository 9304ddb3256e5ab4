"""Class names from folder names: the one normalisation shared by training (``pand.data``: ImageFolder and
metadata class names) and the runtime (``pand-bench --images`` maps image folders to a bundle's classes with it).

Torch-free: part of the runtime.
"""
from __future__ import annotations

import re
import unicodedata

__all__ = ["clean_class_name", "class_key"]

_NUM_PREFIX = re.compile(r"^\d+\.")  # CUB "001.Black_footed_Albatross"
_WNID_PREFIX = re.compile(r"^n\d{8}-")  # ImageNet/Stanford Dogs "n02085620-Chihuahua"


def clean_class_name(raw: str) -> str:
    """A folder or metadata class name made prompt-ready.

    Drops a numeric ``NNN.`` prefix and a WordNet ``n<8 digits>-`` prefix, turns underscores into spaces and
    collapses whitespace: ``"001.Black_footed_Albatross" -> "Black footed Albatross"``,
    ``"n02085782-Japanese_spaniel" -> "Japanese spaniel"``. Idempotent.
    """
    name = _WNID_PREFIX.sub("", _NUM_PREFIX.sub("", raw.strip()))
    return " ".join(name.replace("_", " ").split())


def class_key(name: str) -> str:
    """What two class names are compared on: Unicode NFC (a folder name from macOS is NFD) of
    :func:`clean_class_name`. Case and every other character count: ``"Cat"`` and ``"cat"`` differ."""
    return unicodedata.normalize("NFC", clean_class_name(unicodedata.normalize("NFC", name)))
