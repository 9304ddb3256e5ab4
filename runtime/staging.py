"""The one stage-publish-cleanup step of the commands that write a bundle (``pand-export``, ``pand-engine``).

A bundle is written into a fresh staging directory next to its final place and moved there only when complete
(:func:`pand_runtime.manifest.publish_bundle`, which replaces an older bundle only at the very end); on any failure
the staging directory is removed, so an interrupted or failed write never leaves a half-written bundle, and a failure
to write (an ``OSError``: full disk, read-only or vanished directory) is a :class:`PandError` naming the bundle.

Example:
    >>> with staged_bundle(Path("runs/tiny/export/onnx-fp32"), "the bundle", "Nothing was written") as staging:
    ...     (staging / "manifest.json").write_text("{}")
"""
from __future__ import annotations

import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Optional

from .errors import PandError
from .io import make_staging_dir
from .manifest import publish_bundle

__all__ = ["staged_bundle"]


@contextmanager
def staged_bundle(bundle: Path, what: str, advice: str) -> Iterator[Path]:
    """Yield a staging directory for ``bundle``; publish it onto ``bundle`` when the block ends normally.

    Args:
        bundle: the final bundle directory (its parent is created).
        what: how the message names it (``"the bundle"``, ``"the engine bundle"``).
        advice: the message's last sentence(s): what was (not) written, and the fix.

    Raises:
        PandError: an ``OSError`` while staging, filling or publishing (``cannot write <what> <bundle>: <error>.
            <advice>``); any other exception of the block is re-raised as is. Either way the staging directory is gone.
    """
    staging: Optional[Path] = None
    try:
        bundle.parent.mkdir(parents=True, exist_ok=True)
        staging = make_staging_dir(bundle.parent, bundle.name)
        yield staging
        publish_bundle(staging, bundle)
    except OSError as e:  # full disk, read-only or vanished directory: nothing is left behind
        if staging is not None:
            shutil.rmtree(staging, ignore_errors=True)
        raise PandError(f"cannot write {what} {bundle}: {e}. {advice}") from e
    except BaseException:
        if staging is not None:
            shutil.rmtree(staging, ignore_errors=True)
        raise
