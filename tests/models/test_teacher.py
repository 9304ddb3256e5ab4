"""The frozen open_clip teacher on pand's tiny registered configs (real open_clip models, CPU, random init)."""
from __future__ import annotations

import os

import pytest
import torch

os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")

open_clip = pytest.importorskip("open_clip")

from pand.errors import PandError  # noqa: E402
from pand.models.teacher import (  # noqa: E402
    create_teacher, same_teacher, split_identity, state_dict_sha256,
)
from pand.utils.io import sha256_file  # noqa: E402


@pytest.fixture(scope="module")
def teacher():
    return create_teacher({"arch": "pand-tiny-vit", "pretrained": None})


def test_tiny_configs_are_registered():
    assert "pand-tiny-vit" in open_clip.list_models()
    assert "pand-tiny-vit-s" in open_clip.list_models()
    s = create_teacher({"arch": "pand-tiny-vit-s", "pretrained": None})
    assert s.embed_dim == 32 and s.image_size == 64
    assert s.model.context_length == 77


def test_frozen_eval_and_stays_eval(teacher):
    assert all(not p.requires_grad for p in teacher.model.parameters())
    assert not teacher.model.training
    teacher.train()
    assert not teacher.model.training and not teacher.training
    parent = torch.nn.Module()
    parent.teacher = teacher
    parent.train(True)  # a wrapper switching to train mode must not flip the teacher
    assert not teacher.model.training
    teacher.model.train()  # even a direct call is undone at the next encode
    teacher.encode_image(torch.zeros(1, 3, 64, 64))
    assert not teacher.model.training


def test_attributes(teacher):
    assert teacher.arch == "pand-tiny-vit" and teacher.pretrained is None
    assert teacher.embed_dim == 64 and teacher.image_size == 64
    pp = teacher.preprocess_spec
    assert (pp.image_size, pp.resize_size, pp.interpolation, pp.resize_mode) == (64, 64, "bicubic", "shorter_side")
    assert pp.mean == pytest.approx((0.48145466, 0.4578275, 0.40821073))
    assert pp.std == pytest.approx((0.26862954, 0.26130258, 0.27577711))
    assert teacher.logit_scale == pytest.approx(1 / 0.07, rel=1e-5)
    arch, pre, digest = split_identity(teacher.identity)
    assert arch == "pand-tiny-vit" and pre == "random-seed0"
    assert digest == state_dict_sha256(teacher.model)[:16]
    # open_clip's own eval transform: PIL -> normalised [3, 64, 64]
    from PIL import Image

    x = teacher.preprocess(Image.new("RGB", (80, 100), (255, 0, 0)))
    assert tuple(x.shape) == (3, 64, 64)
    assert x[0].mean().item() == pytest.approx((1 - pp.mean[0]) / pp.std[0], abs=1e-3)


def test_random_init_is_seeded():
    a = create_teacher({"arch": "pand-tiny-vit", "pretrained": None, "seed": 0})
    b = create_teacher({"arch": "pand-tiny-vit", "pretrained": None, "seed": 0})
    c = create_teacher({"arch": "pand-tiny-vit", "pretrained": None, "seed": 1})
    assert a.identity == b.identity
    assert a.identity != c.identity and not same_teacher(a.identity, c.identity)
    torch.testing.assert_close(a.model.text_projection, b.model.text_projection)


def test_encoders_normalised_no_grad(teacher):
    x = torch.randn(3, 3, 64, 64, requires_grad=True)
    f = teacher.encode_image(x)
    assert f.shape == (3, 64) and f.dtype == torch.float32 and not f.requires_grad
    torch.testing.assert_close(f.norm(dim=-1), torch.ones(3))
    ref = torch.nn.functional.normalize(teacher.model.encode_image(x.detach()), dim=-1)
    torch.testing.assert_close(f, ref)
    prompts = ["a photo of a sparrow.", "a photo of a jay.", "x"]
    t = teacher.encode_text(prompts, batch_size=2)
    assert t.shape == (3, 64)
    with torch.no_grad():
        ref = torch.nn.functional.normalize(teacher.model.encode_text(teacher.tokenizer(prompts)), dim=-1)
    torch.testing.assert_close(t, ref)
    with pytest.raises(PandError):
        teacher.encode_text("a single string")


def test_local_checkpoint(tmp_path, teacher):
    from safetensors.torch import save_file

    src = create_teacher({"arch": "pand-tiny-vit", "pretrained": None, "seed": 7})
    path = tmp_path / "tiny.safetensors"
    save_file({k: v.contiguous() for k, v in src.model.state_dict().items()}, str(path))
    t = create_teacher({"arch": "pand-tiny-vit", "pretrained": str(path)})
    assert t.pretrained == str(path)
    assert t.identity == f"pand-tiny-vit|{path}|{sha256_file(path)[:16]}"
    x = torch.randn(2, 3, 64, 64)
    torch.testing.assert_close(t.encode_image(x), src.encode_image(x))
    assert not same_teacher(t.identity, teacher.identity)


def test_bad_inputs(tmp_path):
    with pytest.raises(PandError, match="unknown open_clip architecture"):
        create_teacher({"arch": "no-such-arch", "pretrained": None})
    with pytest.raises(PandError, match="neither an open_clip tag"):
        create_teacher({"arch": "pand-tiny-vit", "pretrained": str(tmp_path / "missing.bin")})
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(PandError, match="cannot load teacher checkpoint"):
        create_teacher({"arch": "pand-tiny-vit", "pretrained": str(bad)})
    with pytest.raises(PandError, match="precision"):
        create_teacher({"arch": "pand-tiny-vit", "precision": "fp8"})


def test_offline_tag_failure_says_how_to_use_a_local_file(monkeypatch):
    import open_clip.factory as factory

    def offline(*a, **k):
        raise OSError("network is unreachable")

    monkeypatch.setattr(factory, "download_pretrained", offline)
    with pytest.raises(PandError, match=r"teacher\.pretrained=/path/to") as err:
        create_teacher({"arch": "ViT-B-32", "pretrained": "openai"})
    # OpenAI weights need QuickGELU: the tag turns it on, a local file would not (issue #29 item 5)
    assert "teacher.arch=ViT-B-32-quickgelu" in str(err.value) and "keep teacher.arch" not in str(err.value)


def test_offline_arch_names_the_quickgelu_variant_only_when_the_tag_needs_it():
    from open_clip.pretrained import get_pretrained_cfg

    from pand.models.teacher import offline_arch

    assert offline_arch("ViT-B-16", get_pretrained_cfg("ViT-B-16", "openai")) == "ViT-B-16-quickgelu"
    assert offline_arch("ViT-B-16-quickgelu", get_pretrained_cfg("ViT-B-16-quickgelu", "openai")) == \
        "ViT-B-16-quickgelu"
    assert offline_arch("ViT-B-16", get_pretrained_cfg("ViT-B-16", "laion2b_s34b_b88k")) == "ViT-B-16"
