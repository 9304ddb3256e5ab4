"""Test-suite wide settings: CPU only, and ``slow`` tests only with ``--runslow``."""
import os

import pytest

# CPU-first: the suite runs on the CPU (tests needing a GPU are marked and skip themselves). On a GPU machine set
# PAND_TEST_GPU=1 to keep the GPU visible so the gpu/trt-marked tests run.
if os.environ.get("PAND_TEST_GPU", "") in ("", "0"):
    os.environ["CUDA_VISIBLE_DEVICES"] = ""


def pytest_addoption(parser):
    parser.addoption("--runslow", action="store_true", default=False, help="also run tests marked slow")


def pytest_collection_modifyitems(config, items):
    if config.getoption("--runslow"):
        return
    skip_slow = pytest.mark.skip(reason="slow: needs --runslow")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip_slow)
