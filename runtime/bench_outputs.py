"""Where ``pand-bench`` may write its results: never over an input, never inside a bundle it reads (except that
bundle's ``bench/`` sub-folder, the place meant for results), and only where a file can be created, all checked
before anything runs.

The rule, for each output (``--json``, ``--markdown``):

* it is not the same file as any input (the ``--compare`` baseline, a file of a bundle, ...), by any spelling
  (``os.path.samefile`` when both exist, else the resolved paths);
* it does not lie inside a bundle directory being read (``BUNDLE/manifest.json`` would replace the manifest), unless
  it lies in ``BUNDLE/bench/``;
* it does not lie inside another input folder (``--images``);
* its folder (or the nearest existing ancestor, created on write) accepts a new file: a temporary file is created
  and removed there, so a read-only or full location is refused before the benchmark, not after it.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Iterable, Sequence, Tuple

from .errors import PandError

__all__ = ["BENCH_SUBDIR", "check_outputs", "check_writable"]

#: the sub-folder of a bundle where results may be written
BENCH_SUBDIR = "bench"


def _resolved(p: Path) -> Path:
    return Path(os.path.abspath(p)).resolve()


def _same_file(a: Path, b: Path) -> bool:
    try:
        if a.exists() and b.exists():
            return os.path.samefile(a, b)
    except OSError:
        pass
    return _resolved(a) == _resolved(b)


def _inside(path: Path, folder: Path) -> bool:
    try:
        _resolved(path).relative_to(_resolved(folder))
        return True
    except ValueError:
        return False


def check_writable(path: Path, opt: str) -> None:
    """Refuse ``path`` when no file can be created in its folder (read-only, not a folder, no permission).

    Raises:
        PandError: naming the option, the folder and the OS error.
    """
    parent = _resolved(path).parent
    probe = parent
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir():
        raise PandError(f"{opt} {path}: {probe} is not a folder. Choose another {opt} path")
    try:
        fd, tmp = tempfile.mkstemp(prefix=".pand-bench-probe.", suffix=".tmp", dir=probe)
    except OSError as e:
        raise PandError(f"{opt} {path}: cannot write in {probe} ({e.strerror or e}). Nothing was run; choose a "
                        f"writable {opt} path") from None
    os.close(fd)
    os.unlink(tmp)


def check_outputs(outputs: Sequence[Tuple[str, Path]], bundles: Iterable[Path], input_files: Iterable[Path] = (),
                  input_dirs: Iterable[Path] = ()) -> None:
    """Apply the module's rule to ``outputs`` (``(option, path)`` pairs).

    Args:
        outputs: e.g. ``[("--json", Path("pand-bench.json")), ("--markdown", Path("pand-bench.md"))]``.
        bundles: the bundle directories read.
        input_files: other files read (``--compare``).
        input_dirs: other folders read (``--images``).

    Raises:
        PandError: naming the option, the path and what it would overwrite; nothing has been run or written.
    """
    bundles, input_files, input_dirs = list(bundles), list(input_files), list(input_dirs)
    seen: dict = {}
    for opt, out in outputs:
        out = Path(out)
        for f in input_files:
            if _same_file(out, Path(f)):
                raise PandError(f"{opt} {out} is the input file {f}; the results would overwrite it. Write them "
                                f"elsewhere")
        for b in bundles:
            b = Path(b)
            if _inside(out, b) and not _inside(out, b / BENCH_SUBDIR):
                raise PandError(f"{opt} {out} lies inside the bundle {b} that is benchmarked; the results could "
                                f"overwrite its files. Write them outside it or in {b / BENCH_SUBDIR}")
        for d in input_dirs:
            if _inside(out, Path(d)):
                raise PandError(f"{opt} {out} lies inside the input folder {d}. Write the results elsewhere")
        key = _resolved(out)
        if key in seen:
            raise PandError(f"{opt} and {seen[key]} name the same file {out}; give them different paths")
        seen[key] = opt
        check_writable(out, opt)

