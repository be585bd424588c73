"""A dead machine's runs, closed with no one rerunning anything: the `close-dead-runs` flow closes the MLflow runs
that a CRASHED flow run left RUNNING, as KILLED with the reason. The Prefect server runs its deployment (served by
`rnnlab serve`, or on a work pool by `rnnlab deploy`) whenever a flow run of rnnlab's becomes CRASHED, which its
zombie automation makes of a flow run that stopped sending heartbeats (rnnlab/runtime/automations.py).

The local SQLite store keeps its own sweep besides (a dead process of this host, at the next command:
tasks/record/tracking.py mark_orphans); this is what closes the runs of a tracking server, written from many machines.
"""

from __future__ import annotations

from pathlib import Path
from uuid import UUID

from prefect import flow, get_client

from rnnlab.runtime.automations import CLOSING_FLOW, ensure_automations
from tasks.record.orphans import close_runs_of


class NotDead(RuntimeError):
    """The flow run is not over (or unknown): its runs may still be written, so none is closed."""


@flow(name=CLOSING_FLOW, log_prints=False)
def close_dead_runs(flow_run_id: str) -> list[str]:
    """Close the MLflow runs that flow run `flow_run_id` left RUNNING, as KILLED with the reason (its final state and
    that state's message, as Prefect recorded them). Only for a flow run in a final state: one still running (a
    deployment run by hand with a live id) keeps its runs. Returns the ids of the runs closed; running it again
    closes nothing more."""
    with get_client(sync_client=True) as prefect:
        try:
            dead = prefect.read_flow_run(UUID(flow_run_id))
        except Exception as err:  # a bad id, or one this server does not know
            raise NotDead(f"flow run {flow_run_id} cannot be read from Prefect ({type(err).__name__}: {err})") from err
    state = dead.state
    if state is None or not state.is_final():
        raise NotDead(
            f"flow run {dead.name} ({flow_run_id}) is {state.name if state else 'without a state'}, not over: its "
            "runs are left as they are"
        )
    reason = f"Prefect marked its flow run {dead.name} ({flow_run_id}) {state.name.upper()}" + (
        f": {state.message}" if state.message else ""
    )
    return close_runs_of(flow_run_id, reason)


def closer_deployment():
    """The `close-dead-runs` deployment that `rnnlab serve` serves."""
    return close_dead_runs.to_deployment(
        name=CLOSING_FLOW,
        tags=["rnnlab"],
        description="Closes the MLflow runs of a CRASHED flow run as KILLED (run by rnnlab's automation)",
    )


def deploy_closer_to_pool(pool: str, source: str | Path, store: str) -> UUID:
    """The same deployment on a work pool, whose workers run it (from `source`, as the studies' deployments, and
    closing runs in the tracking server `store`, named without credentials)."""
    from rnnlab.runtime.env import without_userinfo

    return close_dead_runs.from_source(source=str(source), entrypoint="flows/dead_runs.py:close_dead_runs").deploy(
        name=CLOSING_FLOW,
        tags=["rnnlab"],
        work_pool_name=pool,
        job_variables={"env": {"MLFLOW_TRACKING_URI": without_userinfo(store)[0]}},
        build=False,
        push=False,
        print_next_steps=False,
    )


def ensure_dead_run_closing(deployment_id: UUID | None = None) -> dict[str, UUID]:
    """The server's two automations, the second running the closer's deployment: `deployment_id`, else the one
    registered already (served, or on a pool: left as it is), else one registered here that no one serves yet (a run
    of it waits, SCHEDULED, for `rnnlab serve` or a pool's worker). Idempotent: `rnnlab server start`, `rnnlab serve`
    and `rnnlab deploy` each call it. Returns the automations' ids by name, and the deployment's as `deployment`."""
    from prefect.exceptions import ObjectNotFound

    if deployment_id is None:
        with get_client(sync_client=True) as prefect:
            try:
                deployment_id = prefect.read_deployment_by_name(f"{CLOSING_FLOW}/{CLOSING_FLOW}").id
            except ObjectNotFound:
                deployment_id = closer_deployment().apply()
    return {**ensure_automations(deployment_id), "deployment": deployment_id}
