"""Optimizer and learning-rate schedule from a TrainConfig, in the form Lightning's configure_optimizers returns."""

from __future__ import annotations

from typing import Any, Iterable

import torch

from rnnlab.config import TrainConfig


def configure(parameters: Iterable[torch.nn.Parameter], cfg: TrainConfig, monitor: str, mode: str) -> Any:
    """`monitor`/`mode` name the validation metric a plateau schedule watches (valid_ppl/min, valid_bleu/max)."""
    if cfg.optimizer == "sgd":
        optimizer = torch.optim.SGD(parameters, lr=cfg.lr, weight_decay=cfg.weight_decay)
    else:
        optimizer = torch.optim.Adam(parameters, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.lr_schedule == "constant":
        return optimizer
    if cfg.lr_schedule == "decay":  # Zaremba et al.: lr × decay^(epochs past decay_after)
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda epoch: cfg.lr_decay ** max(epoch + 1 - cfg.decay_after, 0))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "epoch"}}
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode=mode, factor=cfg.lr_decay, patience=0)
    return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "monitor": monitor, "interval": "epoch"}}
