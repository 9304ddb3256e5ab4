"""The one result type of the two commands that write a bundle: ``pand-export`` (``pand_export.exporter.export_bundle``,
as ``ExportResult``) and ``pand-engine`` (:func:`pand_runtime.engine.build_engine_bundle`, as ``EngineResult``).

Example:
    >>> result = build_engine_bundle("runs/tiny/export/onnx-fp16")
    >>> result.valid, result.bundle
    (True, PosixPath('runs/tiny/export/onnx-fp16-trt'))
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import List

from .manifest import Manifest

__all__ = ["BundleResult"]


@dataclass
class BundleResult:
    """A written bundle.

    Attributes:
        bundle: its directory.
        manifest: its manifest (as written).
        valid: False when a parity check failed (the bundle is still written, marked ``valid: false``).
        failures: why, one line per failed check (empty when valid).
    """

    bundle: Path
    manifest: Manifest
    valid: bool
    failures: List[str]
