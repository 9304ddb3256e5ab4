"""The demo's world: the synthetic benchmark with its web pool, a teacher pre-trained on that pool, and what the
teacher knows (zero-shot top-1 per split and per attribute).

Shared by ``python -m pand.demo`` and ``bench/distill.py`` (the multi-seed comparison), so both distil from the
same teacher on the same data.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Sequence

from pand.config import load_config
from pand.data import build_splits
from pand.data.synthetic import caption_fits, load_web_pool, synthetic_classes
from pand.demo.teacher_pretrain import PretrainCfg, pretrain_teacher
from pand.psc import extract_features, handcrafted_anchors

if TYPE_CHECKING:  # annotations only: pand.config.schema imports pand.data and pand.engine
    from pand.config.schema import RunCfg

__all__ = ["DemoWorld", "prepare_world", "teacher_zero_shot", "ATTRIBUTES"]

ATTRIBUTES = ("body_color", "wing_pattern", "beak_shape")


@dataclass
class DemoWorld:
    """Everything the demo's recipes share."""

    cfg: RunCfg  # the demo config with teacher.pretrained (and promptkd.student_pretrained) set
    overrides: List[str]  # the overrides that produce ``cfg`` from the config file
    splits: Any  # DataSplits of all training images (no label budget): train/val/test
    classes: List[Dict[str, Any]]  # classes.json entries (id, name, attributes)
    web_images: int
    teacher_ckpt: Path
    pretrain: Dict[str, Any] = field(default_factory=dict)  # teacher (and PromptKD student) pre-training meta
    seconds: Dict[str, float] = field(default_factory=dict)


def _pretrain_meta(ckpt: Path) -> Dict[str, Any]:
    try:
        return json.loads((Path(ckpt).parent / "meta.json").read_text())
    except (OSError, ValueError):
        return {}


def prepare_world(config_path: str, overrides: Sequence[str], progress: bool = True,
                  pretrain_steps: Optional[int] = None, promptkd_student: bool = True) -> DemoWorld:
    """Build the benchmark, pre-train (or reuse) the teacher and the PromptKD student init on the web pool.

    ``pretrain_steps`` caps the pre-training steps (``--quick`` uses a few dozen); the validation split of the
    benchmark decides when pre-training stops improving. ``promptkd_student=False`` skips the PromptKD student's
    pre-training (``bench/distill.py`` trains no PromptKD student).
    """
    base = load_config(config_path, list(overrides))
    full = build_splits(load_config(config_path, [*overrides, "data.labels_per_class=null"]).data,
                        cache_dir=base.cache_dir)
    web = load_web_pool(full.root)
    birds = synthetic_classes(base.data.synthetic)
    fits = [[caption_fits(w.mentions, b) for b in birds] for w in web]
    axes = ("body_color", "wing_pattern", "beak_shape", "crest")
    neighbours = [[d.id for d in birds if sum(getattr(b, a) != getattr(d, a) for a in axes) == 1] for b in birds]
    prompts = [str(base.data.template).format(n) for n in full.class_names]
    val = [(str(p), int(y)) for p, y in full.val.samples]
    pcfg = PretrainCfg(seed=int(base.trainer.seed))
    if pretrain_steps is not None:
        pcfg.max_steps, pcfg.eval_every = int(pretrain_steps), max(1, int(pretrain_steps) // 4)
    seconds: Dict[str, float] = {}
    t0 = time.time()
    ckpt = pretrain_teacher(str(base.teacher.arch), web, fits, val, prompts, base.cache_dir, pcfg, progress=progress,
                            neighbours=neighbours, skip_nonfinite=bool(base.trainer.skip_nonfinite_steps))
    seconds["teacher_pretrain"] = round(time.time() - t0, 1)
    over = [*overrides, f"teacher.pretrained={ckpt}"]
    pretrain = {"teacher": _pretrain_meta(ckpt)}
    if promptkd_student and base.promptkd.student_pretrained is None:
        # PromptKD starts from a pre-trained (smaller) CLIP image encoder: pre-train the student arch the same way
        t0 = time.time()
        sckpt = pretrain_teacher(str(base.promptkd.student_arch), web, fits, val, prompts, base.cache_dir, pcfg,
                                 progress=progress, neighbours=neighbours,
                                 skip_nonfinite=bool(base.trainer.skip_nonfinite_steps))
        seconds["promptkd_student_pretrain"] = round(time.time() - t0, 1)
        over.append(f"promptkd.student_pretrained={sckpt}")
        pretrain["promptkd_student"] = _pretrain_meta(sckpt)
    meta = json.loads((Path(full.root) / "classes.json").read_text())
    return DemoWorld(cfg=load_config(config_path, over), overrides=over, splits=full, classes=meta["classes"],
                     web_images=len(web), teacher_ckpt=ckpt, pretrain=pretrain, seconds=seconds)


def teacher_zero_shot(world: DemoWorld, teacher) -> Dict[str, Any]:
    """Hand-crafted-template zero-shot top-1 of ``teacher`` on val and test.

    Per split: ``all`` (among all classes), ``base`` (base-class images among base classes), ``novel`` (novel-class
    images among novel classes, the base-to-novel protocol) and, per attribute, how often the predicted class has
    the image's colour / wing pattern / beak shape.
    """
    import torch

    cfg, splits = world.cfg, world.splits
    anchors = handcrafted_anchors(teacher, splits.prompts())
    values = {a: [str(c["attributes"][a]) for c in world.classes] for a in ATTRIBUTES}
    attrs = {a: torch.tensor([v.index(x) for x in v]) for a, v in values.items()}  # class -> its value's id
    out: Dict[str, Any] = {}
    for split in ("val", "test"):
        feats, labels = extract_features(teacher, getattr(splits, split), Path(cfg.cache_dir) / "features",
                                         key_extra={"data": cfg.data.name, "split": split}, progress=False)
        pred = (feats @ anchors.t()).argmax(1)

        def acc(classes: Optional[List[int]]) -> float:
            if classes is None:
                return float((pred == labels).float().mean())
            cls = torch.tensor(classes)
            keep = torch.isin(labels, cls)
            p = cls[(feats[keep] @ anchors[cls].t()).argmax(1)]
            return float((p == labels[keep]).float().mean())

        out[split] = {"all": acc(None), "base": acc(splits.base_classes), "novel": acc(splits.novel_classes),
                      "attributes": {a: float((v[pred] == v[labels]).float().mean()) for a, v in attrs.items()}}
    return out
