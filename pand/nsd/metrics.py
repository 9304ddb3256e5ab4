"""Metric sinks of Stage NSD: JSON lines always, TensorBoard when installed (rank 0 only)."""
from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any, Dict, Mapping, Optional

from pand.utils.io import atomic_write_text

__all__ = ["MetricsLogger", "read_metrics"]


def read_metrics(path: Path) -> list[Dict[str, Any]]:
    """The records of a ``metrics.jsonl`` file (a torn last line from a crash is skipped)."""
    out = []
    if not Path(path).is_file():
        return out
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return out


class MetricsLogger:
    """Append records to ``<dir>/metrics.jsonl`` and scalars to ``<dir>/tensorboard``.

    Every record carries ``kind`` (``step`` | ``epoch`` | ``test``) and ``epoch`` (0-based). On resume from
    epoch ``start_epoch`` the records of epochs ``>= start_epoch`` (written by the interrupted run) are dropped
    first, so the file reads as one uninterrupted run.

    Args:
        out_dir: the NSD directory.
        enabled: False on non-zero ranks (then every call is a no-op).
        tensorboard: also write TensorBoard events when ``torch.utils.tensorboard`` imports.
        start_epoch: the first epoch this process will run.
        start_step: the global step at ``start_epoch`` (TensorBoard purges later events).
    """

    def __init__(self, out_dir: Path, enabled: bool = True, tensorboard: bool = True, start_epoch: int = 0,
                 start_step: int = 0):
        self.enabled = enabled
        self.path = Path(out_dir) / "metrics.jsonl"
        self.tb = None
        if not enabled:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        kept = [r for r in read_metrics(self.path) if int(r.get("epoch", 0)) < start_epoch]
        atomic_write_text(self.path, "".join(json.dumps(r) + "\n" for r in kept))
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:  # tensorboard not installed
                warnings.warn("tensorboard is not installed; metrics go to metrics.jsonl only")
            else:
                self.tb = SummaryWriter(str(Path(out_dir) / "tensorboard"), purge_step=start_step or None)

    def log(self, record: Mapping[str, Any], step: Optional[int] = None) -> None:
        """Append one record; its numeric fields also go to TensorBoard as ``<kind>/<field>`` at ``step``."""
        if not self.enabled:
            return
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(dict(record), default=float) + "\n")
        if self.tb is not None and step is not None:
            kind = record.get("kind", "")
            for k, v in record.items():
                if isinstance(v, (int, float)) and not isinstance(v, bool) and k not in ("epoch", "step"):
                    self.tb.add_scalar(f"{kind}/{k}", v, step)

    def close(self) -> None:
        if self.tb is not None:
            self.tb.flush()
            self.tb.close()
            self.tb = None
