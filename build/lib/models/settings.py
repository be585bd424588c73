"""The models' own settings, beside no framework: plain frozen dataclasses, torch-free. Each setting is written here
once, with its default, its bounds (`annotated_types`, which pydantic reads) and its description; the run config
(rnnlab/schemas/config.py) builds its `model` and `train` sections from these fields, so a YAML file is validated
by the same rules before anything heavy is imported. models/ still imports nothing from rnnlab/, tasks/ or flows/.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated, Literal

from annotated_types import Ge, Gt, Le, Lt

Attention = Literal["none", "dot", "general", "additive"]


def setting(default, description: str | None = None):
    """A settings field: its default, and the description the config schema and its reference show."""
    return field(default=default, metadata={"description": description} if description else {})


def check_encoder_split(hidden_size: int, bidirectional: bool) -> None:
    """A bidirectional encoder gives each direction half of hidden_size, so the size must be even."""
    if bidirectional and hidden_size % 2:
        raise ValueError(
            f"model.hidden_size={hidden_size} must be even for a bidirectional encoder "
            "(model.bidirectional=true gives each direction half)"
        )


@dataclass(frozen=True)
class LMSettings:
    cell: Literal["rnn_tanh", "lstm", "gru"] = "lstm"
    layers: Annotated[int, Ge(1)] = 2
    embedding_size: Annotated[int, Ge(1)] = 200
    hidden_size: Annotated[int, Ge(1)] = 200
    dropout: Annotated[float, Ge(0.0), Lt(1.0)] = 0.0
    tied: bool = False  # the decoder reuses the embedding matrix: needs embedding_size == hidden_size
    residual: bool = setting(False, "identity skip connections between stacked layers")
    init_range: Annotated[float, Gt(0.0)] = setting(0.1, "uniform init in [-init_range, init_range]")


@dataclass(frozen=True)
class OptimSettings:
    """The optimizer and its schedule (defaults: Zaremba et al.'s language model; the run config sets every field,
    and a task kind's recipe may change the defaults: the translation config's)."""

    optimizer: Literal["sgd", "adam"] = "sgd"
    lr: Annotated[float, Gt(0.0)] = 20.0
    weight_decay: Annotated[float, Ge(0.0)] = 0.0
    lr_schedule: Literal["constant", "decay", "plateau"] = setting(
        "decay",
        "decay: lr *= lr_decay each epoch after decay_after; plateau: lr *= lr_decay when valid ppl stops improving",
    )
    lr_decay: Annotated[float, Gt(0.0), Le(1.0)] = 0.5
    decay_after: Annotated[int, Ge(0)] = 4


@dataclass(frozen=True)
class Seq2SeqShape:
    src_vocab: int
    tgt_vocab: int
    embedding_size: Annotated[int, Ge(1)] = 256
    hidden_size: Annotated[int, Ge(2)] = 512
    layers: Annotated[int, Ge(1)] = 1
    bidirectional: bool = setting(True, "bidirectional encoder (the decoder is always left to right)")
    residual: bool = False
    attention: Attention = "dot"
    dropout: Annotated[float, Ge(0.0), Lt(1.0)] = 0.2

    def __post_init__(self) -> None:
        check_encoder_split(self.hidden_size, self.bidirectional)
