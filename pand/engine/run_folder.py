"""A run folder knows what it holds: ``run_dir/run.json`` names the kind of run and its state.

``run.json``::

    {"format": "pand-run-v1", "kind": "pand", "state": "running", "stage": "all", "stages_done": ["psc"],
     "versions": {"pand": "0.1.0", "python": "3.11.9", "torch": "2.14.1"}, "updated": "2026-12-06T22:10:00Z"}

* ``kind``: the recipe (``pand``, ``vl2lite``, ``ce``, ``promptkd``); a folder holds runs of one kind only.
* ``state``: ``running`` from the start of a run until it ends well, then ``finished``; ``stages_done`` lists the
  stages that finished (``psc``, ``nsd``; PromptKD: ``promptkd``). A run whose result (``student.safetensors``)
  was written is *complete* (``nsd`` or ``promptkd`` done).

:func:`check_run_folder` is the one check every recipe and stage calls before anything is written (config included);
it refuses, naming the folder and the way out,

* a folder that holds files but no ``run.json`` (a project folder with its own ``config.yaml``, or anything else);
* a run of another kind (``recipe=promptkd`` into a PAND run and the other way round);
* a complete run without ``--resume``; ``--resume`` of a folder that holds no run.

:meth:`RunFolder.start` then writes ``run.json`` (state ``running``) for a fresh run; a resumed run writes nothing
until it ends well (a refused ``--resume`` leaves the folder as it was); :meth:`RunFolder.finish` records the
finished stages.
"""
from __future__ import annotations

import platform
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from pand.config.schema import RECIPES
from pand.errors import ArtifactError
from pand.utils.io import atomic_write_json, read_json
from pand.utils.lock import LOCK_NAME

__all__ = ["RUN_FILE", "RUN_FORMAT", "KINDS", "RunFolder", "check_run_folder", "versions"]

RUN_FILE = "run.json"
RUN_FORMAT = "pand-run-v1"
#: the kinds of run: the recipes (``recipe.name``; ``kd`` was missing from a copy of this list)
KINDS = RECIPES
#: stages whose end means the run's result (student.safetensors) exists
_RESULT_STAGES = ("nsd", "promptkd")


def versions() -> Dict[str, str]:
    """Versions that wrote a run: pand, python and (when importable) torch."""
    import pand

    out = {"pand": str(pand.__version__), "python": platform.python_version()}
    try:
        import torch

        out["torch"] = str(torch.__version__)
    except ImportError:  # pragma: no cover - training always has torch
        pass
    return out


@dataclass
class RunFolder:
    """What :func:`check_run_folder` found in ``path`` and what this run adds to ``run.json``."""

    path: Path
    kind: str
    stage: str
    resume: bool
    record: Optional[Dict[str, Any]] = None  #: the ``run.json`` found, None in a fresh folder
    stages_done: List[str] = field(default_factory=list)

    def _write(self, state: str) -> None:
        atomic_write_json(self.path / RUN_FILE, {
            "format": RUN_FORMAT, "kind": self.kind, "state": state, "stage": self.stage,
            "stages_done": list(self.stages_done), "versions": versions(),
            "updated": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        })

    def start(self) -> None:
        """Record a fresh run (``state: running``). A resumed run writes nothing here: a refusal further on must
        leave the folder unchanged."""
        if not self.resume or self.record is None:
            self.path.mkdir(parents=True, exist_ok=True)
            self._write("running")

    def finish(self, stages: Sequence[str]) -> None:
        """Record ``stages`` as finished and the run as ``finished``."""
        for s in stages:
            if s not in self.stages_done:
                self.stages_done.append(s)
        self._write("finished")


def _read_record(path: Path) -> Dict[str, Any]:
    try:
        record = read_json(path)
    except Exception as e:  # noqa: BLE001 - unreadable or not JSON: say which file and why
        raise ArtifactError(f"{path} cannot be read as a pand run record ({type(e).__name__}: {e}); this folder "
                            f"is not a pand run folder as far as pand can tell. Choose another --run-dir") from None
    if not isinstance(record, dict) or record.get("format") != RUN_FORMAT or record.get("kind") not in KINDS \
            or record.get("state") not in ("running", "finished") or not isinstance(record.get("stages_done", []),
                                                                                     list):
        raise ArtifactError(f"{path} is not a pand run record (format {RUN_FORMAT!r}, kind one of {list(KINDS)}, "
                            f"state running/finished). Choose another --run-dir")
    return record


def check_run_folder(run_dir: str | Path, kind: str, stage: str, resume: bool) -> RunFolder:
    """Refuse to start a run of ``kind`` in ``run_dir`` unless the folder is fresh or holds a run this one may
    continue. Reads only; writes nothing.

    Args:
        run_dir: the run directory (may not exist yet).
        kind: the recipe (``cfg.recipe.name``).
        stage: ``all``, ``psc``, ``nsd`` (PAND family) or ``promptkd``.
        resume: ``--resume`` was given.

    Returns:
        A :class:`RunFolder`; call :meth:`RunFolder.start` once the other refusal checks have passed.

    Raises:
        ArtifactError: files that are not a run's, a run of another kind, a complete run without ``--resume``, or
            ``--resume`` of a folder that holds no run.
    """
    path = Path(run_dir)
    entries = sorted(p.name for p in path.iterdir()) if path.is_dir() else []
    if path.exists() and not path.is_dir():
        raise ArtifactError(f"--run-dir {path} is a file, not a folder. Choose another --run-dir")
    if RUN_FILE not in entries:
        others = [e for e in entries if e != LOCK_NAME]
        if others:
            shown = ", ".join(others[:6]) + (", ..." if len(others) > 6 else "")
            raise ArtifactError(
                f"--run-dir {path} holds files that are not a pand run's ({shown}) and no {RUN_FILE}: pand-train "
                f"writes only into an empty folder or a pand run folder, so nothing there is replaced. Choose an "
                f"empty or new --run-dir")
        if resume:
            raise ArtifactError(f"--resume: {path} holds no run to resume (no {RUN_FILE}). Run without --resume")
        return RunFolder(path, kind, stage, resume)
    record = _read_record(path / RUN_FILE)
    if record["kind"] != kind:
        raise ArtifactError(
            f"--run-dir {path} holds a run of recipe {record['kind']!r} ({RUN_FILE}); this is recipe {kind!r}. A run "
            f"folder holds one kind of run: choose another --run-dir")
    done = [str(s) for s in record.get("stages_done", [])]
    complete = record["state"] == "finished" and any(s in done for s in _RESULT_STAGES)
    if complete and not resume:
        raise ArtifactError(
            f"{path} already holds a trained run (a finished {kind} run, stages {', '.join(done)}; {RUN_FILE}); "
            f"pass --resume to continue it or choose another --run-dir (nothing was overwritten)")
    return RunFolder(path, kind, stage, resume, record=record, stages_done=done)
