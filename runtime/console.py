"""Console output shared by pand's command-line tools (``pand-export``, ``pand-engine``): plain messages on stderr."""
from __future__ import annotations

import logging
import sys

__all__ = ["setup_logging"]


def setup_logging(name: str) -> logging.Logger:
    """Logger ``name`` printing bare messages to stderr at INFO (set up once; not propagated to the root logger)."""
    logger = logging.getLogger(name)
    if not logger.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    return logger
