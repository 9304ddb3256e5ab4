"""PromptKD over several unlabeled pools and teachers, one base/novel/HM row per run (what a report tabulates).

:func:`run_promptkd_grid` runs :func:`pand.promptkd.run` once per ``(teacher_prompts, pool)`` into
``out_root/<teacher_prompts>_<pool>/``. The teacher does not depend on the pool, so it is trained once per teacher
kind: later runs of the same kind reuse the first run's PromptSRC prompts (``promptkd.promptsrc.artifact``) or
Stage PSC context (``psc.artifact``). A failed run gives a row with ``error`` and the others still run.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Optional, Sequence

from omegaconf import OmegaConf

from .recipe import run

if TYPE_CHECKING:  # annotations only: pand.config.schema imports pand.data and pand.engine
    from pand.config.schema import RunCfg

__all__ = ["run_promptkd_grid"]


def _with(cfg: RunCfg, **dotted: Any) -> RunCfg:
    """A copy of ``cfg`` with the dotted keys replaced."""
    out = OmegaConf.create(OmegaConf.to_container(cfg, resolve=True))
    OmegaConf.set_struct(out, True)
    for key, value in dotted.items():
        OmegaConf.update(out, key, value, merge=False)
    return out


def run_promptkd_grid(cfg: RunCfg, out_root: str | Path, pools: Sequence[str] = ("reference", "inductive"),
                      teachers: Sequence[str] = ("promptsrc", "coop"), progress: bool = False,
                      on_error: Optional[Callable[[str, str, Exception], None]] = None) -> List[Dict[str, Any]]:
    """Run PromptKD for every ``teacher x pool`` and return one row per run.

    Args:
        cfg: a resolved ``recipe=promptkd`` configuration (its ``promptkd.pool``/``teacher_prompts``/``regime`` are
            replaced per run; every other setting is kept).
        out_root: parent of the run directories ``<teacher>_<pool>/`` (each must be new: no ``--resume``).
        pools: ``reference`` | ``inductive`` | ``transductive``.
        teachers: ``promptsrc`` | ``coop`` | ``handcrafted``.
        progress: tqdm bars.
        on_error: called with ``(teacher, pool, exception)`` when a run fails (default: the row records it).

    Returns:
        ``[{"teacher_prompts", "pool", "transductive", "protocol", "kd_weight", "teacher": {base, novel, hm, all},
        "student": {...}, "run_dir", "summary"}]``, or ``{"teacher_prompts", "pool", "run_dir", "error"}`` for a
        failed run. Accuracies are percentages on the test split (base among base classes, novel among novel).
    """
    out_root = Path(out_root)
    rows: List[Dict[str, Any]] = []
    for teacher in teachers:
        reuse: Dict[str, Any] = {}
        for pool in pools:
            run_dir = out_root / f"{teacher}_{pool}"
            try:
                rcfg = _with(cfg, **{"promptkd.pool": pool, "promptkd.regime": None,
                                     "promptkd.teacher_prompts": teacher, **reuse})
                s = run(rcfg, run_dir, progress=progress, write_config=True)
            except Exception as e:  # noqa: BLE001 - one failed run must not lose the others
                if on_error is not None:
                    on_error(teacher, pool, e)
                rows.append({"teacher_prompts": teacher, "pool": pool, "run_dir": str(run_dir),
                             "error": f"{type(e).__name__}: {e}"})
                continue
            cv = s.get("class_vectors", {})
            if not reuse and cv.get("promptsrc_artifact"):
                reuse = {"promptkd.promptsrc.artifact": cv["promptsrc_artifact"]}
            elif not reuse and cv.get("psc_artifact"):
                reuse = {"psc.artifact": cv["psc_artifact"]}
            keep = ("base", "novel", "hm", "all")
            rows.append({"teacher_prompts": teacher, "pool": pool, "transductive": s["pool"]["transductive"],
                         "protocol": s["protocol"], "kd_weight": s["kd_weight"]["value"],
                         "teacher": {k: s["results"]["teacher"][k] for k in keep},
                         "student": {k: s["results"]["student"][k] for k in keep},
                         "run_dir": str(run_dir), "summary": str(run_dir / "summary.json")})
    return rows
