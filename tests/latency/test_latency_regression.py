"""Latency regression gates for ONNX Runtime CPU bundles (modes and baselines: see conftest.py).

Record a baseline for this machine:  make latency-baseline   (PAND_LATENCY_RECORD=1 pytest -m latency tests/latency)
Strict check against it:             pytest -m latency tests/latency
"""
import json
from datetime import datetime, timezone

import pytest

from latency_support import BASELINE_DIR, IMAGE_SIZE, env_float, paired_ratio

pytestmark = pytest.mark.latency

# INT8 (asymmetric u8 activations) / fp32 at batch 1. DEPLOY.md 8 measured ~0.35 on a 2-core VNNI CPU.
INT8_RATIO = {"strict": 0.5, "wide": 0.7, "record": 0.7}
# default session (ORT_ENABLE_ALL) / optimisations disabled; ~0.6 measured here.
OPT_RATIO = {"strict": 0.8, "wide": 0.9, "record": 0.9}


def _key(name: str) -> str:
    return f"resnet18-{IMAGE_SIZE}/{name}/b1"


def test_int8_cpu_bundle_is_faster_than_fp32(latency_medians, latency_mode):
    m, r = latency_medians["medians"], latency_medians["per_run"]
    ratio = paired_ratio(r["int8-cpu"], r["fp32"])
    assert ratio <= INT8_RATIO[latency_mode], (
        f"INT8 CPU bundle p50 {m['int8-cpu']:.2f} ms is {ratio:.2f}x fp32 ({m['fp32']:.2f} ms); expected <= "
        f"{INT8_RATIO[latency_mode]}x ({latency_mode} mode). Did the int8 export fall back to fp32 or lose its "
        f"asymmetric uint8 activations?")


def test_default_session_keeps_graph_optimisations(latency_medians, latency_mode):
    m, r = latency_medians["medians"], latency_medians["per_run"]
    ratio = paired_ratio(r["fp32"], r["fp32-noopt"])
    assert ratio <= OPT_RATIO[latency_mode], (
        f"default Predictor p50 {m['fp32']:.2f} ms vs {m['fp32-noopt']:.2f} ms with graph optimisations disabled "
        f"(ratio {ratio:.2f} > {OPT_RATIO[latency_mode]}): are ORT graph optimisations still on by default?")


def test_against_this_device_baseline(latency_medians, latency_mode, latency_threads):
    import onnxruntime

    key = latency_medians["device_key"]
    path = BASELINE_DIR / f"{key}.json"
    medians = {_key(k): round(v, 4) for k, v in latency_medians["medians"].items()}
    if latency_mode == "record":
        from pand.utils.io import atomic_write_json

        atomic_write_json(path, {
            "device_key": key, "recorded": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "onnxruntime": onnxruntime.__version__, "threads": latency_threads, "runs": latency_medians["runs"],
            "statistic": "median over runs of the per-run p50 latency, batch 1, ms", "medians_ms": medians})
        return
    if not path.is_file():
        pytest.skip(f"no latency baseline for device '{key}': record one with `make latency-baseline` "
                    f"and commit {path.relative_to(BASELINE_DIR.parents[2])}")
    base = json.loads(path.read_text())
    tol = env_float("PAND_LATENCY_TOLERANCE", 0.15) if latency_mode == "strict" else \
        env_float("PAND_LATENCY_WIDE_TOLERANCE", 2.0)
    slow = [f"{k}: {v:.2f} ms vs baseline {base['medians_ms'][k]:.2f} ms (+{v / base['medians_ms'][k] - 1:.0%})"
            for k, v in medians.items() if k in base["medians_ms"] and v > base["medians_ms"][k] * (1 + tol)]
    note = "" if base.get("onnxruntime") == onnxruntime.__version__ else \
        f" (baseline recorded with onnxruntime {base.get('onnxruntime')}, now {onnxruntime.__version__})"
    assert not slow, f"latency regression > {tol:.0%} on {key} ({latency_mode} mode){note}: " + "; ".join(slow)

