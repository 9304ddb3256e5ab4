"""Read a bundle's ``reference.npz`` strictly: no pickles, every array of the dtype and shape the manifest implies.

``reference.npz`` (written by ``pand-export``) holds ``images_u8 [N, S, S, 3] uint8`` (the parity images after
resize + center crop), ``labels [N]`` integers in ``0..C-1``, ``logits [N, C]`` float (the PyTorch student on exactly
these images) and optionally ``paths [N]`` strings, with ``S`` = the manifest's ``preprocess.image_size`` and
``C`` = its ``num_classes``. :func:`load_reference` reads it with ``allow_pickle=False``; an object array, a damaged
file or a wrong dtype/shape is an :class:`~pand_runtime.errors.ArtifactError` naming the file and the field.
"""
from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Dict, Union

import numpy as np

from .errors import ArtifactError
from .manifest import Manifest

__all__ = ["load_reference"]

_REQUIRED = ("images_u8", "labels", "logits")


def load_reference(path: Union[str, Path], manifest: Manifest) -> Dict[str, np.ndarray]:
    """The arrays of ``path`` (a bundle's ``reference.npz``), checked against ``manifest``.

    Raises:
        ArtifactError: unreadable, pickled (object) arrays, a missing field, or a field of the wrong dtype/shape.
    """
    path = Path(path)
    fix = "Re-export the bundle with pand-export"
    try:
        with np.load(path, allow_pickle=False) as z:
            out: Dict[str, np.ndarray] = {}
            for k in z.files:
                try:
                    out[k] = z[k]
                except ValueError as e:  # an object array needs a pickle: never loaded
                    raise ArtifactError(f"{path}: field '{k}' cannot be read without unpickling ({e}); pand never "
                                        f"unpickles. {fix}") from None
    except ArtifactError:
        raise
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, KeyError) as e:
        raise ArtifactError(f"cannot read {path} ({type(e).__name__}: {e}). {fix}") from None
    missing = [k for k in _REQUIRED if k not in out]
    if missing:
        raise ArtifactError(f"{path}: missing field(s) {', '.join(missing)}. {fix}")
    s, c = manifest.preprocess.image_size, manifest.num_classes
    images, labels, logits = out["images_u8"], out["labels"], out["logits"]
    n = images.shape[0] if images.ndim == 4 else -1  # labels: one per image, or none (random parity images)

    def bad(field: str, want: str, arr: np.ndarray) -> ArtifactError:
        return ArtifactError(f"{path}: field '{field}' must be {want}; it is {arr.dtype} of shape {tuple(arr.shape)}. "
                             f"{fix}")

    if labels.ndim != 1 or labels.shape[0] not in (0, n) or (labels.size and not np.issubdtype(labels.dtype,
                                                                                                 np.integer)):
        raise bad("labels", f"a 1-D integer array of {n} labels (or empty: unlabelled parity images)", labels)
    if labels.size and (labels.min() < 0 or labels.max() >= c):
        raise ArtifactError(f"{path}: field 'labels' holds values outside 0..{c - 1} (num_classes={c}). {fix}")
    if images.dtype != np.uint8 or images.shape != (n, s, s, 3):
        raise bad("images_u8", f"uint8 of shape ({n}, {s}, {s}, 3) (preprocess.image_size={s})", images)
    if not np.issubdtype(logits.dtype, np.floating) or logits.shape != (n, c):
        raise bad("logits", f"float of shape ({n}, {c}) (num_classes={c})", logits)
    if "paths" in out and (out["paths"].shape not in ((n,), (0,)) or (out["paths"].size and
                                                                   out["paths"].dtype.kind != "U")):
        raise bad("paths", f"{n} strings (or none: random parity images have no files)", out["paths"])
    return out
