"""The import graph of the project's packages: no cycles, models/ stands on nothing of the project, and the
read-only commands load no training library.

Every import counts, function-level ones too: a lazy import only hides a cycle, it does not remove it."""

import ast
import gc
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO

from rnnlab.runtime.env import collector_paused

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
                return stack[stack.index(nxt) :] + [nxt]
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
    assert "tasks.record.tracking" in graph["flows.train"]
    assert cycle({"a.x": {"a.y"}, "a.y": {"a.z"}, "a.z": {"a.x"}}) == ["a.x", "a.y", "a.z", "a.x"]


def test_no_import_cycle():
    found = cycle(import_graph())
    assert found is None, "import cycle: " + " → ".join(found)


def test_models_import_nothing_of_the_project_but_models():
    bad = {
        m: sorted(i for i in imports if not i.startswith("models."))
        for m, imports in import_graph().items()
        if m.startswith("models.")
    }
    assert not {m: i for m, i in bad.items() if i}


def test_arrows_point_down():
    """flows → tasks → models; rnnlab/ serves flows and tasks (its CLI starts flows, lazily, for start-up time)."""
    order = {"models": 0, "tasks": 1, "flows": 2}
    upward = [
        (m, i)
        for m, imports in import_graph().items()
        for i in imports
        if m.split(".")[0] in order and i.split(".")[0] in order and order[i.split(".")[0]] > order[m.split(".")[0]]
    ]
    assert not upward


WINGS = {"lm": ("tasks.kinds.lm", "tasks.data.lm_corpus"), "nmt": ("tasks.kinds.nmt", "tasks.data.nmt_corpus")}
FLOOR = (
    "tasks.data.corpus_files",
    "tasks.record.hardware",
    "tasks.record.metrics_logger",
    "tasks.training.fitting",
    "tasks.training.scoring",
    "tasks.training.model_settings",
    "tasks.record.tracking",
    "tasks.record.outcome",
    "tasks.data.unigram",
)


def test_a_wing_stands_on_the_floor_alone():
    """A task kind's modules import the shared floor, models/ and rnnlab/, never the other wing or the face."""
    graph = import_graph()
    for modules in WINGS.values():
        for module in modules:
            tasks_imports = {i for i in graph[module] if i.startswith("tasks.")}
            assert tasks_imports <= set(FLOOR) | set(modules), (module, tasks_imports - set(FLOOR) - set(modules))
    for module in FLOOR:
        assert {i for i in graph[module] if i.startswith("tasks.")} <= set(FLOOR), module


def test_what_compare_and_help_load_holds_no_training_library():
    """`rnnlab compare` reads MLflow and computes statistics: it loads neither torch, nor Lightning, nor Prefect
    (together ~5 s of start-up), and `rnnlab --help` not even MLflow."""
    probe = (
        "import sys; import rnnlab.cli.main; help = set(sys.modules); "
        "import tasks.analysis.compare, tasks.analysis.answer, tasks.record.tracking; "
        "print(sorted(m for m in ('torch', 'lightning', 'prefect') if m in sys.modules), "
        "sorted(m for m in ('mlflow', 'pandas', 'torch') if m in help))"
    )
    done = subprocess.run([sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["[]", "[]"]


def test_the_collector_is_back_on_after_a_commands_imports_even_when_one_fails():
    assert gc.isenabled()
    with pytest.raises(ImportError), collector_paused():
        assert not gc.isenabled()
        import no_such_module  # noqa: F401
    assert gc.isenabled()
