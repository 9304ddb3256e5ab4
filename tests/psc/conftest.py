"""Fixtures of the PSC tests: the tiny random-init open_clip teacher and a toy image dataset on disk."""
from __future__ import annotations

import os

import pytest

os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")

from psc_toy import TOY_CLASSES  # noqa: E402,F401
TOY_COLORS = [(200, 30, 30), (30, 30, 200), (30, 180, 30), (220, 210, 40)]


@pytest.fixture(scope="session")
def tiny_teacher():
    pytest.importorskip("open_clip")
    from pand.models.teacher import create_teacher

    return create_teacher({"arch": "pand-tiny-vit", "pretrained": None, "seed": 0})


def write_toy_images(root, per_class: int, split: str, seed: int = 0):
    """``per_class`` noisy solid-colour PNGs per toy class under ``root/split``; returns ``[(path, label)]``."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    samples = []
    for c, rgb in enumerate(TOY_COLORS):
        d = root / split / f"c{c}"
        d.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            arr = np.clip(np.array(rgb)[None, None] + rng.normal(0, 25, (40, 48, 3)), 0, 255).astype("uint8")
            p = d / f"{i}.png"
            Image.fromarray(arr).save(p)
            samples.append((str(p), c))
    return samples


@pytest.fixture(scope="session")
def toy_splits(tmp_path_factory):
    """DataSplits with 4 classes: 6 train, 3 val, 3 test images per class (val held out, not test)."""
    from pand.data.base import DataSplits, FGVCDataset

    root = tmp_path_factory.mktemp("toy")
    tr = write_toy_images(root, 6, "train", seed=1)
    va = write_toy_images(root, 3, "val", seed=2)
    te = write_toy_images(root, 3, "test", seed=3)
    mk = lambda s, n: FGVCDataset(s, TOY_CLASSES, name=f"toy/{n}")  # noqa: E731
    return DataSplits(train=mk(tr, "train"), val=mk(va, "val"), test=mk(te, "test"), class_names=list(TOY_CLASSES),
                      root=root, template="a photo of a {}, a type of bird.")
