"""Optimizer and learning-rate schedule from their settings, in the form Lightning's configure_optimizers returns."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch

from models.settings import OptimSettings


def configure(parameters: Iterable[torch.nn.Parameter], cfg: OptimSettings, monitor: str, mode: str) -> Any:
    """`monitor`/`mode` name the validation metric a plateau schedule watches (valid_ppl/min, valid_bleu/max)."""
    if cfg.optimizer == "sgd":
        optimizer = torch.optim.SGD(parameters, lr=cfg.lr, weight_decay=cfg.weight_decay)
    else:
        optimizer = torch.optim.Adam(parameters, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.lr_schedule == "constant":
        return optimizer
    if cfg.lr_schedule == "decay":  # Zaremba et al.: lr × decay^(epochs past decay_after)
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda epoch: cfg.lr_decay ** max(epoch + 1 - cfg.decay_after, 0)
        )
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "epoch"}}
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode=mode, factor=cfg.lr_decay, patience=0)
    return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "monitor": monitor, "interval": "epoch"}}


class ReuseNormForClipping:
    """LightningModule mixin: clip by norm with the total norm already computed this step for logging
    (`pre_clip_norm`, set before clipping), so the norm over all parameters is computed once, not twice."""

    pre_clip_norm: torch.Tensor | None = None

    def configure_gradient_clipping(self, optimizer, gradient_clip_val=None, gradient_clip_algorithm=None) -> None:
        norm, self.pre_clip_norm = self.pre_clip_norm, None
        if gradient_clip_algorithm == "norm" and gradient_clip_val and norm is not None:
            torch.nn.utils.clip_grads_with_norm_(self.parameters(), gradient_clip_val, norm)
        else:
            self.clip_gradients(optimizer, gradient_clip_val, gradient_clip_algorithm)
