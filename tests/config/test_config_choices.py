"""The schema's choice lists are the factories' own tables (issue 27): what the config accepts is exactly what the
optimiser factory builds, the runtime spec can resample with and the transform factory can augment with."""
import pytest
import torch
from PIL import Image

from pand.config import ConfigError, config_dir, load_config
from pand.config.schema import CHOICES
from pand.data.transforms import AUGMENTS, create_transform
from pand.engine.optim import OPTIMIZERS, SCHEDULERS, build_optimizer, build_scheduler
from pand.errors import PandError
from pand_runtime.preprocess_spec import INTERPOLATIONS, PreprocessSpec

OPTIMIZER_KEYS = ("psc.optimizer", "nsd.optimizer", "promptkd.optimizer")


def test_the_schema_offers_exactly_the_factories_names():
    for key in OPTIMIZER_KEYS:
        assert tuple(CHOICES[key]) == OPTIMIZERS, key
    assert tuple(CHOICES["nsd.scheduler"]) == SCHEDULERS
    assert tuple(CHOICES["student.interpolation"]) == INTERPOLATIONS
    assert tuple(CHOICES["student.augment"]) == AUGMENTS


def test_every_offered_optimizer_and_scheduler_builds_and_nothing_else_does():
    params = [torch.nn.Parameter(torch.zeros(2))]
    for name in OPTIMIZERS:
        opt = build_optimizer(params, name, 0.1)
        for sched in SCHEDULERS:
            build_scheduler(opt, sched, epochs=3)
    with pytest.raises(PandError, match="must be one of"):
        build_optimizer(params, "lion", 0.1)
    with pytest.raises(PandError, match="must be one of"):
        build_scheduler(build_optimizer(params, OPTIMIZERS[0], 0.1), "onecycle", epochs=3)


def test_every_offered_interpolation_and_augmentation_makes_a_transform():
    img = Image.new("RGB", (40, 30), (120, 60, 30))
    for interp in INTERPOLATIONS:
        spec = PreprocessSpec(image_size=16, resize_size=18, interpolation=interp)
        for augment in AUGMENTS:
            assert tuple(create_transform(spec, is_train=True, augment=augment)(img).shape) == (3, 16, 16)


def test_a_value_outside_the_table_is_refused_at_load_listing_the_table():
    with pytest.raises(ConfigError) as e:
        load_config(config_dir() / "tiny.yaml", ["nsd.optimizer=lion"])
    assert f"Valid choices: {', '.join(OPTIMIZERS)}" in str(e.value)
