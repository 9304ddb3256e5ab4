"""``trainer.compile=true``: the student trains through ``torch.compile`` (inductor, on the CPU here) and computes
what the eager student computes; checkpoints keep the raw module's parameter names."""
import pytest
import torch
import torch._inductor.config
from torch._dynamo.utils import counters

from pand.nsd import LiveTeacher, fit

TERMS = ("loss", "ce", "l1", "kl", "nlrd")


@pytest.mark.timeout(600)
def test_compiled_student_matches_eager(toy, tmp_path, monkeypatch):
    # the toy student has dropout: make inductor draw it from eager's RNG (it uses its own Philox stream otherwise)
    monkeypatch.setattr(torch._inductor.config, "fallback_random", True)
    torch._dynamo.reset()
    counters.clear()
    runs = {}
    for mode in ("eager", "compiled"):
        # SGD: parameters whose true gradient is zero (a conv bias before BatchNorm) get rounding-noise gradients,
        # which SGD keeps noise-sized and Adam would normalise into full steps that differ between the two runs
        cfg = toy.make_cfg("recipe=pand", "nsd.epochs=2", "nsd.optimizer=sgd", f"trainer.compile={mode == 'compiled'}")
        runs[mode] = fit(cfg, tmp_path / mode, toy.make_splits(), LiveTeacher(toy.FakeTeacher(), toy.mean, toy.std),
                         toy.make_anchors())
    assert counters["stats"]["unique_graphs"] >= 1  # the compiled run really went through torch.compile
    eager, compiled = toy.epochs(tmp_path / "eager"), toy.epochs(tmp_path / "compiled")
    assert len(eager) == len(compiled) == 2
    for e, c in zip(eager, compiled):  # inductor may fuse and reorder float ops: equal up to rounding
        for k in TERMS:
            assert c[k] == pytest.approx(e[k], rel=1e-5, abs=1e-7), (e["epoch"], k)
    assert runs["compiled"].student_state.keys() == runs["eager"].student_state.keys()  # no "_orig_mod." prefix
    for k, v in runs["eager"].student_state.items():
        assert torch.allclose(runs["compiled"].student_state[k], v, rtol=1e-4, atol=1e-6), k
