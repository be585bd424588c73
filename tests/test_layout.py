"""The import graph of the project's packages: no cycles, and models/ stands on nothing of the project.

Every import counts, function-level ones too: a lazy import only hides a cycle, it does not remove it."""

import ast
from pathlib import Path

from conftest import REPO

PACKAGES = ("rnnlab", "flows", "tasks", "models")


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported(tree: ast.AST, here: str, modules: set[str]) -> set[str]:
    """The project modules a module's source imports, anywhere in it (`from pkg import mod` names the module)."""
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        else:
            continue
        for name in names:
            while name and name not in modules:
                name = name.rpartition(".")[0]
            if name and name != here and "." in name:  # a package's __init__ is empty: only real modules count
                found.add(name)
    return found


def import_graph() -> dict[str, set[str]]:
    paths = [p for package in PACKAGES for p in sorted((REPO / package).rglob("*.py"))]
    modules = {module_name(p) for p in paths}
    return {module_name(p): imported(ast.parse(p.read_text(), str(p)), module_name(p), modules) for p in paths}


def cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a path that returns to its start, or None."""
    state: dict[str, str] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = "done"
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_the_walk_finds_the_imports():
    graph = import_graph()
    assert "tasks.tracking" in graph["flows.train"]
    assert cycle({"a.x": {"a.y"}, "a.y": {"a.z"}, "a.z": {"a.x"}}) == ["a.x", "a.y", "a.z", "a.x"]


def test_no_import_cycle():
    found = cycle(import_graph())
    assert found is None, "import cycle: " + " → ".join(found)


def test_models_import_nothing_of_the_project_but_models():
    bad = {m: sorted(i for i in imports if not i.startswith("models."))
           for m, imports in import_graph().items() if m.startswith("models.")}
    assert not {m: i for m, i in bad.items() if i}


def test_arrows_point_down():
    """flows → tasks → models; rnnlab/ serves flows and tasks (its CLI starts flows, lazily, for start-up time)."""
    order = {"models": 0, "tasks": 1, "flows": 2}
    upward = [(m, i) for m, imports in import_graph().items() for i in imports
              if m.split(".")[0] in order and i.split(".")[0] in order
              and order[i.split(".")[0]] > order[m.split(".")[0]]]
    assert not upward


WINGS = {"lm": ("tasks.lm", "tasks.lm_corpus"), "nmt": ("tasks.nmt", "tasks.nmt_corpus")}
FLOOR = ("tasks.corpus_files", "tasks.hardware", "tasks.metrics_logger", "tasks.fitting", "tasks.scoring", "tasks.model_settings", "tasks.tracking",
         "tasks.outcome")


def test_a_wing_stands_on_the_floor_alone():
    """A task kind's modules import the shared floor, models/ and rnnlab/, never the other wing or the face."""
    graph = import_graph()
    for kind, modules in WINGS.items():
        for module in modules:
            tasks_imports = {i for i in graph[module] if i.startswith("tasks.")}
            assert tasks_imports <= set(FLOOR) | set(modules), (module, tasks_imports - set(FLOOR) - set(modules))
    for module in FLOOR:
        assert {i for i in graph[module] if i.startswith("tasks.")} <= set(FLOOR), module
