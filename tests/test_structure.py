"""The package's shape, read with ast (nothing imported): no import cycles, the layer rule, core/
free of web and model libraries, every module under 300 lines, every subpackage documented."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "wan_demo"
HEAVY = ("gradio", "fastapi", "starlette", "uvicorn", "diffusers", "torch", "transformers", "accelerate")
# What each part may import from wan_demo (the arrows of docs/architecture.md).
ALLOWED = {
    "core": {"core"},
    "media": {"core", "media"},
    "prompt": {"core", "prompt"},
    "model": {"core", "model"},
    "generate": {"core", "media", "prompt", "model"},
    "jobs": {"core", "media", "model", "generate", "jobs"},
    "web": {"core", "media", "model", "generate", "jobs", "web"},
    "rest": {"core", "media", "jobs", "rest"},
    "server": {"core", "model", "jobs", "web", "rest"},
}
MAX_LINES = 300


def modules() -> dict[str, Path]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        parts = ["wan_demo", *path.relative_to(PACKAGE).with_suffix("").parts]
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def imports_of(name: str, path: Path) -> set[str]:
    """Every module named by an import statement anywhere in the file (lazy imports too)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(
                    package.split(".")[: len(package.split(".")) - node.level + 1] + [base]
                ).strip(".")
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return found


def graph() -> dict[str, set[str]]:
    mods = modules()
    return {
        name: {m for m in imports_of(name, path) if m in mods and m != name} for name, path in mods.items()
    }


def part(module: str) -> str:
    return module.split(".")[1] if module.count(".") else "package"


def find_cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    seen: set[str] = set()
    stack: list[str] = []
    cycles: list[list[str]] = []

    def visit(node: str) -> None:
        if node in stack:
            cycles.append(stack[stack.index(node) :] + [node])
            return
        if node in seen:
            return
        seen.add(node)
        stack.append(node)
        for nxt in sorted(edges.get(node, ())):
            visit(nxt)
        stack.pop()

    for node in sorted(edges):
        visit(node)
    return cycles


def test_no_import_cycles():
    assert find_cycles(graph()) == []


def test_layers_import_only_downwards():
    wrong = [
        f"{mod} -> {dep}"
        for mod, deps in graph().items()
        if part(mod) in ALLOWED
        for dep in deps
        if part(dep) not in ALLOWED[part(mod)] and dep != "wan_demo"
    ]
    assert wrong == []


@pytest.mark.parametrize("module", sorted(m for m in modules() if part(m) == "core"))
def test_core_imports_no_web_or_model_library(module):
    heavy = {m for m in imports_of(module, modules()[module]) if m.split(".")[0] in HEAVY}
    assert heavy == set()


def test_modules_are_short_and_subpackages_documented():
    long = {
        name: n for name, path in modules().items() if (n := len(path.read_text().splitlines())) > MAX_LINES
    }
    assert long == {}
    for init in PACKAGE.glob("*/__init__.py"):
        doc = ast.get_docstring(ast.parse(init.read_text())) or ""
        assert "May import" in doc, f"{init} must say what the subpackage may import"


def test_the_checker_sees_a_cycle_and_a_heavy_core_import(tmp_path):
    """The walk above is not vacuous: it finds what it looks for in a planted example."""
    pkg = tmp_path / "wan_demo" / "core"
    pkg.mkdir(parents=True)
    (pkg / "a.py").write_text("import torch\nfrom wan_demo.core import b\n")
    (pkg / "b.py").write_text("from wan_demo.core.a import x\n")
    names = {"wan_demo.core.a": pkg / "a.py", "wan_demo.core.b": pkg / "b.py"}
    edges = {n: {m for m in imports_of(n, p) if m in names and m != n} for n, p in names.items()}
    assert find_cycles(edges) == [["wan_demo.core.a", "wan_demo.core.b", "wan_demo.core.a"]]
    assert "torch" in imports_of("wan_demo.core.a", names["wan_demo.core.a"])
