"""`python/midmix/_core.pyi` describes the native module as built: the same public names, and for each
function and method the same parameter names in the same order (from PyO3's text signatures). `make lint`
compares more (kinds of parameters, defaults, properties, @final) with mypy's stubtest."""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

import midmix._core as core

STUB = Path(core.__file__).parent / "_core.pyi"


def stub_tree() -> dict[str, ast.AST]:
    tree = ast.parse(STUB.read_text())
    out: dict[str, ast.AST] = {}
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            out[node.name] = node
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            out[node.target.id] = node
    return out


def stub_params(fn: ast.FunctionDef) -> list[str]:
    args = fn.args
    return [a.arg for a in args.posonlyargs + args.args + args.kwonlyargs if a.arg not in ("self", "cls")]


def runtime_params(obj: object) -> list[str]:
    return [p for p in inspect.signature(obj).parameters if p != "self"]  # type: ignore[arg-type]


def test_stub_names_match_the_module() -> None:
    runtime = {n for n in dir(core) if not n.startswith("_")} | {"__version__"}
    assert set(stub_tree()) == runtime


def test_stub_signatures_match_the_module() -> None:
    for name, node in stub_tree().items():
        obj = getattr(core, name)
        if isinstance(node, ast.FunctionDef):
            assert stub_params(node) == runtime_params(obj), name
        elif isinstance(node, ast.ClassDef) and not issubclass(obj, BaseException):
            members = {m.name: m for m in node.body if isinstance(m, ast.FunctionDef)}
            public = {m for m in vars(obj) if not m.startswith("_") or m in ("__len__", "__getitem__")}
            # PyO3 takes a class's constructor arguments in __new__ (#[new]), and the stub says so.
            assert set(members) - {"__new__"} == public, name
            assert stub_params(members["__new__"]) == runtime_params(obj), f"{name}.__new__"
            for m, fn in members.items():
                attr = vars(obj).get(m)
                if m == "__new__" or attr is None or not callable(attr):
                    continue
                if m == "__getitem__":  # CPython's slot wrapper names its argument `key`
                    assert len(stub_params(fn)) == 1, name
                else:
                    assert stub_params(fn) == runtime_params(attr), f"{name}.{m}"
