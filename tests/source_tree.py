"""The project's Python sources, parsed, for the tests that read the code itself (shared helpers defined once, no
copies of the teacher's preprocessing constants)."""
from __future__ import annotations

import ast
import functools
from pathlib import Path
from typing import Tuple

ROOT = Path(__file__).resolve().parents[1]
SOURCE_FOLDERS = ("pand", "export", "runtime", "bench")


@functools.lru_cache(maxsize=None)
def parsed_sources(folders: Tuple[str, ...] = SOURCE_FOLDERS) -> Tuple[Tuple[str, ast.Module], ...]:
    """``(path relative to the repository, its AST)`` of every ``.py`` under ``folders`` (build outputs skipped),
    read and parsed once per test session (the tests only walk the trees)."""
    return tuple((f.relative_to(ROOT).as_posix(), ast.parse(f.read_text()))
                 for folder in folders for f in sorted((ROOT / folder).rglob("*.py")) if "build" not in f.parts)
