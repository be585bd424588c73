"""The task kinds, by the name a config gives in `task`: the one lookup. Register a new kind here."""

from __future__ import annotations

from rnnlab.schemas.config import RunConfig
from tasks.kinds.base import TaskKind
from tasks.kinds.lm import LanguageModelling
from tasks.kinds.nmt import Translation

KINDS: dict[str, TaskKind] = {kind.name: kind for kind in (LanguageModelling(), Translation())}


def kind_of(cfg: RunConfig) -> TaskKind:
    return KINDS[cfg.task]
