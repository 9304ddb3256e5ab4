"""GPU check: the CUDA paths of pand measured in one run, written to one JSON + markdown file.

Called by ``bench/gpu_check.sh`` (which prepares the environment on a GPU machine); usable on its own once pand
and its dependencies import. Five stages, each recorded even when it fails (a failed item becomes a row with its
error, the run goes on):

==========  ===========================================================================================
``tests``   ``PAND_TEST_GPU=1 pytest -m gpu`` and a fast CPU subset of the suite (subprocesses, JUnit XML)
``nsd``     Stage NSD through :func:`pand.nsd.fit` (via ``bench/nsd_cache.py``'s building blocks): live teacher
            vs teacher-feature cache, for fp32 / bf16 autocast x channels_last on/off x torch.compile on/off;
            steady train images/s, end-to-end images/s and wall time, speedups
``psc``     Stage PSC teacher feature extraction (:func:`pand.psc.features.extract_features`, data pipeline
            included) and the teacher's forward alone, images/s, fp32 and autocast
``latency`` student inference latency (eager fp32/fp16, torch.compile fp32/fp16; batch 1 and 32): p50/p99 ms
``trt``     the TensorRT device checks of ``bench/trt_check.py`` (negative control, fp32 parity with TF32 off/on,
            batches 1/3/8/11, garbage timing cache, tampered engine, 8 threads then close() from another thread,
            50 create/run/close cycles against mem_get_info); skipped with the reason without TensorRT/pycuda
``env``     date, GPU, driver, torch/CUDA/cuDNN versions, git commit (always written)
==========  ===========================================================================================

The run has a wall-clock budget (``--budget-s``); every stage has a share of it, and items that would start after
their stage's share (or the whole budget) is spent are recorded as ``skipped (budget)``. The NSD matrix runs its
most informative configurations first (fp32 eager, then bf16 + channels_last + compile, then the ablations).

    python bench/gpu_check.py                    # on a CUDA GPU: ViT-B-16@224 teacher, ResNet-18@224 student
    python bench/gpu_check.py --dry-run          # the same steps at toy sizes on the CPU (~1 min on 2 cores)
    python bench/gpu_check.py --stages nsd,latency --out runs/gpu_check
    python bench/gpu_check.py --set epochs=8 --set train_per_class=60 --budget-s 540   # longer, steadier NSD

The JSON and markdown are rewritten after every finished item, so a run killed from outside keeps its rows.

The dry run compiles with the ``eager`` torch.compile backend (inductor's C++ build alone takes minutes on 2 CPU
cores); ``--compile-backend inductor`` restores the default. On the CPU autocast and channels_last are no-ops, so
the dry run's numbers only show that every step runs and reports.

The teacher is randomly initialised (no weights are downloaded): throughput and latency do not depend on the
weights; the test top-1 of the NSD rows only compares runs with each other.
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import datetime as _dt
import json
import math
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence

REPO = Path(__file__).resolve().parents[1]
BENCH = Path(__file__).resolve().parent
for _p in (str(REPO), str(BENCH)):
    if _p not in sys.path:
        sys.path.insert(0, _p)

import nsd_cache  # noqa: E402  (bench/nsd_cache.py: the Stage NSD benchmark this check reuses)
import trt_check  # noqa: E402  (bench/trt_check.py: the TensorRT device checks, stage trt)

STAGES = ("tests", "nsd", "psc", "latency", "trt")
# Share of the budget per stage (the rest of the budget is what earlier stages left over).
STAGE_SHARE = {"tests": 0.35, "nsd": 0.40, "psc": 0.07, "latency": 0.18, "trt": 0.20}
# The NSD matrix as (student precision, channels_last, compile), most informative first: the baseline, the fully
# optimised setting, then one-factor ablations. The teacher runs under autocast whenever the student does.
NSD_MATRIX = [("fp32", False, False), ("bf16", True, True), ("bf16", True, False), ("fp32", True, False),
              ("bf16", False, False), ("fp32", False, True), ("bf16", False, True), ("fp32", True, True)]
CPU_TEST_MARKERS = "not slow and not gpu and not trt and not latency and not ddp"
Save = Callable[[Dict[str, Any]], None]  # a stage's callback after every item (writes the partial report)

# On a GPU: the realistic pair at 224 px. Synthetic images are rendered at 96 px (rendering is CPU-bound, about
# 10 ms an image) and the student's random-resized crop / the teacher's resize bring them to 224 px.
GPU = dict(teacher="ViT-B-16", teacher_size=224, student="resnet18", image_size=224, data_size=96,
           train_per_class=30, test_per_class=2, epochs=4, views=2, batch_size=96, optimizer="adamw", lr=1e-3,
           workers=8, psc_batch=256, psc_forward_iters=10, latency_iters={1: 200, 32: 60}, latency_warmup=10,
           num_classes=200, budget_s=420.0, compile_backend="inductor",
           gpu_tests=["tests"],
           cpu_tests=["tests/config", "tests/losses", "tests/models", "tests/psc", "tests/nsd/test_nsd_parts.py",
                      "tests/runtime/test_runtime_preprocess.py", "tests/data/test_data_transforms.py"])
# --dry-run: toy sizes on the CPU (the pytest steps run a small selection; the gpu-marked ones skip there).
DRY = dict(teacher="pand-tiny-vit", teacher_size=32, student="resnet18", image_size=32, data_size=36,
           train_per_class=2, test_per_class=1, epochs=1, views=1, batch_size=16, optimizer="sgd", lr=0.01,
           workers=0, psc_batch=32, psc_forward_iters=2, latency_iters={1: 5, 2: 3}, latency_warmup=1,
           num_classes=200, budget_s=240.0, compile_backend="eager",
           gpu_tests=["tests/bench/test_nsd_cache_bench.py"],
           cpu_tests=["tests/losses/test_losses_kd.py"])


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--dry-run", action="store_true", help="toy sizes on the CPU: checks that every step runs")
    p.add_argument("--out", default=str(REPO / "runs" / "gpu_check"),
                   help="output folder: gpu_check.json, gpu_check.md, pytest logs (default runs/gpu_check)")
    p.add_argument("--stages", default=",".join(STAGES), help=f"comma list of {', '.join(STAGES)} (default: all)")
    p.add_argument("--budget-s", type=float, help="wall-clock budget of all stages (GPU 420 s, dry run 240 s)")
    p.add_argument("--compile-backend", choices=("inductor", "eager", "aot_eager"),
                   help="torch.compile backend (GPU: inductor, dry run: eager)")
    p.add_argument("--workers", type=int, help="DataLoader workers of the NSD and PSC stages (GPU 8, dry run 0)")
    p.add_argument("--device", choices=("auto", "cuda", "cpu"), help="default: cuda, or cpu with --dry-run")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override one setting of the GPU (or dry-run) table, value as JSON or text, e.g.\n"
                        "--set epochs=6 --set train_per_class=60 --set 'latency_iters={\"1\": 500, \"32\": 100}'")
    a = p.parse_args(argv)
    a.stages = [s.strip() for s in a.stages.split(",") if s.strip()]
    bad = [s for s in a.stages if s not in STAGES]
    if bad:
        p.error(f"unknown stage(s) {bad}; choose from {', '.join(STAGES)}")
    a.size = dict(DRY if a.dry_run else GPU)
    for k in ("budget_s", "compile_backend", "workers"):
        if getattr(a, k) is not None:
            a.size[k] = getattr(a, k)
    for item in a.set:
        k, sep, v = item.partition("=")
        if not sep or k not in a.size:
            p.error(f"--set {item!r}: expected KEY=VALUE with KEY one of {', '.join(sorted(a.size))}")
        try:
            val = json.loads(v)
        except ValueError:
            val = v
        a.size[k] = {int(b): int(n) for b, n in val.items()} if k == "latency_iters" else val
    a.device = a.device or ("cpu" if a.dry_run else "cuda")
    return a


# ---------------------------------------------------------------------------------------------------------------
# budget
# ---------------------------------------------------------------------------------------------------------------
class Budget:
    """Wall-clock budget: a global deadline and, per stage, a deadline of its share (plus what earlier stages
    left unused)."""

    def __init__(self, total_s: float, stages: Sequence[str]):
        self.t0 = time.perf_counter()
        self.total_s = float(total_s)
        share = sum(STAGE_SHARE[s] for s in stages) or 1.0
        self.share = {s: STAGE_SHARE[s] / share * self.total_s for s in stages}
        self.stage_end = self.t0

    def start_stage(self, name: str) -> None:
        now = time.perf_counter()
        self.stage_end = min(self.t0 + self.total_s, max(now, self.stage_end) + self.share[name])

    def left(self) -> float:
        """Seconds left in the current stage (never past the global deadline)."""
        return self.stage_end - time.perf_counter()

    def elapsed(self) -> float:
        return time.perf_counter() - self.t0


def _sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _err(e: BaseException) -> str:
    return f"{type(e).__name__}: {e}"[:500]


def _reset_dynamo() -> None:
    """Forget earlier compiled frames, so a new model is never the one past dynamo's recompile limit (which would
    silently run it eager); inductor's on-disk cache keeps recompiles of the same graph fast."""
    import torch

    torch._dynamo.reset()


@contextlib.contextmanager
def compile_backend(backend: str) -> Iterator[None]:
    """Inside: ``torch.compile`` defaults to ``backend`` (the trainer calls ``torch.compile(model)``)."""
    import torch

    original = torch.compile
    if backend != "inductor":
        def compile_with_backend(model=None, **kwargs):
            kwargs.setdefault("backend", backend)
            return original(model, **kwargs)

        torch.compile = compile_with_backend
    try:
        yield
    finally:
        torch.compile = original


# ---------------------------------------------------------------------------------------------------------------
# env
# ---------------------------------------------------------------------------------------------------------------
def collect_env(device) -> Dict[str, Any]:
    """Date, host kind, GPU, driver and library versions."""
    import torch

    env: Dict[str, Any] = {
        "date_utc": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "python": platform.python_version(), "platform": platform.platform(), "cpu_count": os.cpu_count(),
        "torch": torch.__version__, "torch_cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "device": str(device), "torch_threads": torch.get_num_threads(),
        "cudnn_benchmark": torch.backends.cudnn.benchmark, "cudnn_allow_tf32": torch.backends.cudnn.allow_tf32,
        "matmul_allow_tf32": torch.backends.cuda.matmul.allow_tf32,
    }
    for mod in ("torchvision", "open_clip", "onnxruntime", "tensorrt"):
        try:
            env[mod] = __import__(mod).__version__
        except Exception:  # noqa: BLE001 - absent or broken: recorded as missing
            env[mod] = None
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        env.update(gpu=torch.cuda.get_device_name(device), gpu_memory_gib=round(props.total_memory / 2 ** 30, 1),
                   compute_capability=f"{props.major}.{props.minor}", bf16_supported=torch.cuda.is_bf16_supported())
    try:
        q = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version", "--format=csv,noheader"],
                           capture_output=True, text=True, timeout=20)
        if q.returncode == 0 and q.stdout.strip():
            env["nvidia_smi"] = q.stdout.strip().splitlines()[0]
            env["driver"] = env["nvidia_smi"].split(",")[-1].strip()
    except (OSError, subprocess.SubprocessError):
        pass
    try:
        env["git_commit"] = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True,
                                           text=True, timeout=10).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        env["git_commit"] = None
    return env


# ---------------------------------------------------------------------------------------------------------------
# tests
# ---------------------------------------------------------------------------------------------------------------
def run_pytest(name: str, paths: Sequence[str], marker: str, gpu_visible: bool, out: Path,
               timeout_s: float) -> Dict[str, Any]:
    """One pytest subprocess (its own process group, killed whole at ``timeout_s``); counts from its JUnit XML,
    or, when it was killed before writing one, from the verbose log ``out/pytest-<name>.log``."""
    xml, log = out / f"pytest-{name}.xml", out / f"pytest-{name}.log"
    xml.unlink(missing_ok=True)
    # -v: a killed run still shows per-test outcomes; a module that cannot import (a wheel missing) must not stop
    # the others from running.
    cmd = [sys.executable, "-m", "pytest", "-v", "-rfEs", "-p", "no:cacheprovider", "--continue-on-collection-errors",
           "-m", marker, f"--junitxml={xml}", *paths]
    env = dict(os.environ)
    if gpu_visible:
        env["PAND_TEST_GPU"] = "1"
    else:
        env.pop("PAND_TEST_GPU", None)
    res: Dict[str, Any] = {"command": " ".join(cmd[1:]), "marker": marker, "paths": list(paths),
                           "gpu_visible": gpu_visible, "log": log.name}
    if timeout_s <= 1:
        return {**res, "status": "skipped (budget)", **_junit_counts(xml)}
    t0 = time.perf_counter()
    with open(log, "w") as fh:
        proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            rc = proc.wait(timeout=timeout_s)
            res["returncode"] = rc
            res["status"] = {0: "passed", 1: "failed", 5: "no tests selected"}.get(rc, f"error (exit {rc})")
        except subprocess.TimeoutExpired:
            _kill_group(proc)
            res["status"] = f"timeout after {timeout_s:.0f}s"
    res["seconds"] = time.perf_counter() - t0
    res.update(_junit_counts(xml) if xml.is_file() else _log_counts(log))
    return res


def _kill_group(proc: subprocess.Popen) -> None:
    """SIGTERM, then SIGKILL, to the process group that ``proc`` leads (pytest and its DataLoader workers)."""
    import signal

    for sig, wait in ((signal.SIGTERM, 10), (signal.SIGKILL, 10)):
        try:
            os.killpg(proc.pid, sig)
            proc.wait(timeout=wait)
            return
        except ProcessLookupError:
            return
        except subprocess.TimeoutExpired:
            continue


def _junit_counts(xml: Path) -> Dict[str, Any]:
    counts: Dict[str, Any] = {"passed": 0, "failed": 0, "errors": 0, "skipped": 0, "failures": []}
    if not xml.is_file():
        return counts
    for case in ET.parse(xml).getroot().iter("testcase"):
        tag = {c.tag for c in case}
        name = f"{case.get('classname', '')}::{case.get('name', '')}"
        if "failure" in tag or "error" in tag:
            counts["failed" if "failure" in tag else "errors"] += 1
            node = case.find("failure") if "failure" in tag else case.find("error")
            counts["failures"].append(f"{name}: {(node.get('message') or '')[:300]}")
        elif "skipped" in tag:
            counts["skipped"] += 1
        else:
            counts["passed"] += 1
    return counts


def _log_counts(log: Path) -> Dict[str, Any]:
    """Outcomes of the tests a killed ``pytest -v`` got through (``path::test OUTCOME`` lines)."""
    import re

    counts: Dict[str, Any] = {"passed": 0, "failed": 0, "errors": 0, "skipped": 0, "failures": []}
    key = {"PASSED": "passed", "XPASS": "passed", "FAILED": "failed", "ERROR": "errors", "SKIPPED": "skipped",
           "XFAIL": "skipped"}
    text = log.read_text(errors="replace") if log.is_file() else ""
    for m in re.finditer(r"^(\S+::\S+) (PASSED|FAILED|ERROR|SKIPPED|XFAIL|XPASS)\b", text, re.M):
        counts[key[m.group(2)]] += 1
        if m.group(2) in ("FAILED", "ERROR"):
            counts["failures"].append(f"{m.group(1)}: {m.group(2)} (see the log)")
    return counts


def stage_tests(a: argparse.Namespace, out: Path, budget: Budget, save: Save) -> Dict[str, Any]:
    """``pytest -m gpu`` with the GPU visible (most of the stage's time), then the fast CPU subset."""
    res: Dict[str, Any] = {}
    res["gpu"] = run_pytest("gpu", a.size["gpu_tests"], "gpu", True, out, budget.left() * 0.75)
    print(_tests_line("gpu", res["gpu"]), flush=True)
    save(res)
    res["cpu_fast"] = run_pytest("cpu-fast", a.size["cpu_tests"], CPU_TEST_MARKERS, False, out, budget.left())
    print(_tests_line("cpu-fast", res["cpu_fast"]), flush=True)
    return res


def _tests_line(name: str, r: Dict[str, Any]) -> str:
    return (f"tests {name}: {r['status']} | passed {r['passed']} failed {r['failed']} errors {r['errors']} "
            f"skipped {r['skipped']} | {r.get('seconds', 0.0):.1f}s")


# ---------------------------------------------------------------------------------------------------------------
# shared setup: data, teachers, anchors (not on any clock)
# ---------------------------------------------------------------------------------------------------------------
class Setup:
    """The synthetic splits and one teacher per precision, built once and shared by the NSD and PSC stages."""

    def __init__(self, a: argparse.Namespace, work: Path, device):
        self.a, self.work, self.device = a, work, device
        self._splits = None
        self._teachers: Dict[str, Any] = {}
        self._anchors: Dict[str, Any] = {}

    def bench_args(self, precision: str = "fp32", channels_last: bool = False, compile: bool = False
                   ) -> argparse.Namespace:
        """``bench/nsd_cache.py`` arguments of one NSD configuration."""
        s = self.a.size
        argv = ["--teacher", s["teacher"], "--teacher-size", str(s["teacher_size"]), "--student", s["student"],
                "--image-size", str(s["image_size"]), "--data-size", str(s["data_size"]),
                "--train-per-class", str(s["train_per_class"]), "--test-per-class", str(s["test_per_class"]),
                "--epochs", str(s["epochs"]), "--views", str(s["views"]), "--batch-size", str(s["batch_size"]),
                "--optimizer", s["optimizer"], "--lr", str(s["lr"]), "--workers", str(s["workers"]),
                "--device", self.device.type, "--precision", precision,
                "--teacher-precision", "fp32" if precision == "fp32" else "amp",
                "--channels-last" if channels_last else "--no-channels-last"]
        return nsd_cache.parse_args(argv + (["--compile"] if compile else []))

    @property
    def splits(self):
        if self._splits is None:
            cfg = nsd_cache.make_config(self.bench_args(), self.work / "data", 0)
            self._splits = nsd_cache.build_splits_for(cfg)
        return self._splits

    def teacher(self, precision: str):
        """The random-init teacher with ``teacher.precision`` ``fp32`` or ``amp``, and its class anchors."""
        from pand.models.teacher import create_teacher
        from pand.psc import handcrafted_anchors

        if precision not in self._teachers:
            cfg = nsd_cache.make_config(self.bench_args("fp32" if precision == "fp32" else "bf16"),
                                        self.work / "data", 0)
            t = create_teacher(cfg.teacher, self.device)
            self._teachers[precision] = t
            self._anchors[precision] = handcrafted_anchors(t, self.splits.prompts())
        return self._teachers[precision], self._anchors[precision]


# ---------------------------------------------------------------------------------------------------------------
# nsd
# ---------------------------------------------------------------------------------------------------------------
def nsd_label(precision: str, channels_last: bool, compile: bool) -> str:
    return f"{precision}{' +cl' if channels_last else ''}{' +compile' if compile else ''}"


def stage_nsd(a: argparse.Namespace, setup: Setup, budget: Budget, save: Save) -> Dict[str, Any]:
    device = setup.device
    splits = setup.splits
    n_train = len(splits.train)
    res: Dict[str, Any] = {"n_train": n_train, "classes": len(splits.class_names), "cost": {}, "rows": []}
    for prec in ("fp32", "amp"):  # forward cost of teacher and student (bench/nsd_cache.py's measurement)
        try:
            teacher, _ = setup.teacher(prec)
            cfg = nsd_cache.make_config(setup.bench_args("fp32" if prec == "fp32" else "bf16"), setup.work / "x", 0)
            res["cost"][prec] = nsd_cache.cost_ratio(teacher, cfg, len(splits.class_names), device)
        except Exception as e:  # noqa: BLE001
            res["cost"][prec] = {"error": _err(e)}
    for precision, cl, comp in NSD_MATRIX:
        label = nsd_label(precision, cl, comp)
        row: Dict[str, Any] = {"config": label, "precision": precision, "channels_last": cl, "compile": comp}
        res["rows"].append(row)
        if budget.left() <= 0:
            row["status"] = "skipped (budget)"
            continue
        try:
            if comp:
                _reset_dynamo()
            args = setup.bench_args(precision, cl, comp)
            teacher, anchors = setup.teacher("fp32" if precision == "fp32" else "amp")
            work = setup.work / "nsd" / label.replace(" +", "-")
            for mode, views in (("live", 0), ("cached", args.views)):
                cfg = nsd_cache.make_config(args, work, views)
                r = nsd_cache.run_mode(mode, cfg, work, splits, teacher, anchors, device)
                r["steady_images_per_s"] = n_train / max(statistics.median(r["epoch_s"]), 1e-9)
                row[mode] = {k: r[k] for k in ("wall_s", "steady_wall_s", "train_images_per_s",
                                               "steady_images_per_s", "effective_images_per_s", "test_top1")}
            row["status"] = "ok"
        except Exception as e:  # noqa: BLE001 - the row records the failure, the matrix goes on
            row["status"] = "error"
            row["error"] = _err(e)
            traceback.print_exc()
        finally:
            shutil.rmtree(setup.work / "nsd", ignore_errors=True)
        _nsd_speedups(res)
        print(_nsd_line(row), flush=True)
        save(res)
    return res


def _nsd_speedups(res: Dict[str, Any]) -> None:
    """Speedups of every row, end to end (``wall``: compile and cache build included) and at the median epoch
    (``steady``: train images/s): cached vs live, and live / cached vs the fp32 eager live run; then the headline
    ratios in ``res["summary"]``."""
    rows = {r["config"]: r for r in res["rows"] if r.get("status") == "ok"}
    base = rows.get(nsd_label("fp32", False, False))

    def ratio(fast: Dict[str, float], slow: Dict[str, float]) -> Dict[str, float]:
        return {"wall": slow["wall_s"] / fast["wall_s"],
                "steady": fast["steady_images_per_s"] / max(slow["steady_images_per_s"], 1e-9)}

    for r in rows.values():
        r["cache_speedup"] = ratio(r["cached"], r["live"])
        if base:
            r["live_vs_fp32_eager_live"] = ratio(r["live"], base["live"])
            r["cached_vs_fp32_eager_live"] = ratio(r["cached"], base["live"])
    best = rows.get(nsd_label("bf16", True, True))
    res["summary"] = {
        "cache_vs_live_fp32_eager": base["cache_speedup"] if base else None,
        "cache_vs_live_bf16_cl_compile": best["cache_speedup"] if best else None,
        "bf16_cl_compile_vs_fp32_eager_live": best["live_vs_fp32_eager_live"] if base and best else None,
        "bf16_cl_compile_vs_fp32_eager_cached": ratio(best["cached"], base["cached"]) if base and best else None,
        "bf16_cl_compile_cached_vs_fp32_eager_live": best["cached_vs_fp32_eager_live"] if base and best else None,
    }


def _nsd_line(r: Dict[str, Any]) -> str:
    if r.get("status") != "ok":
        return f"nsd {r['config']}: {r.get('status')} {r.get('error', '')}"
    lv, ca = r["live"], r["cached"]
    return (f"nsd {r['config']}: live {lv['steady_images_per_s']:.0f} img/s ({lv['wall_s']:.1f}s) | cached "
            f"{ca['steady_images_per_s']:.0f} img/s ({ca['wall_s']:.1f}s) | cache speedup {_pair(r['cache_speedup'])} "
            "(wall / steady)")


# ---------------------------------------------------------------------------------------------------------------
# psc
# ---------------------------------------------------------------------------------------------------------------
def stage_psc(a: argparse.Namespace, setup: Setup, budget: Budget, save: Save) -> Dict[str, Any]:
    import torch

    from pand.psc.features import extract_features

    device, s = setup.device, a.size
    rows: List[Dict[str, Any]] = []
    res = {"rows": rows}
    for prec in ("fp32", "amp"):
        row: Dict[str, Any] = {"teacher_precision": prec, "batch_size": s["psc_batch"]}
        rows.append(row)
        if budget.left() <= 0:
            row["status"] = "skipped (budget)"
            continue
        try:
            dataset = setup.splits.train
            row["n_images"] = len(dataset)
            teacher, _ = setup.teacher(prec)
            times = []
            for rep in range(2):  # the first pass warms up (cuDNN, workers); the second is reported
                cache = setup.work / "psc" / f"{prec}-{rep}"
                _sync(device)
                t0 = time.perf_counter()
                extract_features(teacher, dataset, cache, key_extra={"split": "train", "rep": rep},
                                 batch_size=s["psc_batch"], num_workers=s["workers"], progress=False)
                _sync(device)
                times.append(time.perf_counter() - t0)
            row["extract_s"] = times[-1]
            row["extract_images_per_s"] = len(dataset) / times[-1]
            size = int(teacher.image_size)
            x = torch.randn(s["psc_batch"], 3, size, size, device=device)
            if device.type == "cuda":
                x = x.contiguous(memory_format=torch.channels_last)
            teacher.encode_image(x)
            _sync(device)
            t0 = time.perf_counter()
            for _ in range(s["psc_forward_iters"]):
                teacher.encode_image(x)
            _sync(device)
            row["forward_images_per_s"] = s["psc_batch"] * s["psc_forward_iters"] / (time.perf_counter() - t0)
            row["status"] = "ok"
        except Exception as e:  # noqa: BLE001
            row.update(status="error", error=_err(e))
            traceback.print_exc()
        finally:
            shutil.rmtree(setup.work / "psc", ignore_errors=True)
        print(f"psc teacher {prec}: " + (f"extract {row['extract_images_per_s']:.0f} img/s, forward only "
                                          f"{row['forward_images_per_s']:.0f} img/s" if row["status"] == "ok"
                                          else f"{row['status']} {row.get('error', '')}"), flush=True)
        save(res)
    return res


# ---------------------------------------------------------------------------------------------------------------
# latency
# ---------------------------------------------------------------------------------------------------------------
LATENCY_VARIANTS = [("eager", "fp32"), ("eager", "fp16"), ("compile", "fp16"), ("compile", "fp32")]


def stage_latency(a: argparse.Namespace, device, budget: Budget, save: Save) -> Dict[str, Any]:
    import torch

    from pand.models.students import create_student

    s = a.size
    base = create_student(s["student"], s["num_classes"]).eval()
    rows: List[Dict[str, Any]] = []
    # cuDNN autotuning on, as a deployment would (TensorRT tunes too); training keeps torch's default (off).
    res = {"student": s["student"], "num_classes": s["num_classes"], "cudnn_benchmark": device.type == "cuda",
           "rows": rows}
    benchmark_before = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = device.type == "cuda"
    try:
        _latency_rows(a, base, device, budget, save, res)
    finally:
        torch.backends.cudnn.benchmark = benchmark_before
    return res


def _latency_rows(a: argparse.Namespace, base, device, budget: Budget, save: Save, res: Dict[str, Any]) -> None:
    import torch

    s, rows = a.size, res["rows"]
    for mode, prec in LATENCY_VARIANTS:
        for batch, iters in sorted(s["latency_iters"].items()):
            row: Dict[str, Any] = {"mode": mode, "precision": prec, "batch": batch, "image_size": s["image_size"],
                                   "iters": iters}
            rows.append(row)
            if budget.left() <= 0:
                row["status"] = "skipped (budget)"
                continue
            try:
                dtype = torch.float16 if prec == "fp16" else torch.float32
                model = copy.deepcopy(base).to(device=device, dtype=dtype)
                if device.type == "cuda":
                    model = model.to(memory_format=torch.channels_last)
                if mode == "compile":
                    _reset_dynamo()
                    model = torch.compile(model, dynamic=False)
                x = torch.randn(batch, 3, s["image_size"], s["image_size"], device=device, dtype=dtype)
                if device.type == "cuda":
                    x = x.contiguous(memory_format=torch.channels_last)
                row.update(_time_model(model, x, iters, s["latency_warmup"], device))
                row["status"] = "ok"
            except Exception as e:  # noqa: BLE001
                row.update(status="error", error=_err(e))
                traceback.print_exc()
            print(_latency_line(row), flush=True)
            save(res)


def _time_model(model, x, iters: int, warmup: int, device) -> Dict[str, float]:
    """First-call seconds (the compile), then ``iters`` synchronised calls: p50/p99/mean ms and images/s."""
    import torch

    with torch.inference_mode():
        _sync(device)
        t0 = time.perf_counter()
        model(x)
        _sync(device)
        first = time.perf_counter() - t0
        for _ in range(warmup):
            model(x)
        _sync(device)
        ms = []
        for _ in range(iters):
            t0 = time.perf_counter()
            model(x)
            _sync(device)
            ms.append(1e3 * (time.perf_counter() - t0))
    mean = statistics.fmean(ms)
    return {"first_call_s": first, "p50_ms": _percentile(ms, 50), "p99_ms": _percentile(ms, 99), "mean_ms": mean,
            "images_per_s": 1e3 * x.shape[0] / mean}


def _percentile(values: Sequence[float], q: float) -> float:
    """Linear-interpolation percentile (numpy's default)."""
    v = sorted(values)
    k = (len(v) - 1) * q / 100.0
    lo, hi = math.floor(k), math.ceil(k)
    return v[lo] + (v[hi] - v[lo]) * (k - lo)


def _latency_line(r: Dict[str, Any]) -> str:
    head = f"latency {r['mode']} {r['precision']} batch {r['batch']}: "
    if r.get("status") != "ok":
        return head + f"{r.get('status')} {r.get('error', '')}"
    return head + (f"p50 {r['p50_ms']:.3f} ms, p99 {r['p99_ms']:.3f} ms, {r['images_per_s']:.0f} img/s "
                   f"(first call {r['first_call_s']:.1f}s)")


# ---------------------------------------------------------------------------------------------------------------
# report
# ---------------------------------------------------------------------------------------------------------------
def _f(v: Any, nd: int = 1) -> str:
    return f"{v:.{nd}f}" if isinstance(v, (int, float)) and not isinstance(v, bool) else "-"


def _pair(v: Optional[Dict[str, float]]) -> str:
    return f"{_f(v['wall'], 2)} / {_f(v['steady'], 2)}" if v else "-"


def to_markdown(rep: Dict[str, Any]) -> str:
    """The report as markdown tables."""
    e, s = rep["env"], rep["settings"]
    lines = [f"# pand GPU check{' (dry run: toy sizes on the CPU, numbers mean nothing)' if rep['dry_run'] else ''}",
             "", f"{e.get('date_utc')} | {e.get('gpu', 'no GPU')} | driver {e.get('driver', '-')} | torch "
             f"{e.get('torch')} (CUDA {e.get('torch_cuda')}, cuDNN {e.get('cudnn')}) | commit {e.get('git_commit')} "
             f"| {rep.get('elapsed_s', 0):.0f}s of a {s['budget_s']:.0f}s budget", ""]
    if "tests" in rep:
        lines += ["## Tests", "", "| run | status | passed | failed | errors | skipped | seconds |",
                  "|---|---|---|---|---|---|---|"]
        for name, r in rep["tests"].items():
            lines.append(f"| {name} | {r['status']} | {r['passed']} | {r['failed']} | {r['errors']} | "
                         f"{r['skipped']} | {_f(r.get('seconds'))} |")
        fails = [f for r in rep["tests"].values() for f in r["failures"]]
        lines += [""] + [f"- FAILED {f}" for f in fails] + ([""] if fails else [])
    if "nsd" in rep:
        n = rep["nsd"]
        lines += ["## Stage NSD throughput", "",
                  f"Teacher {s['teacher']}@{s['teacher_size']}px (random init), student {s['student']}@"
                  f"{s['image_size']}px, {n.get('n_train')} synthetic train images, {s['epochs']} epochs, "
                  f"{s['views']} cache views, batch {s['batch_size']}, {s['workers']} workers. img/s: train images "
                  "per second at the median epoch; wall: end to end (the cached run includes building its cache).",
                  "Speedups as end to end / at the median epoch.", "",
                  "| config | live img/s | cached img/s | live wall s | cached wall s | cache speedup | "
                  "live vs fp32 eager live | cached vs fp32 eager live |", "|---|---|---|---|---|---|---|---|"]
        for r in n["rows"]:
            if r.get("status") != "ok":
                lines.append(f"| {r['config']} | {r.get('status')} {r.get('error', '')} | | | | | | |")
                continue
            lines.append(f"| {r['config']} | {_f(r['live']['steady_images_per_s'], 0)} | "
                         f"{_f(r['cached']['steady_images_per_s'], 0)} | {_f(r['live']['wall_s'])} | "
                         f"{_f(r['cached']['wall_s'])} | {_pair(r['cache_speedup'])} | "
                         f"{_pair(r.get('live_vs_fp32_eager_live'))} | {_pair(r.get('cached_vs_fp32_eager_live'))} |")
        lines += [""] + [f"- {k} (wall / steady): {_pair(v)}" for k, v in n.get("summary", {}).items()]
        for prec, c in n.get("cost", {}).items():
            if "error" not in c:
                lines.append(f"- forward cost, teacher {prec}: teacher {_f(c['teacher_ms'], 3)} ms/img, student "
                             f"{_f(c['student_ms'], 3)} ms/img, time ratio {_f(c['time_ratio'])}x, FLOP ratio "
                             f"{_f(c['flop_ratio'])}x")
        lines.append("")
    if "psc" in rep:
        lines += ["## Stage PSC feature extraction", "", "| teacher precision | images | extract img/s | "
                  "forward-only img/s |", "|---|---|---|---|"]
        for r in rep["psc"]["rows"]:
            lines.append(f"| {r['teacher_precision']} | {r.get('n_images', '-')} | "
                         f"{_f(r.get('extract_images_per_s'), 0) if r.get('status') == 'ok' else r.get('status')} | "
                         f"{_f(r.get('forward_images_per_s'), 0)} |")
        lines.append("")
    if "latency" in rep:
        lat = rep["latency"]
        lines += ["## Student inference latency (PyTorch)", "", f"{lat['student']} at {s['image_size']}px, "
                  f"{lat['num_classes']} classes, eval, channels_last and cuDNN autotuning on CUDA; synchronised per "
                  "call.", "",
                  "| mode | precision | batch | p50 ms | p99 ms | img/s | first call s |",
                  "|---|---|---|---|---|---|---|"]
        for r in lat["rows"]:
            if r.get("status") != "ok":
                lines.append(f"| {r['mode']} | {r['precision']} | {r['batch']} | {r.get('status')} | | | |")
                continue
            lines.append(f"| {r['mode']} | {r['precision']} | {r['batch']} | {_f(r['p50_ms'], 3)} | "
                         f"{_f(r['p99_ms'], 3)} | {_f(r['images_per_s'], 0)} | {_f(r['first_call_s'])} |")
        lines.append("")
    if "trt" in rep:
        lines += trt_check.to_markdown(rep["trt"])
    lines += ["## Stages", ""] + [f"- {k}: {v['status']} ({_f(v.get('seconds'))}s) {v.get('error', '')}".rstrip()
                                  for k, v in rep["stages"].items()]
    return "\n".join(lines) + "\n"


def _saver(rep: Dict[str, Any], name: str, out: Path, budget: Budget) -> Save:
    """Callback of a stage after every item: the partial result goes into the report on disk (a run killed from
    outside keeps every finished row)."""
    def save(res: Dict[str, Any]) -> None:
        rep[name] = res
        rep["stages"].setdefault(name, {"status": "running"})
        rep["elapsed_s"] = budget.elapsed()
        write_report(rep, out)

    return save


def write_report(rep: Dict[str, Any], out: Path) -> None:
    (out / "gpu_check.json").write_text(json.dumps(rep, indent=1, default=str) + "\n")
    (out / "gpu_check.md").write_text(to_markdown(rep))


# ---------------------------------------------------------------------------------------------------------------
# main
# ---------------------------------------------------------------------------------------------------------------
def _run_stage(name: str, runner: Callable[[Save], Dict[str, Any]], rep: Dict[str, Any], out: Path,
               budget: Budget) -> None:
    """One stage into ``rep[name]`` and ``rep["stages"][name]`` (status, seconds); the report is written after it."""
    budget.start_stage(name)
    t0 = time.perf_counter()
    try:
        rep[name] = runner(_saver(rep, name, out, budget))
        rep["stages"][name] = {"status": "ok"}
    except Exception as e:  # noqa: BLE001 - a stage that cannot even start is recorded, the rest runs
        traceback.print_exc()
        rep["stages"][name] = {"status": "error", "error": _err(e)}
    rep["stages"][name]["seconds"] = time.perf_counter() - t0
    rep["elapsed_s"] = budget.elapsed()
    write_report(rep, out)


def main(argv: Optional[Sequence[str]] = None) -> Dict[str, Any]:
    """Run the selected stages; returns the report (also written to ``<out>/gpu_check.{json,md}``)."""
    import torch

    from pand.utils.distributed import select_device

    a = parse_args(argv)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    device = select_device(a.device)
    budget = Budget(a.size["budget_s"], a.stages)
    settings = {k: v for k, v in a.size.items() if k not in ("gpu_tests", "cpu_tests")}
    rep: Dict[str, Any] = {"format": "pand-gpu-check", "version": 1, "dry_run": a.dry_run, "settings": settings,
                           "env": collect_env(device), "stages": {}}
    print(f"gpu check on {rep['env'].get('gpu', device)} | torch {torch.__version__} | budget {a.size['budget_s']:.0f}s"
          f" | stages {','.join(a.stages)} | out {out}", flush=True)
    write_report(rep, out)
    work = Path(tempfile.mkdtemp(prefix="pand-gpu-check-"))
    setup = Setup(a, work, device)
    runners: Dict[str, Callable[..., Dict[str, Any]]] = {
        "tests": lambda save: stage_tests(a, out, budget, save), "nsd": lambda save: stage_nsd(a, setup, budget, save),
        "psc": lambda save: stage_psc(a, setup, budget, save),
        "latency": lambda save: stage_latency(a, device, budget, save),
        "trt": lambda save: trt_check.run_checks(work / "trt", a.dry_run, budget.left, save)}
    try:
        with compile_backend(a.size["compile_backend"]):
            for name in a.stages:
                _run_stage(name, runners[name], rep, out, budget)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"wrote {out / 'gpu_check.json'} and {out / 'gpu_check.md'} ({budget.elapsed():.0f}s)", flush=True)
    return rep


if __name__ == "__main__":
    os.environ.setdefault("TQDM_DISABLE", "1")  # fewer progress bars between the report lines of a captured log
    main()
