"""The two distributions list every package of their source trees, and nothing imports the old top-level names.

``pand`` (setup.cfg) ships ``pand.*`` and ``pand_export`` (the folder ``export/``); ``pand-runtime``
(``runtime/pyproject.toml``) ships ``pand_runtime`` (the folder ``runtime/``). Their package lists are explicit
because the folder names differ from the import names, so a new sub-package must be added by hand: this test says
which.
"""
import configparser
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _packages_under(folder: Path, import_name: str) -> set:
    out = set()
    for init in folder.rglob("__init__.py"):
        rel = init.parent.relative_to(folder)
        if any(part in ("build", "__pycache__") or part.endswith(".egg-info") for part in rel.parts):
            continue
        out.add(".".join((import_name, *rel.parts)))
    return out


def test_setup_cfg_lists_every_training_and_export_package():
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    listed = set(cfg["options"]["packages"].split())
    want = _packages_under(ROOT / "pand", "pand") | _packages_under(ROOT / "export", "pand_export")
    assert listed == want, f"setup.cfg [options] packages: add {sorted(want - listed)}, drop {sorted(listed - want)}"
    assert "pand_export = export" in cfg["options"]["package_dir"]
    assert "pand-runtime" in cfg["options"]["install_requires"]


def test_runtime_pyproject_lists_every_runtime_package():
    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
    meta = tomllib.loads((ROOT / "runtime" / "pyproject.toml").read_text())
    tool = meta["tool"]["setuptools"]
    assert tool["package-dir"] == {"pand_runtime": "."}
    assert set(tool["packages"]) == _packages_under(ROOT / "runtime", "pand_runtime")
    deps = " ".join(meta["project"]["dependencies"])
    assert "torch" not in deps and "pand" not in deps.replace("pand-runtime", "")
    assert set(meta["project"]["scripts"]) == {"pand-bench", "pand-engine"}


def test_no_module_imports_the_folder_names():
    """``runtime`` and ``export`` are folder names only; PyPI has unrelated packages with both import names."""
    bad = re.compile(r"^\s*(from|import)\s+(runtime|export)(\.|\s|$)", re.M)
    hits = [str(p.relative_to(ROOT)) for folder in ("pand", "export", "runtime", "tests", "bench")
            for p in (ROOT / folder).rglob("*.py") if "build" not in p.parts and bad.search(p.read_text())]
    assert hits == []


def test_runtime_depends_on_nothing_of_the_training_side():
    bad = re.compile(r"^\s*(from|import)\s+(pand|pand_export|torch|torchvision|open_clip|omegaconf)(\.|\s|$)", re.M)
    hits = [str(p.relative_to(ROOT)) for p in (ROOT / "runtime").rglob("*.py")
            if "build" not in p.parts and bad.search(p.read_text())]
    assert hits == []
