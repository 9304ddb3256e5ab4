"""``bench/mutate_trt.py``: its mutations still apply to the TensorRT code (one line each, still compiling), the
issue's required ones are there, and (slow) a mutation run kills what it applies."""
import importlib.util
import py_compile
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
REQUIRED = {"no-profile", "sync", "stream-handle", "no-push", "float32-host", "no-per-call-shape", "cache-none",
            "no-end-event", "tf32", "version-floor"}


def _load():
    spec = importlib.util.spec_from_file_location("pand_bench_mutate_trt", REPO / "bench" / "mutate_trt.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses look their module up
    spec.loader.exec_module(mod)
    return mod


def test_every_mutation_changes_exactly_one_line_and_still_compiles(tmp_path):
    mt = _load()
    assert REQUIRED <= {m.name for m in mt.MUTATIONS}
    assert len({m.name for m in mt.MUTATIONS}) == len(mt.MUTATIONS)
    for m in mt.MUTATIONS:
        src = (REPO / "runtime" / m.file).read_text()
        out = mt._apply(src, m)
        diff = [(a, b) for a, b in zip(src.split("\n"), out.split("\n")) if a != b]
        assert len(diff) == 1 and diff[0][0].strip() == m.line and diff[0][1].strip() == m.replacement, m.name
        f = tmp_path / f"{m.name}.py"
        f.write_text(out)
        py_compile.compile(str(f), doraise=True, cfile=str(tmp_path / "x.pyc"))


def test_a_line_that_is_gone_is_an_error_not_a_kill():
    mt = _load()
    with pytest.raises(ValueError, match="found 0 times"):
        mt._apply("x = 1\n", mt.Mutation("gone", "f.py", "y = 2", "pass", "test"))


@pytest.mark.slow
def test_a_mutation_run_kills_a_dropped_synchronize():
    p = subprocess.run([sys.executable, str(REPO / "bench" / "mutate_trt.py"), "--only", "sync"], cwd=REPO,
                       capture_output=True, text=True, timeout=900)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-2000:]
    assert "kill rate: 1/1 = 100%" in p.stdout
