"""Checkpoints that travel with their run: a study cell trained against a tracking server stores each checkpoint
Lightning writes with the run's artifacts (`checkpoints/last.ckpt`, `checkpoints/best.ckpt`: see
tasks/record/metrics_logger.py), and the machine that next claims the cell fetches them when it has none of its own
(the cell was interrupted on another machine), so training continues from the shipped step instead of step 0."""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path
from typing import Any

from tasks.record import tracking

SHIPPED = ("last.ckpt", "best.ckpt")


def interrupted_runs(experiment: str, cell_key: str) -> list[Any]:
    """The cell's runs that did not finish (KILLED, FAILED, or RUNNING and about to be swept), newest first."""
    mlflow = tracking.client()
    found = mlflow.get_experiment_by_name(experiment)
    if found is None:
        return []
    return mlflow.search_runs(
        [found.experiment_id],
        f"tags.`rnnlab.cell_key` = '{cell_key}' and attributes.status != 'FINISHED'",
        order_by=["attributes.start_time DESC"],
        max_results=20,
    )


def fetch_shipped(experiment: str, cell_key: str, checkpoints: Path, label: str) -> str | None:
    """Into `checkpoints` (a cell's local checkpoint folder, which holds no `last.ckpt`), the checkpoints shipped by
    the newest interrupted run of the cell that shipped any; returns that run's id, or None when there is none."""
    mlflow = tracking.client()
    for run in interrupted_runs(experiment, cell_key):
        run_id = run.info.run_id
        names = {Path(a.path).name for a in mlflow.list_artifacts(run_id, "checkpoints")}
        if "last.ckpt" not in names:
            continue
        checkpoints.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=checkpoints) as tmp:
            for name in SHIPPED:
                if name in names:
                    fetched = Path(mlflow.download_artifacts(run_id, f"checkpoints/{name}", tmp))
                    relocate(fetched, checkpoints)
                    fetched.replace(checkpoints / name)  # whole files only: a resume never sees half of one
        print(
            f"rnnlab: [{label}] fetched the checkpoints of interrupted run {run_id} (another machine's, or an earlier "
            "execution's)",
            file=sys.stderr,
            flush=True,
        )
        return run_id
    return None


def relocate(checkpoint: Path, folder: Path) -> None:
    """Point the checkpoint callbacks' saved paths at `folder`. Lightning's ModelCheckpoint keeps absolute paths in
    its state (its folder, the best file); restored in another folder, it forgets its best score and would call the
    first validation after the resume the best. The project's path may differ between machines, so the paths are
    rewritten here: no Lightning API moves a checkpoint (by hand, therefore)."""
    import torch

    target = os.path.realpath(folder)  # as Lightning keeps its folder
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)
    changed = False
    for key, saved in state.get("callbacks", {}).items():
        if not key.startswith("ModelCheckpoint") or not saved.get("dirpath"):
            continue
        old = str(saved["dirpath"])
        if old == str(folder):
            continue
        moved = {
            k: (str(folder) + v[len(old) :] if isinstance(v, str) and v.startswith(old) else v)
            for k, v in saved.items()
        }
        if isinstance(saved.get("best_k_models"), dict):
            moved["best_k_models"] = {
                (target + k[len(old) :] if k.startswith(old) else k): v for k, v in saved["best_k_models"].items()
            }
        state["callbacks"][key] = moved
        changed = True
    if changed:
        torch.save(state, checkpoint)
