"""How a run config becomes the models' own settings (models/ knows nothing of the config): each task kind picks
its model's settings with `pick` (tasks/kinds/); the optimizer's are every kind's."""

from __future__ import annotations

from dataclasses import asdict, fields
from typing import TypeVar

from pydantic import BaseModel

from models.settings import OptimSettings
from rnnlab.schemas.config import RunConfig

Settings = TypeVar("Settings")


def pick(settings: type[Settings], section: BaseModel, **extra) -> Settings:
    """`settings` from the config section's fields of the same names (the section may hold more: checks, data)."""
    return settings(**{f.name: getattr(section, f.name) for f in fields(settings) if f.name not in extra}, **extra)


def optim_settings(cfg: RunConfig) -> OptimSettings:
    return pick(OptimSettings, cfg.train)


def as_dict(settings) -> dict:
    """Settings as a LightningModule takes them: plain data, so checkpoints load with weights_only=True."""
    return asdict(settings)
