"""The shape of the code: imports point one way, files stay short, public functions are typed.

Imports are read from the source (the AST of every module, function bodies included), so
an import deferred into a function to dodge a cycle still counts as the edge it is.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("preprocess", "pretrain")
MAX_LINES = 400


def modules() -> dict[str, Path]:
    return {".".join(p.relative_to(ROOT).with_suffix("").parts): p
            for pkg in PACKAGES for p in sorted((ROOT / pkg).rglob("*.py"))}


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    """Project modules that ``name`` imports anywhere in its source."""
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        targets = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parts + ([base] if base else []))
            targets = [base] + [f"{base}.{a.name}" for a in node.names]
        for t in targets:
            while t and t not in known:
                t = t.rpartition(".")[0]
            if t and t != name:
                found.add(t)
    return found


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1: on the stack, 2: done
    stack: list[str] = []

    def visit(n: str) -> list[str] | None:
        state[n] = 1
        stack.append(n)
        for m in sorted(graph[n]):
            if state.get(m) == 1:
                return stack[stack.index(m):] + [m]
            if m not in state and (cycle := visit(m)):
                return cycle
        stack.pop()
        state[n] = 2
        return None

    for n in sorted(graph):
        if n not in state and (cycle := visit(n)):
            return cycle
    return None


def test_the_cycle_finder_finds_a_cycle_through_a_function_level_import(tmp_path):
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert find_cycle(graph) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None
    src = tmp_path / "m.py"
    src.write_text("def f():\n    from pkg.other import thing\n")
    assert imports_of("pkg.m", src, {"pkg.m", "pkg.other"}) == {"pkg.other"}


def test_no_import_cycles_in_the_project():
    mods = modules()
    graph = {name: imports_of(name, path, set(mods)) for name, path in mods.items()}
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph))


def test_preprocess_never_imports_pretrain():
    mods = modules()
    for name, path in mods.items():
        if name.startswith("preprocess"):
            assert not any(m.startswith("pretrain") for m in imports_of(name, path, set(mods))), name


@pytest.mark.parametrize("name", sorted(modules()))
def test_files_are_short_and_say_what_they_own(name):
    path = modules()[name]
    source = path.read_text()
    assert len(source.splitlines()) <= MAX_LINES, f"{path}: {len(source.splitlines())} lines"
    if path.name != "__init__.py":
        assert ast.get_docstring(ast.parse(source)), f"{path}: no module docstring"


def beam_transform(scope: ast.AST) -> bool:
    return isinstance(scope, ast.ClassDef) and any(ast.unparse(b) == "beam.PTransform" for b in scope.bases)


def untyped(path: Path) -> list[str]:
    """Public functions and methods of public classes with an argument or return left untyped."""
    out = []
    tree = ast.parse(path.read_text())
    scopes = [(tree, "")] + [(c, c.name + ".") for c in tree.body
                             if isinstance(c, ast.ClassDef) and not c.name.startswith("_")]
    for scope, prefix in scopes:
        for f in scope.body:
            if not isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef)) or f.name.startswith("_"):
                continue
            args = [a for a in f.args.posonlyargs + f.args.args + f.args.kwonlyargs if a.arg not in ("self", "cls")]
            missing = [a.arg for a in args if a.annotation is None]
            if f.returns is None and f.name != "__init__":
                missing.append("return")
            if f.name == "expand" and beam_transform(scope):
                # Beam reads an expand's annotations as the element types of one PCollection: a
                # dict of PCollections in or out stays unannotated (Beam >= 2.78 warns otherwise)
                missing = []
            if missing:
                out.append(f"{path.relative_to(ROOT)}:{f.lineno} {prefix}{f.name}: {', '.join(missing)}")
    return out


def test_public_functions_are_typed():
    problems = [p for path in modules().values() for p in untyped(path)]
    assert not problems, "\n".join(problems)
