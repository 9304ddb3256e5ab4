"""What gets exported: the student classifier of a run directory or checkpoint, with its classes and eval transform.

A run directory holds ``config.yaml`` (the resolved run config, no ``defaults`` list) and ``student.safetensors``
(a :class:`pand.models.students.Student` state dict whose metadata carries ``arch``, ``num_classes``,
``class_names`` and ``preprocess`` {image_size, resize_size, interpolation, mean, std}). A checkpoint path may also be
given directly; its ``config.yaml`` is looked up next to it and in up to two parent directories (the dataset named
there provides the parity and calibration images).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional

from pand.config.schema import RunCfg
from pand.data.transforms import preprocess_spec_from_student
from pand.errors import ArtifactError, PandError
from pand.utils.io import load_tensors, sha256_file
from pand_runtime.preprocess_spec import PreprocessSpec

__all__ = ["ExportSource", "load_source", "STUDENT_FILE", "CONFIG_FILE", "check_finite_weights"]

STUDENT_FILE = "student.safetensors"
CONFIG_FILE = "config.yaml"


@dataclass
class ExportSource:
    """The student to export and everything the bundle needs to describe it."""

    model: Any  # pand.models.students.Student in eval mode
    arch: str
    num_classes: int
    class_names: List[str]
    preprocess: PreprocessSpec
    cfg: Any  # the run's DictConfig, or None when no config.yaml was found
    checkpoint: Path
    checkpoint_sha256: str
    run_dir: Optional[Path]
    metadata: Dict[str, Any]


def _find_config(checkpoint: Path) -> Optional[Path]:
    """``config.yaml`` next to ``checkpoint`` or up to three folders above it (a run's
    ``nsd/checkpoints/epoch_NNNN/model.safetensors`` finds the run's own)."""
    for d in list(checkpoint.parents)[:4]:
        if (d / CONFIG_FILE).is_file():
            return d / CONFIG_FILE
    return None


def _unfinished_run(path: Path) -> ArtifactError:
    """The error for a run directory without ``student.safetensors``: names ``--resume`` and the last checkpoint."""
    from pand.engine.checkpoint import has_checkpoint

    for stage in ("nsd", "promptkd"):
        root = path / stage / "checkpoints"
        if has_checkpoint(root):
            try:
                from pand.utils.io import read_json

                last = read_json(root / "last.json")
                ckpt = root / str(last["dir"]) / "model.safetensors"
                epoch = f"from epoch {int(last['epoch']) + 1}"
            except Exception:  # noqa: BLE001 - a damaged last.json: still name the folder
                ckpt, epoch = root, "in"
            return ArtifactError(
                f"{path} is an unfinished run: it has no {STUDENT_FILE} yet; its last checkpoint is {epoch} {ckpt}. "
                f"Finish the run with: pand-train {path / CONFIG_FILE} --run-dir {path} --resume   or export that "
                f"checkpoint as it is: pand-export {ckpt}")
    return ArtifactError(f"{path} has no {STUDENT_FILE}: is it a finished pand-train run directory? "
                         f"Pass the run directory or a student .safetensors checkpoint")


def _set_data_root(cfg: Optional[RunCfg], data_root: Optional[Path], where: Path) -> None:
    """``data.root`` of the run's configuration replaced by ``data_root`` (the dataset moved or another machine)."""
    if data_root is None:
        return
    if cfg is None:
        raise PandError(f"--data-root {data_root}: {where} has no config.yaml naming the dataset, so there is nothing "
                        f"to redirect; export a run directory")
    if not Path(data_root).exists():
        raise PandError(f"--data-root {data_root} does not exist; point it at the dataset's folder (the one "
                        f"data.root named when training: {cfg.data.root})")
    cfg.data.root = str(data_root)


def _strip_prefix(sd: Dict[str, Any]) -> Dict[str, Any]:
    if sd and all(k.startswith("student.") for k in sd):
        return {k[len("student."):]: v for k, v in sd.items()}
    return sd


def check_finite_weights(model: Any, checkpoint: Path) -> None:
    """Refuse (:class:`ArtifactError`) a model whose parameters or buffers hold NaN or inf: exporting it cannot give
    a usable bundle (INT8 calibration fails on it, fp32/fp16 would predict NaN)."""
    import torch

    bad = [k for k, v in model.state_dict().items()
           if torch.is_tensor(v) and v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if bad:
        raise ArtifactError(f"{checkpoint} holds NaN or inf weights ({len(bad)} tensor(s), first: {', '.join(bad[:3])})"
                            f"; the training run diverged. Nothing was exported: retrain (e.g. with a lower learning "
                            f"rate) or export an earlier, healthy checkpoint")


def load_source(path: str | Path, data_root: Optional[str | Path] = None) -> ExportSource:
    """Load the student of a run directory or a ``.safetensors`` checkpoint for export.

    Args:
        path: a finished run directory, its ``student.safetensors``, or an epoch checkpoint
            (``<run>/nsd/checkpoints/epoch_NNNN/model.safetensors``; the run's ``config.yaml`` is found above it).
        data_root: where the run's dataset is now (replaces ``data.root`` of the run's ``config.yaml``).

    Raises:
        ArtifactError: no checkpoint, unreadable file, or a state dict that does not fit the recorded architecture.
        PandError: class count / names unknown.
    """
    from pand.config import load_config
    from pand.models import create_student

    path = Path(path)
    if path.is_dir():
        run_dir, checkpoint = path, path / STUDENT_FILE
        if not checkpoint.is_file():
            raise _unfinished_run(path)
        cfg_path = path / CONFIG_FILE if (path / CONFIG_FILE).is_file() else None
    elif path.is_file():
        if path.suffix != ".safetensors":
            raise ArtifactError(f"{path}: expected a run directory or a .safetensors student checkpoint")
        checkpoint, run_dir = path, None
        cfg_path = _find_config(path)
    else:
        raise ArtifactError(f"no run directory or checkpoint at {path}")
    cfg = load_config(cfg_path) if cfg_path is not None else None
    _set_data_root(cfg, Path(data_root) if data_root else None, path)
    if run_dir is None and cfg_path is not None:
        run_dir = cfg_path.parent
    try:
        tensors, meta = load_tensors(checkpoint)
    except Exception as e:  # noqa: BLE001 - safetensors raises several error types for a bad file
        raise ArtifactError(f"cannot read checkpoint {checkpoint}: {e}") from e
    sd = _strip_prefix(tensors)
    arch = meta.get("arch") or (cfg.student.arch if cfg is not None else None)
    if not arch:
        raise ArtifactError(f"{checkpoint} metadata has no 'arch' and no config.yaml was found next to it")
    class_names = meta.get("class_names") or (list(cfg.data.class_names) if cfg is not None and cfg.data.class_names
                                              else None)
    if not class_names and cfg is not None:  # an epoch checkpoint stores no class names: the dataset's, in label order
        from pand.data import build_splits

        class_names = list(build_splits(cfg.data, cache_dir=cfg.cache_dir).class_names)
    num_classes = int(meta.get("num_classes") or (len(class_names) if class_names else 0)
                      or sd["linear_cls.weight"].shape[0])
    if not class_names:
        raise PandError(f"{checkpoint} metadata has no class_names; the bundle needs them. Re-save the checkpoint "
                        f"with pand-train or set data.class_names in the run's config.yaml")
    if len(class_names) != num_classes:
        raise ArtifactError(f"{checkpoint}: {len(class_names)} class names but num_classes={num_classes}")
    if meta.get("preprocess"):
        preprocess = PreprocessSpec.from_dict(meta["preprocess"], f"{checkpoint} metadata 'preprocess'")
    elif cfg is not None:
        preprocess = preprocess_spec_from_student(cfg.student)
    else:
        raise ArtifactError(f"{checkpoint} metadata has no 'preprocess' and no config.yaml was found next to it")
    if meta.get("kind") == "promptkd":
        # PromptKD: prompted CLIP image encoder -> projector -> normalise -> stored class vectors -> logits
        from pand.promptkd import load_promptkd_classifier

        model, _ = load_promptkd_classifier(checkpoint)
        check_finite_weights(model, checkpoint)
        return ExportSource(model=model, arch=str(arch), num_classes=num_classes,
                            class_names=[str(c) for c in class_names], preprocess=preprocess, cfg=cfg,
                            checkpoint=checkpoint, checkpoint_sha256=sha256_file(checkpoint), run_dir=run_dir,
                            metadata=dict(meta))
    model = create_student(arch, num_classes)
    try:
        missing, unexpected = model.load_state_dict(sd, strict=False)
    except RuntimeError as e:  # shape mismatches raise even with strict=False
        raise ArtifactError(f"{checkpoint} does not fit a '{arch}' student with {num_classes} classes: "
                            f"{str(e).splitlines()[-1].strip()}") from None
    if missing or unexpected:
        raise ArtifactError(f"{checkpoint} does not fit a '{arch}' student with {num_classes} classes: "
                            f"missing={list(missing)[:5]} unexpected={list(unexpected)[:5]}")
    model.eval()
    check_finite_weights(model, checkpoint)
    return ExportSource(model=model, arch=str(arch), num_classes=num_classes, class_names=[str(c) for c in class_names],
                        preprocess=preprocess, cfg=cfg, checkpoint=checkpoint,
                        checkpoint_sha256=sha256_file(checkpoint), run_dir=run_dir, metadata=dict(meta))
