"""The package's import graph, read from the source: no cycle, and layers that only look down.

Every ``import`` counts, including those inside functions (the lazy ones): a lazy import
still makes one module depend on another. The layers, lowest first:

1. ``_typing``: type aliases;
2. ``backends``: leaf seams that name torch, jax or cupy; they import only each other and
   ``_typing``/``_special`` (pure array-API special functions);
3. ``_xp``, ``_validate``, ``_special``: namespaces, validation, portable special functions;
4. ``models`` (the model protocol and the built-in MLP) and ``options`` (validated specs);
5. ``_mc``: the engine (directions, smoothing forms, differences, plan, estimators, attention,
   the local NTK in blocks);
6. ``distributed``: Dask graphs over the engine, imported lazily by the entry points only;
7. the public entry points (``ntk``, ``nntk``, ``nonlocal_grad``, ``attention``, predictions,
   analytic kernels, the study);
8. ``interop``: the scikit-learn and GPyTorch kernels, built on the entry points (and the
   engine, for the low-rank root of an NNTK estimate); nothing imports them.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "nntk_array"


def _module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _imports(path: Path) -> set[str]:
    """Modules of ``nntk_array`` that ``path`` imports (absolute, submodules resolved)."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("nntk_array")}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            elif node.module and node.module.startswith("nntk_array"):
                target = node.module
            else:
                continue
            for alias in node.names:  # `from . import kernel` imports a submodule
                sub = f"{target}.{alias.name}"
                found.add(sub if sub in MODULES else target)
    return {m for m in found if m in MODULES and m != name}


MODULES = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
GRAPH = {name: _imports(path) for name, path in MODULES.items()}


def _layer(module: str) -> int:
    sub = module.split(".")[1] if "." in module else ""
    return {
        "_typing": 1,
        "backends": 2,
        "_special": 2,
        "_xp": 3,
        "_validate": 3,
        "models": 4,
        "options": 4,
        "_mc": 5,
        "distributed": 6,
        "interop": 8,
    }.get(sub, 7)


def test_graph_has_no_cycle():
    state: dict[str, int] = {}  # 1 on the stack, 2 done

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for dep in sorted(GRAPH[node]):
            if state.get(dep) == 1:
                cycle = [*path[path.index(dep) :], dep] if dep in path else [node, dep]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if dep not in state:
                visit(dep, [*path, dep])
        state[node] = 2

    for module in sorted(GRAPH):
        if module not in state:
            visit(module, [module])


def test_backends_import_nothing_above_them():
    allowed = {"nntk_array._typing", "nntk_array._special"}
    for module, deps in GRAPH.items():
        if module.startswith("nntk_array.backends"):
            above = {d for d in deps if not d.startswith("nntk_array.backends")} - allowed
            assert not above, f"{module} imports {sorted(above)} from above the backend seam"


@pytest.mark.parametrize("module", sorted(m for m in GRAPH if m != "nntk_array"))
def test_no_arrow_runs_back_up(module):
    # The package's __init__ re-exports the entry points: it sits on top and is not checked.
    up = {d for d in GRAPH[module] if d != "nntk_array" and _layer(d) > _layer(module)}
    assert not up, f"{module} (layer {_layer(module)}) imports {sorted(up)} from above it"


def test_distributed_is_imported_only_lazily():
    for module, path in MODULES.items():
        if module.startswith("nntk_array.distributed"):
            continue
        tree = ast.parse(path.read_text())
        top_level = [n for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))]
        for node in top_level:
            names = [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            assert not any("distributed" in n for n in names), module


def test_no_private_model_calls_or_class_checks_outside_models():
    for module, path in MODULES.items():
        if module.startswith("nntk_array.models"):
            continue
        text = path.read_text()
        assert "isinstance(f, MLP)" not in text, module
        assert "._forward(" not in text and "._params(" not in text, module
