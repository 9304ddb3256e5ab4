"""Issue 27 item 2: the functions that take a configuration take it typed, the section they read rather than the
whole run configuration. A parameter named ``cfg``/``*_cfg`` in pand.data, the baseline, the sweep, the CLI, the demo,
pand_export and the training loops (``pand.train``, Stage PSC, Stage NSD, PromptKD, the loaders, the teacher, the
distributed helpers) is annotated with a schema dataclass (``DataCfg``, ``NSDCfg``, ``TrainerCfg``, ``RunCfg``, ...)
or the generator's ``SyntheticSettings`` - never ``Any`` or nothing; and the whole ``RunCfg`` reaches only the
modules that read several of its sections (the orchestrators). Read from the source (AST), so nothing is imported."""
import ast
from pathlib import Path

from pand.config import schema
from pand.data.synthetic import settings

ROOT = Path(__file__).resolve().parents[2]
PAND = ROOT / "pand"
OUTSIDE_LOOPS = [*sorted((PAND / "data").rglob("*.py")), PAND / "baseline.py", *sorted((PAND / "sweep").glob("*.py")),
                 PAND / "cli.py", *sorted((ROOT / "export").glob("*.py"))]
#: the training loops and what they call with settings
LOOPS = [PAND / "train.py", *sorted((PAND / "psc").rglob("*.py")), *sorted((PAND / "nsd").rglob("*.py")),
         *sorted((PAND / "promptkd").rglob("*.py")), PAND / "engine" / "loaders.py", PAND / "models" / "teacher.py",
         PAND / "utils" / "distributed.py", *sorted((PAND / "demo").rglob("*.py"))]
TYPED = OUTSIDE_LOOPS + LOOPS
CLASSES = {n for n in schema.__all__ if n.endswith("Cfg")} | {"SyntheticSettings"}
#: modules with a function that takes the whole run configuration, each because it reads several sections (or all)
WHOLE_CFG = {
    "pand/train.py",  # the run: data, student, teacher, recipe, trainer, psc, nsd
    "pand/baseline.py", "pand/cli.py", "pand/sweep/run.py", "pand/demo/runner.py",  # derive or start whole runs
    "pand/psc/stage.py",  # Stage PSC: psc, data, teacher, trainer, cache_dir
    "pand/nsd/engine.py",  # Stage NSD's fit: student, recipe, nsd, trainer, teacher; stores the whole config
    "pand/nsd/teacher_cache/source.py",  # nsd.teacher_cache, trainer, teacher.batch_size, cache_dir
    "pand/nsd/teacher_cache_auto.py",  # times NSD's step: student, recipe, nsd, trainer, cache_dir
    "pand/promptkd/recipe.py", "pand/promptkd/grid.py",  # the PromptKD run(s)
    "pand/promptkd/checkpoint.py",  # the stored configuration a resume is compared with
    "pand/promptkd/class_vectors.py",  # runs Stage PSC or the PromptSRC teacher (psc, promptkd, trainer, data)
    "pand/utils/distributed.py",  # the fingerprint every rank compares: the whole resolved configuration
    "export/data.py", "export/source.py",  # rebuild a run's data and student from its config.yaml
}


def _config_params(paths):
    for path in paths:
        for fn in ast.walk(ast.parse(path.read_text())):
            if not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            if any("click" in ast.unparse(d) for d in fn.decorator_list):
                continue  # a command-line entry point: its parameters are paths and flags
            for a in fn.args.posonlyargs + fn.args.args + fn.args.kwonlyargs:
                if a.arg == "cfg" or a.arg.endswith("_cfg"):
                    yield path, f"{path.relative_to(ROOT)}:{fn.lineno} {fn.name}({a.arg})", a.annotation


def _untyped(paths):
    return [where for _, where, ann in _config_params(paths)
            if ann is None or not any(c in ast.unparse(ann) for c in CLASSES)]


def test_the_classes_named_exist():
    assert all(hasattr(schema, c) for c in CLASSES - {"SyntheticSettings"}) and hasattr(settings, "SyntheticSettings")


def test_config_parameters_carry_a_schema_type():
    params = list(_config_params(OUTSIDE_LOOPS))
    assert len(params) >= 20  # the loaders, build_splits, the synthetic generator, baseline, sweep, export, ...
    untyped = _untyped(OUTSIDE_LOOPS)
    assert not untyped, f"config parameters typed Any or not at all: {untyped}"


def test_config_parameters_of_the_training_loops_carry_a_schema_type():
    params = list(_config_params(LOOPS))
    # run/fit/run_psc, the criterion, model and optimiser builders, the loaders, PromptKD's student and data, ...
    assert len(params) >= 60
    untyped = _untyped(LOOPS)
    assert not untyped, f"config parameters typed Any or not at all: {untyped}"


def test_the_whole_run_configuration_reaches_only_the_orchestrators():
    """A function that reads one or two sections takes those (``NSDCriterion.from_config(nsd_cfg, recipe_cfg)``,
    ``build_promptkd_student(pk_cfg, ...)``, ...); ``RunCfg`` is for the modules listed in :data:`WHOLE_CFG`."""
    whole = {str(path.relative_to(ROOT)) for path, _, ann in _config_params(TYPED)
             if ann is not None and "RunCfg" in ast.unparse(ann)}
    assert whole <= WHOLE_CFG, f"modules newly taking the whole RunCfg: {sorted(whole - WHOLE_CFG)}"
    assert len(whole) >= 12  # the list is not stale: most of its modules still take a RunCfg
