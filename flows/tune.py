"""A tuned study's search: every arm (variant of the grid) gets `tune.trials` Optuna trials, each a task run of the
study flow under its `concurrency`, with the same space, per-trial budget and sampler seed; then each arm's best
setting. Composes; the searching is Optuna's (tasks/training/tuning.py)."""

from __future__ import annotations

import hashlib
import json
import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
import torch
from prefect import task
from prefect.futures import wait
from prefect.task_runners import TaskRunner

from flows.train import run_steps
from rnnlab.runtime.cell_status import output_to
from rnnlab.runtime.live import StudyDisplay
from rnnlab.schemas.config import RunConfig, build, deep_merge
from rnnlab.schemas.study import Cell, Study, dotted, run_name, show
from tasks.analysis.tuned_answer import PRUNED, draw_value, worst_score
from tasks.kinds.registry import kind_of
from tasks.kinds.steps import data_key
from tasks.record import tracking
from tasks.training.fitting import StatusFile
from tasks.training.tuning import (
    PruneBySteps,
    counted,
    distribution,
    make_pruner,
    open_search,
    reclaim_interrupted,
    search_name,
)


@dataclass(frozen=True)
class Arm:
    id: str
    label: str
    factors: dict[str, Any]
    cells: tuple[Cell, ...]  # the arm's cells at the base recipe, one per seed


def arms_of(study: Study) -> list[Arm]:
    arms = []
    for vid in study.variants:
        cells = tuple(c for c in study.cells if c.id == vid)
        arms.append(Arm(vid, cells[0].label, cells[0].factors, cells))
    return arms


def search_digest(study: Study) -> str:
    """What makes two searches the same: the space, trials, per-trial budget, sampler, pruner, and the arm configs."""
    tune = study.config.tune
    text = json.dumps(
        {
            "tune": tune.model_dump(mode="json"),
            "budget": study.config.budget.model_dump(mode="json"),
            "cells": [c.config.digest() for c in study.cells],
        },
        sort_keys=True,
    )
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def with_values(config: RunConfig, values: dict[str, Any], **top: Any) -> RunConfig:
    tree = config.model_dump(mode="json")
    for key, value in values.items():
        tree = deep_merge(tree, dotted(key, value))
    return build(deep_merge(tree, top), f"tuned config {values}")


def trial_config(study: Study, arm: Arm, params: dict[str, Any], number: int) -> RunConfig:
    """The arm's first-seed cell, with the trial's values and the per-trial budget (the study's unless set)."""
    budget = {f"train.{k}": v for k, v in study.config.tune.budget.model_dump().items() if v is not None}
    return with_values(arm.cells[0].config, {**params, **budget}, run_name=f"{arm.label} trial {number}")


def search_params(study: Study) -> dict[str, Any]:
    """The search's settings, recorded as params on every trial run (the same for every arm, by construction)."""
    tune = study.config.tune
    params = {
        "tune.trials": tune.trials,
        "tune.sampler": tune.sampler.name,
        "tune.sampler.seed": tune.sampler.seed,
        "tune.pruner": tune.pruner.name,
        "tune.pruner.warmup_steps": tune.pruner.warmup_steps,
        "tune.pruner.startup_trials": tune.pruner.startup_trials,
    }
    params.update({f"tune.space.{k}": json.dumps(v.model_dump(exclude_none=True)) for k, v in tune.space.items()})
    params.update({f"tune.budget.{k}": v for k, v in tune.budget.model_dump().items() if v is not None})
    return params


def curve_key(study: Study) -> str:
    """The callback metric a trial reports at each validation (Lightning's logged name)."""
    return kind_of(study.cells[0].config).tuning_metric


@task(name="trial")
def run_trial(
    study: Study,
    arm: Arm,
    number: int,
    trial_id: int,
    params: dict[str, Any],
    corpus: Any,
    parent_run_id: str,
    storage: str,
    name: str,
    search: str,
    threads: int,
    status: str | None = None,
    log: str | None = None,
) -> dict[str, Any]:
    """One trial: the arm at the sampled values, trained for the per-trial budget, reported to Optuna by step.
    `status` and `log`: as a study cell's (flows/study.py run_cell)."""
    with output_to(log):
        if threads:
            torch.set_num_threads(threads)
        cfg = trial_config(study, arm, params, number)
        budget_steps = cfg.train.max_steps or 0
        pruner = PruneBySteps(
            storage, name, trial_id, make_pruner(study.config.tune.pruner, budget_steps or None), curve_key(study)
        )
        tags = {
            "rnnlab.role": "trial",
            "rnnlab.study": study.name,
            "rnnlab.arm": arm.id,
            "rnnlab.variant": arm.label,
            "rnnlab.trial": str(number),
            "rnnlab.search": search,
            **{f"factor.{k}": show(v) for k, v in arm.factors.items()},
        }
        result = run_steps(
            cfg,
            corpus,
            parent_run_id,
            tags,
            params={f"tuned.{k}": v for k, v in params.items()} | search_params(study),
            callbacks=(pruner, *([StatusFile(status, cfg.run_name or "")] if status else [])),
        )
        outcome = result["outcome"]
        if pruner.pruned_at is not None:
            outcome = PRUNED
            tracking.set_tags(
                result["run_id"],
                {
                    "rnnlab.outcome": PRUNED,
                    "rnnlab.outcome_reason": f"pruned by the {study.config.tune.pruner.name} pruner at step "
                    f"{pruner.pruned_at}",
                    "rnnlab.pruned_step": str(pruner.pruned_at),
                },
            )
        value = result["metrics"].get(study.config.metric.name)
        steps = int(result["metrics"].get("train_steps") or pruner.pruned_at or 0)
        return {
            "arm": arm.id,
            "number": number,
            "run_id": result["run_id"],
            "outcome": outcome,
            "value": value,
            "steps": steps,
            "budget_steps": budget_steps,
            "params": params,
        }


def objective_value(study: Study, trial: dict[str, Any], vocab: int) -> float:
    """What Optuna is told: the deciding metric; a diverged trial, a uniform guess's score (it still counts), the
    same draw as the expected-best curve counts (tasks/analysis/tuned_answer.py worst_score)."""
    metric, goal = study.config.metric.name, study.config.metric.goal
    return draw_value(trial["outcome"], trial["value"], worst_score(metric, goal, vocab))


def search_arms(
    study: Study,
    corpora: dict[str, Any],
    parent_run_id: str,
    runner: TaskRunner,
    storage: str,
    threads: int,
    on_interrupt: Callable[[list], None],
    display: StudyDisplay,
) -> dict[str, dict[str, Any]]:
    """Every arm's trials, round robin over the arms, `concurrency` at a time; resumes a killed search (never more
    than `trials` counted trials per arm, never a trial number twice). Returns, per arm, its best values and trials.
    The progress: a line per finished trial, or the live `display` (a line above it as each trial ends)."""
    tune, cfg = study.config.tune, study.config
    digest = search_digest(study)
    arms = arms_of(study)
    searches = {arm.id: open_search(cfg, arm.id, digest, storage) for arm in arms}
    for search in searches.values():
        reclaim_interrupted(search)
    space = {key: distribution(spec) for key, spec in tune.space.items()}
    done = {a.id: sum(counted(t) for t in searches[a.id].get_trials(deepcopy=False)) for a in arms}
    total, finished = tune.trials * len(arms), sum(min(n, tune.trials) for n in done.values())
    running: dict[Any, tuple[Arm, optuna.Trial]] = {}
    started, resumed = time.monotonic(), finished
    if finished:
        print(f"rnnlab: tuning: {finished}/{total} trials already finished (a resumed search)", file=sys.stderr)
    progress = display.progress
    steps = {  # each arm's trial budget in optimizer steps, for the display's ETA
        a.id: kind_of(a.cells[0].config).steps(trial_config(study, a, {}, 0), corpora[data_key(a.cells[0].config)])
        for a in arms
    }
    progress.trials(total, finished)
    progress.plan(sum(max(0, tune.trials - done[a.id]) * steps[a.id] for a in arms))

    def launch() -> bool:
        busy = {a.id: sum(1 for arm, _ in running.values() if arm.id == a.id) for a in arms}
        for arm in sorted(arms, key=lambda a: done[a.id] + busy[a.id]):  # round robin: the arm with fewest first
            if done[arm.id] + busy[arm.id] < tune.trials:
                search = searches[arm.id]
                trial = search.ask(space)
                name = search_name(cfg.study, arm.id, digest)
                label = f"{arm.label} trial {trial.number}"
                status = progress.submitted(f"{arm.id} trial {trial.number}", label, steps[arm.id], trial=True)
                future = runner.submit(
                    run_trial,
                    {
                        "study": study,
                        "arm": arm,
                        "number": trial.number,
                        "trial_id": trial._trial_id,
                        "params": trial.params,
                        "corpus": corpora[data_key(arm.cells[0].config)],
                        "parent_run_id": parent_run_id,
                        "storage": storage,
                        "name": name,
                        "search": digest,
                        "threads": threads,
                        "status": status,
                        "log": str(Path(status).with_suffix(".log")) if status and display.live else None,
                    },
                )
                running[future] = (arm, trial)
                return True
        return False

    try:
        while len(running) < cfg.concurrency and launch():
            pass
        while running:
            ready, _ = wait(list(running), timeout=1)  # Prefect waits for all: poll, for the first ones done
            ended = []  # (count, what happened), printed once their successors are launched: "running" is then true
            for future in ready:
                arm, trial = running.pop(future)
                key = f"{arm.id} trial {trial.number}"
                try:
                    result = future.result()
                except Exception as err:  # a crashed trial: recorded as failed, and it is tried again
                    searches[arm.id].tell(trial.number, state=optuna.trial.TrialState.FAIL)
                    progress.ended(key)
                    print(
                        f"rnnlab: [{arm.label} trial {trial.number}] crashed: {type(err).__name__}: {err}",
                        file=sys.stderr,
                        flush=True,
                    )
                    continue
                if result["outcome"] == PRUNED:
                    searches[arm.id].tell(trial.number, state=optuna.trial.TrialState.PRUNED)
                else:
                    vocab = corpora[data_key(arm.cells[0].config)].output_vocab
                    searches[arm.id].tell(trial.number, objective_value(study, result, vocab))
                done[arm.id] += 1
                finished += 1
                progress.trial_finished(key)
                value = result["value"]
                shown = f" {cfg.metric.name} {value:,.2f}" if value is not None and math.isfinite(value) else ""
                ended.append(
                    (
                        finished,
                        f"[{arm.label} trial {trial.number}] {result['outcome'].replace('_', ' ')}"
                        f"{shown} at "
                        + ", ".join(
                            f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in result["params"].items()
                        ),
                    )
                )
            while len(running) < cfg.concurrency and launch():
                pass
            for count, what in ended:
                if display.live:
                    display.event(f"✓ {what.removeprefix('[').replace('] ', ': ', 1)}")
                else:
                    print(
                        f"rnnlab: tuning: {count}/{total} trials done · {len(running)} running · "
                        f"{trial_clock(started, count - resumed, total - count)} · {what}",
                        file=sys.stderr,
                        flush=True,
                    )
            display.show()
    except BaseException:
        on_interrupt(list(running))
        raise
    return {arm.id: best_of(searches[arm.id], arm, cfg.metric.goal) for arm in arms}


def trial_clock(started: float, finished_here: int, left: int) -> str:
    """Elapsed minutes and an ETA from the mean trial time so far (trials run `concurrency` at a time, so the mean
    wall time per finished trial already accounts for the parallelism)."""
    elapsed = time.monotonic() - started
    eta = "?" if not finished_here else f"{elapsed / finished_here * left / 60:.1f} min"
    return f"{elapsed / 60:.1f} min elapsed · ETA {eta} for the search"


def best_of(search: optuna.Study, arm: Arm, goal: str) -> dict[str, Any]:
    trials = [t for t in search.get_trials(deepcopy=False) if counted(t)]
    scored = [
        t
        for t in trials
        if t.state == optuna.trial.TrialState.COMPLETE and t.value is not None and math.isfinite(t.value)
    ]
    pick = (min if goal == "min" else max)(scored, key=lambda t: t.value) if scored else None
    return {
        "arm": arm.id,
        "label": arm.label,
        "values": dict(pick.params) if pick else {},
        "value": pick.value if pick else None,
        "trial": pick.number if pick else None,
        "trials": [
            {"number": t.number, "state": t.state.name, "value": t.value, "params": dict(t.params)} for t in trials
        ],
    }


def tuned_cells(study: Study, best: dict[str, dict[str, Any]]) -> list[Cell]:
    """Each arm at its best values, over the study's seeds (an arm with no scored trial keeps the base recipe)."""
    cells = []
    for arm in arms_of(study):
        values = best[arm.id]["values"]
        label = f"{arm.label} tuned"
        for cell in arm.cells:
            config = with_values(cell.config, values, run_name=run_name(label, cell.seed))
            cells.append(Cell(cell.id, cell.factors, cell.seed, config, label, recipe="tuned"))
    return cells
