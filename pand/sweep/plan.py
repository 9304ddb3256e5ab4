"""What a sweep will train and export, checked before anything runs: the students and the precisions."""
from __future__ import annotations

import importlib.util
import re
from typing import Callable, List, Sequence, Tuple

from pand.errors import ConfigError

__all__ = ["PRECISIONS", "parse_list", "resolve_students", "resolve_precisions", "student_slug", "plan_items"]

PRECISIONS = ("fp32", "fp16", "int8")


def parse_list(text: str) -> List[str]:
    """``"a, b,,c"`` -> ``["a", "b", "c"]`` (order kept, duplicates dropped)."""
    out: List[str] = []
    for x in (t.strip() for t in str(text).split(",")):
        if x and x not in out:
            out.append(x)
    return out


def student_slug(name: str) -> str:
    """A file-name-safe folder name for a student (``timm/convnext_atto`` -> ``timm-convnext_atto``)."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", name).strip("-")


def _fit_error(name: str, need: int, have: int) -> str:
    return (f"student '{name}' needs inputs of at least {need} px, but this run feeds it {have} px "
            f"(student.image_size={have}). Drop it from --students or raise student.image_size to >= {need}")


def resolve_students(spec: str, image_size: int, say: Callable[[str], None] = print) -> List[str]:
    """The students of ``--students``: a comma-separated list of registered names and ``timm/<name>``, or ``all``
    (every registered student whose input size fits ``image_size``; the others are named and skipped).

    Raises:
        ConfigError: an empty list, an unknown student (the message lists the registered ones), a ``timm/`` student
            without timm or unknown to timm, or a named student whose smallest input side
            (:func:`pand.models.students.min_input_size`) exceeds ``image_size`` (naming both sizes).
    """
    from pand.models.students import list_students, min_input_size

    names = parse_list(spec)
    if not names:
        raise ConfigError(f"--students is empty. Name some, e.g. --students resnet18,mobilenet_v3_small, or 'all' "
                          f"(registered: {', '.join(list_students())})")
    if names == ["all"]:
        out = []
        for n in list_students():
            need = min_input_size(n)
            if need is not None and need > image_size:
                say(f"skipping {n}: needs inputs of at least {need} px, the data is {image_size} px")
            else:
                out.append(n)
        return out
    registered = list_students()
    for n in names:
        if n.startswith("timm/"):
            if importlib.util.find_spec("timm") is None:
                raise ConfigError(f"student '{n}' needs timm, which is not installed: pip install timm, or drop it "
                                  f"from --students")
            import timm

            if not timm.is_model(n[5:]):
                raise ConfigError(f"student '{n}': timm has no model '{n[5:]}' (timm.list_models() lists them)")
        elif n not in registered:
            raise ConfigError(f"unknown student '{n}'. Registered students: {', '.join(registered)}; or "
                              f"timm/<name> with timm installed")
        need = min_input_size(n)
        if need is not None and need > image_size:
            raise ConfigError(_fit_error(n, need, image_size))
    return names


def resolve_precisions(spec: str) -> List[str]:
    """The precisions of ``--precisions`` (``fp32``, ``fp16``, ``int8``).

    Raises:
        ConfigError: an empty list or an unknown precision (names the valid ones).
    """
    names = parse_list(spec)
    bad = [p for p in names if p not in PRECISIONS]
    if bad or not names:
        raise ConfigError(f"--precisions {spec!r}: unknown {', '.join(bad) or '(empty)'}. Valid: "
                          f"{', '.join(PRECISIONS)}")
    return names


def plan_items(students: Sequence[str], precisions: Sequence[str]) -> List[Tuple[str, str]]:
    """Every (student, precision) pair, students outermost."""
    return [(s, p) for s in students for p in precisions]

