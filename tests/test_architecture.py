"""Architecture ratchets: no new oversized function and no new import circle in src/.

Each list below names what exists today with a reason; a change may shrink a list (and must
remove an entry that no longer applies), never grow it. The limits are those of the design
issue: at most 120 lines and 12 parameters per function; no import circle, inside a package
(a "room") or between packages. Imports inside functions count: they hide a circle, they do
not remove it."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
MAX_LINES = 120
MAX_PARAMS = 12

OVERSIZED = {
    "robustsnn.models.vgg:__init__": "the VGG family's width, depth and head options",
    "robustsnn.snn.triton_kernels:_forward_kernel": "a Triton kernel takes the dynamics as scalars (no structs)",
    "robustsnn.snn.triton_kernels:_backward_kernel": "a Triton kernel takes the dynamics as scalars (no structs)",
}

CIRCLES: dict[frozenset[str], str] = {}


def _modules() -> dict[str, ast.Module]:
    modules = {}
    for path in sorted(SRC.rglob("*.py")):
        parts = list(path.relative_to(SRC).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        modules[".".join(parts)] = ast.parse(path.read_text(), filename=str(path))
    return modules


def _oversized(modules: dict[str, ast.Module]) -> dict[str, tuple[int, int]]:
    found = {}
    for name, tree in modules.items():
        for node in ast.walk(tree):
            if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            a = node.args
            params = [
                p for p in (*a.posonlyargs, *a.args, *a.kwonlyargs) if p.arg not in ("self", "cls")
            ]
            lines = (node.end_lineno or node.lineno) - node.lineno + 1
            if lines > MAX_LINES or len(params) > MAX_PARAMS:
                found[f"{name}:{node.name}"] = (lines, len(params))
    return found


def _import_graph(modules: dict[str, ast.Module]) -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for name, tree in modules.items():
        package = (
            name if name in {m.rpartition(".")[0] for m in modules} else name.rpartition(".")[0]
        )
        deps: set[str] = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")
                    anchor = anchor[: len(anchor) - node.level + 1]
                    base = ".".join([*anchor, *([base] if base else [])])
                deps.add(base)
                deps.update(f"{base}.{alias.name}" for alias in node.names)
            elif isinstance(node, ast.Import):
                deps.update(alias.name for alias in node.names)
        graph[name] = {d for d in deps if d in modules and d != name}
    return graph


def _circles(graph: dict[str, set[str]]) -> set[frozenset[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: set[frozenset[str]] = set()
    counter = 0
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = set()
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.add(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.add(frozenset(component))
    return found


def test_no_new_oversized_function() -> None:
    found = _oversized(_modules())
    new = sorted(set(found) - set(OVERSIZED))
    assert not new, (
        f"functions over {MAX_LINES} lines or {MAX_PARAMS} parameters (lines, parameters): "
        + ", ".join(f"{n} {found[n]}" for n in new)
        + "; split them or group options into a config object"
    )
    gone = sorted(set(OVERSIZED) - set(found))
    assert not gone, f"no longer oversized, remove from OVERSIZED: {', '.join(gone)}"


def test_no_new_import_circle() -> None:
    found = _circles(_import_graph(_modules()))
    new = [sorted(c) for c in found if c not in CIRCLES]
    assert not new, f"new import circles: {new}; cut them (a shared lower module, no re-import)"
    gone = [sorted(c) for c in CIRCLES if c not in found]
    assert not gone, f"circles no longer there, remove from CIRCLES: {gone}"


def test_the_scanner_finds_a_circle_and_an_oversized_function() -> None:
    """The ratchets would fail on a real violation: a constructed two-module circle and a
    function with 13 parameters are found."""
    a = ast.parse("from pkg import b\n")
    b = ast.parse("import pkg.a\n\ndef f(a, b, c, d, e, f, g, h, i, j, k, l, m):\n    return 0\n")
    modules = {"pkg": ast.parse(""), "pkg.a": a, "pkg.b": b}
    assert frozenset({"pkg.a", "pkg.b"}) in _circles(_import_graph(modules))
    assert _oversized(modules) == {"pkg.b:f": (2, 13)}
