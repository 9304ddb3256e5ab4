"""Pre-stored class vectors: file checks, base-only PSC data, and re-applying a learned CoOp context."""
from __future__ import annotations

import pytest
import torch

from pand.data.base import DataSplits, FGVCDataset
from pand.errors import ArtifactError, PandError
from pand.promptkd.class_vectors import (
    class_vectors_for,
    coop_text_features,
    load_class_vectors,
    save_class_vectors,
)
from pand.promptkd.data import base_only_splits


@pytest.fixture(scope="module")
def teacher():
    from pand.models.teacher import create_teacher

    return create_teacher({"arch": "pand-tiny-vit", "pretrained": None, "seed": 3})


def _meta(names, teacher_id="pand-tiny-vit|random-seed3|abc"):
    return {"source": "handcrafted", "class_names": names, "template": "a {}", "teacher_identity": teacher_id}


def test_roundtrip_normalises_and_checks_fit(tmp_path):
    path = tmp_path / "cv.safetensors"
    save_class_vectors(path, torch.randn(3, 8) * 5, _meta(["a", "b", "c"]))
    vec, meta = load_class_vectors(path, class_names=["a", "b", "c"], embed_dim=8)
    torch.testing.assert_close(vec.norm(dim=1), torch.ones(3))
    assert meta["num_classes"] == 3 and meta["embed_dim"] == 8
    with pytest.raises(ArtifactError, match="dimension 8 but the student projector outputs 16"):
        load_class_vectors(path, embed_dim=16)
    with pytest.raises(ArtifactError, match="other classes"):
        load_class_vectors(path, class_names=["a", "b", "x"])
    with pytest.raises(ArtifactError, match="computed by teacher"):
        load_class_vectors(path, teacher_id="ViT-L-14|openai|0123456789abcdef")
    with pytest.raises(ArtifactError, match="cannot read class vectors"):
        load_class_vectors(tmp_path / "missing.safetensors")


def test_base_only_splits_relabel_and_drop_novel(tmp_path):
    def ds(name):
        return FGVCDataset([(f"/{name}/{c}_{k}.png", c) for c in range(4) for k in range(2)], list("wxyz"), name=name)

    splits = DataSplits(train=ds("train"), val=ds("val"), test=ds("test"), class_names=list("wxyz"),
                        template="a {}", base_classes=[0, 1], novel_classes=[2, 3])
    b = base_only_splits(splits, [1, 3])
    assert b.class_names == ["x", "z"]
    for part, name in ((b.train, "train"), (b.val, "val"), (b.test, "test")):
        expected = [(f"/{name}/{c}_{k}.png", new) for c, new in ((1, 0), (3, 1)) for k in range(2)]
        assert part.samples == expected and part.class_names == ["x", "z"]
    assert b.base_classes is None and b.template == "a {}"


def test_learned_context_transfers_to_new_class_names(teacher, tmp_path):
    from pand.psc import build_coop_text_model, save_anchors

    base = ["red bird", "blue bird"]
    model = build_coop_text_model(teacher.model, teacher.tokenizer, base, template="a photo of a {}.", n_ctx=3,
                                  seed=1)
    with torch.no_grad():
        model.prompt_learner.ctx.normal_()
        feats = model()
    meta = {"class_names": base, "template": "a photo of a {}.", "n_ctx": 3, "ctx_init": None, "csc": False,
            "prompt_form": "template", "class_token_position": "end", "teacher_identity": teacher.identity,
            "embed_dim": teacher.embed_dim}
    path = save_anchors(tmp_path / "learned_text_features.safetensors", feats, model.prompt_learner.ctx, meta)
    ctx = model.prompt_learner.ctx.detach()

    all_names = base + ["green bird"]
    vec = coop_text_features(teacher, ctx, meta, all_names, "unused {}")
    assert vec.shape == (3, teacher.embed_dim)
    torch.testing.assert_close(vec[:2], torch.nn.functional.normalize(feats.float(), dim=-1), rtol=1e-4, atol=1e-5)
    # another dataset's classes, the way the run's were made (cross-dataset evaluation)
    run_meta = {"source": "psc", "psc_artifact": str(path)}
    cross, how = class_vectors_for(teacher, ["green bird"], "a photo of a {}.", run_meta)
    assert how == "psc context re-applied"
    torch.testing.assert_close(cross, vec[2:], rtol=1e-4, atol=1e-5)
    hand, how = class_vectors_for(teacher, ["green bird"], "a photo of a {}.", {"source": "handcrafted"})
    torch.testing.assert_close(hand, teacher.encode_text(["a photo of a green bird."]).cpu())
    assert how == "handcrafted template"


def test_class_specific_context_is_refused(teacher):
    with pytest.raises(PandError, match="psc.csc=false"):
        coop_text_features(teacher, torch.zeros(2, 3, 32), {"csc": True}, ["a", "b"], "{}")
