"""The schema's choice lists are their owners' tables (issue 27): what the config accepts is exactly what the
optimiser factory builds, the runtime spec can resample with, the transform factory can augment with, the recipe
files name, and each other owner's table or consumer takes; a new choice key must name its owner."""
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


# Every choice list of the schema and where its values are consumed. A list taken from its owner's table is compared
# with that table; a list the consumer code only compares strings against is the schema's own (listed here, so a new
# choice key must be placed in one of the two groups). Adding a value to an owner's table without the schema
# accepting it, or a schema choice the owner cannot handle, fails below.
def _owner_tables():
    from pand.data.aircraft import CLASS_FILES
    from pand.data.registry import DATASETS
    from pand.losses.kd import KL_REDUCTIONS
    from pand.nsd.teacher_cache.format import DTYPES
    from pand.promptkd.protocol import POOLS
    from pand.psc.prompt_learner import POSITIONS, PROMPT_FORMS

    return {
        "data.name": tuple(DATASETS), "data.aircraft_level": tuple(CLASS_FILES),
        "recipe.kl_reduction": KL_REDUCTIONS, "psc.class_token_position": POSITIONS, "psc.prompt_form": PROMPT_FORMS,
        "nsd.teacher_cache.dtype": tuple(DTYPES), "promptkd.pool": POOLS,
        "student.interpolation": INTERPOLATIONS, "student.augment": AUGMENTS, "nsd.scheduler": SCHEDULERS,
        **{key: OPTIMIZERS for key in OPTIMIZER_KEYS},
    }


SCHEMA_OWNED = {"recipe.name", "recipe.anchors", "recipe.distill", "teacher.precision", "trainer.accelerator",
                "trainer.precision", "promptkd.regime", "promptkd.teacher_prompts", "promptkd.select"}


def test_every_choice_list_is_its_owners_table():
    owners = _owner_tables()
    assert set(CHOICES) == set(owners) | SCHEMA_OWNED, "place a new choice key with its owner's table or here"
    assert not set(owners) & SCHEMA_OWNED
    for key, table in owners.items():
        assert tuple(CHOICES[key]) == tuple(table), key


def test_the_recipes_are_the_recipe_files_and_the_run_kinds():
    from pand.config import list_group
    from pand.config.schema import RECIPES
    from pand.engine.run_folder import KINDS

    names = {}
    for stem in list_group("recipe", config_dir()):
        cfg = load_config(config_dir() / "tiny.yaml", [f"recipe={stem}"])
        names[stem] = cfg.recipe.name
    assert names == {r: r for r in RECIPES}  # one file per recipe, named after it
    assert tuple(KINDS) == tuple(RECIPES)  # a kd run folder is a run folder (kd was missing from KINDS)


def test_the_schema_owned_lists_are_what_their_consumers_take():
    from types import SimpleNamespace

    from pand.engine.device import precision_of
    from pand.promptkd.class_vectors import teacher_prompts_source
    from pand.promptkd.protocol import POOLS, resolve_pool

    assert {precision_of(d) for d in (None, torch.float16, torch.bfloat16)} == set(CHOICES["trainer.precision"])
    for v in CHOICES["promptkd.teacher_prompts"]:
        assert teacher_prompts_source(v) in CHOICES["promptkd.teacher_prompts"]
    with pytest.raises(PandError):
        teacher_prompts_source("bogus")
    for regime in CHOICES["promptkd.regime"]:
        assert regime in POOLS and resolve_pool(SimpleNamespace(pool="reference", regime=regime)) == regime
    with pytest.raises(PandError):
        resolve_pool(SimpleNamespace(pool="reference", regime="bogus"))


def test_a_run_folder_of_every_recipe_can_be_resumed(tmp_path):
    from pand.config.schema import RECIPES
    from pand.engine.run_folder import check_run_folder

    for recipe in RECIPES:  # kd's run.json was refused as "not a pand run record" while KINDS lacked it
        folder = check_run_folder(tmp_path / recipe, recipe, "all", resume=False)
        folder.start()
        folder.finish(["nsd"])
        assert check_run_folder(tmp_path / recipe, recipe, "all", resume=True).record["kind"] == recipe
