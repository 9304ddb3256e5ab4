"""The runtime package runs with torch made unimportable (a fresh interpreter with ``sys.modules['torch'] = None``)."""
import json
import subprocess
import sys

import numpy as np

from pand_runtime import Predictor


SHIM = """
import sys
for name in ("torch", "torchvision", "open_clip", "tensorrt"):
    sys.modules[name] = None  # any 'import torch...' now raises ImportError
"""

PROGRAM = SHIM + """
import json
import pand_runtime, pand_runtime.bench, pand_runtime.metrics, pand_runtime.preprocess
import pand_runtime.backends.ort_backend, pand_runtime.backends.trt_backend
from pand_runtime import Predictor
bundle, image, out = sys.argv[1], sys.argv[2], sys.argv[3]
p = Predictor.from_bundle(bundle, backend="auto", threads=1)
preds = p.predict([image], top_k=3)
try:
    pand_runtime.bench.main([bundle, "--iterations", "3", "--min-time", "0", "--warmup-ms", "1",
                        "--json", out + "/b.json", "--markdown", out + "/b.md"])
except SystemExit as e:
    assert e.code in (None, 0), e.code
import contextlib, io, pand_runtime.engine, pand_runtime.trt_build
err = io.StringIO()
with contextlib.redirect_stderr(err):
    try:
        pand_runtime.engine.main([bundle, "-o", out + "/engine"])
    except SystemExit as e:
        engine_exit = e.code
try:
    import torch
    torch_importable = True
except ImportError:
    torch_importable = False
heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "torchvision", "omegaconf", "safetensors")
               and sys.modules[m] is not None)
print(json.dumps({"labels": preds[0].labels, "probs": preds[0].probs, "backend": p.backend_name,
                  "torch_importable": torch_importable, "heavy": heavy, "engine_exit": engine_exit,
                  "engine_err": err.getvalue()}))
"""


def test_predictor_and_bench_run_without_torch(rt_bundle, tmp_path):
    ref = Predictor.from_bundle(rt_bundle).reference()
    image = ref["paths"][0]
    r = subprocess.run([sys.executable, "-c", PROGRAM, str(rt_bundle), str(image), str(tmp_path)],
                       capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    got = json.loads(r.stdout.strip().splitlines()[-1])
    assert got["torch_importable"] is False and got["heavy"] == []
    assert got["backend"] == "onnxruntime" and len(got["labels"]) == 3
    # pand-engine without TensorRT: exit 2, what to install (x86 wheel, Jetson apt + venv), no traceback, no output
    assert got["engine_exit"] == 2 and "Traceback" not in got["engine_err"]
    assert "pip install 'pand-runtime[trt]'" in got["engine_err"] and "python3-libnvinfer" in got["engine_err"]
    assert not (tmp_path / "engine").exists()
    # same answer as in this (torch-enabled) process
    p = Predictor.from_bundle(rt_bundle)
    want = p.predict([image], top_k=3)[0]
    assert got["labels"] == want.labels
    np.testing.assert_allclose(got["probs"], want.probs, rtol=1e-5)
    rows = json.loads((tmp_path / "b.json").read_text())["rows"]
    assert rows[0]["status"] == "ok" and rows[0]["agreement"] == 1.0


def test_importing_runtime_does_not_import_engines(tmp_path):
    code = SHIM + "import pand_runtime, pand_runtime.bench\nprint(sorted(m for m in ('onnxruntime', 'tensorrt', 'pycuda', "\
                  "'PIL') if sys.modules.get(m) is not None))"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[]"
