"""Issue 29 item 5: ``create_teacher`` with a local file of OpenAI (QuickGELU) weights.

A TorchScript archive is refused without being loaded; an OpenAI-format state dict and a file from the Hugging Face
repo of a QuickGELU tag are built with QuickGELU (the teacher then computes what the QuickGELU model computes, not
what a GELU model with the same weights computes); a plain open_clip file elsewhere stays GELU. Tiny archs only."""
from __future__ import annotations

import logging
import os

import pytest
import torch

os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")

open_clip = pytest.importorskip("open_clip")

from open_clip.transformer import QuickGELU  # noqa: E402
from safetensors.torch import save_file  # noqa: E402

from pand.errors import PandError  # noqa: E402
from pand.models.teacher import create_teacher, same_teacher  # noqa: E402
from pand.models.teacher_checkpoint import (  # noqa: E402
    OPENAI_KEYS, checkpoint_keys, inspect_checkpoint, is_torchscript_archive, quickgelu_hub_tag,
)
from pand.utils.io import sha256_file  # noqa: E402

ARCH = "pand-tiny-vit"  # GELU config (no quick_gelu in pand/models/model_configs/pand-tiny-vit.json)
FAKE_TAG = "fakeopenai"
FAKE_REPO = ("fakeorg", "tiny-clip.openai")


def _build(quick_gelu: bool, seed: int = 3):
    torch.manual_seed(seed)
    return open_clip.create_model(ARCH, pretrained=None, force_quick_gelu=quick_gelu).eval()


def _state(model):
    return {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}


def _acts(model):
    mods = list(model.modules())
    return sum(isinstance(m, QuickGELU) for m in mods), sum(isinstance(m, torch.nn.GELU) for m in mods)


def _embed(model, x):
    with torch.no_grad():
        return torch.nn.functional.normalize(model.encode_image(x).float(), dim=-1)


@pytest.fixture(scope="module")
def quick_ref():
    """A QuickGELU-built tiny model (OpenAI-like weights) and its GELU twin with the very same weights."""
    ref = _build(True)
    gelu = _build(False, seed=11)
    gelu.load_state_dict(_state(ref))
    return ref, gelu


@pytest.fixture
def logs(monkeypatch, caplog):
    """pand-train's logger stops propagation once set up; let caplog see its child ``pand.train.teacher``."""
    monkeypatch.setattr(logging.getLogger("pand.train"), "propagate", True)
    caplog.set_level(logging.INFO, logger="pand.train.teacher")
    return caplog


def _openai_file(tmp_path, ref, fmt):
    sd = _state(ref)
    sd.update({"input_resolution": torch.tensor(64), "context_length": torch.tensor(77),
               "vocab_size": torch.tensor(49408)})
    if fmt == "safetensors":
        path = tmp_path / "clip_openai_state.safetensors"
        save_file(sd, str(path))
    else:  # what a training script saves: {"state_dict": {"module.<key>": ...}}
        path = tmp_path / "clip_openai_state.pt"
        torch.save({"state_dict": {f"module.{k}": v for k, v in sd.items()}}, str(path))
    return path


@pytest.mark.parametrize("fmt", ["safetensors", "torch"])
def test_openai_state_dict_is_built_with_quickgelu(tmp_path, quick_ref, logs, fmt):
    ref, gelu = quick_ref
    path = _openai_file(tmp_path, ref, fmt)
    assert set(OPENAI_KEYS) <= set(checkpoint_keys(path))
    t = create_teacher({"arch": ARCH, "pretrained": str(path)})
    n_quick, n_gelu = _acts(t.model)
    assert n_quick > 0 and n_gelu == 0
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    out = t.encode_image(x)
    torch.testing.assert_close(out, _embed(ref, x))
    # the same weights in a GELU model compute something else: this test would catch a GELU build
    assert (out - _embed(gelu, x)).abs().max() > 1e-4
    # the identity names the activation used, so caches of a GELU teacher of this file are not reused
    assert t.identity == f"{ARCH}-quickgelu|{path}|{sha256_file(path)[:16]}"
    info = [r for r in logs.records if r.name == "pand.train.teacher"]
    assert len(info) == 1 and info[0].levelno == logging.INFO
    assert "QuickGELU" in info[0].getMessage() and str(path) in info[0].getMessage()


class _Tiny(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.proj = torch.nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x)


@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:FutureWarning")
def test_torchscript_archive_is_refused_without_loading(tmp_path, monkeypatch):
    path = tmp_path / "ViT-B-16.pt"
    torch.jit.script(_Tiny()).save(str(path))
    assert is_torchscript_archive(path)

    def never(*a, **k):
        raise AssertionError("the archive was loaded")

    monkeypatch.setattr(torch, "load", never)
    monkeypatch.setattr(torch.jit, "load", never)
    with pytest.raises(PandError) as err:
        create_teacher({"arch": "ViT-B-16", "pretrained": str(path)})
    msg = str(err.value)
    assert str(path) in msg and "TorchScript" in msg
    assert "teacher.pretrained=openai" in msg and "teacher.arch=ViT-B-16-quickgelu" in msg
    assert "open_clip_model.safetensors" in msg


def test_a_torch_save_zip_is_not_taken_for_torchscript(tmp_path):
    path = tmp_path / "weights.pt"
    torch.save(_Tiny().state_dict(), str(path))
    assert not is_torchscript_archive(path)
    assert sorted(checkpoint_keys(path)) == ["proj.bias", "proj.weight"]


@pytest.fixture
def fake_quickgelu_tag(monkeypatch):
    """A pretrained tag of the tiny arch whose weights need QuickGELU, hosted on a (fake) Hugging Face repo."""
    import open_clip.pretrained as pretrained

    cfg = {"hf_hub": f"{FAKE_REPO[0]}/{FAKE_REPO[1]}/", "quick_gelu": True, "mean": None, "std": None}
    monkeypatch.setitem(pretrained._PRETRAINED, ARCH, {FAKE_TAG: cfg})
    return cfg


@pytest.mark.parametrize("layout", ["hf_cache", "repo_folders"])
def test_file_from_a_quickgelu_tags_hub_repo_is_built_with_quickgelu(tmp_path, quick_ref, fake_quickgelu_tag, logs,
                                                                     layout):
    ref, gelu = quick_ref
    org, name = FAKE_REPO
    folder = (tmp_path / "hub" / f"models--{org}--{name}" / "snapshots" / "x" if layout == "hf_cache"
              else tmp_path / "downloads" / org / name)
    folder.mkdir(parents=True)
    path = folder / "open_clip_model.safetensors"
    save_file(_state(ref), str(path))  # open_clip format: nothing in the file says QuickGELU
    assert quickgelu_hub_tag(path, ARCH) == (FAKE_TAG, f"{org}/{name}")
    t = create_teacher({"arch": ARCH, "pretrained": str(path)})
    assert _acts(t.model)[0] > 0 and _acts(t.model)[1] == 0
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(t.encode_image(x), _embed(ref, x))
    assert (t.encode_image(x) - _embed(gelu, x)).abs().max() > 1e-4
    assert t.identity.startswith(f"{ARCH}-quickgelu|")
    warned = [r for r in logs.records if r.name == "pand.train.teacher"]
    assert len(warned) == 1 and warned[0].levelno == logging.WARNING
    assert FAKE_TAG in warned[0].getMessage() and f"{org}/{name}" in warned[0].getMessage()


def test_hub_repo_match_is_by_whole_folder_names(tmp_path, fake_quickgelu_tag):
    org, name = FAKE_REPO
    assert quickgelu_hub_tag(tmp_path / org / f"{name}_ft" / "w.safetensors", ARCH) is None
    assert quickgelu_hub_tag(tmp_path / f"models--{org}--{name}-ft" / "w.safetensors", ARCH) is None
    assert quickgelu_hub_tag(tmp_path / name / "w.safetensors", ARCH) is None
    assert quickgelu_hub_tag(tmp_path / f"models--{org}--{name}" / "w.safetensors", "pand-tiny-vit-s") is None


def test_plain_open_clip_file_elsewhere_stays_gelu(tmp_path, fake_quickgelu_tag, logs):
    """No false positive: an open_clip GELU file outside any QuickGELU repo is loaded as configured, silently."""
    src = _build(False, seed=5)
    path = tmp_path / "models" / "my_teacher.safetensors"
    path.parent.mkdir()
    save_file(_state(src), str(path))
    assert inspect_checkpoint(path, ARCH).kind == "open_clip"
    t = create_teacher({"arch": ARCH, "pretrained": str(path)})
    n_quick, n_gelu = _acts(t.model)
    assert n_quick == 0 and n_gelu > 0
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    torch.testing.assert_close(t.encode_image(x), _embed(src, x))
    assert t.identity == f"{ARCH}|{path}|{sha256_file(path)[:16]}"
    assert not [r for r in logs.records if r.name == "pand.train.teacher"]


def test_quickgelu_identity_matches_the_quickgelu_arch(tmp_path, quick_ref, monkeypatch):
    """QuickGELU forced on ``arch`` names the same teacher as ``<arch>-quickgelu`` with the same file, and another
    teacher than the GELU one."""
    ref, _ = quick_ref
    path = _openai_file(tmp_path, ref, "safetensors")
    cfg = open_clip.get_model_config(ARCH)
    monkeypatch.setitem(open_clip.factory._MODEL_CONFIGS, f"{ARCH}-quickgelu", {**cfg, "quick_gelu": True})
    forced = create_teacher({"arch": ARCH, "pretrained": str(path)})
    explicit = create_teacher({"arch": f"{ARCH}-quickgelu", "pretrained": str(path)})
    assert inspect_checkpoint(path, f"{ARCH}-quickgelu").force_quick_gelu is False
    assert same_teacher(forced.identity, explicit.identity)
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(forced.encode_image(x), explicit.encode_image(x))
    assert not same_teacher(forced.identity, f"{ARCH}|{path}|{sha256_file(path)[:16]}")


# -- PromptKD's student encoder reads its weights the same way ---------------------------------------------------


def test_promptkd_student_from_an_openai_file_runs_quickgelu(tmp_path, quick_ref, logs):
    from pand.promptkd.student import create_student_visual

    ref, gelu = quick_ref
    path = _openai_file(tmp_path, ref, "safetensors")
    visual, _, _ = create_student_visual(ARCH, str(path))
    n_quick, n_gelu = _acts(visual)
    assert n_quick > 0 and n_gelu == 0
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        out, want, other = visual.eval()(x), ref.visual(x), gelu.visual(x)
    torch.testing.assert_close(out, want)
    assert (out - other).abs().max() > 1e-4
    assert any("promptkd.student_pretrained" in r.getMessage() for r in logs.records)


def test_promptkd_student_tag_builds_with_the_tags_activation(monkeypatch, fake_quickgelu_tag):
    """open_clip only warns when a QuickGELU tag is loaded into a GELU config; the student passes the tag's flag."""
    from pand.promptkd.student import create_student_visual

    seen = []
    real = open_clip.create_model

    def spy(arch, pretrained=None, **kw):
        seen.append((pretrained, kw.get("force_quick_gelu")))
        return real(arch, pretrained=None, **kw)  # no download: the weights do not matter here

    monkeypatch.setattr(open_clip, "create_model", spy)
    visual, _, _ = create_student_visual(ARCH, FAKE_TAG)
    assert seen == [(FAKE_TAG, True)]
    assert _acts(visual)[0] > 0


@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:FutureWarning")
def test_promptkd_student_refuses_a_torchscript_archive(tmp_path):
    from pand.promptkd.student import create_student_visual

    path = tmp_path / "ViT-B-16.pt"
    torch.jit.script(_Tiny()).save(str(path))
    with pytest.raises(PandError) as err:
        create_student_visual("ViT-B-16", str(path))
    msg = str(err.value)
    assert "promptkd.student_pretrained=openai" in msg and "promptkd.student_arch=ViT-B-16-quickgelu" in msg
