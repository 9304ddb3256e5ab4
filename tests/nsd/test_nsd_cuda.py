"""Stage NSD on CUDA: AMP (bf16; fp16 with a GradScaler), channels-last, pinned persistent workers,
``torch.compile`` and the teacher-feature cache on the GPU.

Skipped without a CUDA GPU, which is every CI run and the development machine: these tests were written against
the engine's CUDA paths but have NOT been executed yet. On a GPU machine: ``PAND_TEST_GPU=1 pytest -m gpu tests/nsd``
(the suite's conftest hides the GPU unless ``PAND_TEST_GPU=1``).
"""
import math

import pytest
import torch

from pand.nsd import LiveTeacher, NSDCriterion, build_models, fit
from pand.engine.checkpoint import load_last_checkpoint
from pand.engine.loaders import IndexedDataset
from pand.nsd.teacher_cache import CachedTeacher, build_teacher_cache

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (run with PAND_TEST_GPU=1)"),
]

NUM_CLASSES = 4
GPU = ["trainer.accelerator=cuda", "trainer.channels_last=true"]


def _tiny_clip(precision: str = "amp"):
    """The project's tiny open_clip ViT (random init) on the GPU: a real teacher with a real autocast path."""
    from pand.models.teacher import create_teacher

    return create_teacher({"arch": "pand-tiny-vit", "pretrained": None, "seed": 0, "precision": precision}, "cuda")


def _cuda_fake(toy, **kw):
    """The conftest's batch-independent fake teacher, computing on the GPU (``device`` tells the cache builder)."""
    t = toy.FakeTeacher(image_size=16, **kw)
    t.proj, t.device = t.proj.cuda(), torch.device("cuda")
    return t


def test_build_models_puts_the_student_in_channels_last_on_cuda(toy):
    cfg = toy.make_cfg("recipe=pand", *GPU)
    model = build_models(cfg.student, cfg.recipe, NUM_CLASSES, 8, torch.device("cuda"), cfg.trainer.channels_last)
    convs = [m for m in model.student.modules() if isinstance(m, torch.nn.Conv2d)]
    assert convs and all(c.weight.is_cuda and c.weight.is_contiguous(memory_format=torch.channels_last)
                         for c in convs)
    off_cfg = toy.make_cfg("recipe=pand", "trainer.accelerator=cuda", "trainer.channels_last=false")
    off = build_models(off_cfg.student, off_cfg.recipe, NUM_CLASSES, 8, torch.device("cuda"),
                       off_cfg.trainer.channels_last)
    assert not next(m for m in off.student.modules() if isinstance(m, torch.nn.Conv2d)).weight.is_contiguous(
        memory_format=torch.channels_last)


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_fit_on_cuda_with_amp_channels_last_and_pinned_persistent_workers(toy, tmp_path, precision):
    teacher = _tiny_clip("amp")
    anchors = toy.make_anchors(NUM_CLASSES, teacher.embed_dim)
    cfg = toy.make_cfg("recipe=pand", "nsd.epochs=2", *GPU, f"trainer.precision={precision}",
                       "trainer.num_workers=2", "trainer.pin_memory=true", "trainer.persistent_workers=true")
    source = LiveTeacher(teacher, toy.mean, toy.std, channels_last=True)
    res = fit(cfg, tmp_path / precision, toy.make_splits(), source, anchors)
    assert res.test_top1 is not None and all(math.isfinite(v) for v in res.final_terms.values())
    assert all(v.device.type == "cpu" for v in res.student_state.values())  # checkpoints hold CPU tensors
    assert [r["epoch"] for r in toy.epochs(tmp_path / precision)] == [0, 1]
    _, _, state, _ = load_last_checkpoint(tmp_path / precision / "checkpoints")
    # fp16 needs loss scaling; bf16 has fp32's exponent range and runs without a scaler
    assert bool(state["scaler"]) is (precision == "fp16")


def test_cached_and_live_losses_match_on_cuda(toy, tmp_path):
    """The cache built on the GPU returns GPU tensors equal (up to cuBLAS batch-shape rounding) to the live teacher's
    features of the same view, and the loss terms agree."""
    splits = toy.make_splits()
    live = LiveTeacher(_cuda_fake(toy), toy.mean, toy.std)
    cached = CachedTeacher(build_teacher_cache(live, _with_samples(splits.train), tmp_path / "cache", seed=0,
                                               views=2, dtype="fp32", batch_size=5, progress=False))
    cfg = toy.make_cfg("recipe=pand", *GPU)
    model = build_models(cfg.student, cfg.recipe, NUM_CLASSES, live.embed_dim, torch.device("cuda"),
                         cfg.trainer.channels_last).eval()
    crit = NSDCriterion.from_config(cfg.nsd, cfg.recipe)
    anchors = toy.make_anchors().cuda()
    ds = IndexedDataset(splits.train, 0)
    idx = torch.tensor([3, 0, 7, 12, 5, 9])
    views = cached.views(1, len(ds))
    batch = [ds[(int(i), int(views[i]))] for i in idx]
    images = torch.stack([x for x, _, _ in batch]).cuda()
    labels = torch.tensor([y for _, y, _ in batch]).cuda()
    cached.set_epoch(1)
    f_cached, f_live = cached.features(images, idx), live.features(images, idx)
    assert f_cached.is_cuda and f_cached.dtype == torch.float32
    assert torch.allclose(f_cached, f_live, rtol=0, atol=1e-5)
    with torch.no_grad():
        _, t_c, _ = crit(model(images, f_cached, anchors), labels, f_cached, anchors, 1)
        _, t_l, _ = crit(model(images, f_live, anchors), labels, f_live, anchors, 1)
    for name in t_c:
        assert torch.allclose(t_c[name], t_l[name], rtol=1e-4, atol=1e-5), name


def _with_samples(ds):
    """The toy dataset with the ``samples`` list the cache key needs (in-memory images: their index stands in)."""
    ds.samples = [(f"toy-{i}", int(y)) for i, (_, y) in enumerate(ds.items)]
    ds.name = "toy-train"
    return ds


def test_compiled_student_trains_on_cuda(toy, tmp_path):
    teacher = _tiny_clip("fp32")
    anchors = toy.make_anchors(NUM_CLASSES, teacher.embed_dim)
    cfg = toy.make_cfg("recipe=pand", "nsd.epochs=1", *GPU, "trainer.precision=bf16", "trainer.compile=true")
    res = fit(cfg, tmp_path / "compiled", toy.make_splits(), LiveTeacher(teacher, toy.mean, toy.std), anchors)
    assert res.test_top1 is not None and all(math.isfinite(v) for v in res.final_terms.values())
    # the checkpointed weights are the raw module's (no torch.compile "_orig_mod." prefix)
    assert not any("_orig_mod" in k for k in res.student_state)
