"""Imports point down: no module imports a higher layer, and no modules import each other in a circle.

The layers are those of docs/architecture.md ("Layers"), lowest first. Every import counts, also one
inside a function (where a cycle or an upward import would otherwise hide) and one under TYPE_CHECKING.
"""

from __future__ import annotations

import ast
from pathlib import Path

import localdiffusion

PACKAGE = Path(localdiffusion.__file__).parent

# Top-level modules and packages of src/localdiffusion by layer, lowest first (docs/architecture.md, "Layers").
# A module may import its own layer and any layer below it.
LAYERS: list[tuple[str, set[str]]] = [
    ("core formats", {"__init__", "errors", "recipe", "infotext", "metadata"}),
    ("store", {"store"}),
    ("models", {"models"}),
    ("engine", {"prompts", "engine"}),
    ("features", {"explain", "control", "finish", "comic", "library", "train", "interop", "bench"}),
    ("jobs", {"jobs"}),
    ("server and CLI", {"server", "cli", "__main__"}),
]
RANK = {top: rank for rank, (_, tops) in enumerate(LAYERS) for top in tops}

# Upward imports the coordinator has not decided on yet: (importing module, imported module) -> why.
ALLOWED_UPWARD: dict[tuple[str, str], str] = {}

# Import cycles left for their owners, each named by its sorted modules -> why it is still there.
ALLOWED_CYCLES: dict[tuple[str, ...], str] = {
    (
        "localdiffusion.jobs.tasks", "localdiffusion.jobs.tasks.compare", "localdiffusion.jobs.tasks.explain",
        "localdiffusion.jobs.tasks.panels", "localdiffusion.jobs.tasks.train", "localdiffusion.jobs.tasks.upscale",
    ): "jobs/tasks/__init__.py imports its task modules inside a function, and they import its TaskContext; "
       "the task kinds are being reworked (results as artefacts, issue 13), so their owner decides where TaskContext goes",
}


def module_files() -> dict[str, Path]:
    """Dotted module name -> file, for every module of the package (a package is its __init__.py)."""
    modules = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = ("localdiffusion", *path.relative_to(PACKAGE).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        modules[".".join(parts)] = path
    return modules


def imports_of(name: str, path: Path, modules: dict[str, Path]) -> list[tuple[int, str]]:
    """(line, module) for every import of one of the package's modules, at any depth of the file.

    `from pkg import sub` counts as importing the module `pkg.sub` when there is one, else `pkg`.
    """
    found = []
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base for alias in node.names]
        else:
            continue
        found += [(node.lineno, target) for target in targets if target in modules and target != name]
    return found


def top_of(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def upward_imports(modules: dict[str, Path], root: Path = PACKAGE.parent) -> list[str]:
    problems = []
    for name, path in modules.items():
        for line, target in imports_of(name, path, modules):
            if RANK[top_of(target)] > RANK[top_of(name)] and (name, target) not in ALLOWED_UPWARD:
                low, high = LAYERS[RANK[top_of(name)]][0], LAYERS[RANK[top_of(target)]][0]
                problems.append(f"{path.relative_to(root).as_posix()}:{line}: {name} ({low}) imports {target} ({high})")
    return problems


def import_cycles(modules: dict[str, Path]) -> list[tuple[str, ...]]:
    """The strongly connected groups of two or more modules in the import graph (Tarjan's algorithm)."""
    graph = {name: sorted({t for _, t in imports_of(name, path, modules)}) for name, path in modules.items()}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[tuple[str, ...]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in graph[node]:
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                groups.append(tuple(sorted(group)))

    for node in graph:
        if node not in index:
            visit(node)
    return groups


def test_every_top_level_module_has_a_layer():
    unknown = sorted({top_of(name) for name in module_files()} - set(RANK))
    assert not unknown, f"give these a layer in LAYERS (and in docs/architecture.md): {unknown}"


def test_no_layer_imports_a_higher_one():
    problems = upward_imports(module_files())
    assert not problems, "upward imports:\n" + "\n".join(problems)


def test_no_import_cycles():
    cycles = [group for group in import_cycles(module_files()) if group not in ALLOWED_CYCLES]
    assert not cycles, "modules that import each other (also inside functions):\n" + "\n".join(" <-> ".join(g) for g in cycles)


def test_allow_lists_name_only_what_still_happens():
    """An allowed upward import or cycle that is gone must leave the list, so that it cannot come back unseen."""
    modules = module_files()
    edges = {(name, target) for name, path in modules.items() for _, target in imports_of(name, path, modules)}
    assert not [pair for pair in ALLOWED_UPWARD if pair not in edges]
    assert not [group for group in ALLOWED_CYCLES if group not in import_cycles(modules)]


def test_the_checks_see_imports_inside_functions(tmp_path):
    """The checks themselves: an upward import and a cycle, both hidden in functions, are found."""
    (tmp_path / "localdiffusion" / "store").mkdir(parents=True)
    (tmp_path / "localdiffusion" / "cli").mkdir()
    files = {
        "localdiffusion.store.a": tmp_path / "localdiffusion" / "store" / "a.py",
        "localdiffusion.store.b": tmp_path / "localdiffusion" / "store" / "b.py",
        "localdiffusion.cli.c": tmp_path / "localdiffusion" / "cli" / "c.py",
    }
    files["localdiffusion.store.a"].write_text("def f():\n    from localdiffusion.cli import c\n    from localdiffusion.store import b\n")
    files["localdiffusion.store.b"].write_text("import localdiffusion.store.a\n")
    files["localdiffusion.cli.c"].write_text("from localdiffusion.store.a import f\n")
    assert upward_imports(files, tmp_path) == [
        "localdiffusion/store/a.py:2: localdiffusion.store.a (store) imports localdiffusion.cli.c (server and CLI)"
    ]
    assert import_cycles(files) == [("localdiffusion.cli.c", "localdiffusion.store.a", "localdiffusion.store.b")]
