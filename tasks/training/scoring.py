"""The shared floor of scoring, the same for every task kind: each evaluation split in turn, and a recorded run read
back from the store (its status, its files, its config) to score it on other files later."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from pathlib import Path

from mlflow.exceptions import MlflowException

from rnnlab.schemas.config import RunBase, RunConfig, build, load_yaml
from tasks.record.tracking import download_artifact, get_run, log_metrics


def score_each_split(
    run_id: str, splits: Iterable[str], available: Iterable[str], score: Callable[[str], dict[str, float]]
) -> dict[str, float]:
    """`score(split)` for each asked-for split the corpus has (a corpus may lack a test split: the run says so, see
    `skipped_splits`), logged as summaries (step 0) of the selected checkpoint."""
    metrics: dict[str, float] = {}
    for split in splits:
        if split in available:
            metrics.update(score(split))
    log_metrics(run_id, metrics)
    return metrics


def skipped_splits(asked: Iterable[str], available: Iterable[str], corpus: str) -> dict[str, str]:
    """The tag of a run whose eval.splits names a split its corpus lacks (PTB here has no test split), so that no
    one reads the missing test score as forgotten: {} when every split is there."""
    missing = [s for s in asked if s not in set(available)]
    if not missing:
        return {}
    return {"rnnlab.eval.skipped": f"{', '.join(missing)}: corpus '{corpus}' has no such split"}


def finished_run(run_id: str, purpose: str):
    """The run, if it FINISHED: a run that failed, was killed or is still training has no best checkpoint recorded
    (flows/train.py `record` logs it last), and MLflow would only say that a download failed."""
    run = get_run(run_id)
    if run.info.status != "FINISHED":
        raise LookupError(
            f"run {run_id} is {run.info.status}: it has no checkpoint to {purpose} (only a FINISHED run has one)"
        )
    return run


def run_file(run_id: str, path: str, tmp: str) -> Path:
    """One of a recorded run's artifacts, or a LookupError naming the one it lacks."""
    try:
        return download_artifact(run_id, path, tmp)
    except (MlflowException, OSError):
        raise LookupError(
            f"run {run_id} has no artifact {path}: it was not recorded by `rnnlab train`, or its artifacts were deleted"
        ) from None


def recorded_config(run_id: str, tmp: str, schema: type[RunBase], purpose: str, otherwise: str):
    """(run, config) of a FINISHED run whose config is of the task kind's `schema`; `otherwise` ends the message for
    a run of another kind (how that one is used instead)."""
    run = finished_run(run_id, purpose)
    cfg: RunConfig = build(load_yaml(run_file(run_id, "config.yaml", tmp).read_text()), f"run {run_id} config.yaml")
    if not isinstance(cfg, schema):
        raise LookupError(f"run {run_id} is a {cfg.task} run{otherwise}")
    return run, cfg


def metric_name(path: Path) -> str:
    return "file." + re.sub(r"[^0-9A-Za-z_.-]+", "_", path.name)
