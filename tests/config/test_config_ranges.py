"""Issue 31 item 9: numeric settings are range-checked at load, naming the key and the allowed range, before any
stage runs; YAML errors name the file, the line and the problem. pand-train exits 2 without a traceback."""
import pytest

from pand.cli import main as cli_main
from pand.config import config_dir, load_config
from pand.errors import ConfigError

TINY = str(config_dir() / "tiny.yaml")


@pytest.mark.parametrize("override,allowed", [
    ("nsd.lr=-1", "> 0"), ("nsd.lr=nan", "> 0"), ("nsd.lr=inf", "> 0"), ("nsd.lr=0", "> 0"),
    ("nsd.temperature=0", "> 0"), ("nsd.logit_scale=-5", "> 0"),
    ("psc.lr=-0.1", "> 0"), ("data.val_fraction=1.0", r"in \[0, 1\)"), ("nsd.ce_weight=2", r"in \[0, 1\]"),
    ("promptkd.temperature=0", "> 0"),
])
def test_out_of_range_values_are_refused_naming_key_and_range(override, allowed):
    key = override.split("=")[0]
    with pytest.raises(ConfigError, match=rf"bad value for '{key}'.*Allowed: a finite number {allowed}"):
        load_config(TINY, [override])


def test_values_in_range_load():
    cfg = load_config(TINY, ["nsd.lr=1e-3", "nsd.nlrd.k=1", "nsd.temperature=0.5", "nsd.ce_weight=null"])
    assert cfg.nsd.lr == 1e-3 and cfg.nsd.nlrd.k == 1


@pytest.mark.parametrize("text,where,problem", [
    ("name: a\nname: b\n", ":2:1", "duplicate key name"),
    ("nsd:\n  epochs: [1, 2\nname: x\n", ":3:", "did not find expected ',' or ']'"),
])
def test_yaml_errors_name_file_line_and_problem(tmp_path, text, where, problem):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=rf"{path}{where}.*YAML error: .*{problem}"):
        load_config(path)


def test_pand_train_exits_2_before_any_stage(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        cli_main([TINY, "nsd.nlrd.k=0", "--run-dir", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert e.value.code == 2 and "nsd.nlrd.k" in err and "Traceback" not in err
    assert not (tmp_path / "run").exists()  # nothing ran, nothing was written
    (tmp_path / "dup.yaml").write_text("defaults:\n  - data: synthetic\nname: a\nname: b\n")
    with pytest.raises(SystemExit) as e:
        cli_main([str(tmp_path / "dup.yaml"), "--dry-run"])
    err = capsys.readouterr().err
    assert e.value.code == 2 and "duplicate key" in err and "Traceback" not in err
