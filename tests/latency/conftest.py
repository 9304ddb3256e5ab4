"""Latency regression tests (marker ``latency``): modes, device identity and the measured bundles.

Three modes, chosen from the command line and the environment:

* **relative** (default: ``make test`` / plain ``pytest``): only checks that hold on any machine, measured side by
  side in one process as paired ratios -- the INT8 CPU bundle must be clearly faster than fp32 on a CPU with int8
  dot-product instructions (VNNI/AMX; elsewhere the check is skipped, saying so), and the Predictor's default
  session must be faster than one with graph optimisations disabled. No measured time is ever compared with a
  number recorded on another machine here.
* **strict** (``make latency-check`` = ``pytest -m latency tests/latency``, or ``PAND_LATENCY_STRICT=1``): the
  medians are also compared with the baseline recorded for exactly this machine's device key at
  ``PAND_LATENCY_TOLERANCE`` (default 0.15 = +15%). Without such a baseline the comparison is skipped, naming the
  baselines that exist, the keys they were recorded for and this machine's key. The ratios are stricter too.
* **record** (``make latency-baseline``, i.e. ``PAND_LATENCY_RECORD=1 pytest -m latency tests/latency``): measure and
  write ``tests/latency/baselines/<device key>.json`` with the full identity; commit it.

The device key (``pand_runtime.device.device_key``) names what decides the speed: CPU vendor, family/model, model
string, the kernel-changing ISA features (avx2, avx512f, avx512_vnni, avx_vnni, amx), logical CPUs, ONNX Runtime
threads and version. Threads: ``PAND_LATENCY_THREADS`` (default ``min(4, cpu_count)``). Each number is the median over
``PAND_LATENCY_RUNS`` (default 5 in relative mode, 15 in strict and record mode) runs of the per-run p50 latency, the
configurations interleaved run by run so that
a change in machine load affects all of them alike; the ratios use the median of the per-run ratios (run ``i`` of
one configuration against run ``i`` of the other).
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
    """``record`` | ``strict`` | ``relative`` (see the module docstring)."""
    if os.environ.get("PAND_LATENCY_RECORD") == "1":
        return "record"
    markexpr = request.config.getoption("markexpr", "") or ""
    selected = "latency" in markexpr and "not latency" not in markexpr
    if os.environ.get("PAND_LATENCY_STRICT") == "1" or selected:
        return "strict"
    return "relative"


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
def latency_medians(latency_bundles, latency_threads, latency_mode):
    """Batch-1 medians (ms): ``fp32``, ``int8-cpu`` (default sessions) and ``fp32-noopt`` (optimisations off), plus
    the device key they belong to."""
    from pand_runtime import Predictor
    from pand_runtime.device import device_identity, device_key
    from pand_runtime.preprocess import normalize_u8

    fp32 = Predictor.from_bundle(latency_bundles["fp32"], threads=latency_threads)
    int8 = Predictor.from_bundle(latency_bundles["int8-cpu"], threads=latency_threads)
    noopt = Predictor.from_bundle(latency_bundles["fp32"], threads=latency_threads, graph_optimization="disable")
    x = normalize_u8(fp32.reference()["images_u8"][:1], fp32.spec)
    # strict checks and recordings take 15 interleaved runs (a 2-vCPU VM drifts by 10-15% between 5-run medians)
    runs = int(os.environ.get("PAND_LATENCY_RUNS", 5 if latency_mode == "relative" else 15))
    t0 = time.perf_counter()
    per_run = interleaved_runs({"fp32": lambda: fp32.backend.run(x), "int8-cpu": lambda: int8.backend.run(x),
                                "fp32-noopt": lambda: noopt.backend.run(x)}, runs=runs, iterations=15)
    identity = device_identity(fp32.backend.describe())
    return {"device_key": device_key(identity), "identity": identity, "runs": runs, "per_run": per_run,
            "medians": {k: float(np.median(v)) for k, v in per_run.items()}, "seconds": time.perf_counter() - t0}
