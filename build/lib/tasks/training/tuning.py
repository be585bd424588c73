"""Tuning each arm of a study with the same budget: Optuna's samplers, pruners and RDB storage, and a pruning
callback that reports by optimizer step.

The searching is Optuna's. Written here, and why: the callback (Optuna's Lightning callback reports by epoch, which
never changes in runs shorter than an epoch). What the trials mean for the answer: tasks/analysis/tuned_answer.py.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import optuna
from lightning.pytorch.callbacks import Callback

from rnnlab.schemas.study import Pruner, Range, Sampler, StudyConfig

optuna.logging.set_verbosity(optuna.logging.WARNING)  # one line per trial from rnnlab instead


def storage_url(tracking_uri: str, project: Path) -> str:
    """Optuna's study storage beside the tracking store: the SQLite file next to `mlflow.db`; RNNLAB_OPTUNA_STORAGE
    names another (a tracking server's database host: give Optuna a database of its own there, since Optuna and
    MLflow would both keep an `alembic_version` table in one)."""
    if os.environ.get("RNNLAB_OPTUNA_STORAGE"):
        return os.environ["RNNLAB_OPTUNA_STORAGE"]
    if tracking_uri.startswith("sqlite:///"):
        return f"sqlite:///{Path(tracking_uri.removeprefix('sqlite:///')).parent / 'optuna.db'}"
    return f"sqlite:///{project / 'mlruns' / 'optuna.db'}"


def distribution(spec: Range) -> optuna.distributions.BaseDistribution:
    low, high = spec.bounds
    if spec.kind == "int_uniform":
        return optuna.distributions.IntDistribution(int(low), int(high))
    return optuna.distributions.FloatDistribution(float(low), float(high), log=spec.kind == "log_uniform")


def make_sampler(spec: Sampler) -> optuna.samplers.BaseSampler:
    if spec.name == "random":
        return optuna.samplers.RandomSampler(seed=spec.seed)
    return optuna.samplers.TPESampler(seed=spec.seed)


def make_pruner(spec: Pruner, max_steps: int | None) -> optuna.pruners.BasePruner:
    if spec.name == "none":
        return optuna.pruners.NopPruner()
    if spec.name == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=max(1, spec.warmup_steps), max_resource=max_steps or "auto")
    return optuna.pruners.MedianPruner(n_startup_trials=spec.startup_trials, n_warmup_steps=spec.warmup_steps)


def direction(goal: str) -> str:
    return "minimize" if goal == "min" else "maximize"


def search_name(study: str, arm: str, digest: str) -> str:
    """One Optuna study per arm and search definition: a changed space, budget or sampler starts a new search."""
    return f"{study}/{arm}/{digest}"


def open_search(cfg: StudyConfig, arm: str, digest: str, storage: str) -> optuna.Study:
    tune = cfg.tune
    max_steps = tune.budget.max_steps or cfg.budget.max_steps
    return optuna.create_study(
        study_name=search_name(cfg.study, arm, digest),
        storage=storage,
        sampler=make_sampler(tune.sampler),
        pruner=make_pruner(tune.pruner, max_steps),
        direction=direction(cfg.metric.goal),
        load_if_exists=True,
    )


def counted(trial: optuna.trial.FrozenTrial) -> bool:
    """A trial that used up one of its arm's tries: finished, pruned, diverged or failed to learn alike."""
    return trial.state in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)


def reclaim_interrupted(search: optuna.Study) -> int:
    """Trials left RUNNING by an execution that was killed: closed as FAIL (they never count) and their settings
    queued again, so the next trial retries the same point under a new number. Returns how many."""
    stale = [t for t in search.get_trials(deepcopy=False) if t.state == optuna.trial.TrialState.RUNNING]
    for trial in stale:
        search.tell(trial.number, state=optuna.trial.TrialState.FAIL, skip_if_finished=True)
        search.enqueue_trial(trial.params, user_attrs={"retry_of": trial.number})
    return len(stale)


class PruneBySteps(Callback):
    """Reports the validation curve to the trial at each validation, keyed by the optimizer step, and stops the
    fit as soon as the pruner says so. `curve`: the logged key Lightning's callback metrics hold (valid_nll)."""

    def __init__(
        self, storage: str, study_name: str, trial_id: int, pruner: optuna.pruners.BasePruner, curve: str
    ) -> None:
        self.storage, self.study_name, self.trial_id, self.pruner, self.curve = (
            storage,
            study_name,
            trial_id,
            pruner,
            curve,
        )
        self.pruned_at: int | None = None
        self.value_at_prune: float | None = None
        self._trial: optuna.Trial | None = None

    @property
    def trial(self) -> optuna.Trial:
        if self._trial is None:
            search = optuna.load_study(study_name=self.study_name, storage=self.storage, pruner=self.pruner)
            self._trial = optuna.Trial(search, self.trial_id)
        return self._trial

    def on_validation_end(self, trainer, module) -> None:
        if trainer.sanity_checking or self.curve not in trainer.callback_metrics:
            return
        value = float(trainer.callback_metrics[self.curve])
        if not math.isfinite(value):
            return  # a blown-up model: the blow-up rule ends it, as a finding
        step = trainer.global_step
        self.trial.report(value, step)
        if self.trial.should_prune():
            self.pruned_at, self.value_at_prune = step, value
            trainer.should_stop = True
