"""Anchor artifacts: round trip, seed .pt files, refusal of pickles, mismatch errors, hand-crafted anchors."""
from __future__ import annotations

import argparse

import pytest
import torch

from pand.errors import ArtifactError, PandError
from pand.psc import handcrafted_anchors, load_anchors, restore_coop_text_model, save_anchors
from pand.psc.prompt_learner import build_coop_text_model

from psc_toy import TOY_CLASSES

TEMPLATE = "a photo of a {}, a type of bird."


def _artifact(tmp_path, teacher, csc=False):
    m = build_coop_text_model(teacher.model, teacher.tokenizer, TOY_CLASSES, template=TEMPLATE, n_ctx=3, csc=csc,
                              seed=5)
    with torch.no_grad():
        text = m()
    meta = {"class_names": TOY_CLASSES, "prompts": [TEMPLATE.format(n) for n in TOY_CLASSES], "n_ctx": 3,
            "ctx_init": None, "csc": csc, "prompt_form": "template", "class_token_position": "end",
            "template": TEMPLATE, "teacher_identity": teacher.identity, "embed_dim": teacher.embed_dim,
            "val_acc": 0.5, "test_acc": 0.25, "zero_shot_val_acc": 0.1, "zero_shot_test_acc": None,
            "config_hash": "abc"}
    path = save_anchors(tmp_path / "learned_text_features.safetensors", text, m.prompt_learner.ctx, meta)
    return path, text, m


def test_round_trip_with_metadata(tmp_path, tiny_teacher):
    path, text, m = _artifact(tmp_path, tiny_teacher)
    feats, meta = load_anchors(path, 4, embed_dim=64, teacher_id=tiny_teacher.identity)
    torch.testing.assert_close(feats, text)
    assert meta["class_names"] == TOY_CLASSES and meta["n_ctx"] == 3 and meta["csc"] is False
    assert meta["val_acc"] == 0.5 and meta["zero_shot_test_acc"] is None and meta["template"] == TEMPLATE
    torch.testing.assert_close(meta["ctx"], m.prompt_learner.ctx.detach())


@pytest.mark.parametrize("csc", [False, True])
def test_restore_prompt_learner_reproduces_features(tmp_path, tiny_teacher, csc):
    path, text, _ = _artifact(tmp_path, tiny_teacher, csc=csc)
    model = restore_coop_text_model(path, tiny_teacher)
    with torch.no_grad():
        torch.testing.assert_close(model(), text, atol=1e-6, rtol=0)


def test_mismatch_errors(tmp_path, tiny_teacher):
    from pand.models.teacher import create_teacher

    path, _, _ = _artifact(tmp_path, tiny_teacher)
    with pytest.raises(ArtifactError, match=r"4 classes but the dataset has 200 classes"):
        load_anchors(path, 200)
    with pytest.raises(ArtifactError, match=r"another teacher: anchor dim 64 but the teacher's embed_dim is 1024"):
        load_anchors(path, 4, embed_dim=1024)
    other = create_teacher({"arch": "pand-tiny-vit", "pretrained": None, "seed": 9})
    with pytest.raises(ArtifactError, match="another teacher"):
        load_anchors(path, 4, teacher_id=other.identity)
    # the same weights under another 'pretrained' spelling are the same teacher
    arch, _, digest = tiny_teacher.identity.split("|")
    load_anchors(path, 4, teacher_id=f"{arch}|/some/local/copy.safetensors|{digest}")
    with pytest.raises(ArtifactError, match="not found"):
        load_anchors(tmp_path / "missing.safetensors", 4)


def test_seed_pt_file_is_read_with_weights_only(tmp_path):
    feats = torch.nn.functional.normalize(torch.randn(5, 16), dim=-1) * 1.0
    path = tmp_path / "learned_text_features.pt"
    torch.save({"text_features": feats * 2.0, "classnames": [f"c{i}" for i in range(5)], "n_ctx": 16,
                "ctx_init": None, "clip_model_name": "convnext_xxlarge", "pretrained": "laion2b_s34b_b82k_augreg_soup",
                "context_length": 77}, path)
    got, meta = load_anchors(path, 5, embed_dim=16)
    torch.testing.assert_close(got, feats)  # re-normalised
    assert meta["n_ctx"] == 16 and meta["classnames"][0] == "c0" and meta["format"] == "seed-pt"
    with pytest.raises(ArtifactError, match="5 classes but the dataset has 4"):
        load_anchors(path, 4)
    with pytest.raises(ArtifactError, match="teacher arch convnext_xxlarge"):
        load_anchors(path, 5, teacher_id="ViT-B-16|openai|0123456789abcdef")
    load_anchors(path, 5, teacher_id="convnext_xxlarge|/local/open_clip_pytorch_model.bin|0123456789abcdef")


def test_pickle_based_files_are_refused(tmp_path):
    path = tmp_path / "learned_text_features.pt"
    torch.save({"text_features": torch.randn(3, 8), "args": argparse.Namespace(lr=1.0)}, path)
    with pytest.raises(ArtifactError, match="pickle-based"):
        load_anchors(path, 3)
    pkl = tmp_path / "anchors.pkl"
    pkl.write_bytes(b"\x80\x04N.")
    with pytest.raises(ArtifactError, match="pickle"):
        load_anchors(pkl, 3)
    no_feats = tmp_path / "other.pt"
    torch.save({"weights": torch.zeros(2)}, no_feats)
    with pytest.raises(ArtifactError, match="text_features"):
        load_anchors(no_feats, 3)
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"nope")
    with pytest.raises(ArtifactError, match="not a readable safetensors"):
        load_anchors(bad, 3)


def test_handcrafted_anchors(tiny_teacher):
    prompts = [TEMPLATE.format(n) for n in TOY_CLASSES]
    a = handcrafted_anchors(tiny_teacher, prompts)
    assert a.shape == (4, 64) and a.device.type == "cpu"
    with torch.no_grad():
        ref = tiny_teacher.model.encode_text(tiny_teacher.tokenizer(prompts))
    torch.testing.assert_close(a, torch.nn.functional.normalize(ref, dim=-1))
    with pytest.raises(PandError):
        handcrafted_anchors(tiny_teacher, [])
