"""``pip install ./runtime`` on its own: a fresh venv without torch gets the runtime and its console scripts.

This is what a device does (README "Deploying to a device"). The venv is created from the base interpreter with no
system site-packages, so nothing of the training environment (torch, omegaconf, pand) is visible in it; pip fetches
the runtime's dependencies (numpy, Pillow, click, onnxruntime) from the package index (its cache after the first run).
"""
import json
import shutil
import subprocess
import venv
from pathlib import Path

import pytest

RUNTIME_DIR = Path(__file__).resolve().parents[2] / "runtime"

PROGRAM = """
import json, sys
from pand_runtime import Predictor
p = Predictor.from_bundle(sys.argv[1], backend="auto", threads=1)
pred = p.predict([sys.argv[2]], top_k=3)[0]
mods = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "pand", "pand_export"))
print(json.dumps({"labels": pred.labels, "probs": pred.probs, "backend": p.backend_name, "mods": mods}))
"""


def _run(cmd, **kw):
    return subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=900, **kw)


@pytest.mark.timeout(1200)
def test_runtime_installs_alone_without_torch_and_runs_a_bundle(rt_bundle, tmp_path):
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=True, system_site_packages=False, clear=True).create(env_dir)
    py = env_dir / "bin" / "python"
    # from a copy: pip builds in the source folder, and the checkout must stay as it is
    src = shutil.copytree(RUNTIME_DIR, tmp_path / "runtime-src",
                          ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
    r = _run([py, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", src])
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]

    # torch is not there, and pand's training distribution is not either
    r = _run([py, "-c", "import importlib.util as u; print([m for m in ('torch', 'pand', 'pand_export') "
                        "if u.find_spec(m)])"], cwd=tmp_path)
    assert r.returncode == 0 and r.stdout.strip() == "[]", r.stdout + r.stderr

    from pand_runtime import Predictor

    image = Predictor.from_bundle(rt_bundle).reference()["paths"][0]
    r = _run([py, "-c", PROGRAM, rt_bundle, image], cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    got = json.loads(r.stdout.strip().splitlines()[-1])
    assert got["backend"] == "onnxruntime" and got["mods"] == []
    want = Predictor.from_bundle(rt_bundle).predict([image], top_k=3)[0]
    assert got["labels"] == want.labels
    assert got["probs"] == pytest.approx(want.probs, rel=1e-5)

    # the console scripts came with it: pand-bench measures the bundle, pand-engine names what to install
    r = _run([env_dir / "bin" / "pand-bench", rt_bundle, "--iterations", "3", "--min-time", "0", "--warmup-ms", "1",
              "--json", tmp_path / "b.json", "--markdown", tmp_path / "b.md"], cwd=tmp_path)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    rows = json.loads((tmp_path / "b.json").read_text())["rows"]
    assert rows[0]["status"] == "ok" and rows[0]["agreement"] == 1.0
    r = _run([env_dir / "bin" / "pand-engine", rt_bundle, "-o", tmp_path / "engine"], cwd=tmp_path)
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr[-2000:]
    assert "pand-runtime[trt]" in r.stderr and not (tmp_path / "engine").exists()
