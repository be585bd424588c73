"""The models' own settings, beside no framework: plain frozen dataclasses, torch-free.

Torch-free so that the run config (rnnlab/schemas/config.py) can apply the same rules while it validates a YAML file,
before anything heavy is imported; models/ still imports nothing from rnnlab/, tasks/ or flows/.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Attention = Literal["none", "dot", "general", "additive"]


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
    layers: int = 2
    embedding_size: int = 200
    hidden_size: int = 200
    dropout: float = 0.0
    tied: bool = False  # the decoder reuses the embedding matrix: needs embedding_size == hidden_size
    residual: bool = False  # identity skips between stacked layers of equal width
    init_range: float = 0.1  # uniform init in [-init_range, init_range]


@dataclass(frozen=True)
class OptimSettings:
    """The optimizer and its schedule (defaults: Zaremba et al.'s language model; the run config sets every field)."""

    optimizer: Literal["sgd", "adam"] = "sgd"
    lr: float = 20.0
    weight_decay: float = 0.0
    lr_schedule: Literal["constant", "decay", "plateau"] = "decay"
    lr_decay: float = 0.5
    decay_after: int = 4


@dataclass(frozen=True)
class Seq2SeqShape:
    src_vocab: int
    tgt_vocab: int
    embedding_size: int = 256
    hidden_size: int = 512
    layers: int = 1
    bidirectional: bool = True  # the encoder's; each direction gets half of hidden_size
    residual: bool = False
    attention: Attention = "dot"
    dropout: float = 0.2

    def __post_init__(self) -> None:
        check_encoder_split(self.hidden_size, self.bidirectional)
