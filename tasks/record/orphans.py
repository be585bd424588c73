"""Cell runs that nothing will close: left RUNNING by a study execution that is over (a worker or the study killed,
on any machine), or by this execution's own worker that died. Both become KILLED, with the reason."""

from __future__ import annotations

from prefect import get_client, task
from prefect.runtime import flow_run

from tasks.record import tracking


@task(name="sweep-orphans")
def sweep_orphans(study: str) -> list[str]:
    """Cell runs left RUNNING by a study execution that is over (a worker or the study killed, on any machine)
    → KILLED. (Runs of dead processes on this host are swept by pid whenever a run opens.)"""
    swept = []
    with get_client(sync_client=True) as prefect:
        for run in tracking.running_cells(study):
            owner = run.data.tags.get("prefect.flow_run_id")
            if not owner or owner == str(flow_run.id):
                continue
            try:
                state = prefect.read_flow_run(owner).state
            except Exception:  # unknown to this Prefect server: nothing can still be writing to it through us
                state = None
            if state is None or state.is_final():
                tracking.mark_killed(
                    run.info.run_id,
                    f"left RUNNING by study execution {owner} ({state.name if state else 'unknown to Prefect'})",
                )
                swept.append(run.info.run_id)
    return swept


def close_stale(study: str, key: str | None, reason: str = "its worker ended before closing the run") -> None:
    """Cell runs of this execution (of one cell, or all) that their worker left RUNNING (it died, or was killed
    after the grace of an interrupt): KILLED, not left RUNNING."""
    for run in tracking.running_cells(study):
        tags = run.data.tags
        if key in (None, tags.get("rnnlab.cell_key")) and tags.get("prefect.flow_run_id") == str(flow_run.id):
            tracking.mark_killed(run.info.run_id, reason)


@task(name="close-runs-of-flow-run")
def close_runs_of(flow_run_id: str, reason: str) -> list[str]:
    """The runs that a dead flow run left RUNNING (its study's parent run and cells, its training run) → KILLED with
    `reason`, cells before their parent. Those closed meanwhile by their own process are left as they are."""
    closed = []
    for run in tracking.runs_of_flow_run(flow_run_id):
        tracking.mark_killed(run.info.run_id, reason)
        closed.append(run.info.run_id)
    return closed
