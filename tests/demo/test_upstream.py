"""The demo's upstream pre-training (pand.demo.upstream): disjoint classes, loadable backbone, cache reuse."""
from __future__ import annotations

import json
import os

import pytest
import torch

import pand.demo.upstream as upstream
import pand.models.students as students
from pand.config import load_config
from pand.data.synthetic import synthetic_classes
from pand.demo.upstream import UpstreamCfg, ensure_upstream, pretrain_upstream_student, upstream_classes
from pand.errors import ConfigError
from pand.models.students import create_student
from pand.utils.io import load_tensors

# 7 benchmark colours leave one (cyan): 1 x 4 x 3 x 2 = 24 upstream classes, 32 px, 2 + 1 images each, 1 epoch
TINY_BENCH = {"num_body_colors": 7, "image_size": 32}
TINY = UpstreamCfg(train_per_class=2, val_per_class=1, epochs=1, batch_size=16)
ARCH = "resnet18"


def _combo(b):
    return (b.body_color, b.wing_pattern, b.beak_shape, bool(b.crest))


@pytest.mark.parametrize("config", ["configs/demo.yaml", "configs/tiny.yaml"])
def test_upstream_classes_share_no_combination_with_the_benchmark(config):
    cfg = load_config(config).data.synthetic
    bench, up = synthetic_classes(cfg), upstream_classes(cfg)
    assert not {_combo(b) for b in bench} & {_combo(u) for u in up}
    assert not {b.body_color for b in bench} & {u.body_color for u in up}
    # every combination of the unused colours, once each, ids 0..C-1
    assert len({_combo(u) for u in up}) == len(up) == (8 - len({b.body_color for b in bench})) * 4 * 3 * 2
    assert [u.id for u in up] == list(range(len(up)))
    if config == "configs/demo.yaml":
        assert len(up) == 96
        assert {u.body_color for u in up} == {"purple", "orange", "pink", "cyan"}


def test_no_upstream_class_when_the_benchmark_uses_every_colour():
    with pytest.raises(ConfigError, match="num_body_colors"):
        upstream_classes({"num_body_colors": 8})


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    cache = tmp_path_factory.mktemp("cache")
    return cache, pretrain_upstream_student(ARCH, TINY_BENCH, cache, TINY, progress=False)


def test_weights_load_into_a_fresh_head_with_the_pretrained_backbone(tiny_run):
    _, res = tiny_run
    assert len(res.classes) == 24 and 0.0 <= res.val_top1 <= 1.0 and 0.0 <= res.train_top1 <= 1.0
    saved, _ = load_tensors(res.weights_path)
    assert saved and not [k for k in saved if k.startswith(("linear_cls.", "fc."))]  # no classifier head

    torch.manual_seed(123)
    loaded = create_student(ARCH, 24, weights=str(res.weights_path))
    torch.manual_seed(123)
    fresh = create_student(ARCH, 24)
    sd = loaded.backbone.state_dict()
    assert set(sd) == set(saved)
    assert all(torch.equal(sd[k], saved[k]) for k in saved)
    # pre-training changed the backbone, so equality above is the file's weights, not the random init
    assert not torch.equal(sd["conv1.weight"], fresh.backbone.state_dict()["conv1.weight"])
    # the head is the benchmark's, freshly initialised (the same draw as a student built without weights)
    assert loaded.linear_cls.weight.shape == (24, loaded.embed_dim)
    assert torch.equal(loaded.linear_cls.weight, fresh.linear_cls.weight)
    assert torch.equal(loaded.linear_cls.bias, fresh.linear_cls.bias)


def test_second_call_reuses_the_cache_without_training(tiny_run, monkeypatch):
    cache, first = tiny_run
    meta = first.weights_path.parent / "meta.json"
    stamps = (os.stat(meta).st_mtime_ns, os.stat(first.weights_path).st_mtime_ns)

    def boom(*a, **k):
        raise AssertionError("cache hit expected: nothing may be built, rendered or trained")

    monkeypatch.setattr(students, "create_student", boom)
    monkeypatch.setattr(upstream, "render_bird", boom)
    again = pretrain_upstream_student(ARCH, TINY_BENCH, cache, TINY, progress=False)
    assert again.cached and not first.cached
    assert again.weights_path == first.weights_path
    assert (again.val_top1, again.train_top1, again.seconds) == (first.val_top1, first.train_top1, first.seconds)
    assert (os.stat(meta).st_mtime_ns, os.stat(first.weights_path).st_mtime_ns) == stamps
    assert json.loads(meta.read_text())["val_top1"] == first.val_top1
    # the images are reused too, and no temporary folder was left behind
    root = ensure_upstream(cache, TINY_BENCH, TINY, progress=False)
    assert root.parent == cache / "upstream"
    assert not [p for p in (cache / "upstream").iterdir() if p.name.startswith(".")]
    assert len(list((root / "train").rglob("*.png"))) == 24 * 2 and len(list((root / "val").rglob("*.png"))) == 24


def test_other_settings_train_again(tiny_run, monkeypatch):
    cache, first = tiny_run
    calls = []
    real = students.create_student
    monkeypatch.setattr(students, "create_student", lambda *a, **k: calls.append(a) or real(*a, **k))
    other = pretrain_upstream_student(ARCH, TINY_BENCH, cache, UpstreamCfg(**{**TINY.__dict__, "seed": 1}),
                                      progress=False)
    assert calls == [(ARCH, 24)] and not other.cached and other.weights_path != first.weights_path


def test_upstream_images_are_a_pure_function_of_the_settings(tmp_path):
    a = ensure_upstream(tmp_path / "a", TINY_BENCH, TINY, progress=False)
    b = ensure_upstream(tmp_path / "b", TINY_BENCH, TINY, progress=False)
    c = ensure_upstream(tmp_path / "c", TINY_BENCH, UpstreamCfg(**{**TINY.__dict__, "seed": 1}), progress=False)
    files = sorted(p.relative_to(a) for p in a.rglob("*.png"))
    assert len(files) == 24 * 3 and files == sorted(p.relative_to(c) for p in c.rglob("*.png"))
    assert all((a / f).read_bytes() == (b / f).read_bytes() for f in files)
    assert all((a / f).read_bytes() != (c / f).read_bytes() for f in files)
