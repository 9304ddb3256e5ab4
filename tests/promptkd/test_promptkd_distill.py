"""The student can actually distil (the KD loss falls), and the deployable graph exports to ONNX (ORT parity)."""
from __future__ import annotations

import pytest
import torch

from pand.promptkd.loss import promptkd_kd_loss, promptkd_logits
from pand.promptkd.student import PromptKDClassifier, build_promptkd_student, trainable_parameters


def test_prompts_and_projector_fit_a_teacher(tiny_arch, make_cfg):
    torch.manual_seed(0)
    student, _ = build_promptkd_student(make_cfg(tiny_arch, prompt_depth=2, logit_scale=10.0).promptkd, embed_dim=16)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(8, 3, 32, 32, generator=g)
    T = torch.nn.functional.normalize(torch.randn(6, 16, generator=g), dim=-1)
    teacher_logits = 10.0 * torch.nn.functional.normalize(torch.randn(8, 16, generator=g), dim=-1) @ T.T
    prompts0 = student.encoder.prompts.detach().clone()
    opt = torch.optim.SGD([p for _, p in trainable_parameters(student)], lr=0.5, momentum=0.9)
    student.train()
    losses = []
    for _ in range(20):
        loss = promptkd_kd_loss(promptkd_logits(student.projector(student.encoder(x)), T, 10.0), teacher_logits)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.3 * losses[0]
    assert not torch.equal(student.encoder.prompts.detach(), prompts0)  # the prompts themselves were updated


@pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning", "ignore:You are using the legacy TorchScript")
def test_classifier_exports_to_onnx_with_dynamic_batch(tiny_arch, make_cfg, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    torch.manual_seed(0)
    student, _ = build_promptkd_student(make_cfg(tiny_arch, prompt_depth=2, n_ctx_vision=3).promptkd, embed_dim=16)
    with torch.no_grad():
        student.encoder.prompts.normal_()
    clf = PromptKDClassifier(student, torch.nn.functional.normalize(torch.randn(5, 16), dim=-1)).eval()
    path = tmp_path / "promptkd.onnx"
    torch.onnx.export(clf, (torch.randn(2, 3, 32, 32),), str(path), dynamo=False, input_names=["images"],
                      output_names=["logits"], dynamic_axes={"images": {0: "batch"}, "logits": {0: "batch"}},
                      opset_version=17)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = torch.randn(3, 3, 32, 32)
    (got,) = sess.run(None, {"images": x.numpy()})
    with torch.no_grad():
        ref = clf(x).numpy()
    assert got.shape == (3, 5)
    assert abs(got - ref).max() < 1e-4
