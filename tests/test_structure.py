"""The code's structure: modules depend in one direction (Python and the Rust core), and no Rust file holds
more than one concept's worth of code (700 lines)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "python" / "midmix"
RUST = Path(__file__).resolve().parent.parent / "rust"
MAX_RUST_LINES = 700


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imported(tree: ast.Module, module: str, is_package: bool, known: set[str]) -> set[str]:
    """The package's modules that `module` imports, at module level or inside functions; imports under
    `if TYPE_CHECKING:` are left out (they never run). `from midmix import x` imports module `x` when
    there is one, else the package itself."""
    found: set[str] = set()
    package = module if is_package else module.rpartition(".")[0]

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            for alias in node.names:
                found.add(alias.name)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                found.add(sub if sub in known else base)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    # Importing a.b.c runs a/__init__ and a/b/__init__ too; those are the package's own modules.
    edges = set()
    for name in found:
        while name and name not in known:
            name = name.rpartition(".")[0]
        if name and name != module:
            edges.add(name)
    return edges


def import_graph() -> dict[str, set[str]]:
    files = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    # The Rust extension (`_core`) is built elsewhere; its stub names it, and it imports nothing of ours.
    known = set(files) | {_module_name(p) for p in PACKAGE.rglob("*.pyi")}
    graph = {name: set[str]() for name in known}
    for name, path in files.items():
        graph[name] = _imported(ast.parse(path.read_text(), str(path)), name, path.name == "__init__.py", known)
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of `graph` as [a, b, …, a], or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt) :] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None


def test_no_python_import_cycle() -> None:
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " → ".join(cycle or [])


def rust_core_graph() -> dict[str, set[str]]:
    """Each top-level module of the core crate → the top-level modules its code (not its tests, which come last
    in a file) names as `crate::x` or in `use crate::{x, …}`."""
    src = RUST / "core" / "src"
    graph: dict[str, set[str]] = {}
    for path in sorted(src.rglob("*.rs")):
        module = path.relative_to(src).parts[0].removesuffix(".rs")
        if module == "lib":
            continue
        code = re.sub(r"//[^\n]*", "", path.read_text().split("#[cfg(test)]")[0])
        named = set(re.findall(r"\bcrate::([a-z_][a-z0-9_]*)", code))
        for group in re.findall(r"\bcrate::\{([^}]*)\}", code):
            named |= {part.strip().split("::")[0] for part in group.split(",") if part.strip()}
        graph.setdefault(module, set()).update(named - {module})
    return graph


def test_no_core_module_cycle() -> None:
    graph = rust_core_graph()
    assert {"manifest", "mds", "mix", "prepare", "dataset", "staging"} <= set(graph), sorted(graph)
    assert "dataset" in graph["staging"] and "manifest" in graph["dataset"], graph  # the parser sees uses
    cycle = find_cycle(graph)
    assert cycle is None, "module cycle in rust/core: " + " → ".join(cycle or [])


def test_no_rust_file_over_700_lines() -> None:
    lines = {str(p.relative_to(RUST)): len(p.read_text().splitlines()) for p in RUST.rglob("*.rs")}
    long = {p: n for p, n in lines.items() if n > MAX_RUST_LINES}
    assert not long, f"split these by concept (at most {MAX_RUST_LINES} lines each): {long}"
