"""Latency regression tests (marker ``latency``): modes, device baselines and the measured bundles.

Three modes, chosen from the command line and the environment:

* **wide** (default: ``make test`` / plain ``pytest``): in-process *relative* checks that hold on any machine and
  catch gross regressions -- the INT8 CPU bundle must be clearly faster than fp32 (an int8 bundle that silently runs
  as fp32, or with symmetric activations that ORT's CPU kernels cannot fuse, is not), and the Predictor's default
  session must be clearly faster than one with graph optimisations disabled. If this device has a recorded baseline,
  every median must also stay under ``(1 + PAND_LATENCY_WIDE_TOLERANCE)`` x baseline (default 2.0, i.e. 3x: the same-run relative checks already catch disabled graph optimisations and an int8 -> fp32 fallback; the absolute guard only has to survive a busy CI machine).
* **strict** (``pytest -m latency`` or ``PAND_LATENCY_STRICT=1``): the medians are compared with this device's
  baseline at ``PAND_LATENCY_TOLERANCE`` (default 0.15 = +15%); without a baseline for the device key the comparison
  is skipped with the command that records one. The relative checks use their strict ratios.
* **record** (``make latency-baseline``, i.e. ``PAND_LATENCY_RECORD=1 pytest -m latency tests/latency``): measure and
  write ``tests/latency/baselines/<device key>.json``; commit it.

The device key is the CPU model + ONNX Runtime thread count (``runtime.bench.device_key``; a TensorRT device would be
GPU name + TensorRT version). Threads: ``PAND_LATENCY_THREADS`` (default ``min(4, cpu_count)``). Each number is the
median over ``PAND_LATENCY_RUNS`` (default 5) runs of the per-run p50 latency, the configurations interleaved run by
run so that a change in machine load affects all of them alike; the relative checks use the median of the per-run
ratios (run ``i`` of one configuration against run ``i`` of the other).
"""
import os
import sys
import time
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "export"))
sys.path.insert(0, str(Path(__file__).resolve().parent))
import bundle_factory as bf  # noqa: E402
from latency_support import IMAGE_SIZE, interleaved_runs  # noqa: E402

@pytest.fixture(scope="session")
def latency_mode(request) -> str:
    """``record`` | ``strict`` | ``wide`` (see the module docstring)."""
    if os.environ.get("PAND_LATENCY_RECORD") == "1":
        return "record"
    markexpr = request.config.getoption("markexpr", "") or ""
    selected = "latency" in markexpr and "not latency" not in markexpr
    if os.environ.get("PAND_LATENCY_STRICT") == "1" or selected:
        return "strict"
    return "wide"


@pytest.fixture(scope="session")
def latency_threads() -> int:
    return int(os.environ.get("PAND_LATENCY_THREADS", min(4, os.cpu_count() or 1)))


@pytest.fixture(scope="session")
def latency_bundles(tmp_path_factory):
    """fp32 and int8 (CPU flavour) bundles of a ResNet-18 student at 224 px."""
    run = bf.make_run_dir(tmp_path_factory.mktemp("lat-run") / "r18", tmp_path_factory.mktemp("lat-cache"),
                          overrides=[f"student.image_size={IMAGE_SIZE}", "student.resize_size=256"])
    out = tmp_path_factory.mktemp("lat-bundles")
    fp32 = bf.export(run, out / "fp32", precision="fp32", parity_images=8)
    int8 = bf.export(run, out / "int8-cpu", precision="int8", target="cpu", parity_images=8, calib_images=16,
                     min_agreement=0.0, max_acc_drop=1.0)
    return {"fp32": fp32.bundle, "int8-cpu": int8.bundle}


@pytest.fixture(scope="session")
def latency_medians(latency_bundles, latency_threads):
    """Batch-1 medians (ms): ``fp32``, ``int8-cpu`` (default sessions) and ``fp32-noopt`` (optimisations off), plus
    the device key they belong to."""
    from runtime import Predictor
    from runtime.bench import device_key
    from runtime.preprocess import normalize_u8

    fp32 = Predictor.from_bundle(latency_bundles["fp32"], threads=latency_threads)
    int8 = Predictor.from_bundle(latency_bundles["int8-cpu"], threads=latency_threads)
    noopt = Predictor.from_bundle(latency_bundles["fp32"], threads=latency_threads, graph_optimization="disable")
    x = normalize_u8(fp32.reference()["images_u8"][:1], fp32.spec)
    runs = int(os.environ.get("PAND_LATENCY_RUNS", 5))
    t0 = time.perf_counter()
    per_run = interleaved_runs({"fp32": lambda: fp32.backend.run(x), "int8-cpu": lambda: int8.backend.run(x),
                                "fp32-noopt": lambda: noopt.backend.run(x)}, runs=runs, iterations=15)
    return {"device_key": device_key(fp32.backend.describe()), "runs": runs, "per_run": per_run,
            "medians": {k: float(np.median(v)) for k, v in per_run.items()}, "seconds": time.perf_counter() - t0}
