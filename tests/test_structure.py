"""The house rules of the package, checked on its source: no import circles between its
modules, and no private name (``_x``) imported from another module. See docs/architecture.md."""

from __future__ import annotations

import ast
from pathlib import Path

PKG = Path(__file__).resolve().parents[1] / "denoise_cli"


def _module(p: Path) -> str:
    parts = list(p.relative_to(PKG.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports() -> dict[str, list[tuple[str, list[str]]]]:
    """module -> [(imported module, names taken from it)] for the package's own imports."""
    mods = {_module(p): p for p in PKG.rglob("*.py")}
    out: dict[str, list[tuple[str, list[str]]]] = {}
    for mod, p in mods.items():
        pkg = mod if p.name == "__init__.py" else mod.rpartition(".")[0]
        edges: list[tuple[str, list[str]]] = []
        for node in ast.walk(ast.parse(p.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    up = pkg.split(".")[: len(pkg.split(".")) - (node.level - 1)]
                    base = ".".join([*up, base] if base else up)
                if not base.startswith("denoise_cli"):
                    continue
                names = [a.name for a in node.names]
                subs = [f"{base}.{n}" for n in names if f"{base}.{n}" in mods]
                edges += [(s, []) for s in subs]
                rest = [n for n in names if f"{base}.{n}" not in mods]
                if rest and base in mods:
                    edges.append((base, rest))
            elif isinstance(node, ast.Import):
                edges += [(a.name, []) for a in node.names if a.name in mods]
        out[mod] = edges
    return out


def test_no_private_names_across_modules() -> None:
    bad = [
        f"{mod} imports {name} from {dep}"
        for mod, edges in _imports().items()
        for dep, names in edges
        for name in names
        if name.startswith("_") and not name.startswith("__") and dep != mod
    ]
    assert not bad, bad


def test_no_import_circles() -> None:
    graph = {
        m: {d for d, _ in edges if d != m and not d.endswith("__init__")}
        for m, edges in _imports().items()
    }
    # package faces (__init__) only hand names on; an edge to a package is an edge to its face
    state: dict[str, int] = {}
    stack: list[str] = []
    circles: list[list[str]] = []

    def visit(m: str) -> None:
        state[m] = 1
        stack.append(m)
        for d in sorted(graph.get(m, ())):
            if state.get(d) == 1:
                circles.append([*stack[stack.index(d) :], d])
            elif d not in state:
                visit(d)
        stack.pop()
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m)
    assert not circles, circles
