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
        from pk_splits import tiny_splits

        return tiny_splits(tmp_path, num_classes)

    return build
