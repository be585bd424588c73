"""The one place where a run config becomes the models' own settings (models/ knows nothing of the config)."""

from __future__ import annotations

from dataclasses import asdict, fields
from typing import TypeVar

from pydantic import BaseModel

from models.lm import LMSettings
from models.optim import OptimSettings
from models.seq2seq import Seq2SeqShape
from rnnlab.schemas.config import LMRunConfig, NMTRunConfig, RunConfig

Settings = TypeVar("Settings")


def pick(settings: type[Settings], section: BaseModel, **extra) -> Settings:
    """`settings` from the config section's fields of the same names (the section may hold more: checks, data)."""
    return settings(**{f.name: getattr(section, f.name) for f in fields(settings) if f.name not in extra}, **extra)


def lm_settings(cfg: LMRunConfig) -> LMSettings:
    return pick(LMSettings, cfg.model)


def seq2seq_shape(cfg: NMTRunConfig, src_vocab: int, tgt_vocab: int) -> Seq2SeqShape:
    return pick(Seq2SeqShape, cfg.model, src_vocab=src_vocab, tgt_vocab=tgt_vocab)


def optim_settings(cfg: RunConfig) -> OptimSettings:
    return pick(OptimSettings, cfg.train)


def as_dict(settings) -> dict:
    """Settings as a LightningModule takes them: plain data, so checkpoints load with weights_only=True."""
    return asdict(settings)
