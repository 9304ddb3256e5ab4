"""Test helpers shared by tests/export, tests/runtime and tests/latency: a real run directory and bundles from it.

A run directory here is what pand-train leaves behind (the contract export relies on): ``config.yaml`` (resolved,
no defaults list) and ``student.safetensors`` (Student state dict + metadata arch, num_classes, class_names,
preprocess). The student is a real torchvision ResNet-18 with random weights (training one is out of the tests'
time budget; the INT8 agreement of a trained student is measured outside the suite, see the export report).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Optional, Sequence

ROOT = Path(__file__).resolve().parents[2]
TINY = ROOT / "configs" / "tiny.yaml"


def make_run_dir(run_dir: Path, cache_dir: Path, overrides: Sequence[str] = (), seed: int = 0,
                 mutate: Optional[Callable[[Any], None]] = None) -> Path:
    """Write a run directory for the tiny synthetic config (+ ``overrides``) with a random-init ResNet-18 student
    (``mutate(model)``, if given, edits its weights in place before they are saved)."""
    import torch

    from pand.config import load_config, save_config
    from pand.data import build_splits, preprocess_spec_from_student
    from pand.models import create_student
    from pand.utils.io import save_tensors

    cfg = load_config(TINY, [f"cache_dir={cache_dir}", *overrides])
    splits = build_splits(cfg.data, cache_dir=cfg.cache_dir)
    pp = preprocess_spec_from_student(cfg.student)
    torch.manual_seed(seed)
    model = create_student(cfg.student.arch, len(splits.class_names))
    model.eval()
    if mutate is not None:
        mutate(model)
    run_dir.mkdir(parents=True, exist_ok=True)
    save_config(cfg, run_dir / "config.yaml")
    meta = {"arch": cfg.student.arch, "num_classes": len(splits.class_names), "class_names": splits.class_names,
            "preprocess": pp.to_dict()}
    save_tensors(run_dir / "student.safetensors", model.state_dict(), metadata=meta)
    return run_dir


def export(run_dir: Path, out: Path, **kw):
    """``export_bundle`` with test-sized defaults (all test images, few calibration images)."""
    from pand_export import ExportOptions, export_bundle

    kw.setdefault("parity_images", 0)
    kw.setdefault("calib_images", 32)
    kw.setdefault("max_batch", 8)
    return export_bundle(run_dir, ExportOptions(output=out, **kw))
