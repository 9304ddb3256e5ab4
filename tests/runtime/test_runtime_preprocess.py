"""The runtime's numpy/PIL preprocessing reproduces torchvision's eval transform exactly (max |diff| = 0)."""
import numpy as np
import pytest
from PIL import Image
from torchvision import transforms as T
from torchvision.transforms.functional import _compute_resized_output_size

from pand.data.transforms import create_transform
from pand.errors import PandError
from pand_runtime.preprocess_spec import PreprocessSpec
from pand_runtime.preprocess import center_crop, crop_image, prepare_batch, preprocess_image, resized_size

MODES = {"bilinear": T.InterpolationMode.BILINEAR, "bicubic": T.InterpolationMode.BICUBIC,
         "nearest": T.InterpolationMode.NEAREST}


def _torchvision(spec: PreprocessSpec):
    return T.Compose([T.Resize(spec.resize_size, interpolation=MODES[spec.interpolation]),
                      T.CenterCrop(spec.image_size), T.ToTensor(), T.Normalize(spec.mean, spec.std)])


def _images():
    rng = np.random.default_rng(0)
    out = []
    for h, w in [(64, 64), (300, 200), (199, 301), (50, 40), (257, 256), (97, 513)]:
        # smooth structure + noise, so that resampling filters matter
        yy, xx = np.mgrid[0:h, 0:w]
        base = np.stack([np.sin(xx / 7.0), np.cos(yy / 5.0), np.sin((xx + yy) / 11.0)], -1) * 100 + 128
        arr = np.clip(base + rng.normal(0, 20, (h, w, 3)), 0, 255).astype(np.uint8)
        out.append(Image.fromarray(arr, "RGB"))
    return out


SPECS = [
    PreprocessSpec(image_size=64, resize_size=72, interpolation="bilinear"),
    PreprocessSpec(image_size=224, resize_size=256, interpolation="bicubic", mean=[0.485, 0.456, 0.406],
                   std=[0.229, 0.224, 0.225]),
    PreprocessSpec(image_size=63, resize_size=70, interpolation="nearest"),
    PreprocessSpec(image_size=48, resize_size=48, interpolation="bilinear"),
]


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: f"{s.image_size}-{s.resize_size}-{s.interpolation}")
def test_matches_torchvision_and_pand_eval_transform_exactly(spec):
    tv = _torchvision(spec)
    pand_tf = create_transform(spec, is_train=False)  # the training eval transform, built from the same spec
    for img in _images():
        ours = preprocess_image(img, spec)
        assert ours.shape == (3, spec.image_size, spec.image_size) and ours.dtype == np.float32
        ref = tv(img).numpy()
        assert np.abs(ours - ref).max() == 0.0, img.size
        assert np.abs(ours - pand_tf(img).numpy()).max() == 0.0


def test_real_dataset_images_match(rt_bundle):
    from pand_runtime import Predictor

    p = Predictor.from_bundle(rt_bundle)
    tv = _torchvision(p.spec)
    for path in p.reference()["paths"][:8]:
        img = Image.open(path).convert("RGB")
        np.testing.assert_array_equal(preprocess_image(str(path), p.spec), tv(img).numpy())


def test_resized_size_follows_torchvision():
    for h in (1, 17, 64, 199, 256, 301, 1000):
        for w in (1, 13, 64, 200, 256, 513):
            for s in (32, 73, 256):
                assert list(resized_size(h, w, s)) == _compute_resized_output_size((h, w), [s]), (h, w, s)


def test_center_crop_pads_small_images_like_torchvision():
    img = Image.fromarray(np.arange(5 * 7 * 3, dtype=np.uint8).reshape(5, 7, 3), "RGB")
    for size in (4, 6, 9, 10):
        ours = np.asarray(center_crop(img, size))
        ref = np.asarray(T.CenterCrop(size)(img))
        np.testing.assert_array_equal(ours, ref)


def test_accepted_inputs_give_identical_batches(tmp_path):
    spec = SPECS[0]
    imgs = _images()[:3]
    paths = []
    for i, im in enumerate(imgs):
        paths.append(tmp_path / f"{i}.png")
        im.save(paths[-1])
    want = np.stack([_torchvision(spec)(im).numpy() for im in imgs])
    arrays = [np.asarray(im) for im in imgs]
    for inp in (imgs, [str(p) for p in paths], paths, arrays):
        np.testing.assert_array_equal(prepare_batch(inp, spec), want)
    np.testing.assert_array_equal(prepare_batch(imgs[0], spec), want[:1])
    np.testing.assert_array_equal(prepare_batch(arrays[0], spec), want[:1])
    same = np.stack([arrays[0], arrays[0]])  # uint8 NHWC
    np.testing.assert_array_equal(prepare_batch(same, spec), np.stack([want[0], want[0]]))
    np.testing.assert_array_equal(prepare_batch(want, spec), want)  # float NCHW passes through unchanged
    rgba = imgs[0].convert("RGBA")
    np.testing.assert_array_equal(prepare_batch(rgba, spec), want[:1])
    assert crop_image(imgs[1], spec).shape == (64, 64, 3)


@pytest.mark.parametrize("bad, msg", [
    (np.zeros((10, 10, 4), np.uint8), r"uint8 array of shape \(H, W, 3\)"),
    (np.zeros((2, 3, 64, 64), np.float64), "must be float32"),
    (np.zeros((2, 3, 32, 32), np.float32), r"must have shape \(N, 3, 64, 64\)"),
    (np.zeros((2, 64, 64, 3), np.float32), r"must have shape \(N, 3, 64, 64\)"),
    (np.zeros((10, 10), np.uint8), r"\(H, W, 3\) or \(N, H, W, 3\)"),
    (np.zeros((2, 3, 64, 64), np.int32), "unsupported array dtype int32"),
    ([], "no images"),
    ([3.0], "cannot use a float as an image"),
])
def test_wrong_inputs_say_what_was_expected(bad, msg):
    with pytest.raises(PandError, match=msg):
        prepare_batch(bad, SPECS[0])


def test_unreadable_file_names_the_file(tmp_path):
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"not an image")
    with pytest.raises(PandError, match="broken.jpg"):
        prepare_batch([bad], SPECS[0])
