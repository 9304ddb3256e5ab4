"""Issue 15 item 6: the teacher-cache build decodes each image once for all its views, and
``nsd.teacher_cache.views=auto`` picks the cache only when it is projected to pay off."""
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

import pand.data.base as data_base
from pand.data import FGVCDataset
from pand.data.transforms import create_transform
from pand_runtime.preprocess_spec import PreprocessSpec
from pand.nsd import LiveTeacher
from pand.nsd import teacher_cache as tc
from pand.nsd.teacher_cache import build as cache_build
from pand.engine.loaders import IndexedDataset

NUM_CLASSES = 4


def _png_dataset(root: Path, per_class: int, transform) -> FGVCDataset:
    rng = np.random.default_rng(0)
    root.mkdir(parents=True, exist_ok=True)
    samples = []
    for c in range(NUM_CLASSES):
        for k in range(per_class):
            img = rng.integers(0, 256, size=(20, 24, 3), dtype=np.uint8)
            path = root / f"c{c}_{k}.png"
            Image.fromarray(img).save(path)
            samples.append((str(path), c))
    return FGVCDataset(samples, [f"class{c}" for c in range(NUM_CLASSES)], transform=transform, name="png-train")


@pytest.fixture
def train(tmp_path, toy):
    pp = PreprocessSpec(image_size=12, resize_size=14, interpolation="bilinear", mean=toy.mean, std=toy.std)
    return _png_dataset(tmp_path / "img", 4, create_transform(pp, True, "standard", (0.3, 1.0)))  # 16 images


# -- decode once per image -------------------------------------------------------------------------------------
def test_build_decodes_each_image_once_and_stores_the_same_features(toy, train, tmp_path, monkeypatch):
    decoded = []
    read_rgb = data_base.read_rgb
    monkeypatch.setattr(data_base, "read_rgb", lambda path: decoded.append(path) or read_rgb(path))
    live = LiveTeacher(toy.FakeTeacher(image_size=16), toy.mean, toy.std)
    views = 3
    root = tc.build_teacher_cache(live, train, tmp_path / "new", seed=0, views=views, dtype="fp32", batch_size=5,
                                  progress=False)
    assert sorted(decoded) == sorted(p for p, _ in train.samples)  # 16 decodes for 48 views (batches of 5 straddle)
    new = tc.TeacherFeatureCache(root)

    decoded.clear()
    monkeypatch.setattr(cache_build, "_decode_once", lambda d: d)  # the former path: every view decodes its image again
    old = tc.TeacherFeatureCache(tc.build_teacher_cache(live, train, tmp_path / "old", seed=0, views=views,
                                                        dtype="fp32", batch_size=5, progress=False))
    assert len(decoded) == views * len(train)
    idx = list(range(len(train)))
    for v in range(views):
        assert torch.equal(new.lookup(idx, v), old.lookup(idx, v))
        # and the pixels the training loader makes for (i, v) are the ones the cache encoded
        ds = IndexedDataset(train, 0)
        images = torch.stack([ds[(i, v)][0] for i in idx])
        assert torch.equal(new.lookup(idx, v), live.features(images, torch.tensor(idx)))


def test_datasets_with_their_own_getitem_are_not_wrapped(toy, train):
    class Custom(FGVCDataset):
        def __getitem__(self, index):
            return super().__getitem__(index)

    custom = Custom(train.samples, train.class_names, transform=train.transform)
    assert cache_build._decode_once(custom) is custom
    plain = toy.make_splits().train  # a torch Dataset without load_image: returned as is
    assert cache_build._decode_once(plain) is plain
    assert isinstance(cache_build._decode_once(train), cache_build._DecodeOnce)


# -- views=auto: the projection (pure) -------------------------------------------------------------------------
def _project(**kw):
    from pand.nsd.teacher_cache_auto import project_teacher_cache

    args = dict(teacher_s=1.0, student_s=0.1, data_s=0.01, lookup_s=0.001, batch=32, images=320, steps_per_epoch=10,
                epochs=30, views=8)
    return project_teacher_cache(**{**args, **kw})


def test_projection_picks_the_cache_for_a_heavy_teacher_and_live_for_a_light_one():
    heavy = _project()  # teacher 10x the student step: live 30*10*1.11 s, cache 80 batches*1.01 s + 30*10*0.111 s
    assert heavy["use_cache"] and heavy["live_s"] == pytest.approx(333.0)
    assert heavy["build_s"] == pytest.approx(80 * 1.01) and heavy["cached_s"] == pytest.approx(80.8 + 33.3)
    assert heavy["speedup"] == pytest.approx(333.0 / 114.1) and "faster" in heavy["reason"]
    light = _project(teacher_s=0.01)  # a teacher 10x cheaper than the student step: saves ~3%, under 10%
    assert not light["use_cache"] and 0 < light["saving"] < 0.10 and "only" in light["reason"]
    tiny = _project(teacher_s=0.001, epochs=8)  # the build is never repaid
    assert not tiny["use_cache"] and tiny["saving"] < 0 and "slower" in tiny["reason"]


def test_projection_edge_cases():
    # V = E: the build is as much teacher work as live training, so the cache can never win
    assert not _project(epochs=8, views=8)["use_cache"]
    # an already built cache costs no build: lookups instead of teacher forwards pay off at once
    built = _project(teacher_s=0.05, epochs=2, views=2, cache_built=True)
    assert built["build_s"] == 0 and built["use_cache"]
    assert not _project(teacher_s=0.05, epochs=2, views=2)["use_cache"]
    # DataLoader workers overlap loading with compute: a data-bound run gains nothing from the cache
    data_bound = _project(teacher_s=0.05, data_s=2.0, workers=4)
    assert data_bound["live_s"] == pytest.approx(30 * 10 * 0.5) and not data_bound["use_cache"]
    # the 10% threshold: cached <= 0.9 * live
    edge = _project(min_gain=0.0)
    assert edge["use_cache"] and not _project(min_gain=0.99)["use_cache"]


# -- views=auto in fit -----------------------------------------------------------------------------------------
@pytest.fixture
def splits(tmp_path, toy, train):
    pp = PreprocessSpec(image_size=12, resize_size=14, interpolation="bilinear", mean=toy.mean, std=toy.std)
    ev = create_transform(pp, False)
    return SimpleNamespace(train=train, val=_png_dataset(tmp_path / "val", 2, ev),
                           test=_png_dataset(tmp_path / "test", 2, ev),
                           class_names=[f"class{c}" for c in range(NUM_CLASSES)])


def _fit(toy, splits, tmp_path, run, *overrides, resume=False, step_hook=None):
    from pand.nsd import fit

    cfg = toy.make_cfg("recipe=pand", "nsd.epochs=3", f"cache_dir={tmp_path / 'cache'}", *overrides)
    teacher = toy.FakeTeacher(image_size=16)
    res = fit(cfg, tmp_path / run, splits, LiveTeacher(teacher, toy.mean, toy.std), toy.make_anchors(), resume=resume,
              step_hook=step_hook)
    return res, teacher


def _same_weights(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_auto_measures_and_a_light_teacher_stays_live_on_the_same_trajectory(toy, splits, tmp_path, capsys):
    import json

    from pand.nsd.metrics import read_metrics

    auto, teacher = _fit(toy, splits, tmp_path, "auto", "nsd.teacher_cache.views=auto")
    choice = auto.teacher_cache
    # V = min(8, 3 epochs) = 3 = E: the build alone is as much teacher work as live training, so live it is
    assert choice["requested"] == "auto" and choice["mode"] == "live" and choice["views"] == 0
    assert choice["candidate_views"] == 3 and ("slower" in choice["reason"] or "only" in choice["reason"])
    m = choice["measured"]
    assert m["batch"] == 8 and all(m[k] > 0 for k in ("teacher_s", "student_s", "data_s", "lookup_s"))
    assert choice["projected"]["cached_s"] > 0.9 * choice["projected"]["live_s"]
    assert "nsd.teacher_cache.views=auto: live teacher" in capsys.readouterr().out
    assert json.loads((tmp_path / "auto" / "teacher_cache_choice.json").read_text())["mode"] == "live"
    recs = [r for r in read_metrics(tmp_path / "auto" / "metrics.jsonl") if r["kind"] == "teacher_cache"]
    assert len(recs) == 1 and recs[0]["reason"] == choice["reason"]
    assert not (tmp_path / "cache" / tc.CACHE_SUBDIR).exists()
    # measuring (a throw-away student, teacher forwards, RNG restored) does not change the seeded run
    live, _ = _fit(toy, splits, tmp_path, "live", "nsd.teacher_cache.views=0")
    assert live.teacher_cache == {"requested": 0, "views": 0, "mode": "live"}
    assert _same_weights(auto.student_state, live.student_state) and auto.test_top1 == live.test_top1
    assert not (tmp_path / "live" / "teacher_cache_choice.json").exists()


def test_auto_with_a_heavy_teacher_builds_the_cache_and_a_resume_reuses_the_choice(toy, splits, tmp_path,
                                                                                   monkeypatch):
    from pand.nsd import teacher_cache_auto as auto_mod

    heavy = dict(teacher_s=1.0, student_s=0.05, data_s=0.01, lookup_s=1e-4, batch=8)
    monkeypatch.setattr(auto_mod, "measure_step_costs", lambda *a, **k: dict(heavy))

    class Stop(Exception):
        pass

    def stop(epoch, step):
        if epoch == 4 and step == 1:
            raise Stop

    with pytest.raises(Stop):  # killed mid-epoch 4, after the cache was built and the choice recorded
        _fit(toy, splits, tmp_path, "auto", "nsd.teacher_cache.views=auto", "nsd.epochs=10", step_hook=stop)
    assert (tmp_path / "auto" / auto_mod.CHOICE_FILE).is_file()

    def refuse(*a, **k):
        raise AssertionError("a resumed run must reuse the recorded choice, not measure again")

    monkeypatch.setattr(auto_mod, "measure_step_costs", refuse)
    res, teacher = _fit(toy, splits, tmp_path, "auto", "nsd.teacher_cache.views=auto", "nsd.epochs=10", resume=True)
    # E = 10 epochs, V = min(8, 10) = 8 views, chosen by the interrupted run and reused
    assert res.teacher_cache["mode"] == "cached" and res.teacher_cache["views"] == 8 and res.teacher_cache["reused"]
    assert teacher.seen == []  # the cache the interrupted run built
    explicit, again = _fit(toy, splits, tmp_path, "explicit", "nsd.teacher_cache.views=8", "nsd.epochs=10")
    assert again.seen == []  # the same cache entry: auto's cache is the explicit views=8 cache
    assert explicit.teacher_cache == {"requested": 8, "views": 8, "mode": "cached"}
    # killed + resumed under auto == an uninterrupted run with views=8
    assert _same_weights(res.student_state, explicit.student_state) and res.test_top1 == explicit.test_top1


# -- end to end on the tiny config -----------------------------------------------------------------------------
def test_pand_train_tiny_with_views_auto_records_its_choice_and_an_int_behaves_as_before(tmp_path):
    import json

    from pand.config import config_dir, load_config
    from pand.train import run
    from pand.utils.io import load_tensors

    small = [f"cache_dir={tmp_path / 'cache'}", "trainer.tensorboard=false", "data.synthetic.train_per_class=4",
             "data.synthetic.test_per_class=2", "data.synthetic.image_size=32", "student.image_size=32",
             "student.resize_size=36", "recipe=vl2lite", "nsd.epochs=2", "nsd.batch_size=16"]
    tiny = config_dir() / "tiny.yaml"
    summaries = {}
    for views in ("auto", 0, 2):
        run(load_config(tiny, [*small, f"nsd.teacher_cache.views={views}"]), tmp_path / f"run-{views}")
        summaries[views] = json.loads((tmp_path / f"run-{views}" / "summary.json").read_text())
    choice = summaries["auto"]["teacher_cache"]
    # 2 epochs: a min(8, 2) = 2-view cache costs as many teacher forwards as live training, never repaid
    assert choice["requested"] == "auto" and choice["mode"] == "live" and choice["views"] == 0
    assert choice["candidate_views"] == 2 and choice["reason"] and choice["measured"]["teacher_s"] > 0
    assert (tmp_path / "run-auto" / "nsd" / "teacher_cache_choice.json").is_file()
    # the measurement leaves the seeded run as it is: the same student as views=0
    a, _ = load_tensors(tmp_path / "run-auto" / "student.safetensors")
    b, _ = load_tensors(tmp_path / "run-0" / "student.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    # an explicit int: no measurement, no choice file, the cache built with those views
    assert summaries[0]["teacher_cache"] == {"requested": 0, "views": 0, "mode": "live"}
    assert summaries[2]["teacher_cache"] == {"requested": 2, "views": 2, "mode": "cached"}
    assert not (tmp_path / "run-2" / "nsd" / "teacher_cache_choice.json").exists()
    manifests = list((tmp_path / "cache" / tc.CACHE_SUBDIR).glob("*/manifest.json"))
    assert len(manifests) == 1 and json.loads(manifests[0].read_text())["views"] == 2


_DDP_AUTO = """
import os, sys, torch.distributed as td
sys.path.insert(0, {tests!r})
from conftest import FakeTeacher, make_cfg, STUDENT_MEAN, STUDENT_STD
from pand.data import FGVCDataset
from pand.nsd import LiveTeacher
from pand.nsd import teacher_cache_auto as auto
from pand.utils.distributed import DistInfo

rank = int(os.environ["RANK"])
td.init_process_group("gloo", rank=rank, world_size=2)
# rank 0 measures a heavy teacher; were rank 1 to measure, it would see a light one and choose live
teacher_s = 1.0 if rank == 0 else 1e-4
auto.measure_step_costs = lambda *a, **k: dict(teacher_s=teacher_s, student_s=0.05, data_s=0.01, lookup_s=1e-4,
                                               batch=4)
ds = FGVCDataset([(p, 0) for p in {paths!r}], ["a"])
cfg = make_cfg("nsd.teacher_cache.views=auto", "nsd.epochs=10", "cache_dir=" + {cache!r})
views, choice = auto.resolve_views(cfg, LiveTeacher(FakeTeacher(), STUDENT_MEAN, STUDENT_STD), ds,
                                   DistInfo(rank=rank, world_size=2, local_rank=rank), num_classes=1)
print("RESULT", rank, views, choice["mode"], flush=True)
td.destroy_process_group()
"""


@pytest.mark.slow
@pytest.mark.ddp
def test_every_rank_follows_rank_0s_auto_choice(train, tmp_path):
    import os
    import subprocess
    import sys

    repo = Path(__file__).resolve().parents[2]
    script = tmp_path / "ddp_auto.py"
    script.write_text(_DDP_AUTO.format(tests=str(repo / "tests" / "nsd"), paths=[p for p, _ in train.samples],
                                       cache=str(tmp_path / "cache")))
    env = dict(os.environ, OMP_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="", MASTER_ADDR="127.0.0.1",
               MASTER_PORT=str(28500 + os.getpid() % 1000), WORLD_SIZE="2")
    procs = [subprocess.Popen([sys.executable, str(script)], cwd=repo, env=dict(env, RANK=str(r), LOCAL_RANK="0"),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for r in (0, 1)]
    outs = [p.communicate(timeout=120) for p in procs]
    for p, (_, err) in zip(procs, outs):
        assert p.returncode == 0, err[-2000:]
    res = [next(line.split() for line in out.splitlines() if line.startswith("RESULT")) for out, _ in outs]
    assert res == [["RESULT", "0", "8", "cached"], ["RESULT", "1", "8", "cached"]]
    assert "views=auto: cached teacher" in outs[0][0] and "views=auto" not in outs[1][0]  # printed once, by rank 0
