"""Tuning each arm of a study with the same budget: Optuna's samplers, pruners and RDB storage, a pruning callback
that reports by optimizer step, and the expected best score against the number of trials (Dodge et al. 2019).

The searching is Optuna's. Written here, and why: the callback (Optuna's Lightning callback reports by epoch, which
never changes in runs shorter than an epoch), and the expected-best curve (a closed form of a few lines that no
maintained library exposes).
"""

from __future__ import annotations

import math
import os
import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import optuna
from lightning.pytorch.callbacks import Callback

from rnnlab.study import Pruner, Range, Sampler, StudyConfig

optuna.logging.set_verbosity(optuna.logging.WARNING)  # one line per trial from rnnlab instead

PRUNED = "pruned"  # a trial's outcome beside trained, diverged and failed_to_learn (tasks/outcome.py)


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
        return optuna.pruners.HyperbandPruner(min_resource=max(1, spec.warmup_steps),
                                              max_resource=max_steps or "auto")
    return optuna.pruners.MedianPruner(n_startup_trials=spec.startup_trials, n_warmup_steps=spec.warmup_steps)


def direction(goal: str) -> str:
    return "minimize" if goal == "min" else "maximize"


def search_name(study: str, arm: str, digest: str) -> str:
    """One Optuna study per arm and search definition: a changed space, budget or sampler starts a new search."""
    return f"{study}/{arm}/{digest}"


def open_search(cfg: StudyConfig, arm: str, digest: str, storage: str) -> optuna.Study:
    tune = cfg.tune
    max_steps = (tune.budget.max_steps or cfg.budget.max_steps)
    return optuna.create_study(study_name=search_name(cfg.study, arm, digest), storage=storage,
                               sampler=make_sampler(tune.sampler), pruner=make_pruner(tune.pruner, max_steps),
                               direction=direction(cfg.metric.goal), load_if_exists=True)


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

    def __init__(self, storage: str, study_name: str, trial_id: int, pruner: optuna.pruners.BasePruner,
                 curve: str) -> None:
        self.storage, self.study_name, self.trial_id, self.pruner, self.curve = (storage, study_name, trial_id,
                                                                                  pruner, curve)
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


@dataclass(frozen=True)
class Curve:
    """Expected best score of the best of n trials, n = 1..N, with a bootstrap band (over the trials)."""

    n: np.ndarray
    expected: np.ndarray
    low: np.ndarray
    high: np.ndarray


def expected_best(values: list[float] | np.ndarray, goal: str, n_max: int | None = None) -> np.ndarray:
    """E[best of n trials drawn with replacement from these N] for n = 1..n_max (Dodge et al. 2019, eq. 1): with the
    values sorted from worst to best, v(1..N), E = Σ_i v(i) · [(i/N)^n − ((i−1)/N)^n]. A trial that diverged counts
    with its value (±inf for the worst): it is a draw the search can make."""
    v = np.asarray(values, dtype=float)
    v = np.sort(v)[::-1] if goal == "min" else np.sort(v)  # worst first
    total = len(v)
    i = np.arange(1, total + 1)
    out = []
    for n in range(1, (n_max or total) + 1):
        weights = (i / total) ** n - ((i - 1) / total) ** n
        finite = weights > 0
        with np.errstate(invalid="ignore"):
            out.append(float(np.sum(v[finite] * weights[finite])) if np.all(np.isfinite(v[finite])) else
                       (math.inf if goal == "min" else -math.inf))
    return np.array(out)


def expected_best_curve(values: list[float], goal: str, resamples: int = 1000, seed: int = 0) -> Curve:
    values = np.asarray(values, dtype=float)
    n = np.arange(1, len(values) + 1)
    expected = expected_best(values, goal)
    rng = np.random.default_rng(seed)
    draws = np.array([expected_best(rng.choice(values, size=len(values), replace=True), goal)
                      for _ in range(resamples)])
    with np.errstate(invalid="ignore"):
        low, high = np.nanpercentile(draws, 2.5, axis=0), np.nanpercentile(draws, 97.5, axis=0)
    return Curve(n, expected, low, high)


def leader_by_budget(curves: dict[str, Curve], goal: str) -> list[str]:
    """The arm with the better expected best score at each number of trials 1..N."""
    arms = list(curves)
    best = min if goal == "min" else max
    length = min(len(c.expected) for c in curves.values())
    return [best(arms, key=lambda a: curves[a].expected[k]) for k in range(length)]


def ranking_words(leaders: list[str], labels: dict[str, str]) -> str:
    """"with at most 3 trials per arm X looks better; from 4 on, Y" (or: X at every budget from 1 to N)."""
    if not leaders:
        return "no trials to compare"
    parts, start = [], 1
    for k in range(1, len(leaders) + 1):
        if k == len(leaders) or leaders[k] != leaders[k - 1]:
            parts.append((start, k, leaders[k - 1]))
            start = k + 1
    if len(parts) == 1:
        return (f"`{labels.get(parts[0][2], parts[0][2])}` has the better expected best score at every budget from "
                f"1 to {len(leaders)} trials per arm")
    first = parts[0]
    words = [f"with at most {first[1]} trial{'s' if first[1] > 1 else ''} per arm `{labels.get(first[2], first[2])}` "
             "looks better"]
    words += [f"from {p[0]} on, `{labels.get(p[2], p[2])}`" if p is parts[-1] else
              f"from {p[0]} to {p[1]}, `{labels.get(p[2], p[2])}`" for p in parts[1:]]
    return "; ".join(words)


def trial_summary(trials: list[dict[str, Any]]) -> dict[str, Any]:
    """Per arm: how its trials ended, its pruned share and the optimizer steps pruning saved."""
    outcomes: dict[str, int] = {}
    for t in trials:
        outcomes[t["outcome"]] = outcomes.get(t["outcome"], 0) + 1
    budget = sum(t["budget_steps"] for t in trials)
    saved = sum(t["budget_steps"] - t["steps"] for t in trials if t["outcome"] == PRUNED)
    return {"trials": len(trials), "outcomes": outcomes,
            "pruned_share": outcomes.get(PRUNED, 0) / len(trials) if trials else 0.0,
            "steps_saved_share": saved / budget if budget else 0.0}


def leader(c: Any) -> str | None:
    """The variant ahead of every other that trained, each paired 95% interval excluding no effect; else None."""
    from tasks.verdict import contrast  # the answers' own paired contrasts

    best = c.table.loc[c.table["best"], "variant"]
    if best.empty:
        return None
    first = best.iloc[0]
    for row in c.table.itertuples(index=False):
        if row.variant != first and row.trained and contrast(c, first, row.variant).direction != "better":
            return None
    return first


def recipe_sentence(tuned: Any, base: Any, seeds: int) -> str:
    """Whether the base recipe's answer holds, reverses or becomes not distinguishable once each arm is tuned."""
    label = dict(zip(tuned.table["variant"], tuned.table["variant"]))
    was, now = leader(base), leader(tuned)
    if was and now and was == now:
        return f"The base-recipe answer holds once each arm is tuned: `{label[now]}` leads at both."
    if was and now:
        return (f"The base-recipe answer reverses once each arm is tuned: `{label[was]}` led at the base recipe, "
                f"`{label[now]}` leads tuned.")
    if was:
        return (f"The base-recipe answer (`{label[was]}` leads) becomes not distinguishable with {seeds} seeds once "
                "each arm is tuned.")
    if now:
        return f"At the base recipe the arms were not distinguishable with {seeds} seeds; tuned, `{label[now]}` leads."
    return f"The arms are not distinguishable with {seeds} seeds at either recipe."


def tuned_answer(tuned: Any, tuned_words: Any, base: Any, base_words: Any) -> Any:
    """The tuned comparison's answer, with the base recipe's beside it and whether it held."""
    seeds = int(tuned.table["seeds"].max()) if len(tuned.table) else 0
    text = (f"Each arm at its own tuned setting: {tuned_words.text} At the base recipe (the base config's values): "
            f"{base_words.text} {recipe_sentence(tuned, base, seeds)}")
    return dataclasses.replace(tuned_words, text=text,
                               factors=[*tuned_words.factors, *(f"(base recipe) {line}" for line in base_words.factors)])
