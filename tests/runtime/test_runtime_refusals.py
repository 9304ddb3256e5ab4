"""What the runtime refuses instead of returning wrong answers (issue #20 items 11, 12, 13): non-finite inputs, a zero
std, model/reference paths that leave the bundle, wrongly typed manifest fields, empty batches, decompression bombs."""
import json
import os
import shutil

import numpy as np
import pytest
from PIL import Image

from pand.errors import ArtifactError, PandError
from pand_runtime import Predictor, load_bundle
from pand_runtime.manifest import load_manifest
from pand_runtime.preprocess import normalize_u8, prepare_batch


def _edit(bundle, fn):
    path = bundle / "manifest.json"
    d = json.loads(path.read_text())
    fn(d)
    path.write_text(json.dumps(d))


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_input_is_refused(rt_bundle, bad):
    p = Predictor.from_bundle(rt_bundle)
    x = normalize_u8(p.reference()["images_u8"][:3], p.spec)
    x[1, 0, 5, 5] = bad
    with pytest.raises(PandError, match=r"NaN or inf values \(image\(s\) \[1\] of 3\)"):
        p.predict(x)
    with pytest.raises(PandError, match="NaN or inf"):
        p.run(x)


def test_non_finite_logits_are_refused(rt_bundle):
    p = Predictor.from_bundle(rt_bundle)

    class NanBackend:
        fixed_batch = None
        name = "fake"

        def run(self, x):
            return np.full((len(x), len(p.class_names)), np.nan, np.float32)

    q = Predictor(p.bundle, p.manifest, NanBackend())
    with pytest.raises(ArtifactError, match="NaN or inf logits"):
        q.predict(np.zeros((1, 64, 64, 3), np.uint8))


@pytest.mark.parametrize("std", [[0.0, 0.26, 0.27], [0.26, -0.1, 0.27], [0.26, 0.26, 1e400]])
def test_zero_or_bad_std_in_the_manifest_is_refused(bundle_copy, std):
    _edit(bundle_copy, lambda d: d["preprocess"].update(std=std))
    with pytest.raises(ArtifactError, match=r"preprocess.std .* must be finite and > 0"):
        Predictor.from_bundle(bundle_copy)


def test_model_file_outside_the_bundle_is_refused(bundle_copy, tmp_path):
    """A manifest that points at ``../x``, an absolute path or a symlink never loads a model from elsewhere, even
    with a consistently edited sha256."""
    other = tmp_path / "elsewhere"
    other.mkdir()
    shutil.copy(bundle_copy / "model.onnx", other / "model.onnx")  # same bytes, so the sha256 still matches
    for name in ("../elsewhere/model.onnx", str(other / "model.onnx"), "sub/model.onnx", "..", ""):
        copy = tmp_path / f"b{abs(hash(name))}"
        shutil.copytree(bundle_copy, copy)
        _edit(copy, lambda d: d["models"][0].update(file=name))
        with pytest.raises(ArtifactError, match="not a plain file name inside the bundle directory"):
            Predictor.from_bundle(copy)
        with pytest.raises(ArtifactError, match="not a plain file name"):
            load_manifest(copy)
    (bundle_copy / "model.onnx").unlink()
    os.symlink(other / "model.onnx", bundle_copy / "model.onnx")
    for verify in (True, False):
        with pytest.raises(ArtifactError, match="model.onnx is a symbolic link"):
            Predictor.from_bundle(bundle_copy, verify=verify)


def test_reference_outside_the_bundle_is_refused(bundle_copy, tmp_path):
    shutil.copy(bundle_copy / "reference.npz", tmp_path / "ref.npz")
    _edit(bundle_copy, lambda d: d.update(reference="../ref.npz"))
    with pytest.raises(ArtifactError, match="reference '../ref.npz' is not a plain file name"):
        load_manifest(bundle_copy)
    _edit(bundle_copy, lambda d: d.update(reference="reference.npz"))
    (bundle_copy / "reference.npz").unlink()
    os.symlink(tmp_path / "ref.npz", bundle_copy / "reference.npz")
    p = Predictor.from_bundle(bundle_copy)
    with pytest.raises(ArtifactError, match="reference.npz is a symbolic link"):
        p.reference()


@pytest.mark.parametrize("field, value, msg", [
    ("class_names", "abcdefghijklmnopqrstuvwx", "'class_names' must be a list of strings"),  # 24 letters = 24 classes
    ("class_names", [1] * 24, "'class_names' must be a list of strings"),
    ("num_classes", "24", "'num_classes' must be an integer"),
    ("valid", "false", "'valid' must be true or false"),  # bool("false") is True
    ("models", {"file": "model.onnx"}, "'models' must be a list of objects"),
    ("max_batch", "8", "'max_batch' must be an integer"),
    ("max_batch", 0, "'max_batch' must be an integer >= 1"),
    ("preprocess.std", "0.5", "'std' must be a list of 3 numbers"),
    ("preprocess.image_size", 64.5, "'image_size' must be an integer"),
    ("preprocess", [64], "manifest 'preprocess' must be a JSON object"),
    ("models.0.file", 7, "'file' must be a string"),
])
def test_wrongly_typed_manifest_fields_are_refused(bundle_copy, field, value, msg):
    def change(d):
        *path, last = field.split(".")
        for k in path:
            d = d[int(k)] if isinstance(d, list) else d[k]
        d[last] = value

    _edit(bundle_copy, change)
    with pytest.raises(ArtifactError, match=msg) as e:
        load_bundle(bundle_copy)
    assert "re-export the bundle" in str(e.value)


@pytest.mark.parametrize("empty", [np.zeros((0, 3, 64, 64), np.float32), np.zeros((0, 64, 64, 3), np.uint8), []])
def test_empty_batch_is_refused(rt_bundle, empty):
    p = Predictor.from_bundle(rt_bundle)
    with pytest.raises(PandError, match="empty batch|no images"):
        p.predict(empty)
    with pytest.raises(PandError, match="empty batch|no images"):
        prepare_batch(empty, p.spec)


def test_decompression_bomb_is_a_clear_error(tmp_path, monkeypatch, rt_bundle):
    path = tmp_path / "bomb.png"
    Image.new("RGB", (64, 64)).save(path)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # 4096 px > 2 x the limit: PIL raises, not warns
    p = Predictor.from_bundle(rt_bundle)
    with pytest.raises(PandError, match="bomb.png is too large to decode safely.*decompression bomb"):
        p.predict([path])
