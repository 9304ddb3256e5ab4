"""Tiny open_clip configs and run-config builders shared by the PromptKD tests (CPU, seconds)."""
from __future__ import annotations

import pytest

TINY_VIT = {
    "embed_dim": 16,
    "vision_cfg": {"image_size": 32, "layers": 3, "width": 24, "head_width": 8, "patch_size": 8},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 16, "heads": 2, "layers": 1},
}


@pytest.fixture
def tiny_arch(monkeypatch):
    """Register a 3-layer, 32-px open_clip ViT as ``pk-test-vit`` (embed 16, width 24, 4x4 patches of 8 px)."""
    import open_clip

    monkeypatch.setitem(open_clip.factory._MODEL_CONFIGS, "pk-test-vit", TINY_VIT)
    return "pk-test-vit"


@pytest.fixture
def make_cfg():
    """``make_cfg(arch, teacher_arch="pand-tiny-vit", **promptkd)``: a schema-default run config (OmegaConf)."""

    def build(arch: str, teacher_arch: str = "pand-tiny-vit", **promptkd):
        from omegaconf import OmegaConf

        from pand.config.schema import RunCfg

        cfg = OmegaConf.structured(RunCfg)
        cfg.teacher.arch = teacher_arch
        cfg.promptkd.student_arch = arch
        for k, v in promptkd.items():
            cfg.promptkd[k] = v
        return cfg

    return build


@pytest.fixture
def make_splits(tmp_path):
    """``make_splits(num_classes=6)``: DataSplits of 8-px images, 3 train / 1 val / 2 test per class."""

    def build(num_classes: int = 6):
        from PIL import Image

        from pand.data.base import DataSplits, FGVCDataset

        names = [f"class {c}" for c in range(num_classes)]

        def split(name, per_class):
            samples = []
            for c in range(num_classes):
                for k in range(per_class):
                    p = tmp_path / name / f"{c}_{k}.png"
                    p.parent.mkdir(parents=True, exist_ok=True)
                    Image.new("RGB", (8, 8), (c * 40, k * 60, 0)).save(p)
                    samples.append((str(p), c))
            return FGVCDataset(samples, names, name=name)

        return DataSplits(train=split("train", 3), val=split("val", 1), test=split("test", 2), class_names=names)

    return build
