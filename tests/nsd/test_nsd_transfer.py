"""Stage NSD with an unlabelled transfer set (data.unlabeled) and the logit-KD recipe (kd)."""
from types import SimpleNamespace

import pytest
import torch

import pand.nsd.criterion as criterion_mod
from pand.data.base import UNLABELED
from pand.engine.loaders import MixedBatchSampler, labeled_per_batch
from pand.nsd import LiveTeacher, fit
from pand.nsd.metrics import read_metrics


class Unlabelled(torch.utils.data.Dataset):
    """A toy dataset whose labels are all UNLABELED (the transfer set's extra images)."""

    def __init__(self, base):
        self.base = base

    def __len__(self):
        return len(self.base)

    def __getitem__(self, i):
        return self.base[i][0], UNLABELED


class Concat(torch.utils.data.Dataset):
    def __init__(self, a, b):
        self.a, self.b = a, b

    def __len__(self):
        return len(self.a) + len(self.b)

    def __getitem__(self, i):
        return self.a[i] if i < len(self.a) else self.b[i - len(self.a)]


def transfer_splits(toy):
    s = toy.make_splits(n_train=3)  # 12 labelled
    s.unlabeled = Unlabelled(type(s.train)(6, 4, seed=9, augment=True))  # 24 unlabelled (the toy dataset's class)
    s.transfer_set = lambda: Concat(s.train, s.unlabeled)
    return s


def _fit(toy, out, cfg, splits, **kw):
    return fit(cfg, out, splits, LiveTeacher(toy.FakeTeacher(), toy.mean, toy.std), toy.make_anchors(), **kw)


@pytest.mark.parametrize("n_lab,n_unl,batch,world", [(12, 24, 8, 1), (5, 100, 16, 1), (40, 10, 8, 2), (3, 3, 2, 1)])
def test_every_batch_holds_labelled_images_and_is_a_pure_function_of_seed_and_epoch(n_lab, n_unl, batch, world):
    per = labeled_per_batch(batch, n_lab, n_unl)
    assert 1 <= per < batch
    for epoch in range(3):
        batches = []
        for rank in range(world):
            s = MixedBatchSampler(n_lab, n_unl, batch, per, seed=7, rank=rank, world_size=world)
            s.set_epoch(epoch, 0)
            got = list(s)
            again = MixedBatchSampler(n_lab, n_unl, batch, per, seed=7, rank=rank, world_size=world)
            again.set_epoch(epoch, 0)
            assert got == list(again)  # resumed runs and other ranks see the same order
            assert len(got) == len(s) >= 1
            for b in got:
                idx = [i for i, _ in b]
                assert len(idx) == batch
                assert sum(i < n_lab for i in idx) == per  # the fixed labelled share, never zero
                assert all(0 <= i < n_lab + n_unl for i in idx)
            batches.append(got)
        if world == 2:  # ranks draw disjoint labelled slots of one stream within a pass
            r0 = {i for b in batches[0] for i, _ in b if i < n_lab}
            r1 = {i for b in batches[1] for i, _ in b if i < n_lab}
            assert r0 != r1


def test_sampler_passes_views_per_image():
    s = MixedBatchSampler(4, 4, 4, 2, seed=0)
    views = [10 + i for i in range(8)]
    s.set_epoch(1, views)
    assert all(v == 10 + i for b in s for i, v in b)


def test_labeled_fraction_is_respected_and_checked():
    assert labeled_per_batch(16, 240, 480, 0.5) == 8
    assert labeled_per_batch(16, 240, 480) == 5  # 16 * 240/720
    assert labeled_per_batch(16, 1, 10_000) == 1  # never zero
    with pytest.raises(Exception, match="labeled_fraction"):
        labeled_per_batch(16, 10, 10, 1.0)


def test_ce_never_sees_an_unlabelled_image_and_teacher_terms_see_all(toy, tmp_path, monkeypatch):
    seen_ce, seen_kl = [], []
    real_ce, real_kl = criterion_mod.ce_loss, criterion_mod.text_logit_kd

    def spy_ce(z, labels):
        seen_ce.append(labels.clone())
        return real_ce(z, labels)

    def spy_kl(h, *a, **k):
        seen_kl.append(h.shape[0])
        return real_kl(h, *a, **k)

    monkeypatch.setattr(criterion_mod, "ce_loss", spy_ce)
    monkeypatch.setattr(criterion_mod, "text_logit_kd", spy_kl)
    splits = transfer_splits(toy)
    res = _fit(toy, tmp_path, toy.make_cfg("recipe=pand", "nsd.epochs=2"), splits)
    assert seen_ce and all(bool((y >= 0).all()) and y.numel() >= 1 for y in seen_ce)
    per = labeled_per_batch(8, 12, 24)
    assert all(y.numel() == per for y in seen_ce)
    assert all(n == 8 for n in seen_kl)  # the alignment terms use the whole batch
    steps = [r for r in read_metrics(tmp_path / "metrics.jsonl") if r["kind"] == "epoch"]
    assert [r["steps"] for r in steps] == [36 // 8] * 2
    assert res.test["n"] == 16


def test_resume_with_a_transfer_set_is_bit_identical(toy, tmp_path):
    cfg = toy.make_cfg("recipe=pand")
    ref = _fit(toy, tmp_path / "a", cfg, transfer_splits(toy))

    class Stop(Exception):
        pass

    def hook(epoch, step):
        if epoch == 1 and step == 1:
            raise Stop

    with pytest.raises(Stop):
        _fit(toy, tmp_path / "b", cfg, transfer_splits(toy), step_hook=hook)
    res = _fit(toy, tmp_path / "b", cfg, transfer_splits(toy), resume=True)
    assert res.best_epoch == ref.best_epoch and res.test_top1 == ref.test_top1
    for k, v in ref.student_state.items():
        assert torch.equal(v, res.student_state[k]), k


def test_kd_recipe_trains_the_classifier_on_teacher_logits_without_heads(toy, tmp_path, monkeypatch):
    calls = []
    real = criterion_mod.logit_kd

    def spy(z, l_t, t):
        calls.append((z.shape, l_t.shape, t))
        return real(z, l_t, t)

    monkeypatch.setattr(criterion_mod, "logit_kd", spy)
    res = _fit(toy, tmp_path, toy.make_cfg("recipe=kd", "nsd.epochs=1"), toy.make_splits())
    assert set(res.final_terms) == {"loss", "ce", "kd"}
    assert calls and all(zs == ls == (8, 4) and t == 2.0 for zs, ls, t in calls)
    assert not any(k.startswith("heads") for k in res.student_state)
    rec = [r for r in read_metrics(tmp_path / "metrics.jsonl") if r["kind"] == "epoch"][0]
    assert rec["coef_ce"] == 0.5 and rec["coef_kd"] == 0.5  # configs/recipe/kd.yaml: the classic constant 0.5
