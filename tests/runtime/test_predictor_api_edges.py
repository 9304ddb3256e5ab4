"""Issue 31 item 12: the runtime API refuses top_k < 1 instead of silently returning one class, and a predictor used
after close() raises a PandError saying so (not an AttributeError on None); an empty or missing class in val/test is
reported with counts."""
import warnings

import numpy as np
import pytest

from pand_runtime.errors import PandError
from pand_runtime.predictor import Predictor


@pytest.fixture
def predictor(rt_bundle):
    p = Predictor.from_bundle(rt_bundle)
    yield p
    p.close()


def _image():
    return np.random.default_rng(0).integers(0, 256, (40, 50, 3), dtype=np.uint8)


@pytest.mark.parametrize("k", [0, -1, 1.5, "3", True])
def test_top_k_below_one_or_not_an_int_is_refused(predictor, k):
    with pytest.raises(PandError, match=r"top_k must be an integer >= 1"):
        predictor.predict(_image(), top_k=k)


def test_top_k_is_capped_at_the_class_count(predictor):
    (pred,) = predictor.predict(_image(), top_k=1000)
    assert len(pred.labels) == len(predictor.class_names)
    (pred,) = predictor.predict(_image(), top_k=np.int64(2))
    assert len(pred.labels) == 2


def test_predict_after_close_says_the_predictor_is_closed(rt_bundle):
    with Predictor.from_bundle(rt_bundle) as p:
        p.predict(_image(), top_k=1)
    for call in (lambda: p.predict(_image()), lambda: p.predict_logits(_image()),
                 lambda: p.run(np.zeros((1, 3, p.spec.image_size, p.spec.image_size), np.float32))):
        with pytest.raises(PandError, match="predictor .* is closed"):
            call()
    p.close()  # idempotent


def test_empty_test_class_and_val_missing_classes_are_reported(tmp_path):
    from PIL import Image

    from pand.config.schema import DataCfg
    from pand.data import build_splits

    rng = np.random.default_rng(0)
    for split, per_class in (("train", {"a": 3, "b": 3, "c": 3}), ("val", {"a": 1, "b": 0, "c": 0}),
                             ("test", {"a": 2, "b": 2, "c": 0})):
        for cls, n in per_class.items():
            (tmp_path / split / cls).mkdir(parents=True)
            for k in range(n):
                Image.fromarray(rng.integers(0, 256, (6, 5, 3), dtype=np.uint8)).save(tmp_path / split / cls / f"{k}.png")
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        build_splits(DataCfg(name="imagefolder", root=str(tmp_path)))
    msgs = [str(x.message) for x in w]
    assert any("2 of 3 classes have no val images: 1 (b), 2 (c) (val: 1 images in 1 classes)" in m for m in msgs), msgs
    assert any("1 of 3 classes have no test images: 2 (c) (test: 4 images in 2 classes)" in m for m in msgs), msgs
