"""Issue 20 item 13: out-of-range counts are refused when the configuration is loaded, before any stage runs."""
import pytest

from pand.config import ConfigError, config_dir, load_config

TINY = str(config_dir() / "tiny.yaml")


@pytest.mark.parametrize("override", ["nsd.epochs=-1", "nsd.epochs=0", "psc.epochs=-3", "nsd.batch_size=0",
                                      "nsd.teacher_cache.views=-1", "data.labels_per_class=0"])
def test_negative_or_zero_counts_are_refused_at_load(override):
    key = override.split("=")[0]
    with pytest.raises(ConfigError, match=rf"'{key}'.*must be >= "):
        load_config(TINY, [override])


def test_valid_and_null_values_pass():
    cfg = load_config(TINY, ["nsd.epochs=1", "data.labels_per_class=null", "trainer.skip_nonfinite_steps=true"])
    assert cfg.nsd.epochs == 1 and cfg.data.labels_per_class is None and cfg.trainer.skip_nonfinite_steps


def test_teacher_cache_views_takes_an_int_or_auto():
    assert load_config(TINY, ["nsd.teacher_cache.views=auto"]).nsd.teacher_cache.views == "auto"
    assert load_config(TINY, ["nsd.teacher_cache.views=8"]).nsd.teacher_cache.views == 8
    assert load_config(TINY).nsd.teacher_cache.views == 0
    for bad in ("fast", "1.5", "null", "true", '"8"'):
        with pytest.raises(ConfigError, match=r"'nsd.teacher_cache.views'.*integer >= 0 or 'auto'"):
            load_config(TINY, [f"nsd.teacher_cache.views={bad}"])
