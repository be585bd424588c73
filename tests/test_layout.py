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
            if name and name != here:  # a package's __init__ holds only its docstring: import_graph drops it
                found.add(name)
    return found


def import_graph() -> dict[str, set[str]]:
    paths = [p for package in PACKAGES for p in sorted((REPO / package).rglob("*.py"))]
    modules = {module_name(p) for p in paths}
    packages = {module_name(p) for p in paths if p.name == "__init__.py"}
    return {
        module_name(p): imported(ast.parse(p.read_text(), str(p)), module_name(p), modules) - packages for p in paths
    }


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


def room(module: str) -> str:
    """The folder a module is in, as a dotted package: its tier."""
    return module.rpartition(".")[0] or module


def rooms() -> dict[str, list[str]]:
    """Each package folder of the project → its modules (an `__init__` only holds the folder's docstring)."""
    found: dict[str, list[str]] = {}
    for package in PACKAGES:
        for init in sorted((REPO / package).rglob("__init__.py")):
            folder = module_name(init)
            found[folder] = sorted(module_name(p) for p in init.parent.glob("*.py") if p.name != "__init__.py")
    return found


def room_graph() -> dict[str, set[str]]:
    """Folder → the folders its modules import."""
    graph: dict[str, set[str]] = {r: set() for r in rooms()}
    for module, imports in import_graph().items():
        graph.setdefault(room(module), set()).update(room(i) for i in imports if room(i) != room(module))
    return graph


def tiers() -> list[str]:
    """The folders from the top down: each imports only folders after it (the order the README draws)."""
    graph, order, placed = room_graph(), [], set()
    while len(placed) < len(graph):
        ready = sorted(r for r in graph if r not in placed and not graph[r] - placed)
        assert ready, f"folders import each other: {sorted(set(graph) - placed)}"
        order += ready
        placed.update(ready)
    return [r for r in order[::-1] if rooms().get(r)]  # folders of modules, not those of folders only


def test_the_folders_are_tiers_that_import_downwards_only():
    assert cycle(room_graph()) is None, "folders import each other: " + " → ".join(cycle(room_graph()))
    order = tiers()
    assert order[-1] == "models" and order.index("tasks.training") > order.index("tasks.kinds") > order.index("flows")


def test_arrows_point_down():
    """flows → tasks → models; rnnlab's schemas and runtime serve flows and tasks; its command line and its Python
    API (rnnlab/api/, for notebooks) stand on top (they start flows, lazily, for start-up time), and nothing imports
    them."""
    order = {
        "models": 0,
        "rnnlab.schemas": 1,
        "rnnlab.runtime": 1,
        "tasks": 2,
        "flows": 3,
        "rnnlab.cli": 4,
        "rnnlab.api": 4,
    }

    def level(module: str) -> int:
        return next(
            v for k, v in sorted(order.items(), key=lambda kv: -len(kv[0])) if (module + ".").startswith(k + ".")
        )

    upward = [(m, i) for m, imports in import_graph().items() for i in imports if m != "rnnlab" and level(i) > level(m)]
    assert not upward


def test_tasks_is_folders_of_a_few_modules_each():
    """A newcomer reads tasks/ as its tiers: no loose module, none of its folders a hall."""
    assert not rooms()["tasks"]
    assert {r: len(m) for r, m in rooms().items() if r.startswith("tasks.") and len(m) > 8} == {}


def test_no_command_module_is_over_300_lines():
    folder = REPO / "rnnlab" / "cli"
    assert folder.is_dir(), "the command line is a package of one module per command"
    sizes = {p.name: len(p.read_text().splitlines()) for p in folder.glob("*.py")}
    assert {name: n for name, n in sizes.items() if n > 300} == {}


def kind_modules() -> set[str]:
    return {m for m in rooms()["tasks.kinds"] if m.rpartition(".")[2] not in ("base", "registry", "steps", "estimate")}


def test_a_task_kind_stands_on_the_floor_alone():
    """A kind's module imports the floor (data, record, training), models/ and rnnlab/, never another kind; the
    floor imports no kind."""
    graph = import_graph()
    kinds = kind_modules()
    assert {"tasks.kinds.lm", "tasks.kinds.nmt"} <= kinds
    for module in kinds:
        assert not {i for i in graph[module] if i in kinds}, module
    for module, imports in graph.items():
        if room(module) in ("tasks.data", "tasks.record", "tasks.training"):
            assert not {i for i in imports if i.startswith("tasks.kinds")}, module


def test_only_the_registry_switches_on_the_task_kind():
    """No `if cfg.task == ...` anywhere: a kind's behaviour is asked of its object (tasks/kinds/registry.py)."""
    switches = []
    for path in [p for package in PACKAGES for p in (REPO / package).rglob("*.py")]:
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Compare) and any(
                isinstance(side, ast.Attribute) and side.attr == "task" for side in (node.left, *node.comparators)
            ):
                switches.append(f"{path.relative_to(REPO)}:{node.lineno}")
    assert switches == []


MAP_BEGIN, MAP_END = "<!-- the map: made by `python tests/test_layout.py` -->", "<!-- end of the map -->"


def house_map() -> str:
    """The README's map of the code: every folder from the top tier down, with its modules and what it is (the
    first sentence of its `__init__` docstring)."""
    lines = []
    for folder in tiers():
        init = REPO / folder.replace(".", "/") / "__init__.py"
        doc = " ".join((ast.get_docstring(ast.parse(init.read_text())) or "").split())
        modules = ", ".join(m.rpartition(".")[2] for m in rooms()[folder])
        lines.append(f"- **`{folder.replace('.', '/')}/`** {doc}" + (f" *{modules}*" if modules else ""))
    return "\n".join(lines)


def test_the_readmes_map_is_drawn_from_the_folders():
    readme = (REPO / "README.md").read_text()
    assert MAP_BEGIN in readme and MAP_END in readme, "README.md has no map"
    drawn = readme.split(MAP_BEGIN)[1].split(MAP_END)[0].strip()
    assert drawn == house_map(), "the README's map is stale: run `python tests/test_layout.py`"


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


if __name__ == "__main__":  # write the map into the README
    readme = REPO / "README.md"
    text = readme.read_text()
    head, _, rest = text.partition(MAP_BEGIN)
    readme.write_text(f"{head}{MAP_BEGIN}\n{house_map()}\n{MAP_END}{rest.partition(MAP_END)[2]}")
