"""Studies on a schedule: the deployments named in conf/schedules.yaml (study file, cron, timezone, overrides),
created on the configured Prefect server and either served by this process (`rnnlab serve`) or registered on a
Prefect work pool whose workers, on any number of machines, run them (`rnnlab deploy --pool`, `rnnlab worker`)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, ValidationError, model_validator

from rnnlab.schemas.config import ConfigError, Section, describe, read_yaml
from rnnlab.schemas.study import load_study

CHECKOUT = Path(__file__).resolve().parent.parent  # the code that work-pool workers run (not the stores' project)


class Schedule(Section):
    name: str = Field(min_length=1, description="deployment name: the flow is `study`, so `study/<name>` in Prefect")
    study: str = Field(min_length=1, description="study file, relative to the schedules file")
    cron: str = Field(min_length=1, description="cron expression, e.g. '0 2 * * *' (02:00 every day)")
    timezone: str = Field("UTC", description="IANA timezone of the cron expression")
    overrides: list[str] = Field(default_factory=list, description="command-line style overrides, e.g. ['seeds=[1,2]']")
    force: bool = False

    @model_validator(mode="after")
    def _cron(self) -> Schedule:
        from prefect.client.schemas.schedules import (
            CronSchedule,
        )  # lazy: Prefect (~1 s); rnnlab server reads schedules without it

        try:
            CronSchedule(cron=self.cron, timezone=self.timezone)
        except ValidationError as err:
            problems = "; ".join(e["msg"].removeprefix("Value error, ") for e in err.errors())
            raise ValueError(
                f"deployment '{self.name}': cron '{self.cron}' / timezone '{self.timezone}': {problems}"
            ) from None
        return self


class Schedules(Section):
    deployments: list[Schedule] = Field(min_length=1)


def load_schedules(path: str | Path) -> list[tuple[Schedule, Path]]:
    """Every schedule with its study file resolved and the study validated, before anything is registered."""
    path = Path(path)
    try:
        schedules = Schedules.model_validate(read_yaml(path))
    except ValidationError as err:
        raise ConfigError(describe(err, str(path), Schedules)) from None
    resolved = []
    for schedule in schedules.deployments:
        study_file = (path.parent / schedule.study).resolve()
        load_study(study_file, schedule.overrides)
        resolved.append((schedule, study_file))
    return resolved


def deployment_fields(schedule: Schedule, study_file: Path, root: Path | None = None) -> dict:
    """What a deployment of `study` carries: its name, cron schedule and parameters. With `root` (the checkout that
    workers pull), a study file inside it is given relative to it, so that it resolves on every worker machine."""
    from prefect.schedules import Cron  # lazy: Prefect (~1 s), as above

    if root is not None and study_file.is_relative_to(root):
        study_file = study_file.relative_to(root)
    return dict(
        name=schedule.name,
        schedules=[Cron(schedule.cron, timezone=schedule.timezone)],
        tags=["rnnlab"],
        parameters={"study_file": str(study_file), "overrides": schedule.overrides, "force": schedule.force},
        description=f"rnnlab study {study_file.name} on cron '{schedule.cron}' ({schedule.timezone})",
    )


def deployments(path: str | Path) -> list:
    from flows.study import study_flow  # lazy: torch, Lightning (~6 s), only to register or serve

    return [
        study_flow.to_deployment(**deployment_fields(schedule, study_file))
        for schedule, study_file in load_schedules(path)
    ]


def serve(path: str | Path) -> None:
    """Serve the studies' deployments and `close-dead-runs`, the one that the server's automation runs to close a
    dead machine's runs (registered first, so that the automations, made sure of here too, point at it)."""
    from prefect import serve as prefect_serve  # lazy: Prefect (~1 s)

    from flows.dead_runs import closer_deployment, ensure_dead_run_closing

    studies = deployments(path)  # every study validated before anything is registered
    closer = closer_deployment()
    ensure_dead_run_closing(closer.apply())
    prefect_serve(*studies, closer)


def deploy_to_pool(path: str | Path, pool: str, source: str | Path, store: str) -> list[tuple[Schedule, str]]:
    """Register the deployments on a Prefect work pool (created, of type `process`, if missing): whichever worker
    of the pool is free runs a scheduled study, after pulling `source` (this checkout's path, shared by the
    machines, or a git URL) as its working directory, and records into the tracking server `store` (carried by the
    deployment, without credentials: each worker brings its own). `close-dead-runs` goes on the pool too, with the
    server's automations that run it when a worker's machine dies. Returns each schedule with its deployment's id."""
    from prefect import get_client  # lazy: Prefect and the flow (~6 s), only to register
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.exceptions import ObjectNotFound

    from flows.dead_runs import deploy_closer_to_pool, ensure_dead_run_closing
    from flows.study import study_flow
    from rnnlab.runtime.env import without_userinfo

    schedules = load_schedules(path)  # every study validated before anything is registered
    with get_client(sync_client=True) as prefect:
        try:
            prefect.read_work_pool(pool)
        except ObjectNotFound:
            prefect.create_work_pool(WorkPoolCreate(name=pool, type="process"))
    flow = study_flow.from_source(source=str(source), entrypoint="flows/study.py:study_flow")
    root = Path(source).resolve() if Path(source).is_dir() else None
    ensure_dead_run_closing(deploy_closer_to_pool(pool, source, store))
    return [
        (
            schedule,
            str(
                flow.deploy(
                    **deployment_fields(schedule, study_file, root),
                    work_pool_name=pool,
                    job_variables={"env": {"MLFLOW_TRACKING_URI": without_userinfo(store)[0]}},
                    build=False,
                    push=False,
                    print_next_steps=False,
                )
            ),
        )
        for schedule, study_file in schedules
    ]
