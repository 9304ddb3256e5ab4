"""The trained PyTorch student from Python: ``pand.load_student(run)``, the training-side twin of
``pand_runtime.Predictor`` (same ``predict`` interface, same preprocessing).

Example:
    >>> import pand
    >>> student = pand.load_student("runs/tiny")          # a run directory, or a student .safetensors file
    >>> student.predict(["bird.jpg"], top_k=3)[0].labels
    ['red_crested_spotted', 'red_crested_plain', 'blue_crested_spotted']
    >>> student.model                                    # the torch.nn.Module (eval mode, CPU): images -> logits
    >>> student.transform                                # the training eval transform (PIL image -> tensor)

``predict`` and ``logits`` preprocess exactly like an exported bundle (resize the shorter side, centre crop,
normalise: :func:`pand_runtime.preprocess.prepare_batch` with the student's own spec), so on the same images a
bundle and the student see the same inputs; ``transform`` is the torchvision eval transform the run validated with
(equal to that preprocessing within 1e-5, checked at every export).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional

import numpy as np

__all__ = ["StudentClassifier", "load_student"]


@dataclass
class StudentClassifier:
    """A trained student ready to run on the CPU (build with :func:`load_student`).

    Attributes:
        model: the student ``torch.nn.Module`` in eval mode: ``[N, 3, S, S]`` normalised images -> logits ``[N, C]``.
        class_names: class names in label order.
        preprocess: the :class:`pand_runtime.preprocess_spec.PreprocessSpec` (image_size, resize_size,
            interpolation, mean, std) the student was trained and validated with.
        checkpoint: the weights file that was loaded; ``checkpoint_sha256`` its sha256 (what bundles record).
        metadata: the checkpoint's metadata (arch, val_top1, epoch (0-based), recipe, ...).
    """

    model: Any
    class_names: List[str]
    preprocess: Any
    checkpoint: Path
    checkpoint_sha256: str
    metadata: Dict[str, Any]

    @property
    def transform(self):
        """The torchvision eval transform of the run (PIL image -> normalised ``[3, S, S]`` tensor)."""
        from pand.data.transforms import create_transform

        return create_transform(self.preprocess, is_train=False)

    def logits(self, images: Any, batch_size: int = 32) -> np.ndarray:
        """Logits ``float32 [N, C]`` for what ``pand_runtime.Predictor.predict`` accepts (paths, PIL images, uint8
        ``(H, W, 3)`` arrays or lists of them, or a preprocessed float32 ``(N, 3, S, S)`` array)."""
        import torch

        from pand_runtime.preprocess import prepare_batch

        x = prepare_batch(images, self.preprocess)
        out = []
        with torch.inference_mode():
            for i in range(0, len(x), batch_size):
                out.append(self.model(torch.from_numpy(np.ascontiguousarray(x[i:i + batch_size]))).float().numpy())
        return np.concatenate(out)

    def predict(self, images: Any, top_k: int = 5) -> List[Any]:
        """Top-``k`` classes per image as :class:`pand_runtime.predictor.Prediction` (labels, indices, softmax
        probabilities, best first), like ``Predictor.predict``."""
        from pand_runtime.metrics import softmax, topk
        from pand_runtime.predictor import Prediction

        probs = softmax(self.logits(images))
        idx, val = topk(probs, top_k)
        return [Prediction(labels=[self.class_names[j] for j in row], indices=[int(j) for j in row],
                           probs=[float(v) for v in vals]) for row, vals in zip(idx, val)]


def load_student(run: str | Path, data_root: Optional[str | Path] = None) -> StudentClassifier:
    """The trained student of a pand run, on the CPU in eval mode.

    Args:
        run: a finished run directory (``student.safetensors`` + ``config.yaml``), a ``student.safetensors`` file,
            or an epoch checkpoint of an unfinished run (``<run>/nsd/checkpoints/epoch_NNNN/model.safetensors``).
        data_root: where the run's dataset is now; only needed for an epoch checkpoint (its class names are read
            from the dataset).

    Raises:
        ArtifactError: no student there (an unfinished run: the message names ``--resume`` and its last
            checkpoint), an unreadable file, or weights that do not fit the recorded architecture.
    """
    from pand_export.source import load_source  # same distribution as pand (``pand[export]``); loaded on use

    src = load_source(run, data_root=data_root)
    return StudentClassifier(model=src.model, class_names=list(src.class_names), preprocess=src.preprocess,
                             checkpoint=src.checkpoint, checkpoint_sha256=src.checkpoint_sha256,
                             metadata=dict(src.metadata))
