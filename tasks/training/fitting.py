"""The shared floor of training, the same for every task kind: a Lightning Trainer from a RunConfig, the house
callbacks (progress, gradient statistics, the training loss and its blow-up rule), resuming from a checkpoint, and
the fit itself. Each task kind (tasks/kinds/) brings the module and the data loaders."""

from __future__ import annotations

import logging
import math
import sys
import time
import warnings
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from torch.utils.data import DataLoader

from models.metrics import perplexity
from rnnlab.runtime.cell_status import write_status
from rnnlab.runtime.env import keep_freed_memory, project_dir, verbose
from rnnlab.runtime.store import is_local_store, tracking_uri
from rnnlab.schemas.config import RunConfig
from tasks.record import hardware
from tasks.record.metrics_logger import MlflowMetricsLogger
from tasks.record.outcome import uniform_loss
from tasks.record.tracking import log_metrics, set_tags
from tasks.training.resuming import LastValidation, RandomStates

warnings.filterwarnings("ignore", message=r".*LeafSpec.*is deprecated", category=FutureWarning)
logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)  # rnnlab prints its own progress lines
if not verbose():  # warnings a user cannot act on: rnnlab handles both cases (see fit_module)
    warnings.filterwarnings("ignore", message=r".*does not have many workers.*")
    warnings.filterwarnings("ignore", message=r".*could not find the monitored key.*")  # stopped before validating
    warnings.filterwarnings("ignore", message=r".*Checkpoint directory .* exists and is not empty.*")  # resuming


class Progress(Callback):
    """Training throughput (wall time from the first batch to the last, validation excluded) and one
    human-readable progress line on stderr every `every_seconds` and at each validation.

    The totals are kept in checkpoints, so a resumed run's throughput covers its whole training."""

    def __init__(
        self,
        gradients: GradientStats | None = None,
        losses: TrainingLoss | None = None,
        every_seconds: float = 10.0,
        label: str | None = None,
        validation_words: Callable[[Mapping[str, Any]], list[str]] | None = None,
    ):
        self.gradients, self.losses = gradients, losses
        self.validation_words = validation_words
        self.prefix = f"rnnlab: [{label}] " if label else "rnnlab: "
        self.every_seconds = every_seconds
        self.tokens = 0
        self.train_seconds = 0.0
        self._since: float | None = None  # start of the current uninterrupted stretch of training batches
        self._batch_end = 0.0

    def on_train_start(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        self._last = time.monotonic()
        self._window_tokens = 0

    def on_train_batch_start(self, trainer, module, batch, batch_idx) -> None:
        if self._since is None:
            self._since = time.perf_counter()

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        self._batch_end = time.perf_counter()
        tokens = module.tokens_in(batch)
        self.tokens += tokens
        self._window_tokens += tokens
        if time.monotonic() - self._last >= self.every_seconds:
            self.report(trainer, module)

    def pause(self) -> None:
        if self._since is not None:
            self.train_seconds += self._batch_end - self._since
            self._since = None

    def on_validation_start(self, trainer, module) -> None:
        self.pause()

    def on_train_end(self, trainer, module) -> None:
        self.pause()

    def on_validation_end(self, trainer, module) -> None:
        if not trainer.sanity_checking:
            self.report(trainer, module, valid=True)

    def state_dict(self) -> dict[str, Any]:  # a checkpoint between batches: the stretch so far counts too
        ongoing = self._batch_end - self._since if self._since is not None else 0.0
        return {"tokens": self.tokens, "train_seconds": self.train_seconds + max(ongoing, 0.0)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.tokens, self.train_seconds = state["tokens"], state["train_seconds"]

    def report(self, trainer: pl.Trainer, module: pl.LightningModule, valid: bool = False) -> None:
        now = time.monotonic()
        m = trainer.callback_metrics
        steps = trainer.max_steps > 0  # a step budget: the epochs are not what ends training
        parts = [
            f"epoch {trainer.current_epoch + 1}" + ("" if steps else f"/{trainer.max_epochs}"),
            f"step {trainer.global_step}" + (f"/{trainer.max_steps}" if steps else ""),
        ]
        if self.losses and self.losses.last is not None:
            parts.append(f"loss {self.losses.last:.3f}")
        g = self.gradients.last if self.gradients else {}
        if g:
            parts.append(f"grad {g['grad_norm']:.3g} (clipped {100 * g['clipped_share']:.0f}%)")
            parts.append(f"lr {g['lr']:.3g}")
        if now > self._last and self._window_tokens:
            parts.append(f"{self._window_tokens / (now - self._last):,.0f} tok/s")
        if valid:
            parts += self.valid_words(m)
        print(self.prefix + " · ".join(parts), file=sys.stderr, flush=True)
        self._last, self._window_tokens = now, 0

    def valid_words(self, metrics: Mapping[str, Any]) -> list[str]:
        """A validation's scores in words: the perplexity, and the task kind's own (translation: BLEU)."""
        words = [f"valid ppl {readable(perplexity(float(metrics['valid_nll'])))}"] if "valid_nll" in metrics else []
        return words + (self.validation_words(metrics) if self.validation_words else [])

    def tokens_per_second(self) -> float:
        """Over the whole training so far (a resumed run's included), validation excluded."""
        state = self.state_dict()
        return state["tokens"] / state["train_seconds"] if state["train_seconds"] > 0 else 0.0


class StatusFile(Callback):
    """The run's progress for a study's display in another process (rnnlab/runtime/cell_status.py): its step of its
    budget, the last training loss, the latest validation and its throughput, rewritten every `every_seconds`, at
    each validation and at its end. A flow adds it to a run's callbacks; it reads the house `Progress` and
    `TrainingLoss` callbacks of the same trainer."""

    def __init__(self, path: str | Path, label: str, every_seconds: float = 1.0):
        self.path, self.label, self.every_seconds = Path(path), label, every_seconds
        self.progress: Progress | None = None
        self.losses: TrainingLoss | None = None
        self.from_step, self.total, self.valid, self.started = 0, None, None, None
        self._last = 0.0

    def on_fit_start(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        self.progress = next((c for c in trainer.callbacks if isinstance(c, Progress)), None)
        self.losses = next((c for c in trainer.callbacks if isinstance(c, TrainingLoss)), None)

    def on_train_start(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        self.from_step = trainer.global_step  # a resumed run's steps before it were not trained now
        self.started = time.time()  # the study's ETA: steps trained since then, by this clock (not when it read)
        total = trainer.estimated_stepping_batches  # the budget's steps, as Lightning counts them
        self.total = int(total) if math.isfinite(total) else None
        self.write(trainer)

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        if time.monotonic() - self._last >= self.every_seconds:
            self.write(trainer)

    def on_validation_end(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        if not trainer.sanity_checking and self.progress is not None:
            self.valid = " · ".join(self.progress.valid_words(trainer.callback_metrics)) or None
            self.write(trainer)

    def on_train_end(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        self.write(trainer, ended=True)

    def write(self, trainer: pl.Trainer, ended: bool = False) -> None:
        loss = self.losses.last if self.losses else None
        write_status(
            self.path,
            {
                "label": self.label,
                "step": trainer.global_step,
                "from_step": self.from_step,
                "total": self.total,
                "epoch": trainer.current_epoch + 1,
                "loss": loss if loss is not None and math.isfinite(loss) else None,
                "valid": self.valid,
                "tokens_per_second": self.progress.tokens_per_second() if self.progress else None,
                "ended": ended,
                "stopped": self.losses.stop_reason if self.losses else None,
                "started": self.started,
                "time": time.time(),
            },
        )
        self._last = time.monotonic()


def readable(value: float) -> str:
    """Two decimals, or three significant digits for the astronomical values of a model that blew up."""
    return f"{value:.2f}" if abs(value) < 1e6 else f"{value:.3g}"


def recurrent_layers(module: torch.nn.Module) -> dict[str, list[torch.nn.Parameter]]:
    """The recurrent layers whose gradient norms are logged one by one, lowest first, under the names their model
    gives them (`recurrent_layers()` of a models/ Lightning module; none for a module without one)."""
    layers = module.recurrent_layers() if hasattr(module, "recurrent_layers") else {}
    return {name: list(layer.parameters()) for name, layer in layers.items()}


class GradientStats(Callback):
    """The total gradient norm before clipping, every step (`train/grad_norm`), and the share of steps that
    clipping changed (`train/clipped_share` as it runs, `clipped_share` at the end); and each recurrent layer's own
    gradient norm (`train/grad_norm_layer<i>`), every `every` steps, with its mean over those steps at the end
    (`grad_norm_layer<i>_mean`), so a depth study can show the lower layers starving. Curves are under `train/`
    (a section of their own in MLflow's charts), summaries under plain names.

    Lightning calls this hook before it clips, so these are the norms the clipping ablations are about. A layer's
    norm costs one more norm over its parameters' gradients, on 1 step in `every`: nothing measurable."""

    def __init__(self, clip: tuple[str, float] | None, every: int = 50):
        self.clip = clip
        self.every = every
        self.steps = 0
        self.clipped = 0
        self.max_norm = 0.0
        self.last: dict[str, float] = {}
        self.layers: dict[str, list[torch.nn.Parameter]] = {}
        self.layer_sums: dict[str, float] = {}  # over the sampled steps with a finite norm
        self.layer_counts: dict[str, int] = {}

    def on_fit_start(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        self.layers = recurrent_layers(module)

    def on_before_optimizer_step(self, trainer: pl.Trainer, module: pl.LightningModule, optimizer) -> None:
        grads = [p.grad for p in module.parameters() if p.grad is not None]
        total = torch.nn.utils.get_total_norm(grads)
        module.pre_clip_norm = total  # the module's clipping reuses it instead of computing it again
        norm = float(total)
        if self.clip is not None:
            kind, threshold = self.clip
            self.clipped += int(
                norm > threshold if kind == "norm" else any(bool((g.abs() > threshold).any()) for g in grads)
            )
        self.steps += 1
        if math.isfinite(norm):
            self.max_norm = max(self.max_norm, norm)
        # Straight into the run's batched logger: Lightning's per-step result collection costs more than the values.
        # The norm every step; the running clipped share and the layers' norms every `every` steps (the clipped share
        # also at the end); the lr when it changes.
        lr = optimizer.param_groups[0]["lr"]
        values = {"train/grad_norm": norm}
        if self.steps % self.every == 1 or self.every == 1:
            values["train/clipped_share"] = self.share
            values.update({f"train/{k}": v for k, v in self.layer_norms().items()})
        if lr != self.last.get("lr"):
            values["train/lr"] = lr
        trainer.logger.log_metrics(values, step=trainer.global_step)
        self.last = {"grad_norm": norm, "clipped_share": self.share, "lr": lr}

    def layer_norms(self) -> dict[str, float]:
        found = {}
        for name, params in self.layers.items():
            grads = [p.grad for p in params if p.grad is not None]
            if not grads:
                continue
            norm = float(torch.nn.utils.get_total_norm(grads))
            found[f"grad_norm_{name}"] = norm
            if math.isfinite(norm):  # a diverged step would make the mean inf for good
                self.layer_sums[name] = self.layer_sums.get(name, 0.0) + norm
                self.layer_counts[name] = self.layer_counts.get(name, 0) + 1
        return found

    def layer_means(self) -> dict[str, float]:
        """Per recurrent layer, its mean gradient norm over the sampled steps (finite ones only)."""
        return {f"grad_norm_{name}_mean": self.layer_sums[name] / self.layer_counts[name] for name in self.layer_sums}

    @property
    def share(self) -> float:
        return self.clipped / max(self.steps, 1)

    def state_dict(self) -> dict[str, Any]:  # kept in checkpoints, so a resumed run's share and means cover every step
        return {
            "steps": self.steps,
            "clipped": self.clipped,
            "max_norm": self.max_norm,
            "layer_sums": dict(self.layer_sums),
            "layer_counts": dict(self.layer_counts),
            "last": dict(self.last),  # the lr is logged when it changes: not again at a resumed run's first step
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.steps, self.clipped, self.max_norm = state["steps"], state["clipped"], state["max_norm"]
        # checkpoints written before per-layer norms were logged have none: the means then cover the resumed part
        self.layer_sums, self.layer_counts = dict(state.get("layer_sums", {})), dict(state.get("layer_counts", {}))
        self.last = dict(state.get("last", {}))


class TrainingLoss(Callback):
    """The training loss every step (`train/loss`), straight to the run's batched logger. Training stops, as a finding
    (the run is `diverged`), when the loss becomes NaN/inf, or when it blows up: once `after` warm-up steps are past,
    the mean loss over the last `window` steps exceeds `ratio` × the loss of a uniform guess over the vocabulary. A
    model that far above guessing has exploded; left to run, it would spend its whole budget (and before denormals were
    flushed, an exploded LSTM at lr 20 ran ~14× slower per step: tasks.record.hardware.flush_denormals)."""

    def __init__(self, uniform_loss: float, ratio: float | None = None, window: int = 25, after: int = 0) -> None:
        self.limit = ratio * uniform_loss if ratio else None
        self.ratio, self.uniform_loss, self.window, self.after = ratio, uniform_loss, window, after
        self.recent: deque[float] = deque(maxlen=window)
        self.stopped_at: int | None = None
        self.stop_reason: str | None = None
        self.last: float | None = None

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        if loss is None:
            return
        self.last = float(loss)
        step = trainer.global_step
        trainer.logger.log_metrics({"train/loss": self.last}, step=step - 1)
        if not math.isfinite(self.last):
            self.stop(trainer, f"the training loss became {self.last} at step {step}")
            return
        self.recent.append(self.last)
        if self.limit is None or step < self.after + self.window or len(self.recent) < self.window:
            return
        mean = sum(self.recent) / self.window
        if mean > self.limit:
            self.stop(
                trainer,
                f"blew up: the mean training loss over steps {step - self.window + 1}–{step} was "
                f"{mean:.1f} nats per token, above {self.ratio:g} × {self.uniform_loss:.2f} (a uniform "
                f"guess) = {self.limit:.1f} (the blow-up rule, train.blowup_*); stopped at step {step}",
            )

    def state_dict(self) -> dict[str, Any]:  # the window the blow-up rule and the final loss are taken over
        return {"recent": list(self.recent), "last": self.last}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.recent = deque(state["recent"], maxlen=self.window)
        self.last = state["last"]

    @property
    def final(self) -> float | None:
        """The training loss a run ends with: the mean over its last `window` steps (one batch's loss is noisy);
        None when the last was not finite (the run diverged: its outcome says so)."""
        if self.last is None or not math.isfinite(self.last):
            return None
        return sum(self.recent) / len(self.recent) if self.recent else self.last

    def stop(self, trainer: pl.Trainer, reason: str) -> None:
        self.stopped_at, self.stop_reason = trainer.global_step, reason
        trainer.should_stop = True
        # Lightning validates once more as a run stops. Here that pass would measure the model the rule rejected (a
        # perplexity like 1e11, no point of a curve) at the blown-up model's crawl: measured, 17 of the 19 s that a
        # diverged demo cell spent training. No validation after this: `fit_module` keeps the last selected weights.
        trainer.limit_val_batches = 0


@dataclass(frozen=True)
class FitResult:
    checkpoint: str
    diverged_at: int | None  # the step at which training stopped as diverged (NaN/inf loss, or the blow-up rule)
    stop_reason: str | None  # why, in words
    steps: int
    train_seconds: float  # training batches only
    fit_seconds: float  # the whole of trainer.fit, validation included
    tokens_per_second: float


def run_dir(run_id: str) -> Path:
    return project_dir() / ".cache" / "rnnlab" / "runs" / run_id


def cell_dir(cell_key: str) -> Path:
    """A study cell's checkpoints live by the cell's identity, not its run, so a later run can resume them."""
    return project_dir() / ".cache" / "rnnlab" / "cells" / cell_key


def build_trainer(cfg: RunConfig, workdir: Path, callbacks: list[Callback], logger: MlflowMetricsLogger) -> pl.Trainer:
    clip = cfg.train.clip
    return pl.Trainer(
        max_epochs=cfg.train.max_epochs,
        max_steps=cfg.train.max_steps or -1,
        max_time=timedelta(minutes=cfg.train.max_minutes) if cfg.train.max_minutes else None,
        gradient_clip_val=clip[1] if clip else None,
        gradient_clip_algorithm=clip[0] if clip else None,
        val_check_interval=cfg.train.val_every_n_steps,
        log_every_n_steps=cfg.train.log_every_n_steps,
        accelerator=cfg.train.accelerator,
        devices=1,
        precision=cfg.train.precision,  # Lightning's plugin: torch.autocast for bf16-mixed, on CPU and GPU alike
        logger=logger,
        callbacks=callbacks,
        default_root_dir=str(workdir),
        num_sanity_val_steps=0,
        enable_progress_bar=False,
        enable_model_summary=False,
    )


def resumable(checkpoint: Path, label: str, module: torch.nn.Module | None = None) -> tuple[str, int] | None:
    """(path, step) of a checkpoint to continue from. One that cannot be read (cut off mid-write), or whose weights do
    not fit `module` (the cell's config changed, a foreign file), is set aside with one line saying why."""
    if not checkpoint.is_file():
        return None
    try:
        state = torch.load(checkpoint, map_location="cpu", weights_only=True)
        step = int(state["global_step"])
    except Exception as err:
        set_aside(checkpoint, ".unreadable", label, type(err).__name__)
        return None
    misfit = weights_misfit(state.get("state_dict"), module.state_dict()) if module is not None else None
    if misfit:  # Lightning would fail loading it at every rerun
        set_aside(checkpoint, ".misfit", label, f"its weights do not fit the model: {misfit}")
        return None
    print(f"rnnlab: {label}: resuming from {checkpoint} (step {step})", file=sys.stderr, flush=True)
    return str(checkpoint), step


def weights_misfit(saved: Any, expected: dict[str, torch.Tensor]) -> str | None:
    """What keeps the weights `saved` from loading into a module with the state `expected`, or None if they fit."""
    if not isinstance(saved, dict):
        return "it holds no state_dict"
    problems = [f"{k} is missing" for k in expected if k not in saved]
    problems += [f"{k} is not in the model" for k in saved if k not in expected]
    problems += [
        f"{k} is {list(saved[k].shape)}, the model's is {list(v.shape)}"
        for k, v in expected.items()
        if k in saved and getattr(saved[k], "shape", None) != v.shape
    ]
    if not problems:
        return None
    return problems[0] + (f" (and {len(problems) - 1} more)" if len(problems) > 1 else "")


def set_aside(checkpoint: Path, suffix: str, label: str, why: str) -> None:
    checkpoint.rename(checkpoint.with_suffix(suffix))
    print(
        f"rnnlab: {label}: cannot resume from {checkpoint} ({why}); set aside as "
        f"{checkpoint.with_suffix(suffix).name}, starting again",
        file=sys.stderr,
        flush=True,
    )


def fit_module(
    cfg: RunConfig,
    module: pl.LightningModule,
    train_loader: DataLoader,
    valid_loader: DataLoader,
    run_id: str,
    monitor: str,
    mode: str,
    vocab_size: int,
    callbacks: tuple[Callback, ...] = (),
    workdir: str | Path | None = None,
    validation_words: Callable[[Mapping[str, Any]], list[str]] | None = None,
) -> FitResult:
    """Fit with the house callbacks (the best checkpoint by `monitor`, the last one at every validation, progress,
    loss and gradient stats, divergence and blow-up stop against a uniform guess over `vocab_size` words, what an exact
    resume needs: tasks/training/resuming.py), metrics batched to the run, and a summary of the fit logged at the end.

    `workdir` holds the checkpoints (default: one fresh directory per run); when it already holds a `last.ckpt`
    (a study cell that was interrupted), training continues from it instead of starting again, exactly as it would
    have gone on (the train loader a `ResumableLoader`)."""
    # A study cell's checkpoints (it has a workdir of its own) travel with its run when the store is a server that
    # several machines share: any of them can resume it (tasks/record/shipped.py). On a local store, the local
    # workdir is all a resume needs.
    ship = workdir is not None and not is_local_store(tracking_uri())
    workdir = Path(workdir) if workdir else run_dir(run_id)
    checkpoints = workdir / "checkpoints"
    resume_from = resumable(checkpoints / "last.ckpt", cfg.run_name or run_id, module)
    set_tags(run_id, {"torch.threads": str(torch.get_num_threads())})  # as set for this run (train.num_threads)
    if resume_from:
        set_tags(run_id, {"rnnlab.resumed_from_step": resume_from[1], "rnnlab.resumed_from": resume_from[0]})
    # Both written as a validation ends, the epoch's last included, never at the epoch's end (Lightning's default when
    # validating once an epoch): a fit resumed from a checkpoint of an epoch's end, with a step budget, sets its
    # sampler's epoch one too far (lightning/pytorch/loops/fit_loop.py, measured); from one of the epoch's last batch,
    # as from any other batch, it goes on exactly. `last.ckpt` at every validation, improved or not: a resumed fit
    # repeats no more than the steps since. After `best` (Lightning keeps the checkpoint callbacks' order), so it
    # holds best's choice.
    at_validation = {"dirpath": checkpoints, "save_on_train_epoch_end": False, "enable_version_counter": False}
    best = ModelCheckpoint(filename="best", monitor=monitor, mode=mode, **at_validation)
    last = ModelCheckpoint(filename="last", monitor=None, **at_validation)
    gradients = GradientStats(cfg.train.clip)
    losses = TrainingLoss(
        uniform_loss(vocab_size), cfg.train.blowup_ratio, cfg.train.blowup_window, cfg.train.blowup_after
    )
    progress = Progress(gradients, losses, label=cfg.run_name, validation_words=validation_words)
    logger = MlflowMetricsLogger(run_id, ship_checkpoints=ship)
    resume = [RandomStates(), LastValidation()]
    trainer = build_trainer(cfg, workdir, [*callbacks, best, last, losses, gradients, progress, *resume], logger)
    started = time.perf_counter()
    trainer.fit(module, train_loader, valid_loader, ckpt_path=resume_from[0] if resume_from else None)
    fit_seconds = time.perf_counter() - started
    if losses.stop_reason:
        print(f"{progress.prefix}diverged: {losses.stop_reason}", file=sys.stderr, flush=True)
    checkpoint = best.best_model_path
    if not checkpoint:  # stopped before any validation (tiny max_steps, divergence): the final weights are the best
        checkpoint = str(checkpoints / "best.ckpt")
        trainer.save_checkpoint(checkpoint)
    logger.flush()
    tokens_per_second = progress.tokens / progress.train_seconds if progress.train_seconds else 0.0
    summary = {
        "train_loss": losses.final,
        "train_seconds": progress.train_seconds,
        "fit_seconds": fit_seconds,
        "tokens_per_second": tokens_per_second,
        "train_steps": trainer.global_step,
        "clipped_share": gradients.share,
        "max_grad_norm": gradients.max_norm,
        **gradients.layer_means(),
    }
    if losses.stopped_at is not None:
        summary["diverged_step"] = losses.stopped_at
    log_metrics(run_id, {k: v for k, v in summary.items() if v is not None})  # summaries: at step 0, not on a curve
    return FitResult(
        checkpoint,
        losses.stopped_at,
        losses.stop_reason,
        trainer.global_step,
        progress.train_seconds,
        fit_seconds,
        tokens_per_second,
    )


def seed_and_threads(cfg: RunConfig) -> None:
    keep_freed_memory()  # also in worker processes that did not come through the CLI
    hardware.flush_denormals()
    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    if cfg.train.num_threads:
        torch.set_num_threads(cfg.train.num_threads)


def load_weights(checkpoint: str | Path) -> dict[str, torch.Tensor]:
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)
    prefix = "net."
    return {k.removeprefix(prefix): v for k, v in state["state_dict"].items() if k.startswith(prefix)}


def load_trained(net: torch.nn.Module, checkpoint: str | Path) -> torch.nn.Module:
    """`net` with the weights of a checkpoint that `fit_module` wrote, in eval mode."""
    net.load_state_dict(load_weights(checkpoint))
    return net.eval()
