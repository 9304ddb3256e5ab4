"""Every shipped configuration loads under the schema's checks (issue 27): each run config of ``configs/`` alone and
with each recipe file (each group file on top of ``tiny.yaml``: test_config_loader.py), so a check added to a schema field can never
refuse a shipped setting unnoticed."""
import pytest

from pand.config import config_dir, list_group, load_config
from pand.config.schema import RECIPES

RUN_CONFIGS = sorted(config_dir().glob("*.yaml"))


def test_the_shipped_run_configs_are_found():
    assert {p.name for p in RUN_CONFIGS} >= {"tiny.yaml", "demo.yaml", "cub_resnet18.yaml",
                                             "imagefolder_quickstart.yaml"}


@pytest.mark.parametrize("path", RUN_CONFIGS, ids=lambda p: p.stem)
def test_each_run_config_loads_alone_and_with_each_recipe(path):
    cfg = load_config(path)
    assert cfg.recipe.name in RECIPES
    for recipe in list_group("recipe"):
        cfg = load_config(path, [f"recipe={recipe}"])
        assert cfg.recipe.name in RECIPES, (path.name, recipe)

