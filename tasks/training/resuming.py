"""Exact resume: what a checkpoint carries beyond what Lightning keeps (weights, optimizer, schedules, loops), so that a
fit resumed from any validation's checkpoint, mid-epoch included, trains on as the uninterrupted fit did, bit for bit
on one machine: the training loader's place in its epoch (`ResumableLoader`), every global RNG state (`RandomStates`)
and the last validation's metrics with the plateau schedule's step that Lightning leaves out on resuming
(`LastValidation`). The house callbacks keep their own state (tasks/training/fitting.py), a language model its hidden
state (models/lm.py). Everything is kept as tensors, numbers, lists and dicts: checkpoints are read with
weights_only=True."""

from __future__ import annotations

import random
from collections.abc import Iterator
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback
from torch.utils.data import DataLoader


class ResumableLoader(DataLoader):
    """A training DataLoader that knows its place in the epoch. Lightning's fit loop keeps `state_dict()` of a training
    loader that has one in its checkpoints and, resuming, gives it back through `load_state_dict` before the resumed
    epoch's first batch: that epoch's iterator then passes over the batches trained on before the checkpoint, in the
    epoch's order (the sampler draws the order anew from (seed, epoch) at `set_epoch`), and hands on the next one.

    It draws the seed that every DataLoader iterator draws from a generator of its own, not from the global one: an
    iterator made anew on resuming would otherwise draw once more from the generator that dropout draws from. Without
    worker processes (rnnlab's loaders have none) that seed is not used."""

    def __init__(self, *args: Any, **kwargs: Any):
        kwargs.setdefault("generator", torch.Generator())
        super().__init__(*args, **kwargs)
        self._batches = 0  # handed out in the current epoch
        self._skip = 0  # to pass over at the start of the next iterator: the batches trained before the checkpoint

    def __iter__(self) -> Iterator[Any]:
        return self._epoch()

    def _epoch(self) -> Iterator[Any]:
        # A generator: its body runs at the first batch, after Lightning's `set_epoch` on the sampler. A DataLoader
        # has no way to start its sampler mid-epoch; the batches passed over are fetched and dropped, which costs
        # what reading them costs (slicing segments, padding sentence pairs: milliseconds for a PTB epoch).
        skip, self._skip = self._skip, 0
        batches = super().__iter__()
        for _ in range(skip):
            next(batches)
        self._batches = skip
        for batch in batches:
            self._batches += 1
            yield batch

    def state_dict(self) -> dict[str, int]:
        return {"batches": self._batches}

    def load_state_dict(self, state: dict[str, int]) -> None:
        # a checkpoint taken after the epoch's last batch resumes at the start of the next epoch
        self._skip = state["batches"] if state["batches"] < len(self) else 0


def random_states() -> dict[str, Any]:
    """Torch's CPU generator and, when CUDA is in use, each GPU's; Python's `random`; NumPy's global generator."""
    version, internal, gauss = random.getstate()
    _, keys, position, has_gauss, cached = np.random.get_state(legacy=True)
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else [],
        "python": [version, list(internal), gauss],
        "numpy": [keys.tolist(), int(position), int(has_gauss), float(cached)],
    }


def set_random_states(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    keys, position, has_gauss, cached = state["numpy"]
    np.random.set_state(("MT19937", np.array(keys, dtype=np.uint32), position, has_gauss, cached))


class RandomStates(Callback):
    """Every global RNG state in checkpoints, put back just before the first batch that a resumed fit trains: what was
    drawn while the fit was set up again (a fresh model's initialisation) does not count, and that batch draws its
    dropout masks as the uninterrupted fit drew them. The samplers draw no global numbers: their orders are functions
    of (seed, epoch) (tasks/kinds/lm.py `epoch_order`, tasks/kinds/nmt.py `BucketBatches`)."""

    def __init__(self) -> None:
        self._restore: dict[str, Any] | None = None

    def state_dict(self) -> dict[str, Any]:
        return random_states()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._restore = state

    def on_train_batch_start(self, trainer: pl.Trainer, module: pl.LightningModule, batch, batch_idx: int) -> None:
        if self._restore is not None:
            set_random_states(self._restore)
            self._restore = None


class LastValidation(Callback):
    """The last validation's metrics as Lightning's callbacks and schedules see them (`trainer.callback_metrics`: the
    checkpoint monitor, the plateau schedule), kept in checkpoints; and the plateau schedule's steps that a resumed fit
    would miss.

    Lightning steps a plateau schedule at an epoch's end after the epoch-end hooks, so after a checkpoint written
    there; it keeps no metrics in checkpoints, and so takes no such step at the end of the epoch a fit resumed in
    (lightning/pytorch/loops/fit_loop.py `on_advance_end`: "metric-based schedulers require access to metrics and
    those are not currently saved in the checkpoint"). Either way a resumed fit starts an epoch one step behind the
    uninterrupted one, which had stepped once per finished epoch (rnnlab's schedules step every epoch). That step is
    taken here as the epoch starts, on the same metrics: those of the last validation, restored if none ran since."""

    def __init__(self) -> None:
        self._restore: dict[str, torch.Tensor] = {}

    def on_save_checkpoint(self, trainer: pl.Trainer, module: pl.LightningModule, checkpoint: dict[str, Any]) -> None:
        checkpoint["callback_metrics"] = {
            k: v.detach().cpu().clone() for k, v in trainer.callback_metrics.items() if isinstance(v, torch.Tensor)
        }

    def on_load_checkpoint(self, trainer: pl.Trainer, module: pl.LightningModule, checkpoint: dict[str, Any]) -> None:
        self._restore = checkpoint.get("callback_metrics", {})  # Lightning clears the metrics after this hook

    def on_train_start(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        for key, value in self._restore.items():
            trainer.callback_metrics.setdefault(key, value.to(module.device))
        self._restore = {}

    def on_train_epoch_start(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        behind = [
            c
            for c in trainer.lr_scheduler_configs
            if c.reduce_on_plateau and c.interval == "epoch" and c.scheduler.last_epoch < trainer.current_epoch
        ]
        if behind:  # the loop's own update: the monitored metric looked up, its progress counters kept
            trainer.fit_loop.epoch_loop.update_lr_schedulers("epoch", update_plateau_schedulers=True)
