"""``bench/distill.py``'s seed selection and report header (the study itself trains for hours: not run here).

A study can be extended with more seeds on another day or machine (``--seeds 5 --first-seed 3``): the seeds it
trains, the ones its report names and the refusal of an empty range are checked.
"""
import importlib.util
import sys
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

BENCH = Path(__file__).resolve().parents[2] / "bench" / "distill.py"


def _load_bench():
    spec = importlib.util.spec_from_file_location("pand_bench_distill", BENCH)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # its dataclasses look their module up there
    spec.loader.exec_module(mod)
    return mod


def test_seed_list_is_first_seed_to_n_minus_one():
    bench = _load_bench()
    assert bench.seed_list(5) == [0, 1, 2, 3, 4]
    assert bench.seed_list(5, 3) == [3, 4]
    assert bench.seed_list(1, 0) == [0]


@pytest.mark.parametrize("seeds,first", [(3, 3), (3, 7)])
def test_seed_list_refuses_an_empty_range_naming_both_options(seeds, first):
    bench = _load_bench()
    with pytest.raises(click.UsageError, match=rf"--first-seed {first} .*0\.\.{seeds - 1}"):
        bench.seed_list(seeds, first)


def test_cli_refuses_an_empty_seed_range_before_any_work(tmp_path):
    bench = _load_bench()
    res = CliRunner().invoke(bench.main, ["--seeds", "2", "--first-seed", "2", "--run-dir", str(tmp_path / "d")])
    assert res.exit_code == 2, res.output
    assert "--first-seed 2 leaves no seed to train" in res.output
    assert not (tmp_path / "d").exists()


def test_report_header_names_the_seeds_it_covers():
    bench = _load_bench()
    row = {"variant": "pand", "schedule": 4, "steps": 2040, "start": "scratch", "transfer": "labelled",
           "val": {"mean": 0.6, "std": 0.05, "n": 2}, "test": {"mean": 0.55, "std": 0.04, "n": 2},
           "test_per_seed": [0.51, 0.59], "gain_over_ce_val": 0.1}
    md = bench.render({"pand/x4-scratch-labelled": row}, {}, {}, [3, 4], 60.0, "bench/distill.py --first-seed 3")
    assert md.startswith("# Distillation study (2 seeds, 3..4)\n")
    assert "| pand | 4x (2040 steps) | scratch | labelled | 60.0 +- 5.0 | 55.0 +- 4.0 | 51.0 59.0 | +10.0 |" in md
    assert bench.render({}, {}, {}, [0], 60.0, "x").startswith("# Distillation study (seed 0)\n")
