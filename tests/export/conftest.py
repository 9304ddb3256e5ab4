"""Session fixtures for the export tests: one tiny run directory (ResNet-18 at 64 px on the synthetic benchmark)
and bundles exported from it once per session."""
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bundle_factory as bf  # noqa: E402


@pytest.fixture(scope="session")
def data_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("pand-cache")


@pytest.fixture(scope="session")
def run_dir(tmp_path_factory, data_cache):
    return bf.make_run_dir(tmp_path_factory.mktemp("run") / "tiny", data_cache)


@pytest.fixture(scope="session")
def bundles_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("bundles")


@pytest.fixture(scope="session")
def fp32_bundle(run_dir, bundles_dir):
    return bf.export(run_dir, bundles_dir / "fp32", precision="fp32")


@pytest.fixture(scope="session")
def int8_cpu_bundle(run_dir, bundles_dir):
    # plain INT8 (no accuracy-aware fallback): the recipe itself is under test; the search has its own tests
    return bf.export(run_dir, bundles_dir / "int8-cpu", precision="int8", target="cpu", parity_images=48,
                     accuracy_aware=False)
