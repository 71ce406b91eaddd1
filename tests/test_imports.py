"""The package's import graph, read from the source (ast): no cycles, counting imports inside
functions too (a deferred import hides a cycle from Python, not from a reader), and sibling
modules imported at the top of the module, where a reader looks for them."""

from __future__ import annotations

import ast
import functools
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "autodistill"

# heavy or optional dependencies that may be imported where they are used
DEFERRED_OK = {
    "ray",
    "onnx",
    "onnxruntime",
    "onnxscript",
    "nni",
    "plotly",
    "torchvision",
    "transformers",
    "matplotlib",
    "optuna",
    "PIL",
    "sklearn",
    "sqlalchemy",
    "pandas",
    "torch_pruning",
}


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


@functools.cache
def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


@functools.cache
def _imports(path: Path, name: str):
    """(target module, line, at module top) for every import of a package module in ``path``."""
    modules = _modules()
    is_pkg = path.name == "__init__.py"
    package = name if is_pkg else name.rsplit(".", 1)[0]
    tree = ast.parse(path.read_text())
    out = []

    def visit(node: ast.AST, top: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child):
                continue
            if isinstance(child, ast.Import):
                for alias in child.names:
                    out.append((alias.name, child.lineno, top))
            elif isinstance(child, ast.ImportFrom):
                if child.level:
                    base = package.rsplit(".", child.level - 1)[0] if child.level > 1 else package
                    base = f"{base}.{child.module}" if child.module else base
                else:
                    base = child.module or ""
                for alias in child.names:
                    sub = f"{base}.{alias.name}"
                    out.append((sub if sub in modules else base, child.lineno, top))
            else:
                inner = top and not isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))
                visit(child, inner)

    visit(tree, True)
    return out


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for name, path in modules.items():
        for target, _, _ in _imports(path, name):
            if target in modules and target != name:
                graph[name].add(target)
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of ``graph`` as a path that starts and ends with the same node, or None."""
    state: dict[str, int] = {}  # 1 on the stack, 2 done
    stack: list[str] = []

    def dfs(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt) :] + [nxt]
            if nxt not in state:
                found = dfs(nxt)
                if found:
                    return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            found = dfs(node)
            if found:
                return found
    return None


def test_cycle_finder_finds_a_cycle_and_accepts_a_tree():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None


def test_no_import_cycles():
    cycle = find_cycle(_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


@functools.cache
def _heavy_modules() -> frozenset[str]:
    """Package modules that import a heavy or optional dependency at their top, directly or
    through other package modules: importing one of them inside a function is a deferral of
    that dependency (the CLI answers --help without starting Ray's import)."""
    modules = _modules()
    tops = {name: [t for t, _, top in _imports(path, name) if top] for name, path in modules.items()}
    heavy = {name for name, targets in tops.items() if any(t.split(".")[0] in DEFERRED_OK for t in targets)}
    changed = True
    while changed:
        changed = False
        for name, targets in tops.items():
            if name not in heavy and any(t in heavy for t in targets):
                heavy.add(name)
                changed = True
    return frozenset(heavy)


@pytest.mark.parametrize("name", sorted(_modules()))
def test_package_modules_are_imported_at_the_top(name):
    modules, heavy = _modules(), _heavy_modules()
    late = [f"{target} (line {line})" for target, line, top in _imports(modules[name], name) if not top and target in modules and target not in heavy]
    assert not late, f"{name} imports package modules inside functions (only those that import Ray, ONNX, plotting... may wait): {', '.join(late)}"
