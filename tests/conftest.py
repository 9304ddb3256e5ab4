"""Test-suite wide settings: CPU only, and ``slow`` tests only with ``--runslow``."""
import os

import pytest

os.environ["CUDA_VISIBLE_DEVICES"] = ""  # CPU-first: tests needing a GPU are marked and skip themselves


def pytest_addoption(parser):
    parser.addoption("--runslow", action="store_true", default=False, help="also run tests marked slow")


def pytest_collection_modifyitems(config, items):
    if config.getoption("--runslow"):
        return
    skip_slow = pytest.mark.skip(reason="slow: needs --runslow")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip_slow)
