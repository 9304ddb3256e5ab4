"""Issue 20 items 7, 8, 10: 16-bit PNGs decode with the right scaling (training and runtime), symlink loops in a
class folder neither multiply images nor leak them across splits, data.skip_corrupt drops unreadable images."""
import json
import os
import shutil
import subprocess
import sys
import warnings

import numpy as np
import pytest
from PIL import Image

from pand.config.schema import DataCfg
from pand.data import build_splits


def _classes(root):
    return sorted(d.name for d in (root / "train").iterdir() if d.is_dir())


def _cfg(root, **kw):
    return DataCfg(name="imagefolder", root=str(root), **{"val_fraction": 0.2, **kw})


def _gradient16(path, seed=0):
    a = (np.random.default_rng(seed).integers(0, 65536, (5, 6))).astype(np.uint16)
    a[0, 0], a[0, 1] = 0, 65535
    Image.fromarray(a).save(path)  # a 16-bit greyscale PNG: PIL mode I;16
    return a


def test_16bit_png_is_scaled_not_white_in_training_and_runtime(imagefolder_root):
    from pand_runtime.preprocess import load_image

    root, _ = imagefolder_root
    path = root / "train" / _classes(root)[0] / "img_16bit.png"
    a = _gradient16(path)
    assert Image.open(path).mode == "I;16"
    want = np.round(a / 257).astype(np.uint8)
    s = build_splits(_cfg(root))
    ds = next(d for d in (s.train, s.val) if str(path) in [p for p, _ in d.samples])
    got = np.asarray(ds.load_image([p for p, _ in ds.samples].index(str(path))))
    assert got.shape == (5, 6, 3) and (got == want[..., None]).all()  # was solid white (255 everywhere)
    assert np.array_equal(np.asarray(load_image(path)), got)
    # mode I (32-bit) in the 16-bit range, as older Pillows open 16-bit PNGs
    from pand_runtime.image import to_rgb

    assert np.array_equal(np.asarray(to_rgb(Image.fromarray(a.astype(np.int32)))), got)
    # an 8-bit image decodes exactly as PIL's own convert
    rgb = root / "train" / _classes(root)[0] / "img_1.png"
    assert np.array_equal(np.asarray(load_image(rgb)), np.asarray(Image.open(rgb).convert("RGB")))


def test_runtime_decodes_16bit_without_torch(tmp_path):
    path = tmp_path / "g.png"
    a = _gradient16(path)
    code = ("import sys, json\n"
            "for m in ('torch', 'torchvision'): sys.modules[m] = None\n"
            "import numpy as np\nfrom pand_runtime.preprocess import load_image\n"
            f"x = np.asarray(load_image({str(path)!r}))\n"
            "print(json.dumps({'sum': int(x.sum()), 'torch': any(k.startswith('torch') and sys.modules[k] is not None "
            "for k in sys.modules)}))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got == {"sum": int(np.round(a / 257).astype(np.uint8).astype(np.int64).sum()) * 3, "torch": False}


def test_symlink_loops_neither_multiply_nor_leak_images(imagefolder_root):
    root, exp = imagefolder_root
    classes = _classes(root)
    cls = root / "train" / classes[0]
    os.symlink(cls, cls / "loop")  # a cycle: class folder -> itself
    (cls / "deeper").mkdir()
    os.symlink("../..", cls / "deeper" / "up")  # train/: a cycle that also reaches the other classes
    os.symlink(cls / "img_0.jpg", cls / "alias.jpg")  # one file under two names
    with pytest.warns(UserWarning, match="2 symlinked folder"):
        s = build_splits(_cfg(root))
    assert len(s.train) == exp["train"]  # was multiplied through the loops
    train_val = [p for p, _ in s.train.samples] + [p for p, _ in s.val.samples]
    real = [os.path.realpath(p) for p in train_val]
    assert len(set(real)) == len(real)  # no file in train and val (or twice in one) under two paths
    assert [len([y for _, y in s.train.samples if y == c]) for c in range(3)] == [5, 5, 5]
    shutil.rmtree(root / "val")  # val held out of train: the loop's copies used to land in both
    with pytest.warns(UserWarning, match="symlinked folder"):
        s = build_splits(_cfg(root, val_fraction=0.4))
    real = [os.path.realpath(p) for p, _ in s.train.samples + s.val.samples]
    assert len(real) == exp["train"] and len(set(real)) == len(real)
    # a whole class folder that is a symlink is still read
    other = root / "test" / classes[2]
    os.rename(other, root / "elsewhere")
    os.symlink(root / "elsewhere", other)
    assert len(build_splits(_cfg(root)).test) == exp["test"]


def test_one_file_under_two_classes_is_refused(imagefolder_root):
    root, _ = imagefolder_root
    a, b = (root / "train" / c for c in _classes(root)[:2])
    os.symlink(b / "img_0.jpg", a / "zz_from_b.jpg")
    with pytest.raises(Exception, match="is listed under class folders"):
        build_splits(_cfg(root))


def test_skip_corrupt_drops_test_images_consistently(imagefolder_root):
    root, exp = imagefolder_root
    bad = root / "test" / _classes(root)[1] / "img_0.jpg"
    bad.write_bytes(b"\xff\xd8 truncated")
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        s = build_splits(_cfg(root, skip_corrupt=True))
    assert len(s.test) == exp["test"] - 1 and s.test.skipped == 1  # 8 readable of 9, never 9
    assert s.skipped == {"test": [str(bad)]}
    assert any("test: dropped 1 of 9 unreadable" in str(x.message) for x in w)
    assert [s.test[i][1] for i in range(len(s.test))] == [y for _, y in s.test.samples]  # no substitution
    # the image breaking after the scan is an error, never a silent substitution
    good = s.test.samples[0][0]
    open(good, "wb").write(b"gone")
    with pytest.raises(Exception, match="changed during the run"):
        s.test[0]
