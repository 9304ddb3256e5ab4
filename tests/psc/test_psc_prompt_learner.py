"""CoOp prompt learner: exactness against open_clip's own encode_text, gradient flow, errors."""
from __future__ import annotations

import pytest
import torch

from pand.errors import PandError
from pand.psc.prompt_learner import CoOpTextModel, PromptLearner, TextEncoder, build_coop_text_model, class_strings

from psc_toy import TOY_CLASSES

TEMPLATE = "a photo of a {}, a type of bird."
NAMES = TOY_CLASSES + ["Black-throated Blue Warbler", "Clark_Nutcracker"]


def _reference(teacher_model, tokenizer, prompts):
    with torch.no_grad():
        return torch.nn.functional.normalize(teacher_model.encode_text(tokenizer(prompts)), dim=-1)


@pytest.mark.parametrize("form", ["template", "coop"])
def test_phrase_ctx_equals_open_clip_encode_text(tiny_teacher, form):
    """ctx = the embeddings of "a photo of a" (4 tokens) -> exactly encode_text("a photo of a <class string>")."""
    t = tiny_teacher
    m = build_coop_text_model(t.model, t.tokenizer, NAMES, template=TEMPLATE, n_ctx=4, ctx_init="a photo of a",
                              prompt_form=form)
    with torch.no_grad():
        got = m()
    strings = [TEMPLATE.format(n) for n in NAMES] if form == "template" else [f"{n}." for n in NAMES]
    assert strings == class_strings(NAMES, form, TEMPLATE)
    ref = _reference(t.model, t.tokenizer, [f"a photo of a {s}" for s in strings])
    assert got.shape == (len(NAMES), t.embed_dim)
    torch.testing.assert_close(got, ref, atol=1e-5, rtol=0)
    torch.testing.assert_close(got.norm(dim=-1), torch.ones(len(NAMES)))


@pytest.mark.parametrize("form", ["template", "coop"])
def test_front_and_middle_positions(tiny_teacher, form):
    t = tiny_teacher
    moving = [TEMPLATE.format(n) for n in NAMES] if form == "template" else NAMES
    tail = "" if form == "template" else "."
    for pos, lit in (("front", [f"{c} a photo of a{tail}" for c in moving]),
                     ("middle", [f"a photo {c} of a{tail}" for c in moving])):
        m = build_coop_text_model(t.model, t.tokenizer, NAMES, template=TEMPLATE, n_ctx=4, ctx_init="a photo of a",
                                  prompt_form=form, class_token_position=pos)
        with torch.no_grad():
            torch.testing.assert_close(m(), _reference(t.model, t.tokenizer, lit), atol=1e-5, rtol=0)


def test_csc_with_init_matches_and_has_one_ctx_per_class(tiny_teacher):
    t = tiny_teacher
    m = build_coop_text_model(t.model, t.tokenizer, NAMES, template=TEMPLATE, n_ctx=4, ctx_init="a photo of a",
                              csc=True)
    assert tuple(m.prompt_learner.ctx.shape) == (len(NAMES), 4, 64)
    ref = _reference(t.model, t.tokenizer, [f"a photo of a {TEMPLATE.format(n)}" for n in NAMES])
    with torch.no_grad():
        torch.testing.assert_close(m(), ref, atol=1e-5, rtol=0)


def test_gradients_reach_only_the_context(tiny_teacher):
    t = tiny_teacher
    for csc in (False, True):
        m = build_coop_text_model(t.model, t.tokenizer, NAMES, template=TEMPLATE, n_ctx=3, csc=csc, seed=0)
        m.train()
        assert [p for p in m.parameters() if p.requires_grad] == [m.prompt_learner.ctx]
        assert m.trainable_parameters() == [m.prompt_learner.ctx]
        assert not t.model.training and not m.text_encoder.training  # frozen tower stays in eval
        feats = m()
        target = torch.randn(len(NAMES), feats.shape[1])
        (feats * target).sum().backward()
        g = m.prompt_learner.ctx.grad
        assert g is not None and g.abs().sum() > 0
        assert all(p.grad is None for p in t.model.parameters())
        if csc:  # every class gets its own non-zero gradient
            assert (g.flatten(1).abs().sum(1) > 0).all()
        assert all(not p.requires_grad for p in t.model.parameters())


def test_random_init_is_seeded_normal(tiny_teacher):
    t = tiny_teacher
    a = build_coop_text_model(t.model, t.tokenizer, NAMES, n_ctx=16, seed=3).prompt_learner.ctx
    b = build_coop_text_model(t.model, t.tokenizer, NAMES, n_ctx=16, seed=3).prompt_learner.ctx
    c = build_coop_text_model(t.model, t.tokenizer, NAMES, n_ctx=16, seed=4).prompt_learner.ctx
    torch.testing.assert_close(a, b)
    assert not torch.equal(a, c)
    assert tuple(a.shape) == (16, 64)
    assert a.std().item() == pytest.approx(0.02, rel=0.15)
    assert abs(a.mean().item()) < 0.005


def test_psc_cfg_drives_the_builder(tiny_teacher):
    from omegaconf import OmegaConf

    from pand.config.schema import PSCCfg

    cfg = OmegaConf.structured(PSCCfg(n_ctx=5, csc=True, prompt_form="coop", class_token_position="front"))
    m = build_coop_text_model(tiny_teacher.model, tiny_teacher.tokenizer, NAMES, cfg, template=TEMPLATE)
    pl = m.prompt_learner
    assert (pl.n_ctx, pl.csc, pl.prompt_form, pl.class_token_position) == (5, True, "coop", "front")
    assert tuple(pl.ctx.shape) == (len(NAMES), 5, 64)
    assert pl.tokenized_prompts.shape == (len(NAMES), 77)


def test_custom_text_clip_and_linear_projection_supported():
    """A CustomTextCLIP with the standard TextTransformer and a Linear text projection give exact features too."""
    import open_clip

    from pand.models.teacher import register_model_configs

    register_model_configs()
    cfg = open_clip.get_model_config("pand-tiny-vit")
    tok = open_clip.get_tokenizer("pand-tiny-vit")
    torch.manual_seed(0)
    text_cfg = dict(cfg["text_cfg"], proj_bias=True)
    for model in (open_clip.CustomTextCLIP(cfg["embed_dim"], cfg["vision_cfg"], cfg["text_cfg"]),
                  open_clip.CLIP(cfg["embed_dim"], cfg["vision_cfg"], text_cfg)):
        model.eval().requires_grad_(False)
        if isinstance(model, open_clip.CLIP):
            assert isinstance(model.text_projection, torch.nn.Linear)
        learner = PromptLearner(model, tok, NAMES, n_ctx=4, ctx_init="a photo of a", template=TEMPLATE)
        m = CoOpTextModel(learner, TextEncoder(model))
        with torch.no_grad():
            got = m()
        ref = _reference(model, tok, [f"a photo of a {TEMPLATE.format(n)}" for n in NAMES])
        torch.testing.assert_close(got, ref, atol=1e-5, rtol=0)


def test_unsupported_towers_raise():
    class HFLikeText(torch.nn.Module):
        pass

    class FakeCustom(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.text = HFLikeText()

    with pytest.raises(PandError, match="not supported"):
        TextEncoder(FakeCustom())
    with pytest.raises(PandError, match="not supported"):
        PromptLearner(FakeCustom(), None, NAMES)


def test_unsupported_tokenizer(tiny_teacher):
    with pytest.raises(PandError, match="tokenizer"):
        PromptLearner(tiny_teacher.model, lambda texts: None, NAMES)


def test_class_name_too_long_names_class_and_limit(tiny_teacher):
    t = tiny_teacher
    long_name = " ".join(["pterodactyl"] * 40)
    with pytest.raises(PandError) as e:
        PromptLearner(t.model, t.tokenizer, ["jay", long_name], n_ctx=16, template=TEMPLATE)
    msg = str(e.value)
    assert "pterodactyl" in msg and "59" in msg and "n_ctx=16" in msg  # 77 - 2 - 16 = 59 tokens left
    # the same name fits with a shorter context? no: still too long -> the limit moves with n_ctx
    with pytest.raises(PandError, match="leaves only 73"):
        PromptLearner(t.model, t.tokenizer, [long_name], n_ctx=2, prompt_form="coop")


def test_bad_options(tiny_teacher):
    t = tiny_teacher
    with pytest.raises(PandError, match="ctx_init"):
        PromptLearner(t.model, t.tokenizer, NAMES, n_ctx=16, ctx_init="a photo of a")
    with pytest.raises(PandError, match="class_token_position"):
        PromptLearner(t.model, t.tokenizer, NAMES, class_token_position="left")
    with pytest.raises(PandError, match="prompt_form"):
        PromptLearner(t.model, t.tokenizer, NAMES, prompt_form="free")
    with pytest.raises(PandError, match="placeholder"):
        PromptLearner(t.model, t.tokenizer, NAMES, template="a photo of a bird")
    with pytest.raises(PandError, match="n_ctx"):
        PromptLearner(t.model, t.tokenizer, NAMES, n_ctx=0)
    learner = PromptLearner(t.model, t.tokenizer, NAMES, n_ctx=4)
    with pytest.raises(PandError, match="shape"):
        learner.load_ctx(torch.zeros(5, 64))
