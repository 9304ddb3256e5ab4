"""Session fixtures for the runtime tests: a tiny run directory and an fp32 ONNX bundle exported from it."""
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "export"))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "fakes"))  # fake_tensorrt, fake_pycuda
import bundle_factory as bf  # noqa: E402


@pytest.fixture(scope="session")
def rt_run_dir(tmp_path_factory):
    return bf.make_run_dir(tmp_path_factory.mktemp("rt-run") / "tiny", tmp_path_factory.mktemp("rt-cache"))


@pytest.fixture(scope="session")
def rt_bundle(rt_run_dir, tmp_path_factory):
    """An fp32 bundle whose reference.npz holds 32 test images."""
    return bf.export(rt_run_dir, tmp_path_factory.mktemp("rt-bundles") / "fp32", precision="fp32",
                     parity_images=32).bundle


@pytest.fixture
def bundle_copy(rt_bundle, tmp_path):
    """A private copy of the bundle that a test may damage."""
    import shutil

    dst = tmp_path / "bundle"
    shutil.copytree(rt_bundle, dst)
    return dst
