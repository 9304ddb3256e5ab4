"""The recipe files carry the seed's NSD defaults (docs/method.md, "Stage NSD") and build the right criterion."""
import pytest

from pand.config import config_dir, load_config
from pand.nsd import NSDCriterion


def _cfg(recipe):
    return load_config(config_dir() / "cub_resnet18.yaml", [f"recipe={recipe}", "data.root=/nowhere"])


@pytest.mark.parametrize("recipe,opt,wd,sched,terms,kl", [
    ("pand", "adamw", 1e-4, "cosine", ("ce", "l1", "kl", "nlrd"), "batchmean"),
    ("vl2lite", "adamw", 0.0, "step", ("ce", "l1", "kl"), "vl2lite"),
    ("ce", "adamw", 1e-4, "cosine", ("ce",), "batchmean"),
])
def test_recipe_defaults(recipe, opt, wd, sched, terms, kl):
    cfg = _cfg(recipe)
    n = cfg.nsd
    assert (n.optimizer, n.lr, n.weight_decay, n.scheduler) == (opt, 1e-4, wd, sched)
    assert (n.epochs, n.batch_size, n.temperature, n.ce_ramp) == (300, 128, 2.0, 8.0)
    assert n.logit_scale == pytest.approx(1 / 0.07)
    crit = NSDCriterion.from_config(cfg.nsd, cfg.recipe)
    assert crit.term_names() == terms and crit.kl_reduction == kl
    assert cfg.psc.enabled == (recipe == "pand")
    if recipe == "vl2lite":
        assert (n.step_size, n.gamma, cfg.recipe.anchors) == (30, 0.5, "handcrafted")
    if recipe == "pand":
        assert (n.nlrd.k, n.nlrd.lam, n.nlrd.weight, cfg.recipe.anchors) == (3, 1.0, 1.0, "psc")
        assert crit.coefficients(299) == pytest.approx({"ce": 299 / 2400, "l1": (1 - 299 / 2400) / 2,
                                                        "kl": (1 - 299 / 2400) / 2, "nlrd": 1.0})
    if recipe == "ce":
        assert crit.coefficients(0) == {"ce": 1.0}
    assert cfg.trainer.devices == 4 and cfg.trainer.sync_batchnorm
