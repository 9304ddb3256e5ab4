"""Issue 27 item 2: the functions outside the training loops that take a configuration take it typed: a parameter
named ``cfg``/``*_cfg`` in pand.data, the baseline, the sweep, the CLI, the demo's runner and upstream set, and
pand_export is annotated with a schema dataclass (``DataCfg``, ``StudentCfg``, ``RunCfg``, ...) or the generator's
``SyntheticSettings`` - never ``Any`` or nothing. Read from the source (AST), so nothing is imported."""
import ast
from pathlib import Path

from pand.config import schema
from pand.data.synthetic import settings

ROOT = Path(__file__).resolve().parents[2]
TYPED = [*sorted((ROOT / "pand" / "data").rglob("*.py")), ROOT / "pand" / "baseline.py",
         *sorted((ROOT / "pand" / "sweep").glob("*.py")), ROOT / "pand" / "cli.py", ROOT / "pand" / "demo" / "runner.py",
         ROOT / "pand" / "demo" / "upstream.py", *sorted((ROOT / "export").glob("*.py"))]
CLASSES = {n for n in schema.__all__ if n.endswith("Cfg")} | {"SyntheticSettings"}


def _config_params():
    for path in TYPED:
        for fn in ast.walk(ast.parse(path.read_text())):
            if not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            if any("click" in ast.unparse(d) for d in fn.decorator_list):
                continue  # a command-line entry point: its parameters are paths and flags
            for a in fn.args.posonlyargs + fn.args.args + fn.args.kwonlyargs:
                if a.arg == "cfg" or a.arg.endswith("_cfg"):
                    yield f"{path.relative_to(ROOT)}:{fn.lineno} {fn.name}({a.arg})", a.annotation


def test_the_classes_named_exist():
    assert all(hasattr(schema, c) for c in CLASSES - {"SyntheticSettings"}) and hasattr(settings, "SyntheticSettings")


def test_config_parameters_carry_a_schema_type():
    params = list(_config_params())
    assert len(params) >= 20  # the loaders, build_splits, the synthetic generator, baseline, sweep, export, ...
    untyped = [where for where, ann in params
               if ann is None or not any(c in ast.unparse(ann) for c in CLASSES)]
    assert not untyped, f"config parameters typed Any or not at all: {untyped}"
