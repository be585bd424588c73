"""One run: prepare data ─► open run ─► train ─► evaluate ─► record. Composes tasks and decides nothing else."""

from __future__ import annotations

import time
from typing import Any

from prefect import flow, task

from rnnlab.schemas.config import RunConfig
from tasks.kinds.steps import evaluate, prepare_data, skipped_eval_splits, train
from tasks.record import tracking
from tasks.record.outcome import DIVERGED, Outcome, judge
from tasks.training.fitting import FitResult

# Bookkeeping, not settings: the run's own name and experiment are the run's attributes in MLflow, not params (as
# params they became columns and a default axis of the compare view's parallel-coordinates plot).
NOT_PARAMS = ("run_name", "experiment")


@task(name="open-run")
def open_run(
    cfg: RunConfig,
    corpus: Any,
    parent_run_id: str | None = None,
    tags: dict[str, str] | None = None,
    params: dict[str, Any] | None = None,
) -> str:
    """`params`: more params beside the config's own (a tuning trial's search settings)."""
    params = {**{k: v for k, v in cfg.flat().items() if k not in NOT_PARAMS}, **(params or {})}
    run_id = tracking.open_run(
        cfg.experiment,
        cfg.run_name,
        params,
        {
            "rnnlab.task": cfg.task,
            "rnnlab.config_digest": cfg.digest(),
            "data.corpus": corpus.name,
            "data.checksum": corpus.checksum,
            **corpus.facts(),
            **skipped_eval_splits(cfg, corpus),
            **(tags or {}),
        },
        parent_run_id=parent_run_id,
    )
    tracking.log_datasets(run_id, corpus.datasets())
    tracking.log_text(run_id, cfg.to_yaml(), "config.yaml")
    for folder, paths in corpus.artifacts().items():
        for path in paths:
            tracking.log_artifact(run_id, path, folder or None)
    return run_id


@task(name="record")
def record(
    run_id: str, outcome: Outcome, fitted: FitResult, metrics: dict[str, float], eval_seconds: float
) -> dict[str, Any]:
    tracking.log_artifact(run_id, fitted.checkpoint, "checkpoints")
    tracking.log_metrics(run_id, {"eval_seconds": eval_seconds})
    tracking.set_tags(run_id, outcome.tags())
    return {
        "diverged_step": fitted.diverged_at,
        "fit_seconds": fitted.fit_seconds,
        "eval_seconds": eval_seconds,
        **metrics,
    }


def run_steps(
    cfg: RunConfig,
    corpus: Any,
    parent_run_id: str | None = None,
    tags: dict[str, str] | None = None,
    workdir: str | None = None,
    params: dict[str, Any] | None = None,
    callbacks: tuple = (),
) -> dict[str, Any]:
    """open run ─► train ─► evaluate (unless diverged) ─► judge its outcome ─► record; the run is closed whatever
    happens. `params` and `callbacks`: more params to record, and Lightning callbacks (a tuning trial's)."""
    run_id = open_run(cfg, corpus, parent_run_id, tags, params)
    with tracking.closing(run_id):
        fitted = train(cfg, corpus, run_id, workdir, callbacks)
        started = time.perf_counter()
        metrics = evaluate(cfg, corpus, run_id, fitted) if fitted.diverged_at is None else {}
        floor = corpus.floor if cfg.eval.floor == "unigram" else None
        outcome = judge(cfg, corpus.output_vocab, metrics, fitted.stop_reason, floor)
        summary = record(run_id, outcome, fitted, metrics, time.perf_counter() - started)
    return {
        "run_id": run_id,
        "experiment": cfg.experiment,
        "status": "FINISHED",
        "outcome": outcome.kind,
        "outcome_reason": outcome.reason,
        "diverged": outcome.kind == DIVERGED,
        "metrics": summary,
    }


@flow(name="train", log_prints=False)
def train_flow(
    cfg: RunConfig, parent_run_id: str | None = None, tags: dict[str, str] | None = None, corpus: Any = None
) -> dict[str, Any]:
    """One run of `cfg`; `corpus`: its corpus, when the caller (the command line) has prepared it already."""
    return run_steps(cfg, corpus if corpus is not None else prepare_data(cfg), parent_run_id, tags)
