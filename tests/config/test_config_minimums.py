"""Issue 20 item 13, issue 27: out-of-range counts are refused when the configuration is loaded, before any stage
runs, and every integer setting of the schema declares its bound (so no count is left unchecked)."""
import dataclasses
import typing

import pytest

from pand.config import ConfigError, config_dir, load_config
from pand.config.schema import CHECKS, RunCfg

TINY = str(config_dir() / "tiny.yaml")


@pytest.mark.parametrize("override", [
    "nsd.epochs=-1", "nsd.epochs=0", "psc.epochs=-3", "nsd.batch_size=0", "nsd.teacher_cache.views=-1",
    "data.labels_per_class=0", "nsd.nlrd.k=0", "promptkd.epochs=0", "promptkd.promptsrc.epochs=0",
    "promptkd.batch_size=0", "promptkd.eval_batch_size=0",
    # accepted before issue 27: a negative warm-up, a zero logging interval, a negative prompt depth or context
    "promptkd.warmup_epochs=-1", "promptkd.promptsrc.warmup_epochs=-1", "trainer.log_every=0",
    "promptkd.prompt_depth=-1", "promptkd.n_ctx_vision=-1", "promptkd.promptsrc.n_ctx_text=-1",
    "promptkd.promptsrc.prompt_depth_vision=-2", "teacher.image_size=0", "student.resize_size=0",
])
def test_negative_or_zero_counts_are_refused_at_load(override):
    key = override.split("=")[0]
    with pytest.raises(ConfigError, match=rf"bad value for '{key}': {key}=-?\d+\. Allowed: an integer >= "):
        load_config(TINY, [override])


def test_valid_and_null_values_pass():
    cfg = load_config(TINY, ["nsd.epochs=1", "data.labels_per_class=null", "trainer.skip_nonfinite_steps=true"])
    assert cfg.nsd.epochs == 1 and cfg.data.labels_per_class is None and cfg.trainer.skip_nonfinite_steps


def test_teacher_cache_views_takes_an_int_or_auto():
    assert load_config(TINY, ["nsd.teacher_cache.views=auto"]).nsd.teacher_cache.views == "auto"
    assert load_config(TINY, ["nsd.teacher_cache.views=8"]).nsd.teacher_cache.views == 8
    assert load_config(TINY).nsd.teacher_cache.views == 0
    for bad in ("fast", "1.5", "null", "true", '"8"'):
        with pytest.raises(ConfigError, match=r"'nsd.teacher_cache.views'.*Allowed: an integer >= 0 or 'auto'"):
            load_config(TINY, [f"nsd.teacher_cache.views={bad}"])


# integers that are not counts: seeds take any value; data.dtd_partition is checked by the DTD loader (1..10)
NOT_COUNTS = {"seed", "val_seed", "dtd_partition"}


def _int_fields(cls, prefix=""):
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        t = hints[f.name]
        if dataclasses.is_dataclass(t):
            if t.__name__ != "SyntheticCfg":  # the generator checks its own settings (validate_settings)
                yield from _int_fields(t, prefix + f.name + ".")
        elif t in (int, typing.Optional[int]) or f.name == "views":
            yield prefix + f.name, f.name


def test_every_integer_setting_declares_its_bound():
    unchecked = [key for key, name in _int_fields(RunCfg) if name not in NOT_COUNTS and key not in CHECKS]
    assert not unchecked, f"integer settings without a bound (declare them with count(...)): {unchecked}"
