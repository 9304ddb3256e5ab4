"""Mutation check of the TensorRT path: do the contract tests catch single-line mistakes in the TensorRT code?

Each mutation below changes one line of ``runtime/trt_build.py``, ``runtime/backends/trt_backend.py`` or
``runtime/backends/cuda_context.py`` into a plausible mistake that would only show on a device (a dropped
``stream.synchronize()``, the pycuda ``Stream`` instead of its int handle, float32 host buffers for an fp16 engine,
...).
For each one the script copies ``runtime/`` to a temporary folder as the package ``pand_runtime``, applies the
mutation there (the checkout is never modified), checks that the file still compiles, and runs
``tests/runtime/test_trt_contract.py`` against the copy (``PYTHONPATH`` puts it first). A mutation is *killed* when the
tests fail (pytest exit 1); one that passes *survived*. The unmutated copy must pass first (the baseline), and a
mutation whose line is not found exactly once is an error: the list then needs updating with the code.

    python bench/mutate_trt.py                 # all mutations; prints the kill rate
    python bench/mutate_trt.py --list          # the mutations, without running anything
    python bench/mutate_trt.py --only sync --only stream-handle

Exit status: 0 = every mutation killed, 1 = some survived (or could not run), 3 = the baseline failed.
The tests run on the CPU against the fakes in tests/fakes/ (about 10-60 s per mutation on 2 cores; pytest stops at
the first failure).
"""
from __future__ import annotations

import argparse
import os
import py_compile
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Sequence

REPO = Path(__file__).resolve().parents[1]
TESTS = ["tests/runtime/test_trt_contract.py"]


@dataclass(frozen=True)
class Mutation:
    """Replace ``line`` (the stripped text of exactly one line, inside ``def <within>`` when given) of ``file`` (under
    ``runtime/``) with ``replacement`` (same indentation)."""

    name: str
    file: str
    line: str
    replacement: str
    why: str
    within: Optional[str] = None


BUILD, BACKEND, CONTEXT = "trt_build.py", "backends/trt_backend.py", "backends/cuda_context.py"
VERSION = "trt_version.py"
MUTATIONS: List[Mutation] = [
    Mutation("no-profile", BUILD, "index = config.add_optimization_profile(prof)", "index = 0",
             "the optimisation profile is never added: a dynamic-batch network cannot build"),
    Mutation("sync", BACKEND, "self.stream.synchronize()", "pass",
             "no stream.synchronize(): stale outputs, time_since 'not ready'"),
    Mutation("stream-handle", BACKEND, "if not self.context.execute_async_v3(self.stream.handle):",
             "if not self.context.execute_async_v3(self.stream):",
             "the pycuda Stream instead of its int handle"),
    Mutation("no-push", BACKEND, "self._ctx.push()", "pass", "run() pops a context it never pushed", within="run"),
    Mutation("float32-host", BACKEND, "dtype = np.dtype(trt.nptype(trt_type))", "dtype = np.dtype(np.float32)",
             "host buffers hard-coded float32 (fp16 I/O engines get the wrong bytes)"),
    Mutation("no-per-call-shape", BACKEND, "self._set_shape(tuple(x.shape))", "pass",
             "no per-call set_input_shape: every call runs the maximum batch", within="run"),
    Mutation("cache-none", BUILD, "if cache is None:", "if False:",
             "create_timing_cache's None (a garbage cache) not checked"),
    Mutation("no-end-event", BACKEND, "self._end.record(self.stream)", "pass",
             "the end event is never recorded: time_since fails"),
    Mutation("tf32", BUILD, "config.clear_flag(trt.BuilderFlag.TF32)", "pass",
             "TF32 left on for fp32 engines (~1e-3 off PyTorch)"),
    Mutation("version-floor", VERSION, "if major < MIN_TRT_MAJOR:", "if False:", "TensorRT < 10 accepted"),
    Mutation("engine-compat", BACKEND, "check_engine_compat(expected, info, engine_path)", "pass",
             "an engine of another TensorRT version / GPU is not refused by name"),
    Mutation("cache-mismatch", BUILD, "if not config.set_timing_cache(cache, ignore_mismatch=False):",
             "if not (config.set_timing_cache(cache, ignore_mismatch=False) or True):",
             "set_timing_cache's refusal ignored"),
    Mutation("workspace", BUILD, "config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_bytes))",
             "pass", "the workspace limit is not set"),
    Mutation("set-input-shape-result", BACKEND, "if not self.context.set_input_shape(self.input_name, shape):",
             "if not (self.context.set_input_shape(self.input_name, shape) or True):",
             "set_input_shape's False (shape outside the profile) ignored"),
    Mutation("set-shape-result", BUILD, "if ok is False:", "if False:",
             "a profile shape TensorRT refuses (set_shape raises / is False) is not named"),
    Mutation("strongly-typed", BUILD, "flags = 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)",
             "flags = 0", "TensorRT 10 builds weakly typed first"),
    Mutation("no-retry", BUILD, "if plan is None and major < 11:", "if False:",
             "no weakly typed retry on TensorRT 10"),
    Mutation("no-address", BACKEND, "self.context.set_tensor_address(name, int(self._dev[name]))", "pass",
             "device pointers never bound"),
    Mutation("no-htod", BACKEND,
             "cuda.memcpy_htod_async(self._dev[self.input_name], h_in[:n_in], self.stream)", "pass",
             "the input is never copied to the device"),
    Mutation("deserialize-none", BACKEND, "if self.engine is None:", "if False:",
             "deserialize_cuda_engine's None not checked", within="_setup"),
    Mutation("close-keeps-context", BACKEND, "self._ctx.release()", "pass",
             "close() never releases the retained context", within="close"),
    Mutation("context-never-released", CONTEXT,
             "self.context.detach()  # the creating thread: the release really happens", "pass",
             "the retained primary context is never released (a leak per backend)", within="_own"),
]


def _apply(text: str, m: Mutation) -> str:
    lines = text.split("\n")
    lo, hi = 0, len(lines)
    if m.within:
        starts = [i for i, ln in enumerate(lines) if ln.lstrip().startswith(f"def {m.within}(")]
        if len(starts) != 1:
            raise ValueError(f"{m.name}: 'def {m.within}(' found {len(starts)} times in {m.file}")
        lo = starts[0] + 1
        indent = len(lines[starts[0]]) - len(lines[starts[0]].lstrip())
        hi = next((i for i in range(lo, len(lines)) if lines[i].strip() and
                   len(lines[i]) - len(lines[i].lstrip()) <= indent), len(lines))
    hits = [i for i in range(lo, hi) if lines[i].strip() == m.line]
    if len(hits) != 1:
        raise ValueError(f"{m.name}: the line {m.line!r} is found {len(hits)} times in {m.file}"
                         f"{f' (def {m.within})' if m.within else ''}; update bench/mutate_trt.py")
    i = hits[0]
    lines[i] = lines[i][:len(lines[i]) - len(lines[i].lstrip())] + m.replacement
    return "\n".join(lines)


def _copy_runtime(dst: Path) -> Path:
    pkg = dst / "pand_runtime"
    shutil.copytree(REPO / "runtime", pkg, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    return pkg


def _pytest(pythonpath: Path, timeout_s: float) -> tuple:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(pythonpath)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    env.setdefault("OMP_NUM_THREADS", "1")
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    cmd = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", "-W", "ignore", *TESTS]
    try:
        r = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        return 124, "timeout"
    tail = [ln for ln in r.stdout.splitlines() if ln.startswith(("FAILED", "ERROR"))][:1]
    return r.returncode, (tail[0] if tail else r.stdout.strip().splitlines()[-1] if r.stdout.strip() else "")


def run(mutations: Sequence[Mutation], timeout_s: float = 600.0) -> int:
    """Baseline, then every mutation; prints one line each and the kill rate. Returns the exit status."""
    with tempfile.TemporaryDirectory(prefix="pand-mutate-") as tmp:
        base = Path(tmp) / "base"
        _copy_runtime(base)
        probe = subprocess.run([sys.executable, "-c", "import pand_runtime; print(pand_runtime.__file__)"],
                               env={**os.environ, "PYTHONPATH": str(base)}, capture_output=True, text=True)
        if not probe.stdout.strip().startswith(str(base)):
            print(f"mutate_trt: the copy is not what gets imported ({probe.stdout.strip() or probe.stderr.strip()})")
            return 3
        t0 = time.perf_counter()
        rc, detail = _pytest(base, timeout_s)
        if rc != 0:
            print(f"mutate_trt: baseline FAILED (pytest exit {rc}: {detail}); fix the tests before mutating")
            return 3
        print(f"baseline: the contract tests pass on the unmutated copy ({time.perf_counter() - t0:.0f}s)")
        killed, results = 0, []
        for m in mutations:
            work = Path(tmp) / m.name
            pkg = _copy_runtime(work)
            target = pkg / m.file
            try:
                target.write_text(_apply(target.read_text(), m))
                py_compile.compile(str(target), doraise=True, cfile=str(Path(tmp) / "x.pyc"))
            except (ValueError, py_compile.PyCompileError) as e:
                results.append((m, "ERROR", str(e)))
                print(f"ERROR     {m.name:24s} {e}")
                continue
            t0 = time.perf_counter()
            rc, detail = _pytest(work, timeout_s)
            status = "killed" if rc == 1 else "SURVIVED" if rc == 0 else f"ERROR(rc={rc})"
            killed += status == "killed"
            results.append((m, status, detail))
            print(f"{status:9s} {m.name:24s} {m.file}: {m.why} [{time.perf_counter() - t0:.0f}s] {detail[:150]}",
                  flush=True)
            shutil.rmtree(work, ignore_errors=True)
    n = len(mutations)
    print(f"kill rate: {killed}/{n} = {100.0 * killed / max(n, 1):.0f}%")
    return 0 if killed == n else 1


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--list", action="store_true", help="list the mutations and exit")
    p.add_argument("--only", action="append", default=[], metavar="NAME", help="run only these mutations")
    p.add_argument("--timeout-s", type=float, default=600.0, help="per pytest run (default 600)")
    a = p.parse_args(argv)
    chosen = [m for m in MUTATIONS if not a.only or m.name in a.only]
    unknown = set(a.only) - {m.name for m in MUTATIONS}
    if unknown:
        p.error(f"unknown mutation(s) {sorted(unknown)}; see --list")
    if a.list:
        for m in chosen:
            print(f"{m.name:24s} runtime/{m.file}: {m.line!r} -> {m.replacement!r}  ({m.why})")
        return 0
    return run(chosen, a.timeout_s)


if __name__ == "__main__":
    sys.exit(main())
