"""The synthetic FGVC benchmark: determinism, balance, captions, class order, caching, ImageFolder round trip."""
from __future__ import annotations

import colorsys
import hashlib
import itertools
import json
import math
import os
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from omegaconf import OmegaConf

from pand.config import ConfigError
from pand.config.schema import DataCfg, SyntheticCfg
from pand.data import build_splits, generate_synthetic
from pand.data.synthetic import (
    BODY_COLORS,
    BirdClass,
    caption_fits,
    class_order,
    load_web_pool,
    main,
    render_bird,
    synthetic_classes,
    synthetic_hash,
    web_caption,
)
from pand.errors import DataError

SMALL = {"train_per_class": 3, "test_per_class": 2, "image_size": 32, "num_body_colors": 2, "num_wing_patterns": 2,
         "num_beak_shapes": 2}


def _files(root: Path):
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def test_same_seed_same_bytes_other_seed_differs(tmp_path):
    a = generate_synthetic(tmp_path / "a", SMALL, progress=False)
    b = generate_synthetic(tmp_path / "b", SMALL, progress=False)
    c = generate_synthetic(tmp_path / "c", {**SMALL, "seed": 1}, progress=False)
    files = _files(a)
    assert files == _files(b) == _files(c)
    pngs = [f for f in files if f.endswith(".png")]
    assert len(pngs) == 8 * 5
    assert all((a / f).read_bytes() == (b / f).read_bytes() for f in files)
    assert all((a / f).read_bytes() != (c / f).read_bytes() for f in pngs)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp folders left behind


def test_render_is_a_pure_function_of_the_rng():
    cls = synthetic_classes()[5]
    x = render_bird(cls, np.random.default_rng([0, 0, 5, 1]), 48)
    y = render_bird(cls, np.random.default_rng([0, 0, 5, 1]), 48)
    z = render_bird(cls, np.random.default_rng([0, 0, 5, 2]), 48)
    assert x.shape == (48, 48, 3) and x.dtype == np.uint8
    assert np.array_equal(x, y) and not np.array_equal(x, z)


def test_default_classes_fine_grained_and_named():
    classes = synthetic_classes(SyntheticCfg())
    assert len(classes) == 24 and len({c.name for c in classes}) == 24
    assert [c.id for c in classes] == list(range(24))
    assert not any(c.crest for c in classes)  # num_crests=1: the crest is absent
    attrs = [(c.body_color, c.wing_pattern, c.beak_shape, c.crest) for c in classes]
    for a in attrs:  # every class has a neighbour that differs in exactly one attribute
        assert any(sum(u != v for u, v in zip(a, b)) == 1 for b in attrs)
    c = BirdClass(0, "red", "striped", "hooked", True)
    assert c.name == "red crested striped hooked-beak bird" and c.dirname == "000.red_striped_hooked_crested"


@pytest.mark.parametrize("sizes", [(4, 3, 2, 1), (4, 3, 2, 2), (8, 4, 3, 2), (2, 2, 2, 1), (6, 3, 2, 1), (3, 3, 1, 1)])
def test_base_half_covers_every_attribute_value_and_keeps_twins_together(sizes):
    order = class_order(sizes)
    assert sorted(order) == sorted(itertools.product(*[range(s) for s in sizes]))
    base = order[: math.ceil(len(order) / 2)]
    for axis, n in enumerate(sizes):
        counts = Counter(t[axis] for t in base)
        assert set(counts) == set(range(n))
    for axis in (0, 1):  # colours and wing patterns stay balanced over the base half's colour/wing pairs
        counts = Counter(t[axis] for t in {t[:2] for t in base})
        assert max(counts.values()) - min(counts.values()) <= 2
    groups = sizes[0] * sizes[1]
    if groups % 2 == 0:  # the base half is whole twin groups: a base colour/wing pair comes with every beak/crest
        inner = set(itertools.product(range(sizes[2]), range(sizes[3])))
        base_pairs = {t[:2] for t in base}
        assert len(base_pairs) == groups // 2
        for pair in base_pairs:
            assert {t[2:] for t in base if t[:2] == pair} == inner
        assert not base_pairs & {t[:2] for t in order[len(base):]}  # novel classes are new colour/wing pairs


def test_written_benchmark_layout_balance_and_captions(tmp_path):
    cfg = {**SMALL, "num_crests": 2, "val_per_class": 1}
    root = generate_synthetic(tmp_path / "bench", cfg, progress=False)
    meta = json.loads((root / "classes.json").read_text())
    caps = json.loads((root / "captions.json").read_text())
    assert len(meta["class_names"]) == 16 and meta["hash"] == synthetic_hash(cfg)
    assert meta["base_classes"] == list(range(8)) and meta["novel_classes"] == list(range(8, 16))
    base_attrs = {k: {json.dumps(c["attributes"][k]) for c in meta["classes"][:8]} for k in meta["attributes"]}
    assert base_attrs == {k: {json.dumps(v) for v in vals} for k, vals in meta["attributes"].items()}
    for split, n in (("train", 3), ("val", 1), ("test", 2)):
        for c in meta["classes"]:
            files = sorted((root / split / c["dir"]).glob("*.png"))
            assert len(files) == n
            for f in files:
                cap = caps[str(f.relative_to(root))]
                a = c["attributes"]
                assert a["body_color"] in cap and a["wing_pattern"] in cap and a["beak_shape"] in cap
                assert ("crest" in cap) == a["crest"]
    assert len(caps) == 16 * 6 and len(set(caps.values())) > 16  # several phrasings


def test_clutter_never_uses_a_body_colour():
    # the saturated pixels of an image are the bird's own hue (body and wing), never background clutter
    hues = {name: colorsys.rgb_to_hsv(*[v / 255 for v in rgb])[0] for name, rgb in BODY_COLORS}
    for cls in synthetic_classes({"num_body_colors": 8, "num_wing_patterns": 4, "num_beak_shapes": 3})[:32]:
        img = render_bird(cls, np.random.default_rng(cls.id), 64, clutter=12, noise_std=0.0).reshape(-1, 3) / 255.0
        hsv = np.array([colorsys.rgb_to_hsv(*p) for p in img])
        sat = hsv[(hsv[:, 1] > 0.4) & (hsv[:, 2] > 0.3)]  # clutter has saturation <= 0.22
        assert len(sat) > 40  # the bird is visible
        dist = {n: np.minimum(abs(sat[:, 0] - h), 1 - abs(sat[:, 0] - h)) for n, h in hues.items()}
        nearest = np.array(list(dist))[np.argmin(np.stack(list(dist.values())), axis=0)]
        assert np.mean(nearest == cls.body_color) > 0.9, cls.name


def test_build_splits_generates_once_in_cache(tmp_path):
    cfg = OmegaConf.structured(DataCfg(name="synthetic", val_fraction=0.34, synthetic=SyntheticCfg(**SMALL)))
    s = build_splits(cfg, cache_dir=tmp_path / "cache")
    root = tmp_path / "cache" / "synthetic" / synthetic_hash(cfg.synthetic)
    assert s.root == root
    stamp = os.stat(root / "classes.json").st_mtime_ns
    s2 = build_splits(cfg, cache_dir=tmp_path / "cache")
    assert os.stat(root / "classes.json").st_mtime_ns == stamp and s2.train.samples == s.train.samples
    assert (len(s.train), len(s.val), len(s.test)) == (16, 8, 16)
    assert s.class_names[0] == synthetic_classes(SMALL)[0].name
    assert (s.base_classes, s.novel_classes) == (list(range(4)), list(range(4, 8)))
    for p, _ in s.train.samples + s.val.samples + s.test.samples:
        assert os.path.isabs(p) and s.captions[p].endswith(".")
    img, y = s.test[0]
    assert img.size == (32, 32) and y == 0


def test_read_back_with_root_and_official_val(tmp_path):
    root = generate_synthetic(tmp_path / "bench", {**SMALL, "val_per_class": 2}, progress=False)
    s = build_splits(OmegaConf.structured(DataCfg(name="synthetic", root=str(root))))
    assert s.class_names == json.loads((root / "classes.json").read_text())["class_names"]
    assert (len(s.train), len(s.val), len(s.test)) == (24, 16, 16)  # val_per_class written -> official val
    plain = build_splits(OmegaConf.structured(DataCfg(name="imagefolder", root=str(root))))
    assert plain.class_names == s.class_names and plain.captions is None  # classes.json names, no captions


def test_generate_refuses_foreign_folder(tmp_path):
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "keep.txt").write_text("mine")
    with pytest.raises(DataError, match="already exists and holds something else"):
        generate_synthetic(tmp_path / "x", SMALL, progress=False)
    generate_synthetic(tmp_path / "x", SMALL, overwrite=True, progress=False)
    assert not (tmp_path / "x" / "keep.txt").exists() and (tmp_path / "x" / "classes.json").is_file()
    with pytest.raises(DataError, match="not a synthetic benchmark folder"):
        build_splits(OmegaConf.structured(DataCfg(name="synthetic", root=str(tmp_path))))


@pytest.mark.parametrize("bad,match", [
    ({"num_body_colors": 9}, "num_body_colors=9: must be in 1..8"),
    ({"num_body_colors": 4, "num_wing_patterns": 1, "num_beak_shapes": 1}, "cannot hold all 4 values"),
    ({"train_per_class": 0}, "train_per_class=0"),
])
def test_config_validation(bad, match):
    with pytest.raises(ConfigError, match=match):
        synthetic_classes({**SMALL, **bad})


def test_cli_writes_benchmark(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        main([str(tmp_path / "cli"), "--seed", "3", "--image-size", "24", "--train-per-class", "1",
              "--test-per-class", "1", "--num-body-colors", "2", "--num-wing-patterns", "2"])
    assert e.value.code == 0
    meta = json.loads((tmp_path / "cli" / "classes.json").read_text())
    assert meta["config"]["seed"] == 3 and len(meta["class_names"]) == 8
    assert "8 classes (base 4, novel 4)" in capsys.readouterr().out


def _pixels(root: Path, split: str):
    from PIL import Image

    return {hashlib.sha256(np.asarray(Image.open(p)).tobytes()).hexdigest(): p
            for p in sorted((root / split).rglob("*.png"))}


def test_web_pool_is_disjoint_from_the_students_images_and_captions_vary(tmp_path):
    cfg = {**SMALL, "val_per_class": 2, "web_per_class": 6}
    root = generate_synthetic(tmp_path / "bench", cfg, progress=False)
    web = load_web_pool(root)
    assert len(web) == 8 * 6 and {w.label for w in web} == set(range(8))  # every class, not only base ones
    web_px = _pixels(root, "web")
    assert len(web_px) == len(web)
    for split in ("train", "val", "test"):
        assert not set(web_px) & set(_pixels(root, split)), split  # no web image equals a student image
    classes = synthetic_classes(cfg)
    for w in web:
        assert caption_fits(w.mentions, classes[w.label])  # a caption is true of its own image
    assert len({w.caption for w in web}) > len(web) // 2  # varied phrasings
    assert any(len(w.mentions) < 3 for w in web)  # partial descriptions exist
    # the student's splits do not see the web pool
    s = build_splits(OmegaConf.structured(DataCfg(name="synthetic", root=str(root))))
    assert not {p for p, _ in s.train.samples + s.val.samples + s.test.samples} & {w.path for w in web}


def test_every_attribute_is_visible_at_the_students_resolution():
    # twins drawn from the same random stream differ only in one attribute: at 64 px that attribute must change
    # a clearly visible patch of pixels (not a few antialiased edge pixels)
    classes = synthetic_classes({"num_body_colors": 4, "num_wing_patterns": 3, "num_beak_shapes": 2})
    by = {(c.body_color, c.wing_pattern, c.beak_shape): c for c in classes}
    pairs = {"beak_shape": (by[("red", "plain", "hooked")], by[("red", "plain", "straight")]),
             "wing_pattern": (by[("red", "plain", "hooked")], by[("red", "striped", "hooked")]),
             "body_color": (by[("red", "plain", "hooked")], by[("blue", "plain", "hooked")])}
    for attr, (a, b) in pairs.items():
        changed = []
        for k in range(12):
            x = render_bird(a, np.random.default_rng([5, k]), 64, noise_std=0.0).astype(int)
            y = render_bird(b, np.random.default_rng([5, k]), 64, noise_std=0.0).astype(int)
            changed.append(int((np.abs(x - y).max(axis=2) > 40).sum()))
        assert min(changed) >= 12, (attr, changed)


def test_web_captions_mention_what_they_describe():
    cls = BirdClass(0, "red", "striped", "hooked", False)
    other = BirdClass(1, "red", "striped", "straight", False)
    for k in range(40):
        text, mentions = web_caption(cls, np.random.default_rng(k))
        assert text and set(mentions) <= {"body_color", "wing_pattern", "beak_shape", "crest"}
        assert caption_fits(mentions, other) == ("beak_shape" not in mentions)
