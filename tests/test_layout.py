"""docs/architecture.md's dependency rules, read from the code's imports (function-level ones included).

Dependencies point one way: `mv3d` -> `video_prior`, `render`, `eval`; `eval` -> `render`;
`video_prior` -> `render`; no module imports a module that imports it back, lazily or not (a
package's `__init__` may import its own submodules to re-export them); the four packages (all that
pyproject.toml installs) import nothing from the folders beside them (`recipes/`, `bench/`, `tools/`,
`tests/`); and the packages table's "must not", as far as imports show it: `render` imports no
diffusion model library, `video_prior` no mesh module or library and no command-line library.
"""

from __future__ import annotations

import ast
from pathlib import Path

from conftest import REPO

PACKAGES = ("render", "video_prior", "eval", "mv3d")
#: package -> the packages it may import
ALLOWED = {
    "render": set(),
    "video_prior": {"render"},
    "eval": {"render"},
    "mv3d": {"render", "video_prior", "eval"},
}


#: package -> the modules it must not import (a name and everything below it), beyond ALLOWED's rule
FORBIDDEN = {
    # "render: must not import diffusion models"
    "render": {"diffusers", "transformers", "accelerate", "peft"},
    # "video_prior: must not know about meshes or CLI flags"
    "video_prior": {
        "trimesh", "pyrender", "xatlas", "mcubes", "bpy", "typer", "click", "argparse",
        "render.meshes", "render.raster", "render.procedural", "render.renderers", "render.sources",
        "render.sh3f_source", "render.objaverse_source", "render.render_object", "render.jobs",
    },
}  # fmt: skip


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_package(module: str) -> bool:
    return (REPO / module.replace(".", "/") / "__init__.py").is_file()


def import_graph() -> dict[str, set[str]]:
    """module -> the project modules it imports anywhere in its body (`import` and `from ... import`)."""
    files = {_module_name(p): p for pkg in PACKAGES for p in (REPO / pkg).rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in files.items():
        targets: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                candidates = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                # `from a.b import c`: c may be a module (a.b.c) or a name in a.b
                candidates = [f"{node.module}.{alias.name}" for alias in node.names] + [node.module]
            else:
                continue
            for cand in candidates:
                while cand and cand not in files:
                    cand = cand.rpartition(".")[0]
                if cand and cand != name:
                    targets.add(cand)
                    break
        graph[name] = targets
    return graph


def imported_modules(path: Path) -> set[str]:
    """Every absolute module name `path` imports anywhere in its body (`from a import b` gives `a` and
    `a.b`, since b may be a module)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def _outside_modules() -> set[str]:
    """Top-level names of the repository's Python outside the four packages: its other folders with
    Python files (recipes, bench, tools, tests, ...), its top-level scripts, and the test helpers that
    pytest puts on the path (conftest, model_helpers, ...)."""
    names = {p.name for p in REPO.iterdir() if p.is_dir() and p.name not in PACKAGES and any(p.rglob("*.py"))}
    names |= {p.stem for p in REPO.glob("*.py")}
    names |= {p.stem for p in (REPO / "tests").glob("*.py")}
    return names - set(PACKAGES)


def _package_files():
    for pkg in PACKAGES:
        for path in sorted((REPO / pkg).rglob("*.py")):
            yield pkg, path


def test_packages_import_nothing_beside_them():
    """pyproject.toml installs the four packages alone: an import of recipes/, bench/, tools/ or a test
    helper works in the repository and fails in an installed mv3d."""
    outside = _outside_modules()
    assert {"recipes", "bench", "tools", "tests", "model_helpers"} <= outside
    wrong = sorted(
        f"{path.relative_to(REPO)} -> {name}"
        for _, path in _package_files()
        for name in imported_modules(path)
        if name.split(".")[0] in outside
    )
    assert not wrong, wrong


def test_packages_keep_their_must_nots():
    wrong = sorted(
        f"{path.relative_to(REPO)} -> {name}"
        for pkg, path in _package_files()
        for name in imported_modules(path)
        if any(name == f or name.startswith(f + ".") for f in FORBIDDEN.get(pkg, ()))
    )
    assert not wrong, wrong


def test_packages_depend_one_way():
    wrong = sorted(
        f"{m} -> {t}"
        for m, targets in import_graph().items()
        for t in targets
        if t.split(".")[0] != m.split(".")[0] and t.split(".")[0] not in ALLOWED[m.split(".")[0]]
    )
    assert not wrong, wrong


def test_no_module_imports_one_that_imports_it_back():
    """A package's `__init__` importing its own submodules (to re-export them: the renderer table, the
    demo's launcher) is the package itself, not a second module, and is left out."""
    graph = {
        m: {t for t in targets if not (_is_package(m) and t.startswith(m + "."))}
        for m, targets in import_graph().items()
    }
    cycles = []
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycles.append(" -> ".join(path[path.index(nxt) :] + [node, nxt]))
            elif nxt not in state:
                visit(nxt, [*path, node])
        state[node] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [])
    assert not cycles, cycles
