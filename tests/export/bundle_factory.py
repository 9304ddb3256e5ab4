"""Test helpers shared by tests/export, tests/runtime and tests/latency: a real run directory and bundles from it.

A run directory here is what pand-train leaves behind (the contract export relies on): ``config.yaml`` (resolved,
no defaults list) and ``student.safetensors`` (Student state dict + metadata arch, num_classes, class_names,
preprocess). The student is a real torchvision ResNet-18, optionally trained for a few CE epochs on the synthetic
benchmark so that INT8 agreement is measured on a model that learned something.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

ROOT = Path(__file__).resolve().parents[2]
TINY = ROOT / "configs" / "tiny.yaml"


def make_run_dir(run_dir: Path, cache_dir: Path, overrides: Sequence[str] = (), train_epochs: int = 0,
                 seed: int = 0) -> Path:
    """Write a run directory for the tiny synthetic config (+ ``overrides``) with a ResNet-18 student."""
    import torch

    from pand.config import load_config, save_config
    from pand.data import build_splits, create_transform, preprocess_cfg_from_student
    from pand.models import create_student
    from pand.utils.io import save_tensors

    cfg = load_config(TINY, [f"cache_dir={cache_dir}", *overrides])
    splits = build_splits(cfg.data, cache_dir=cfg.cache_dir)
    pp = preprocess_cfg_from_student(cfg.student)
    torch.manual_seed(seed)
    model = create_student(cfg.student.arch, len(splits.class_names))
    if train_epochs:
        _train(model, splits.train.with_transform(create_transform(pp, is_train=False)), train_epochs, seed)
    model.eval()
    run_dir.mkdir(parents=True, exist_ok=True)
    save_config(cfg, run_dir / "config.yaml")
    meta = {"arch": cfg.student.arch, "num_classes": len(splits.class_names), "class_names": splits.class_names,
            "preprocess": pp.to_dict()}
    save_tensors(run_dir / "student.safetensors", model.state_dict(), metadata=meta)
    return run_dir


def _train(model, dataset, epochs: int, seed: int) -> None:
    import torch

    g = torch.Generator().manual_seed(seed)
    loader = torch.utils.data.DataLoader(dataset, batch_size=32, shuffle=True, generator=g)
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=1e-4)
    model.train()
    for _ in range(epochs):
        for x, y in loader:
            loss = torch.nn.functional.cross_entropy(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
    model.eval()


def export(run_dir: Path, out: Path, **kw):
    """``export_bundle`` with test-sized defaults (all test images, few calibration images)."""
    from export import ExportOptions, export_bundle

    kw.setdefault("parity_images", 0)
    kw.setdefault("calib_images", 32)
    kw.setdefault("max_batch", 8)
    return export_bundle(run_dir, ExportOptions(output=out, **kw))
