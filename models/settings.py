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
    cell: Literal["rnn_tanh", "lstm", "gru"] = setting("lstm", "the recurrent cell")
    layers: Annotated[int, Ge(1)] = setting(2, "stacked recurrent layers")
    embedding_size: Annotated[int, Ge(1)] = setting(200, "width of the word embeddings")
    hidden_size: Annotated[int, Ge(1)] = setting(200, "width of each layer's hidden state")
    dropout: Annotated[float, Ge(0.0), Lt(1.0)] = setting(0.0, "dropout on the non-recurrent connections")
    tied: bool = setting(False, "the output layer reuses the embedding matrix: needs embedding_size == hidden_size")
    residual: bool = setting(False, "identity skip connections between stacked layers")
    init_range: Annotated[float, Gt(0.0)] = setting(0.1, "uniform init in [-init_range, init_range]")


@dataclass(frozen=True)
class OptimSettings:
    """The optimizer and its schedule (defaults: Zaremba et al.'s language model; the run config sets every field,
    and a task kind's recipe may change the defaults: the translation config's)."""

    optimizer: Literal["sgd", "adam"] = setting("sgd", "torch's SGD or Adam")
    lr: Annotated[float, Gt(0.0)] = setting(20.0, "the learning rate")
    weight_decay: Annotated[float, Ge(0.0)] = setting(0.0, "the optimizer's weight decay")
    lr_schedule: Literal["constant", "decay", "plateau"] = setting(
        "decay",
        "decay: lr *= lr_decay each epoch after decay_after; plateau: lr *= lr_decay when valid ppl stops improving",
    )
    lr_decay: Annotated[float, Gt(0.0), Le(1.0)] = setting(0.5, "the factor of the decay and plateau schedules")
    decay_after: Annotated[int, Ge(0)] = setting(4, "decay: epochs at the full learning rate")


@dataclass(frozen=True)
class Seq2SeqShape:
    src_vocab: int
    tgt_vocab: int
    embedding_size: Annotated[int, Ge(1)] = setting(256, "width of the encoder's and the decoder's embeddings")
    hidden_size: Annotated[int, Ge(2)] = setting(
        512, "encoder and decoder hidden size (a bidirectional encoder gives each direction half)"
    )
    layers: Annotated[int, Ge(1)] = setting(1, "stacked layers in the encoder and in the decoder")
    bidirectional: bool = setting(True, "bidirectional encoder (the decoder is always left to right)")
    residual: bool = setting(False, "identity skip connections between stacked layers")
    attention: Attention = setting("dot", "none, dot, general (Luong) or additive (Bahdanau scoring)")
    dropout: Annotated[float, Ge(0.0), Lt(1.0)] = setting(0.2, "dropout on the non-recurrent connections")

    def __post_init__(self) -> None:
        check_encoder_split(self.hidden_size, self.bidirectional)
