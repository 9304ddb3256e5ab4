"""Config composition: groups, dotted overrides, errors that name the key and the valid choices."""
from pathlib import Path

import pytest
from click.testing import CliRunner

from pand.cli import cli
from pand.config import ConfigError, list_group, load_config, to_yaml

ROOT = Path(__file__).resolve().parents[2]
TINY = str(ROOT / "configs" / "tiny.yaml")


def test_tiny_composes_groups_and_body():
    cfg = load_config(TINY)
    assert cfg.data.name == "synthetic"
    assert cfg.recipe.name == "pand"
    assert cfg.teacher.arch == "pand-tiny-vit"
    assert cfg.trainer.accelerator == "cpu"
    # the body of tiny.yaml wins over the group files and the recipe's _global_ block
    assert cfg.nsd.epochs == 2
    # the recipe's _global_ block reached the nsd section
    assert cfg.nsd.nlrd.k == 3 and cfg.nsd.weight_decay == pytest.approx(1e-4)


def test_dotted_and_group_overrides():
    cfg = load_config(TINY, ["nsd.nlrd.k=5", "trainer.devices=4", "data=oxford_pets", "data.root=/x"])
    assert cfg.nsd.nlrd.k == 5
    assert cfg.trainer.devices == 4
    assert cfg.data.name == "oxford_pets" and cfg.data.root == "/x"
    assert "pet" in cfg.data.template


def test_recipe_switch_changes_optimiser_defaults():
    vl = load_config(TINY, ["recipe=vl2lite"])
    assert vl.recipe.anchors == "handcrafted" and vl.recipe.use_nlrd is False
    assert vl.nsd.scheduler == "step" and vl.nsd.weight_decay == 0.0
    ce = load_config(TINY, ["recipe=ce"])
    assert ce.recipe.use_teacher is False and ce.psc.enabled is False


@pytest.mark.parametrize(
    "override, expected",
    [
        ("nsd.nlrd.kk=3", "nsd.nlrd.kk"),
        ("nsd.epochs=abc", "nsd.epochs"),
        ("recipe.name=foo", "Valid choices: ce, kd, vl2lite, pand, promptkd"),
        ("data=not_a_dataset", "cub_200_2011"),
        ("bogus=1", "bogus"),
    ],
)
def test_bad_overrides_name_the_key(override, expected):
    with pytest.raises(ConfigError) as e:
        load_config(TINY, [override])
    assert expected in str(e.value)


def test_unknown_key_lists_valid_keys():
    with pytest.raises(ConfigError) as e:
        load_config(TINY, ["nsd.nlrd.kk=3"])
    assert "k, lam, weight" in str(e.value)


def test_missing_required_value(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("defaults:\n  - recipe: pand\n")
    with pytest.raises(ConfigError) as e:
        load_config(p, root=ROOT / "configs")
    assert "data.name" in str(e.value) and "missing" in str(e.value)


def test_every_group_file_loads():
    for group in ("data", "teacher", "student", "recipe", "trainer"):
        names = list_group(group)
        assert names, group
        for name in names:
            cfg = load_config(TINY, [f"{group}={name}"])
            assert cfg is not None
    assert set(list_group("data")) >= {
        "cub_200_2011", "fgvc_aircraft", "oxford_pets", "stanford_dogs", "stanford_cars", "flowers102", "dtd",
        "nabirds", "imagefolder", "synthetic",
    }
    assert set(list_group("recipe")) >= {"ce", "vl2lite", "pand", "promptkd"}


def test_saved_config_round_trips(tmp_path):
    cfg = load_config(TINY, ["nsd.nlrd.k=7"])
    p = tmp_path / "config.yaml"
    p.write_text(to_yaml(cfg))
    again = load_config(p)
    assert again == cfg


def test_cli_print_config_and_typo():
    r = CliRunner().invoke(cli, [TINY, "--print-config", "nsd.nlrd.k=5"])
    assert r.exit_code == 0, r.output
    assert "k: 5" in r.output
    r = CliRunner().invoke(cli, [TINY, "--print-config", "nsd.nlrd.kk=5"])
    assert r.exit_code != 0
    assert "nsd.nlrd.kk" in r.output


def test_cli_help():
    r = CliRunner().invoke(cli, ["--help"])
    assert r.exit_code == 0 and "--dry-run" in r.output and "--resume" in r.output
