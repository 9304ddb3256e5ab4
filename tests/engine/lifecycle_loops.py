"""Every training loop of pand at test size, each called through its public entry point (a uniquely named module,
imported by the run-lifecycle tests).

``LOOPS[name]`` = ``(module, loss attribute, runner)``: ``runner(tmp, skip)`` runs the loop on tiny data with
``trainer.skip_nonfinite_steps=skip`` and returns ``(skipped steps per epoch or evaluation, result tensors)``; the
loss attribute of the module is what a test poisons to inject a NaN (:func:`poisoned`).
"""
from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Callable, Dict, List, Tuple

import numpy as np
import torch

TINY = "configs/tiny.yaml"
#: shrinks tiny.yaml: 32-px images, 2 train + 1 test image per class (val from train), 1 NSD / 2 PSC epochs
SMALL = ["trainer.tensorboard=false", "trainer.num_workers=0", "data.synthetic.train_per_class=4",
         "data.synthetic.test_per_class=1", "data.synthetic.image_size=32", "student.image_size=32",
         "student.resize_size=36", "psc.epochs=2", "nsd.epochs=1", "nsd.batch_size=16"]


def _cfg(tmp: Path, skip: bool, *overrides: str):
    from pand.config import load_config

    return load_config(TINY, [*SMALL, f"cache_dir={tmp / 'cache'}", f"trainer.skip_nonfinite_steps={skip}",
                              *overrides])


def _records(path: Path, kind: str = "epoch") -> List[Dict[str, Any]]:
    lines = [json.loads(x) for x in path.read_text().splitlines() if x.strip()]
    return [r for r in lines if r.get("kind", kind) == kind]


def _tensors(path: Path) -> Dict[str, torch.Tensor]:
    from pand.utils.io import load_tensors

    return load_tensors(path)[0]


def run_nsd(tmp: Path, skip: bool):
    """Stage NSD (recipe ce: the student alone) on the synthetic benchmark."""
    from pand.nsd import fit
    from pand.train import build_run_splits

    cfg = _cfg(tmp, skip, "recipe=ce")
    res = fit(cfg, tmp / "nsd", build_run_splits(cfg))
    return [r["skipped_steps"] for r in _records(tmp / "nsd" / "metrics.jsonl")], res.student_state


def run_psc(tmp: Path, skip: bool):
    """Stage PSC (CoOp on the tiny random teacher's features)."""
    from pand.psc import run_psc

    cfg = _cfg(tmp, skip)
    artifact = run_psc(cfg, tmp / "run", progress=False)
    return [r["skipped_steps"] for r in _records(tmp / "run" / "psc" / "metrics.jsonl")], _tensors(artifact)


def run_promptkd(tmp: Path, skip: bool, teacher_prompts: str = "handcrafted", resume: bool = False):
    """PromptKD (the student; with ``teacher_prompts=promptsrc`` the PromptSRC teacher first)."""
    from pand.promptkd import run

    cfg = _cfg(tmp, skip, "recipe=promptkd", f"promptkd.teacher_prompts={teacher_prompts}", "promptkd.epochs=1",
               "promptkd.promptsrc.epochs=2", "promptkd.cross_eval=[]")
    summary = run(cfg, tmp / "run", resume=resume, progress=False)
    return [h["skipped_steps"] for h in summary["history"]], _tensors(tmp / "run" / "student.safetensors")


def run_promptsrc(tmp: Path, skip: bool, resume: bool = False):
    from pand.utils.io import load_tensors

    run_promptkd(tmp, skip, "promptsrc", resume=resume)
    prompts, meta = load_tensors(tmp / "run" / "promptkd" / "promptsrc_teacher.safetensors")
    return [h["skipped_steps"] for h in meta["history"]], prompts


def web_pool(root: Path, classes: int = 3, per_class: int = 4, size: int = 32, seed: int = 0):
    """A captioned toy web pool: noisy solid-colour images, caption ``a <colour> bird`` (true of its own class only).

    Returns:
        ``(web samples, fits [N][C], val [(path, label)], prompts [C])``.
    """
    from PIL import Image

    from pand.data.synthetic.dataset import WebSample

    rng = np.random.default_rng(seed)
    colours = ["red", "green", "blue", "yellow"][:classes]
    rgb = rng.integers(0, 255, size=(classes, 3))
    root.mkdir(parents=True, exist_ok=True)

    def image(name: str, c: int) -> str:
        arr = np.clip(rgb[c] + rng.normal(0, 20, size=(size, size, 3)), 0, 255).astype(np.uint8)
        path = root / f"{name}.png"
        Image.fromarray(arr, "RGB").save(path)
        return str(path)

    web = [WebSample(image(f"web{c}_{k}", c), c, f"a {colours[c]} bird", {"body_color": colours[c]})
           for c in range(classes) for k in range(per_class)]
    fits = [[w.label == c for c in range(classes)] for w in web]
    val = [(image(f"val{c}_{k}", c), c) for c in range(classes) for k in range(2)]
    return web, fits, val, [f"a photo of a {c} bird." for c in colours]


def pretrain_cfg():
    from pand.demo.teacher_pretrain import PretrainCfg

    return PretrainCfg(max_steps=6, batch_size=6, eval_every=2, warmup_steps=2, patience=4, hard_fraction=0.0)


def run_demo_teacher(tmp: Path, skip: bool):
    """The demo teacher's contrastive pre-training (``pand-tiny-vit``, 6 steps, an evaluation every 2)."""
    from pand.demo.teacher_pretrain import pretrain_teacher

    web, fits, val, prompts = web_pool(tmp / "web")
    ckpt = pretrain_teacher("pand-tiny-vit", web, fits, val, prompts, tmp / "cache", pretrain_cfg(), progress=False,
                            skip_nonfinite=skip)
    curve = json.loads((ckpt.parent / "meta.json").read_text())["curve"]
    return [c.get("skipped_steps", 0) for c in curve], _tensors(ckpt)


#: 7 benchmark colours leave one: 24 upstream classes at 32 px, 2 + 1 images each, batch 16: 3 steps per epoch
UPSTREAM_BENCH = {"num_body_colors": 7, "image_size": 32}


def upstream_cfg(epochs: int = 1):
    from pand.demo.upstream import UpstreamCfg

    return UpstreamCfg(train_per_class=2, val_per_class=1, epochs=epochs, batch_size=16)


def run_upstream(tmp: Path, skip: bool, epochs: int = 1):
    """The demo student's upstream pre-training (resnet18, cross-entropy)."""
    from pand.demo.upstream import pretrain_upstream_student

    res = pretrain_upstream_student("resnet18", UPSTREAM_BENCH, tmp / "cache", upstream_cfg(epochs), progress=False,
                                    skip_nonfinite=skip)
    curve = json.loads((res.weights_path.parent / "meta.json").read_text())["curve"]
    return [c.get("skipped_steps", 0) for c in curve], _tensors(res.weights_path)


#: name -> (module whose attribute computes the loss, that attribute, runner)
LOOPS: Dict[str, Tuple[str, str, Callable]] = {
    "nsd": ("pand.nsd.engine", "NSDCriterion.__call__", run_nsd),
    "psc": ("pand.psc.loop", "coop_logits", run_psc),
    "promptkd": ("pand.promptkd.train", "promptkd_kd_loss", run_promptkd),
    "promptsrc": ("pand.promptkd.promptsrc", "promptsrc_losses", run_promptsrc),
    "demo_teacher": ("pand.demo.teacher_pretrain", "clip_contrastive_loss", run_demo_teacher),
    "upstream": ("torch.nn.functional", "cross_entropy", run_upstream),
}


def poisoned(fn: Callable, at: int, counter: SimpleNamespace, effect: str = "nan") -> Callable:
    """``fn`` whose ``at``-th call (0-based; counted in ``counter.n``) returns NaN (``effect="nan"``: the result, or
    every tensor of a tuple/dict result, times NaN) or raises KeyboardInterrupt (``effect="interrupt"``)."""

    def nan(x):
        if isinstance(x, torch.Tensor):
            return x * float("nan")
        if isinstance(x, dict):
            return {k: nan(v) for k, v in x.items()}
        if isinstance(x, tuple):
            return tuple(nan(v) for v in x)
        return x

    def wrapped(*args, **kwargs):
        i = counter.n
        counter.n += 1
        if i == at and effect == "interrupt":
            raise KeyboardInterrupt
        out = fn(*args, **kwargs)
        return nan(out) if i == at else out

    return wrapped
