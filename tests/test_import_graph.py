"""The import graph, read from the source (AST), never by importing:

* the torch-free runtime (``runtime/``, import name ``pand_runtime``) reaches nothing of ``pand``, ``pand_export`` or
  torch: neither through an ``import`` statement (anywhere, function-local too) nor through a module named as a
  string (``importlib.import_module``, ``__import__``, ``find_spec``, ``lazy_import``, ``entry_points``);
* the project's modules (``pand``, ``pand_export``, ``pand_runtime``) import each other without a circle at module
  level, and the runtime and Stage NSD have none even counting function-local imports (a circle is not broken by
  moving an import into a function). An ``if TYPE_CHECKING:`` block never runs: its imports give annotations their
  classes (``pand.data``'s loaders take the schema's ``DataCfg``) and are not edges.
"""
import ast
from pathlib import Path
from typing import Dict, Iterator, List, Set

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = {"pand": ROOT / "pand", "pand_export": ROOT / "export", "pand_runtime": ROOT / "runtime"}
FORBIDDEN_IN_RUNTIME = {"pand", "pand_export", "torch", "torchvision", "open_clip"}
#: calls whose string arguments name a module, a package or an entry point (importlib, pkgutil, pand_runtime._lazy)
DYNAMIC_IMPORTS = {"import_module", "__import__", "find_spec", "lazy_import", "LazyModule", "entry_points",
                   "select", "load_module", "EntryPoint", "find_plugin", "require_plugin", "iter_modules"}


def _modules() -> Dict[str, Path]:
    out = {}
    for name, folder in PACKAGES.items():
        for f in folder.rglob("*.py"):
            rel = f.relative_to(folder).with_suffix("")
            if any(p in ("build", "__pycache__") or p.endswith(".egg-info") for p in rel.parts):
                continue
            parts = [name, *rel.parts]
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join(parts)] = f
    return out


MODULES = _modules()


def _module_level(tree: ast.Module) -> Iterator[ast.AST]:
    """Statements run at import time: the module body, into ``if``/``try`` blocks, not into functions or classes."""
    stack: List[ast.AST] = list(tree.body)
    while stack:
        node = stack.pop()
        yield node
        if isinstance(node, ast.If) and ast.unparse(node.test) in ("TYPE_CHECKING", "typing.TYPE_CHECKING"):
            stack.extend(node.orelse)
        elif isinstance(node, (ast.If, ast.Try)):
            stack.extend(node.body + node.orelse + getattr(node, "finalbody", []))
            for h in getattr(node, "handlers", []):
                stack.extend(h.body)


def _imported(mod: str, node: ast.AST) -> List[str]:
    """Absolute names an ``import``/``from ... import`` statement of module ``mod`` brings in (a submodule when the
    imported name is one, else the package)."""
    if isinstance(node, ast.Import):
        return [a.name for a in node.names]
    if not isinstance(node, ast.ImportFrom):
        return []
    if node.level:
        base = mod.split(".") if MODULES.get(mod, Path()).name == "__init__.py" else mod.split(".")[:-1]
        base = base[: len(base) - (node.level - 1)]
        target = ".".join(base + ([node.module] if node.module else []))
    else:
        target = node.module or ""
    return [f"{target}.{a.name}" if f"{target}.{a.name}" in MODULES else target for a in node.names]


def _edges(mod: str, module_level_only: bool) -> Set[str]:
    tree = ast.parse(MODULES[mod].read_text())
    nodes = _module_level(tree) if module_level_only else ast.walk(tree)
    return {t for n in nodes for t in _imported(mod, n) if t in MODULES and t != mod}


def _cycles(graph: Dict[str, Set[str]]) -> List[List[str]]:
    """Strongly connected components of more than one module (Tarjan), each sorted."""
    index: Dict[str, int] = {}
    low: Dict[str, int] = {}
    stack: List[str] = []
    on: Set[str] = set()
    out: List[List[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def _call_name(node: ast.Call) -> str:
    f = node.func
    return f.attr if isinstance(f, ast.Attribute) else f.id if isinstance(f, ast.Name) else ""


def _runtime_reaches() -> List[str]:
    """``file:line: name`` for every module the runtime names, statically or as a string to a dynamic import."""
    hits = []
    for f in sorted(PACKAGES["pand_runtime"].rglob("*.py")):
        if "build" in f.parts:
            continue
        for node in ast.walk(ast.parse(f.read_text())):
            names: List[str] = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and not node.level:
                names = [node.module or ""]
            elif isinstance(node, ast.Call) and _call_name(node) in DYNAMIC_IMPORTS:
                args = list(node.args) + [k.value for k in node.keywords]
                names = [a.value for a in args if isinstance(a, ast.Constant) and isinstance(a.value, str)]
                names += [s.split(":")[0].split("=")[-1].strip() for s in list(names)]  # "name = module:attr" forms
            hits += [f"{f.relative_to(ROOT)}:{node.lineno}: {n}" for n in names
                     if n.split(".")[0].strip() in FORBIDDEN_IN_RUNTIME]
    return sorted(set(hits))


def test_the_runtime_names_nothing_of_pand_pand_export_or_torch_statically_or_dynamically():
    assert _runtime_reaches() == []


def test_the_runtime_walk_sees_dynamic_imports():
    """The walk above is not blind: a string import, a lazy import and an entry point naming pand are all found."""
    src = ("import importlib\nfrom importlib import metadata\n"
           "def f():\n    importlib.import_module('pand_export.torch_bench')\n    __import__('torch')\n"
           "    lazy_import('pand.inference', '')\n    metadata.entry_points(group='x', name='pand_export.x:f')\n")
    tree = ast.parse(src)
    found = [a.value for n in ast.walk(tree) if isinstance(n, ast.Call) and _call_name(n) in DYNAMIC_IMPORTS
             for a in list(n.args) + [k.value for k in n.keywords] if isinstance(a, ast.Constant)]
    assert {"pand_export.torch_bench", "torch", "pand.inference", "pand_export.x:f"} <= set(found)


def test_the_project_has_no_import_circle_at_module_level():
    graph = {m: _edges(m, module_level_only=True) for m in MODULES}
    assert _cycles(graph) == []


def test_the_runtime_and_stage_nsd_have_no_circle_even_through_function_local_imports():
    """The two circles issue 27 named were held together by imports inside functions: ``_lazy`` -> ``trt_build`` ->
    ``backends.trt_backend`` -> ``_lazy`` and ``nsd.engine`` <-> ``nsd.teacher_cache_auto``."""
    for prefix in ("pand_runtime", "pand.nsd"):
        sub = {m: {t for t in _edges(m, module_level_only=False) if t.startswith(prefix)}
               for m in MODULES if m.startswith(prefix)}
        assert _cycles(sub) == [], prefix
