"""Starting work once its files are loaded, the same from the command line (`rnnlab study`, `rnnlab train`) and
from Python (`rnnlab.run_study`): the checks every command that trains makes first, then the data, then Prefect and
the flow. Light to import: each step imports what it needs as it runs, so a bad store or bad data is refused before
Lightning loads."""

from __future__ import annotations

import sys
from typing import Any

from rnnlab.runtime import store
from rnnlab.runtime.env import check_project
from rnnlab.runtime.processes import start_prefect_api


def check_environment(launch_prefect: bool = False) -> None:
    """Before any data is prepared: the project directory can be written and has room, the tracking store is
    reachable and sound; and runs that a dead process left RUNNING (a SIGKILL, a full disk) are marked KILLED.
    `launch_prefect`: also launch Prefect's temporary server (a command that trains waits for it later), so that its
    start overlaps these checks and the data's preparation; it is stopped with the command, on a failure too."""
    check_project()
    if launch_prefect:
        start_prefect_api(wait=False)
    store.check_store()  # before the heavy imports below: an unreachable server fails the command in a second
    from tasks.record import tracking  # lazy: MLflow and Prefect (~5 s of imports), after the store answered

    tracking.mark_orphans()


def run_loaded_study(study: Any, force: bool = False, live: bool = False) -> dict[str, Any]:
    """A loaded study (rnnlab/schemas/study.py, every cell validated) run or resumed: the environment checked, its
    corpora prepared, what it will do and about how long said on stderr, then the study flow (flows/study.py), its
    progress `live` on a terminal or as plain lines. Raises StudyFailed (tasks/record/outcome.py) where cells
    failed (the others recorded)."""
    if study.config.runner.address:  # before anything starts: the cells' machines must reach the stores
        from rnnlab.runtime.workers import check_remote_cells_can_record

        check_remote_cells_can_record()
    check_environment(launch_prefect=True)
    from tasks.kinds.steps import prepare_study  # lazy: torch, Prefect (~6 s)

    corpora = prepare_study(study.cells)  # bad data fails here, before Lightning is imported
    print(
        f"rnnlab: study '{study.name}': {len(study.variants)} variants × {len(study.config.seeds)} seed(s) "
        f"= {len(study.cells)} cells, {study.config.concurrency} at a time",
        file=sys.stderr,
    )
    from rnnlab.runtime.workers import threads_per_cell
    from tasks.kinds.estimate import estimate_lines

    print(*estimate_lines(study, corpora, threads_per_cell(study))[-1:], file=sys.stderr)
    start_prefect_api()
    from flows.study import run_study  # lazy: Lightning, only once the data is ready

    # what was loaded and prepared here, not again
    return run_study(study, corpora, force, live=live)
