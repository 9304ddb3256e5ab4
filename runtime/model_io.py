"""The model's input and output against the manifest, checked when a bundle is loaded.

A manifest whose ``preprocess.image_size`` or ``num_classes`` disagrees with the model would otherwise surface as a
raw backend error on the first prediction, or (a class count off by one) as a benchmark that reports "ok".
:func:`check_model_io` compares the fixed dimensions the backend reports (``input_shape`` ``[N, 3, S, S]`` and
``output_shape`` ``[N, C]``; a symbolic dimension is not compared) and the manifest's own ``inputs``/``outputs``
specs with ``preprocess.image_size`` and ``num_classes``.
"""
from __future__ import annotations

from typing import Any, Optional

from .errors import ArtifactError
from .manifest import Manifest

__all__ = ["check_model_io"]


def _fixed(dim: Any) -> Optional[int]:
    return dim if isinstance(dim, int) and not isinstance(dim, bool) and dim > 0 else None


def check_model_io(manifest: Manifest, backend: Any, bundle: Any = "") -> None:
    """Refuse a model whose input size or class count is not the manifest's.

    Args:
        manifest: the bundle's manifest.
        backend: a loaded backend; its ``input_shape`` / ``output_shape`` (lists, ints or names) are compared when it
            has them.
        bundle: the bundle path, for the message.

    Raises:
        ArtifactError: naming the manifest field (``preprocess.image_size``, ``num_classes``) and both values.
    """
    s, c = manifest.preprocess.image_size, manifest.num_classes
    fix = "the manifest does not describe this model; re-export the bundle with pand-export"
    sources = [("the manifest's inputs[0].shape", manifest.input.shape, manifest.output.shape),
               ("the model", getattr(backend, "input_shape", None), getattr(backend, "output_shape", None))]
    for who, ishape, oshape in sources:
        if ishape is not None and len(ishape) == 4:
            sizes = [_fixed(d) for d in ishape[2:]]
            if any(v is not None and v != s for v in sizes) or (_fixed(ishape[1]) not in (None, 3)):
                raise ArtifactError(f"bundle {bundle}: manifest field preprocess.image_size={s}, but {who} takes "
                                    f"input {list(ishape)}; {fix}")
        if oshape is not None and len(oshape) == 2 and _fixed(oshape[1]) not in (None, c):
            what = "the manifest's outputs[0].shape" if who.startswith("the manifest") else "the model"
            raise ArtifactError(f"bundle {bundle}: manifest field num_classes={c}, but {what} outputs "
                                f"{list(oshape)} ({oshape[1]} classes); {fix}")
