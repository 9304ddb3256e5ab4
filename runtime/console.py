"""Console output shared by pand's command-line tools (``pand-export``, ``pand-engine``): plain messages on stderr."""
from __future__ import annotations

import logging
import sys

__all__ = ["setup_logging", "report_parity", "EXIT_INVALID"]

EXIT_INVALID = 1  # the bundle was written, but it failed its parity check (valid: false)


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


def report_parity(tool: str, what: str, valid: bool, failures) -> None:
    """The last lines of a build: ``valid: true``, or the failures on stderr and exit :data:`EXIT_INVALID`."""
    import click

    if not valid:
        click.echo(f"{tool}: {what} FAILED its parity check and is marked valid: false:", err=True)
        for f in failures:
            click.echo(f"  - {f}", err=True)
        sys.exit(EXIT_INVALID)
    click.echo("  valid: true (parity check passed)")
