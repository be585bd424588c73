"""Studies on a schedule: the deployments named in conf/schedules.yaml (study file, cron, timezone, overrides),
created on the configured Prefect server and served by this process (`rnnlab serve`)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, ValidationError, model_validator

from rnnlab.config import ConfigError, Section, describe, read_yaml
from rnnlab.study import load_study


class Schedule(Section):
    name: str = Field(min_length=1, description="deployment name: the flow is `study`, so `study/<name>` in Prefect")
    study: str = Field(min_length=1, description="study file, relative to the schedules file")
    cron: str = Field(min_length=1, description="cron expression, e.g. '0 2 * * *' (02:00 every day)")
    timezone: str = Field("UTC", description="IANA timezone of the cron expression")
    overrides: list[str] = Field(default_factory=list, description="command-line style overrides, e.g. ['seeds=[1,2]']")
    force: bool = False

    @model_validator(mode="after")
    def _cron(self) -> "Schedule":
        from prefect.client.schemas.schedules import CronSchedule

        try:
            CronSchedule(cron=self.cron, timezone=self.timezone)
        except ValidationError as err:
            problems = "; ".join(e["msg"].removeprefix("Value error, ") for e in err.errors())
            raise ValueError(f"deployment '{self.name}': cron '{self.cron}' / timezone '{self.timezone}': {problems}") from None
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


def deployments(path: str | Path) -> list:
    from prefect.schedules import Cron

    from flows.study import study_flow

    return [study_flow.to_deployment(
        name=schedule.name, schedules=[Cron(schedule.cron, timezone=schedule.timezone)], tags=["rnnlab"],
        parameters={"study_file": str(study_file), "overrides": schedule.overrides, "force": schedule.force},
        description=f"rnnlab study {study_file.name} on cron '{schedule.cron}' ({schedule.timezone})")
        for schedule, study_file in load_schedules(path)]


def serve(path: str | Path) -> None:
    from prefect import serve as prefect_serve

    prefect_serve(*deployments(path))
