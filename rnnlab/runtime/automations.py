"""The Prefect server's automations that close a dead machine's runs with no one rerunning anything.

1. Zombies: a flow run of rnnlab's that has sent no heartbeat for ZOMBIE_SECONDS is marked CRASHED. This is Prefect's
   documented recipe (docs: "How to detect and respond to zombie flows"); Prefect Cloud ships it, a self-hosted server
   has it only if someone creates it. Its flow runs beat every HEARTBEAT_SECONDS (rnnlab.runtime.env).
2. Closing: a flow run of rnnlab's that becomes CRASHED (by the automation above, or by Prefect itself) gets the
   `close-dead-runs` deployment run with its id, which closes its MLflow runs as KILLED with the reason
   (flows/dead_runs.py; `rnnlab serve` or a pool worker runs it).

`ensure_automations` makes the server hold exactly these two, whatever it held before: `rnnlab server start`,
`rnnlab deploy` and `rnnlab serve` call it, as often as they like.
"""

from __future__ import annotations

from datetime import timedelta
from uuid import UUID

from rnnlab.runtime.env import HEARTBEAT_SECONDS, ZOMBIE_SECONDS

ZOMBIE = "rnnlab: crash flow runs that stopped sending heartbeats"
CLOSER = "rnnlab: close the MLflow runs of a crashed flow run"

# The flows that rnnlab runs with its heartbeat frequency, and that record MLflow runs tagged with their flow run's id
# (`prefect.flow_run_id`, tasks/record/tracking.py provenance_tags). Only these: another flow on the same server beats
# at Prefect's default of 180 s and would be marked CRASHED, alive, by a 90 s window.
RECORDING_FLOWS = ["study", "train", "claims"]
CLOSING_FLOW = "close-dead-runs"  # the closer's flow and deployment: `close-dead-runs/close-dead-runs`

ZOMBIE_MESSAGE = (
    f"no heartbeat for {ZOMBIE_SECONDS} s (one is sent every {HEARTBEAT_SECONDS} s): its process or its machine "
    "stopped (rnnlab's zombie automation)"
)


def of_flows(names: list[str]) -> dict[str, str | list[str]]:
    """Events related to a flow of one of these names: both heartbeats and state changes carry their flow (with its
    name) as a related resource of role `flow`."""
    return {"prefect.resource.role": "flow", "prefect.resource.name": names}


def zombie_automation():
    """Prefect's zombie recipe: after each heartbeat of a flow run, some event of that flow run (a heartbeat, any
    state change: `prefect.flow-run.*`) is expected within ZOMBIE_SECONDS; none → CRASHED. Not forced: a run that
    reached a final state meanwhile stays as it is."""
    from prefect.automations import Automation  # lazy: Prefect (~1 s), which `rnnlab server status` never needs
    from prefect.client.schemas.objects import StateType
    from prefect.events.actions import ChangeFlowRunState
    from prefect.events.schemas.automations import EventTrigger, Posture

    return Automation(
        name=ZOMBIE,
        description=f"A flow run of {', '.join(RECORDING_FLOWS + [CLOSING_FLOW])} silent for {ZOMBIE_SECONDS} s "
        "is marked CRASHED (Prefect's zombie-flow recipe; created by rnnlab).",
        trigger=EventTrigger(
            after={"prefect.flow-run.heartbeat"},
            expect={"prefect.flow-run.*"},
            match={"prefect.resource.id": "prefect.flow-run.*"},
            match_related=of_flows(RECORDING_FLOWS + [CLOSING_FLOW]),
            for_each={"prefect.resource.id"},
            posture=Posture.Proactive,
            threshold=1,
            within=timedelta(seconds=ZOMBIE_SECONDS),
        ),
        actions=[ChangeFlowRunState(state=StateType.CRASHED, message=ZOMBIE_MESSAGE)],
    )


def closer_automation(deployment_id: UUID | str):
    """On a CRASHED flow run of a recording flow: run `close-dead-runs` with that flow run's id (rendered by the
    server from the triggering event: `flow_run` is the event's flow run, read from the API)."""
    from prefect.automations import Automation  # lazy: as above
    from prefect.events.actions import RunDeployment
    from prefect.events.schemas.automations import EventTrigger, Posture

    return Automation(
        name=CLOSER,
        description="The MLflow runs that a CRASHED flow run left RUNNING are closed as KILLED, with the reason, "
        f"by the {CLOSING_FLOW} deployment (created by rnnlab).",
        trigger=EventTrigger(
            expect={"prefect.flow-run.Crashed"},
            match={"prefect.resource.id": "prefect.flow-run.*"},
            match_related=of_flows(RECORDING_FLOWS),
            posture=Posture.Reactive,
            threshold=1,
            within=timedelta(0),
        ),
        actions=[
            RunDeployment(
                source="selected",
                deployment_id=UUID(str(deployment_id)),
                # A Jinja template kind renders to the text of the id (Prefect's plain "{{ … }}" would be passed
                # through `tojson`, which a UUID does not survive).
                parameters={"flow_run_id": {"__prefect_kind": "jinja", "template": "{{ flow_run.id }}"}},
            )
        ],
    )


def ensure_automations(closer_deployment_id: UUID | str) -> dict[str, UUID]:
    """The two automations on the server of PREFECT_API_URL: created where missing, brought up to date where present
    (the closer's deployment may have a new id), and any duplicates of theirs (same name) deleted. Idempotent.
    Returns each one's id by name."""
    from prefect import get_client  # lazy: as above

    ids = {}
    with get_client(sync_client=True) as prefect:
        for wanted in (zombie_automation(), closer_automation(closer_deployment_id)):
            found = sorted(prefect.read_automations_by_name(wanted.name), key=lambda a: str(a.id))
            if found:
                wanted.id = found[0].id
                wanted.update()
                for extra in found[1:]:  # two commands that created it at the same moment
                    prefect.delete_automation(extra.id)
            else:
                wanted.create()
            ids[wanted.name] = wanted.id
    return ids
