"""Issue 31 item 8: a 32-bit float image (PIL mode F, e.g. a float TIFF with values 0..1) and 32-bit integer images
are scaled by their real range or refused by name, in training and in the runtime alike; never black."""
import numpy as np
import pytest
from PIL import Image

from pand.data.base import FGVCDataset
from pand.errors import DataError
from pand_runtime.errors import PandError
from pand_runtime.image import to_rgb
from pand_runtime.preprocess import load_image


def _gradient(lo=0.0, hi=1.0):
    return np.linspace(lo, hi, 30, dtype=np.float32).reshape(5, 6)


def _train_decode(path):
    return np.asarray(FGVCDataset([(str(path), 0)], ["c"]).load_image(0))


def test_float_tiff_0_to_1_decodes_by_its_range_in_training_and_runtime(tmp_path):
    a = _gradient()
    path = tmp_path / "f.tif"
    Image.fromarray(a).save(path)
    assert Image.open(path).mode == "F"
    want = np.round(a * 255).astype(np.uint8)
    got = _train_decode(path)
    assert got.shape == (5, 6, 3) and (got == want[..., None]).all()  # was nearly black (0 or 1 everywhere)
    assert got.max() == 255 and np.array_equal(np.asarray(load_image(path)), got)


@pytest.mark.parametrize("hi,scale", [(255.0, 1.0), (65535.0, 1 / 257)])
def test_float_images_in_8_and_16_bit_ranges(hi, scale):
    a = _gradient(0, hi)
    got = np.asarray(to_rgb(Image.fromarray(a)))[..., 0]
    assert np.array_equal(got, np.round(a.astype(np.float64) * scale).astype(np.uint8)) and got.max() == 255


@pytest.mark.parametrize("values,what", [
    (np.array([[0.0, np.nan]], np.float32), "NaN/inf"),
    (np.array([[-1.0, 0.5]], np.float32), r"values in \[-1, 0.5\]"),
    (np.array([[0.0, 1e6]], np.float32), r"values in \[0, 1e\+06\]"),
])
def test_float_images_without_a_known_scale_are_refused_by_name(tmp_path, values, what):
    path = tmp_path / "bad.tif"
    Image.fromarray(values).save(path)
    with pytest.raises(DataError, match=rf"cannot read image {path}.*mode F.*{what}"):
        _train_decode(path)
    with pytest.raises(PandError, match=rf"cannot read image {path}.*{what}"):
        load_image(path)


def test_32bit_integer_beyond_16_bits_is_refused_not_white(tmp_path):
    path = tmp_path / "i32.tif"
    Image.fromarray(np.array([[0, 1 << 20]], np.int32)).save(path)
    assert Image.open(path).mode == "I"
    with pytest.raises(PandError, match=rf"cannot read image {path}.*mode I\) with values in \[0, 1048576\]"):
        load_image(path)


def test_predictor_input_of_mode_f_is_scaled_or_refused():
    from pand_runtime.preprocess import _as_pil

    assert np.asarray(_as_pil(Image.fromarray(_gradient()))).max() == 255
    with pytest.raises(PandError, match="mode F"):
        _as_pil(Image.fromarray(np.array([[np.inf]], np.float32)))
