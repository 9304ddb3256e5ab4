"""promptkd.pool (reference / inductive / transductive), the deprecated regime key, the per-dataset kd_weight."""
from __future__ import annotations

import pytest

from pand.errors import DataError
from pand.promptkd.protocol import (
    POOLS,
    REFERENCE_KD_WEIGHTS,
    build_pool,
    pool_class_ids,
    resolve_base_novel,
    resolve_kd_weight,
    resolve_pool,
)


def test_reference_pool_is_exactly_the_training_images_of_all_classes(make_splits):
    splits = make_splits()
    base, novel = resolve_base_novel(splits)
    pool, parts = build_pool(splits, "reference", base)
    assert sorted(pool.paths) == sorted(p for p, _ in splits.train.samples)
    assert not set(pool.paths) & {p for p, _ in splits.test.samples}
    assert not set(pool.paths) & {p for p, _ in splits.val.samples}  # the held-out val split stays out too
    assert {y for part in parts for _, y in part.samples} == set(base) | set(novel)
    assert all(pool[i][1] == -1 for i in range(len(pool)))  # labels unreachable
    assert pool_class_ids("reference", base, novel) == list(range(6))


def test_inductive_pool_holds_no_novel_class_image(make_splits):
    splits = make_splits()
    base, novel = resolve_base_novel(splits)
    pool, parts = build_pool(splits, "inductive", base)
    novel_paths = {p for p, y in splits.train.samples if y in novel}
    assert novel_paths and not set(pool.paths) & novel_paths
    assert sorted(pool.paths) == sorted(p for p, y in splits.train.samples if y in base)
    assert pool_class_ids("inductive", base, novel) == base


def test_transductive_pool_adds_the_test_images(make_splits):
    splits = make_splits()
    base, _ = resolve_base_novel(splits)
    pool, _ = build_pool(splits, "transductive", base)
    assert sorted(pool.paths) == sorted([p for p, _ in splits.train.samples] + [p for p, _ in splits.test.samples])


def test_pool_setting_defaults_and_the_deprecated_regime_key():
    from omegaconf import OmegaConf

    from pand.config import load_config
    from pand.config.schema import PromptKDCfg

    assert POOLS == ("reference", "inductive", "transductive")
    assert resolve_pool(OmegaConf.structured(PromptKDCfg)) == "reference"
    cfg = load_config("configs/tiny.yaml", ["recipe=promptkd"])
    assert resolve_pool(cfg.promptkd) == "reference" and cfg.promptkd.teacher_prompts == "promptsrc"
    assert resolve_pool(PromptKDCfg(pool="inductive")) == "inductive"
    # the old key still works: regime=X means pool=X
    assert resolve_pool(PromptKDCfg(pool="reference", regime="transductive")) == "transductive"
    assert resolve_pool(load_config("configs/tiny.yaml", ["recipe=promptkd", "promptkd.regime=inductive"]).promptkd) \
        == "inductive"
    with pytest.raises(DataError, match="contradicts"):
        resolve_pool(PromptKDCfg(pool="inductive", regime="transductive"))
    with pytest.raises(DataError, match="Valid choices: reference, inductive, transductive"):
        resolve_pool(PromptKDCfg(pool="semi"))
    from pand.config import ConfigError

    with pytest.raises(ConfigError, match="promptkd.pool"):
        load_config("configs/tiny.yaml", ["recipe=promptkd", "promptkd.pool=all"])


def test_kd_weight_defaults_to_the_reference_value_per_dataset():
    from omegaconf import OmegaConf

    from pand.config import load_config
    from pand.config.schema import PromptKDCfg

    pk = OmegaConf.structured(PromptKDCfg)
    assert pk.kd_weight is None
    assert resolve_kd_weight(pk, "fgvc_aircraft")[0] == 200.0
    assert resolve_kd_weight(pk, "flowers102")[0] == 200.0
    assert resolve_kd_weight(pk, "dtd")[0] == 200.0
    assert set(REFERENCE_KD_WEIGHTS) == {"fgvc_aircraft", "flowers102", "dtd"}
    for name in ("oxford_pets", "stanford_cars", "cub_200_2011", "synthetic"):
        value, source = resolve_kd_weight(pk, name)
        assert value == 1000.0 and "reference" in source
    pk.kd_weight = 20.0
    assert resolve_kd_weight(pk, "dtd") == (20.0, "promptkd.kd_weight (set in the config)")
    # the recipe leaves it to the table; the tiny smoke-test config sets its own value explicitly
    cfg = load_config(None, ["recipe=promptkd", "data=synthetic", "teacher=tiny_vit"])
    assert cfg.promptkd.kd_weight is None
    assert resolve_kd_weight(cfg.promptkd, str(cfg.data.name))[0] == 1000.0


def test_the_runs_unlabelled_images_join_the_reference_and_transductive_pools_only(make_splits, tmp_path):
    from pand.data.base import UNLABELED, FGVCDataset

    splits = make_splits()
    base, _ = resolve_base_novel(splits)
    extra = [(p, UNLABELED) for p, _ in splits.val.samples[:2]]  # any image files do: their labels are never read
    splits.unlabeled = FGVCDataset(extra, splits.class_names, name="toy/unlabeled")
    ref, _ = build_pool(splits, "reference", base)
    assert sorted(ref.paths) == sorted([p for p, _ in splits.train.samples] + [p for p, _ in extra])
    assert all(ref[i][1] == UNLABELED for i in range(len(ref)))
    trans, _ = build_pool(splits, "transductive", base)
    assert set(p for p, _ in extra) <= set(trans.paths)
    ind, _ = build_pool(splits, "inductive", base)
    assert not set(p for p, _ in extra) & set(ind.paths)  # unknown classes: not in the base-only pool
