"""The dependency order of ARCHITECTURE.md ("Layers and dependency order"), checked on the source.

Every project module belongs to one layer; a module imports only its own layer and the layers below it.
No import cycle, counting imports inside functions too. A function may import a project module only in
two documented cases: an app's `AppConfig.ready()` (Django loads models first), and `workers.ml` (torch,
transformers: kept out of the web process until a worker needs them).
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("annotations", "arena", "models_hub", "workers", "prefarena")

# Lowest first. A module's layer is the first whose prefixes match it (longest names listed first).
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("pure", ("arena.outcomes", "workers.ml")),  # no Django, no project import outside this layer
    ("wiring", ("prefarena.urls", "prefarena.routing", "prefarena.asgi", "prefarena.wsgi")),
    ("base", ("prefarena",)),  # settings, errors, the job layer, enqueueing, HTTP plumbing
    ("models_hub", ("models_hub",)),
    ("annotations", ("annotations",)),
    ("arena", ("arena",)),
    ("workers", ("workers",)),
]
ORDER = ["pure", "base", "models_hub", "annotations", "arena", "workers", "wiring"]


def modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            if "migrations" in path.parts:
                continue
            name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
            found[name.removesuffix(".__init__")] = path
    return found


def layer_of(module: str) -> str:
    for layer, prefixes in LAYERS:
        if any(module == p or module.startswith(p + ".") for p in prefixes):
            return layer
    raise AssertionError(f"{module} is in no layer: add it to LAYERS and to ARCHITECTURE.md")


def imports(known: dict[str, Path]) -> list[tuple[str, str, int, str]]:
    """(importer, imported project module, line, where): where is 'module', 'ready', or the function's name."""

    def resolve(name: str) -> str | None:
        parts = name.split(".")
        while parts:
            if ".".join(parts) in known:
                return ".".join(parts)
            parts.pop()
        return None

    found = []
    for module, path in known.items():
        tree = ast.parse(path.read_text())
        parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                # `from pkg import sub` imports the module pkg.sub (pkg/__init__.py is empty in this project);
                # `from mod import name` imports mod
                names = [
                    f"{node.module}.{alias.name}" if f"{node.module}.{alias.name}" in known else node.module
                    for alias in node.names
                ]
            else:
                continue
            where, up = "module", node
            while up in parents:
                up = parents[up]
                if isinstance(up, ast.If) and "TYPE_CHECKING" in ast.unparse(up.test):
                    where = "typing"
                    break
                if isinstance(up, ast.FunctionDef | ast.AsyncFunctionDef) and where == "module":
                    where = up.name
            if where == "typing":
                continue
            targets = {resolve(name) for name in names} - {None, module}
            found += [(module, target, node.lineno, where) for target in sorted(targets)]
    return found


KNOWN = modules()
IMPORTS = imports(KNOWN)


def test_every_module_has_a_layer_and_imports_only_its_own_and_lower_layers():
    wrong = []
    for importer, imported, line, _where in IMPORTS:
        a, b = layer_of(importer), layer_of(imported)
        if ORDER.index(b) > ORDER.index(a):
            wrong.append(f"{importer}:{line} ({a}) imports {imported} ({b})")
    assert wrong == []


def test_pure_modules_import_no_django_and_nothing_of_the_project_outside_their_layer():
    wrong = []
    for module, path in KNOWN.items():
        if layer_of(module) != "pure":
            continue
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "django":
                wrong.append(f"{module}:{node.lineno} imports {node.module}")
            if isinstance(node, ast.Import) and any(a.name.split(".")[0] == "django" for a in node.names):
                wrong.append(f"{module}:{node.lineno} imports django")
    wrong += [f"{a}:{line} imports {b}" for a, b, line, _ in IMPORTS if layer_of(a) == "pure" != layer_of(b)]
    assert wrong == []


def test_no_import_cycle_even_through_imports_inside_functions():
    graph: dict[str, set[str]] = {}
    for importer, imported, _line, _where in IMPORTS:
        graph.setdefault(importer, set()).add(imported)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []
    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10_000))

    def visit(node: str) -> None:  # Tarjan's strongly connected components
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in graph.get(node, ()):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for node in sorted(KNOWN):
        if node not in index:
            visit(node)
    assert cycles == []


def test_imports_inside_functions_are_only_the_documented_lazy_ones():
    wrong = [
        f"{importer}:{line} imports {imported} inside {where}()"
        for importer, imported, line, where in IMPORTS
        if where != "module"
        and not (where == "ready" and importer.endswith(".apps"))
        and not (imported == "workers.ml" or imported.startswith("workers.ml."))
    ]
    assert wrong == []


# Per app, the files of the layer diagram in ARCHITECTURE.md ("Layers and where a file goes").
CONVENTIONAL = {
    "__init__.py",
    "admin.py",
    "api.py",
    "apps.py",
    "consumers.py",
    "events.py",
    "models.py",
    "selectors.py",
    "services.py",
    "tasks.py",
    "urls.py",
    "views.py",
}


def test_architecture_names_every_module():
    text = (ROOT / "ARCHITECTURE.md").read_text()
    missing = []
    for module, path in sorted(KNOWN.items()):
        relative = path.relative_to(ROOT).as_posix()
        folder = relative.rsplit("/", 1)[0] + "/"
        if path.name == "__init__.py" and not path.read_text().strip():
            continue  # an empty package marker
        if "/management/commands/" in relative:
            continue  # commands are listed by name in the README
        if relative.count("/") == 1 and path.name in CONVENTIONAL:
            continue  # an app's conventional files: the diagram at the top of ARCHITECTURE.md
        subpackage = folder.count("/") >= 2  # annotations/export/, workers/ml/, prefarena/jobs/: one row each
        named = f"`{relative}`" in text or f"`{module}`" in text or (subpackage and f"`{folder}`" in text)
        # a row may list siblings by file name after one full path: "`annotations/routing.py`, `routing_api.py`"
        named = named or any(f"`{folder}" in line and f"`{path.name}`" in line for line in text.splitlines())
        if not named:
            missing.append(relative)
    assert missing == []


def test_modules_over_the_split_threshold_say_why():
    """STYLE.md splits modules at ~400 lines; a longer one is listed, with its reason, in ARCHITECTURE.md."""
    text = (ROOT / "ARCHITECTURE.md").read_text()
    section = (
        text.split("### Modules over 400 lines", 1)[-1].split("\n## ", 1)[0] if "### Modules over 400" in text else ""
    )
    long = [path.relative_to(ROOT).as_posix() for path in KNOWN.values() if len(path.read_text().splitlines()) > 400]
    assert [relative for relative in sorted(long) if f"`{relative}`" not in section] == []
