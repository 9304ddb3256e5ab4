"""The prompted open_clip student: prompt semantics, frozen parameters, projector, classifier, rebuild from file."""
from __future__ import annotations

import pytest
import torch

from pand.errors import ArtifactError, PandError
from pand.promptkd.loss import promptkd_kd_loss, promptkd_logits
from pand.promptkd.student import (
    PromptedVisionEncoder,
    PromptKDClassifier,
    build_promptkd_classifier,
    build_promptkd_student,
    classifier_metadata,
    create_student_visual,
    load_promptkd_classifier,
)


@pytest.fixture
def visual(tiny_arch):
    torch.manual_seed(0)
    v, _, _ = create_student_visual(tiny_arch)
    return v.eval()


def _images(n=3, size=32, seed=1):
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("n_ctx,depth", [(4, 0), (0, 3)])
def test_no_prompts_equals_plain_open_clip(visual, n_ctx, depth):
    enc = PromptedVisionEncoder(visual, n_ctx=n_ctx, depth=depth)
    with torch.no_grad():
        enc.prompts.zero_()
        x = _images()
        torch.testing.assert_close(enc(x), visual(x), rtol=0, atol=1e-6)
    assert enc.prompts.numel() == 0


def test_zeroed_prompts_still_change_the_output_when_depth_positive(visual):
    # the prompt tokens attend with the patches: depth > 0 is not the plain encoder even with zero prompts
    enc = PromptedVisionEncoder(visual, n_ctx=2, depth=1)
    with torch.no_grad():
        enc.prompts.zero_()
        x = _images()
        assert (enc(x) - visual(x)).abs().max() > 1e-4


def _block_inputs(enc, x):
    seen = []
    hooks = [b.register_forward_pre_hook(lambda m, args: seen.append(args[0].detach().clone()))
             for b in enc.visual.transformer.resblocks]
    with torch.no_grad():
        enc(x)
    for h in hooks:
        h.remove()
    return seen


def test_deep_prompts_are_appended_replaced_then_carried(visual):
    n, depth = 2, 2
    enc = PromptedVisionEncoder(visual, n_ctx=n, depth=depth)
    x = _images()
    ins = _block_inputs(enc, x)
    grid = (32 // 8) ** 2
    assert [t.shape[1] for t in ins] == [1 + grid + n] * 3  # [CLS] + patches + prompts at every layer
    # layer 0: the input prompts go through ln_pre together with [CLS] + patches (positional embedding first)
    torch.testing.assert_close(ins[0][:, -n:], visual.ln_pre(enc.prompts[0]).expand(3, -1, -1))
    # layer 1 < depth: the prompt slots are replaced by fresh, un-normalised tokens
    torch.testing.assert_close(ins[1][:, -n:], enc.prompts[1].expand(3, -1, -1))
    # layer 2 >= depth: the previous layer's prompt outputs are carried through unchanged
    with torch.no_grad():
        out1 = visual.transformer.resblocks[1](ins[1])
    torch.testing.assert_close(ins[2], out1)
    # [CLS] + patches at layer 0 are open_clip's own embeddings
    with torch.no_grad():
        ref = visual._embeds(x)
    torch.testing.assert_close(ins[0][:, :-n], ref)


def test_sequence_first_layout_gives_the_same_features(visual):
    # open_clip < 2.26 ran its transformer sequence-first (LND); the walk must follow the module's layout
    enc = PromptedVisionEncoder(visual, n_ctx=3, depth=2)
    x = _images()
    with torch.no_grad():
        ref_prompted, ref_plain = enc(x), visual(x)
        visual.transformer.batch_first = False
        for blk in visual.transformer.resblocks:
            blk.attn.batch_first = False
        torch.testing.assert_close(enc(x), ref_prompted, rtol=1e-5, atol=1e-6)
        plain = PromptedVisionEncoder(visual, n_ctx=3, depth=0)
        torch.testing.assert_close(plain(x), ref_plain, rtol=1e-5, atol=1e-6)


def test_depth_larger_than_the_encoder_is_refused(visual):
    with pytest.raises(PandError, match="prompt_depth=4"):
        PromptedVisionEncoder(visual, n_ctx=4, depth=4)


def test_only_prompts_and_projector_receive_gradients(tiny_arch, make_cfg):
    cfg = make_cfg(tiny_arch, prompt_depth=2, n_ctx_vision=2)
    student, pp = build_promptkd_student(cfg.promptkd, embed_dim=16)
    assert pp.image_size == 32
    student.train()
    T = torch.nn.functional.normalize(torch.randn(5, 16), dim=-1)
    f = student.projector(student.encoder(_images(4)))
    loss = promptkd_kd_loss(promptkd_logits(f, T, 10.0), torch.randn(4, 5))
    loss.backward()
    with_grad = {n for n, p in student.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
    trainable = {n for n, p in student.named_parameters() if p.requires_grad}
    assert with_grad == trainable
    assert trainable == {"encoder.prompts"} | {f"projector.{n}" for n, _ in student.projector.named_parameters()}
    frozen = [p for n, p in student.named_parameters() if n not in trainable]
    assert frozen and all(p.grad is None for p in frozen)
    assert not student.encoder.visual.training  # the frozen encoder stays in eval mode
    assert student.projector.training


def test_train_layernorm_unfreezes_only_layernorms(tiny_arch, make_cfg):
    cfg = make_cfg(tiny_arch, prompt_depth=1, train_layernorm=True)
    student, _ = build_promptkd_student(cfg.promptkd, embed_dim=16)
    names = {n for n, p in student.named_parameters() if p.requires_grad}
    extra = {n for n in names if n.startswith("encoder.visual.")}
    assert extra and all(".ln_" in n or n.split(".")[2].startswith("ln_") for n in extra)
    assert not any("attn" in n or "mlp" in n or "conv1" in n for n in names)


def test_projector_is_linear_bn_relu_linear(tiny_arch, make_cfg):
    student, _ = build_promptkd_student(make_cfg(tiny_arch, prompt_depth=1).promptkd, embed_dim=40)
    kinds = [type(m).__name__ for m in student.projector]
    assert kinds == ["Linear", "BatchNorm1d", "ReLU", "Linear"]
    assert student.projector[0].in_features == 16 and student.projector[-1].out_features == 40


def test_classifier_logits_and_dimension_check(tiny_arch, make_cfg):
    torch.manual_seed(0)
    student, _ = build_promptkd_student(make_cfg(tiny_arch, prompt_depth=2, logit_scale=7.0).promptkd, embed_dim=16)
    T = torch.nn.functional.normalize(torch.randn(6, 16), dim=-1)
    clf = PromptKDClassifier(student, T).eval()
    x = _images(2)
    with torch.no_grad():
        f = student.projector(student.encoder(x))
        expected = 7.0 * torch.nn.functional.normalize(f, dim=-1) @ T.T
        torch.testing.assert_close(clf(x), expected)
    with pytest.raises(ArtifactError, match="do not fit the student projector"):
        PromptKDClassifier(student, torch.randn(6, 12))


def test_student_file_rebuilds_the_same_classifier(tiny_arch, make_cfg, tmp_path):
    from pand.utils.io import save_tensors
    from pand_runtime.preprocess_spec import PreprocessSpec

    cfg = make_cfg(tiny_arch, prompt_depth=2, n_ctx_vision=3)
    torch.manual_seed(0)
    student, pp = build_promptkd_student(cfg.promptkd, embed_dim=16)
    with torch.no_grad():
        student.encoder.prompts.normal_()
        student.projector[1].running_mean.uniform_(-1, 1)
    clf = PromptKDClassifier(student, torch.nn.functional.normalize(torch.randn(5, 16), dim=-1)).eval()
    meta = classifier_metadata(cfg.promptkd, cfg.teacher, clf, pp, [f"c{i}" for i in range(5)])
    path = tmp_path / "student.safetensors"
    save_tensors(path, clf.state_dict(), meta)

    rebuilt, meta2 = load_promptkd_classifier(path)
    skeleton = build_promptkd_classifier(cfg.promptkd, cfg.teacher, num_classes=5, embed_dim=16)
    assert set(skeleton.state_dict()) == set(clf.state_dict())
    x = _images(2)
    with torch.no_grad():
        torch.testing.assert_close(rebuilt(x), clf(x))
    assert meta2["kind"] == "promptkd" and meta2["num_classes"] == 5
    assert PreprocessSpec.from_dict(meta2["preprocess"]) == pp


def test_unknown_student_arch_names_the_setting(make_cfg):
    with pytest.raises(PandError, match="promptkd.student_arch='no-such-vit'"):
        build_promptkd_student(make_cfg("no-such-vit").promptkd, embed_dim=16)
