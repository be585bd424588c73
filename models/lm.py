"""Word-level recurrent language model (tanh RNN / LSTM / GRU) and the LightningModule that trains it.

Pure torch + Lightning: no file I/O, no tracking. Tensors are time-major: [time, batch].
"""

from __future__ import annotations

from typing import Any

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from torch import nn

from models import metrics, optim
from models.settings import LMSettings

CELLS = {"rnn_tanh": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}

Hidden = list[Any]  # one state per layer: a tensor, or (h, c) for an LSTM
# Checkpoint key: every validation token's loss as measured by the validation pass at the checkpoint's step.
VALID_TOKEN_NLL = "valid_token_nll"
# Checkpoint key: the hidden state carried into the next training segment (None at an epoch's start).
TRAIN_HIDDEN = "train_hidden"


class RNNLM(nn.Module):
    """Embedding → stacked recurrent layers (optional identity skips between them) → linear decoder.

    One fused cuDNN/MKL module per layer, so a residual add can sit between layers at full kernel speed.
    """

    def __init__(self, vocab_size: int, cfg: LMSettings):
        super().__init__()
        self.cfg = cfg
        cell = CELLS[cfg.cell]
        self.embedding = nn.Embedding(vocab_size, cfg.embedding_size)
        sizes = [cfg.embedding_size] + [cfg.hidden_size] * cfg.layers
        self.layers = nn.ModuleList(cell(sizes[i], sizes[i + 1]) for i in range(cfg.layers))
        self.drop = nn.Dropout(cfg.dropout) if cfg.dropout > 0 else nn.Identity()  # p=0 would still draw masks
        self.decoder = nn.Linear(cfg.hidden_size, vocab_size)
        for p in self.parameters():
            nn.init.uniform_(p, -cfg.init_range, cfg.init_range)
        if cfg.tied:
            self.decoder.weight = self.embedding.weight

    def forward(self, tokens: torch.Tensor, hidden: Hidden | None = None) -> tuple[torch.Tensor, Hidden]:
        top, hidden = self.features(tokens, hidden)
        return self.decoder(top), hidden

    def features(self, tokens: torch.Tensor, hidden: Hidden | None = None) -> tuple[torch.Tensor, Hidden]:
        """The top layer's outputs [time, batch, hidden] before the decoder: a caller that needs only the last
        step's logits (models/probes.py) decodes that step alone, not a vocabulary-wide row per token."""
        x = self.drop(self.embedding(tokens))
        hidden = hidden if hidden is not None else [None] * len(self.layers)
        new_hidden = []
        for layer, state in zip(self.layers, hidden):
            out, state = layer(x, state)
            new_hidden.append(state)
            x = self.drop(self.join(out, x))
        return x, new_hidden

    def join(self, out: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """What a layer passes up: its output, plus its input when residual. The skip needs matching widths, so
        layer 0 (embedding → hidden) gets one only when they agree."""
        return out + x if self.cfg.residual and out.shape == x.shape else out


def detach(hidden: Hidden | None) -> Hidden | None:
    if hidden is None:
        return None
    return [tuple(t.detach() for t in h) if isinstance(h, tuple) else h.detach() for h in hidden]


def to_device(hidden: Hidden | None, device: torch.device) -> Hidden | None:
    if hidden is None:
        return None
    return [tuple(t.to(device) for t in h) if isinstance(h, tuple) else h.to(device) for h in hidden]


def token_nll(
    model: RNNLM, inputs: torch.Tensor, targets: torch.Tensor, hidden: Hidden | None
) -> tuple[torch.Tensor, Hidden]:
    """Per-token negative log-likelihood [time, batch] of `targets` given `inputs` and the carried state."""
    logits, hidden = model(inputs, hidden)
    nll = F.cross_entropy(logits.flatten(0, 1), targets.flatten(), reduction="none")
    return nll.view_as(targets), hidden


class LanguageModel(optim.ReuseNormForClipping, metrics.ValidationNLL, pl.LightningModule):
    """Truncated BPTT over consecutive segments: the hidden state is carried from one segment to the next
    and detached, so gradients flow through `train.bptt` steps while context flows through the whole epoch."""

    def __init__(self, vocab_size: int, settings: dict, optim_settings: dict):
        """Settings as dicts (of LMSettings and OptimSettings fields): checkpoints keep them as plain data."""
        super().__init__()
        self.save_hyperparameters()
        self.optim = optim.OptimSettings(**optim_settings)
        self.net = RNNLM(vocab_size, LMSettings(**settings))
        self._train_hidden: Hidden | None = None
        self._eval_hidden: Hidden | None = None
        self._valid_token_nll: dict[str, Any] | None = None

    @staticmethod
    def tokens_in(batch: tuple[torch.Tensor, ...]) -> int:
        return batch[1].numel()

    def on_train_epoch_start(self) -> None:  # not called when a fit resumes mid-epoch: the restored state goes on
        self._train_hidden = None

    def on_train_start(self) -> None:  # a restored state was read onto the CPU, before the model was moved
        self._train_hidden = to_device(self._train_hidden, self.device)

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        inputs, targets = batch
        logits, hidden = self.net(inputs, self._train_hidden)
        self._train_hidden = detach(hidden)  # detached now, so the previous segment's graph is freed at once
        return F.cross_entropy(logits.flatten(0, 1), targets.flatten())  # logged by the trainer's callbacks

    def on_validation_epoch_start(self) -> None:
        super().on_validation_epoch_start()
        self._eval_hidden = None
        self._valid_segments: list[torch.Tensor] = []

    def validation_step(self, batch: tuple[torch.Tensor, ...], batch_idx: int) -> None:
        inputs, targets, mask = batch
        nll, self._eval_hidden = token_nll(self.net, inputs, targets, self._eval_hidden)
        self._valid_segments.append(nll.double())
        self.add_validation_nll(float((nll * mask).sum()), int(mask.sum()))

    def on_validation_epoch_end(self) -> None:
        super().on_validation_epoch_end()
        # Every token's loss, in the split's order (as `tasks.kinds.lm.token_losses` lays them out), kept with the step
        # they measured: a checkpoint saved at that step carries them (`on_save_checkpoint`), so the selected
        # checkpoint's final score need not run this pass again.
        losses = torch.cat(self._valid_segments).t().reshape(-1)[: self._valid_tokens]
        self._valid_token_nll = {"step": self.global_step, "precision": str(self.trainer.precision), "losses": losses}

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if self._valid_token_nll is not None:
            checkpoint[VALID_TOKEN_NLL] = self._valid_token_nll
        # A checkpoint mid-epoch resumes mid-epoch: its next segment continues the context of the one before.
        checkpoint[TRAIN_HIDDEN] = self._train_hidden

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self._train_hidden = checkpoint.get(TRAIN_HIDDEN)

    def recurrent_layers(self) -> dict[str, nn.Module]:
        """The stack's layers, lowest first, by the names their gradient norms are logged under."""
        return {f"layer{i}": layer for i, layer in enumerate(self.net.layers)}

    def configure_optimizers(self) -> Any:
        return optim.configure(self.parameters(), self.optim, monitor="valid_nll", mode="min")
