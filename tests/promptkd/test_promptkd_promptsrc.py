"""The PromptSRC teacher: loss terms against a float64 re-derivation, Gaussian aggregation, deep prompts, training."""
from __future__ import annotations

import math

import pytest
import torch

from pand.errors import PandError
from pand.promptkd.promptsrc import (
    PromptedTeacher,
    PromptSRCModel,
    gpa_weights,
    promptsrc_losses,
    promptsrc_text_features,
    prompted_teacher,
)

SETTINGS = {"n_ctx_text": 4, "n_ctx_vision": 3, "prompt_depth_text": 2, "prompt_depth_vision": 2,
            "ctx_init": "a photo of a"}


@pytest.fixture(scope="module")
def teacher():
    from pand.models.teacher import create_teacher

    return create_teacher({"arch": "pand-tiny-vit", "pretrained": None, "seed": 0})


def _unit(*shape, seed):
    return torch.nn.functional.normalize(torch.randn(*shape, generator=torch.Generator().manual_seed(seed)), dim=-1)


def test_each_loss_term_matches_a_float64_rederivation():
    B, m, D, s = 5, 4, 8, 30.0
    f, f0, g, g0 = _unit(B, D, seed=1), _unit(B, D, seed=2), _unit(m, D, seed=3), _unit(m, D, seed=4)
    y = torch.tensor([0, 3, 1, 1, 2])
    logits, zs = s * f @ g.T, s * f0 @ g0.T
    out = promptsrc_losses(logits, y, f, f0, g, g0, zs, text_weight=25.0, image_weight=10.0)

    F64, F064, G64, G064 = (t.double() for t in (f, f0, g, g0))
    L, Z = s * F64 @ G64.T, s * F064 @ G064.T
    ce = sum(-(L[b, y[b]] - math.log(sum(math.exp(L[b, k]) for k in range(m)))) for b in range(B)) / B
    scl_text = 25.0 * sum(abs(G64[c, d] - G064[c, d]) for c in range(m) for d in range(D)) / (m * D)
    scl_image = 10.0 * sum(abs(F64[b, d] - F064[b, d]) for b in range(B) for d in range(D)) / (B * D)
    kl = 0.0
    for b in range(B):
        zq = math.log(sum(math.exp(L[b, k]) for k in range(m)))
        zp = math.log(sum(math.exp(Z[b, k]) for k in range(m)))
        for k in range(m):
            log_p, log_q = Z[b, k] - zp, L[b, k] - zq
            kl += math.exp(log_p) * (log_p - log_q)  # KL(frozen || prompted)
    scl_logits = kl / (B * m)
    expected = {"ce": ce, "scl_text": scl_text, "scl_image": scl_image, "scl_logits": scl_logits}
    expected["total"] = sum(expected.values())
    for k, v in expected.items():
        assert float(out[k]) == pytest.approx(float(v), rel=1e-5, abs=1e-7), k
    assert float(out["scl_logits"]) > 0 and float(out["scl_text"]) > 0


def test_the_frozen_side_gets_no_gradient():
    f = _unit(3, 8, seed=1).requires_grad_(True)
    f0 = _unit(3, 8, seed=2).requires_grad_(True)
    g, g0 = _unit(2, 8, seed=3).requires_grad_(True), _unit(2, 8, seed=4).requires_grad_(True)
    zs = (10 * f0 @ g0.T)
    promptsrc_losses(10 * f @ g.T, torch.tensor([0, 1, 1]), f, f0, g, g0, zs)["total"].backward()
    assert f.grad is not None and g.grad is not None and f0.grad is None and g0.grad is None


def test_gaussian_aggregation_weights():
    w = gpa_weights(20, 15.0, 1.0)
    pdf = [math.exp(-((e - 15.0) ** 2) / 2.0) / math.sqrt(2 * math.pi) for e in range(1, 21)]
    assert w == pytest.approx([p / sum(pdf) for p in pdf], rel=1e-12, abs=1e-300)
    assert sum(w) == pytest.approx(1.0) and max(range(20), key=w.__getitem__) == 14  # epoch 15 (1-based)
    assert w[13] == pytest.approx(w[15]) and w[13] == pytest.approx(w[14] * math.exp(-0.5))
    # the reference mean 15 in a 2-epoch run: the ratio of the two densities, exp(-13.5), is kept
    short = gpa_weights(2, 15.0, 1.0)
    assert short[0] / short[1] == pytest.approx(math.exp(-13.5), rel=1e-9)
    # a mean so far beyond the run that every density underflows in float64 still gives finite weights
    assert math.exp(-(59.0**2) / 2) == 0.0
    assert gpa_weights(2, 61.0, 1.0) == [pytest.approx(0.0, abs=1e-25), pytest.approx(1.0)]
    assert gpa_weights(3, 2.0, 1e6) == pytest.approx([1 / 3] * 3)
    with pytest.raises(PandError):
        gpa_weights(3, 2.0, 0.0)


def test_text_path_without_deep_prompts_is_the_frozen_tower(teacher):
    names = ["red bird", "blue bird"]
    model = PromptSRCModel(teacher, names, {**SETTINGS, "prompt_depth_text": 1})
    with torch.no_grad():
        ours = model.text_features()
    ref = teacher.encode_text([f"a photo of a {n}." for n in names])  # ctx initialised from "a photo of a"
    torch.testing.assert_close(ours, ref, rtol=0, atol=1e-5)


def test_deep_prompts_change_both_towers_and_only_prompts_train(teacher):
    model = PromptSRCModel(teacher, ["red bird", "blue bird"], SETTINGS)
    trainable = sorted(n for n, p in model.named_parameters() if p.requires_grad)
    assert trainable == ["image_encoder.prompts", "prompt_learner.ctx", "text_encoder.deep"]
    assert tuple(model.text_encoder.deep.shape) == (1, 4, 64) and tuple(model.image_encoder.prompts.shape) == (2, 3, 96)
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    f, g = model.image_features(x), model.text_features()
    (f.sum() + g.sum()).backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for n, p in model.named_parameters() if p.requires_grad)
    assert all(p.grad is None for n, p in model.named_parameters() if not p.requires_grad)
    with torch.no_grad():
        before = model.text_features()
        model.text_encoder.deep.add_(1.0)
        assert not torch.allclose(before, model.text_features())
    # the reference depth 9 is capped at the tiny towers' 2 layers; an explicit depth beyond them is refused
    auto = PromptSRCModel(teacher, ["a"], {**SETTINGS, "prompt_depth_text": None, "prompt_depth_vision": None})
    assert auto.settings["prompt_depth_text"] == 2 and auto.settings["prompt_depth_vision"] == 2
    with pytest.raises(PandError, match="prompt_depth_vision=3"):
        PromptSRCModel(teacher, ["a"], {**SETTINGS, "prompt_depth_vision": 3})
    # the prompt learner's check names PromptSRC's own settings
    with pytest.raises(PandError, match=r"promptkd\.promptsrc\.ctx_init='a photo of a' is 4 tokens but "
                                        r"promptkd\.promptsrc\.n_ctx_text=3"):
        PromptSRCModel(teacher, ["a"], {**SETTINGS, "n_ctx_text": 3})


def test_prompted_teacher_uses_the_stored_vision_prompts(teacher):
    model = PromptSRCModel(teacher, ["red bird", "blue bird"], SETTINGS)
    with torch.no_grad():
        model.image_encoder.prompts.normal_(0, 1.0, generator=torch.Generator().manual_seed(3))
    state = model.prompt_state()
    pt = prompted_teacher(teacher, state, {"settings": model.settings})
    assert isinstance(pt, PromptedTeacher) and pt.embed_dim == teacher.embed_dim and pt.identity == teacher.identity
    x = torch.randn(3, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.testing.assert_close(pt.encode_image(x), model.image_features(x), rtol=0, atol=1e-6)
    assert not torch.allclose(pt.encode_image(x), teacher.encode_image(x), atol=1e-3)
    # re-applied to new class names, the text prompts give those names' vectors (same rows for shared names)
    more = promptsrc_text_features(teacher, state, {"settings": model.settings}, ["green bird", "blue bird"])
    with torch.no_grad():
        torch.testing.assert_close(more[1], model.text_features()[1], rtol=0, atol=1e-6)


def test_training_aggregates_the_epoch_prompts_with_the_gaussian_weights(make_splits, teacher, monkeypatch):
    from omegaconf import OmegaConf

    from pand.config.schema import RunCfg
    from pand.promptkd import promptsrc as mod

    splits = make_splits(4)
    cfg = OmegaConf.structured(RunCfg)
    cfg.trainer.num_workers = 0
    cfg.promptkd.promptsrc.update({"epochs": 3, "batch_size": 2, "gpa_mean": 2.0, "gpa_std": 1.0,
                                   "prompt_depth_text": 2, "prompt_depth_vision": 2, "lr": 0.05})
    seen, labels = [], []
    original = mod.PromptSRCModel.prompt_state
    monkeypatch.setattr(mod.PromptSRCModel, "prompt_state", lambda self: seen.append(original(self)) or seen[-1])
    original_losses = mod.promptsrc_losses
    monkeypatch.setattr(mod, "promptsrc_losses", lambda logits, y, *a, **k: labels.append(y.clone()) or
                        original_losses(logits, y, *a, **k))
    prompts, meta = mod.train_promptsrc_teacher(cfg.promptkd.promptsrc, cfg.trainer, splits, teacher, [0, 1],
                                                progress=False)
    w = gpa_weights(3, 2.0, 1.0)
    assert len(seen) == 3 and meta["gpa"]["weights"] == w
    for k in ("text_ctx", "text_deep", "vision"):
        expected = sum(wi * s[k].double() for wi, s in zip(w, seen)).float()
        torch.testing.assert_close(prompts[k], expected, rtol=0, atol=1e-6)
        assert not torch.equal(seen[0][k], seen[-1][k])  # the prompts did train
    # trained on the base classes' labelled images only (relabelled 0..m-1)
    assert meta["base_class_names"] == ["class 0", "class 1"] and meta["trained_on"].startswith("base classes only")
    assert {int(v) for y in labels for v in y} <= {0, 1}
    assert sum(len(y) for y in labels) == 3 * 2 * 3  # 3 epochs x 2 base classes x 3 training images
    assert set(meta["history"][0]) >= {"ce", "scl_text", "scl_image", "scl_logits", "total", "gpa_weight"}
