"""A study: prepare each corpus once ─► open the study's parent run ─► every cell × seed as a task (finished cells
reused, interrupted ones resumed from their checkpoint) ─► comparison table ─► record. Composes, decides nothing
else."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import pandas as pd
from prefect import flow, task
from prefect.futures import wait
from prefect.task_runners import TaskRunner

from flows.train import run_steps
from flows.tune import search_arms, search_digest, tuned_cells
from rnnlab.runtime.cell_claim import claimed, holder
from rnnlab.runtime.cell_status import forget_stale_status, output_to, status_dir
from rnnlab.runtime.env import project_dir
from rnnlab.runtime.live import StudyDisplay
from rnnlab.runtime.progress import StudyProgress
from rnnlab.runtime.store import is_local_store, tracking_at
from rnnlab.runtime.workers import (
    in_cell_worker,
    interrupt_workers,
    start_workers,
    task_runner,
    threads_per_cell,
    why_failed,
    workers_share_this_prefect_api,
)
from rnnlab.schemas.study import Cell, Study, load_study, show
from tasks.analysis.answer import answer
from tasks.analysis.compare import as_json, cell_results, compare, log_comparison, metric_key, summary_metrics
from tasks.analysis.held_out import NAMED_TAG, SCORED_TAG, SPLIT_TAG, named_variants, runs_to_score
from tasks.analysis.tuned_answer import expected_best, trial_values, tuned_answer
from tasks.kinds.registry import kind_of
from tasks.kinds.steps import check_cells_fit, corpus_here, has_split, prepare_data, score_held_out
from tasks.kinds.steps import data_key as corpus_key
from tasks.record import tracking
from tasks.record.orphans import close_stale, sweep_orphans
from tasks.record.outcome import DIVERGED, FAILED_TO_LEARN, TRAINED, StudyFailed
from tasks.record.shipped import fetch_shipped
from tasks.training.fitting import StatusFile, cell_dir
from tasks.training.tuning import storage_url

# What a local cell worker imports as it starts, while its collector is paused: this flow (and so everything a cell
# needs) and the cells' store.
CELL_WORKER_PRELOAD = ("flows.study", "tasks.record.tracking:import_store")


def cell_key(cell: Cell, data_checksum: str, code_version: str) -> str:
    """A cell's identity: its resolved config, its data and the code that trains it. Same key, same result."""
    return hashlib.sha256(f"{cell.config.digest()}|{data_checksum}|{code_version}".encode()).hexdigest()[:16]


def data_key(cell: Cell) -> str:
    return corpus_key(cell.config)


@task(name="open-study-run")
def open_study_run(study: Study, keys: list[str], corpora: dict[str, Any]) -> str:
    cfg = study.config
    params = {f"study.{k}": v for k, v in cfg.model_dump(mode="json").items() if k not in ("factors", "exclude")}
    # The grid's values, list by factor: `grid.<key>` here; each cell run has its one value as tag `factor.<key>`
    # (and param `<key>`): one name, one meaning.
    params.update({f"grid.{k}": v for k, v in cfg.factors.items()})
    params["study.exclude"] = cfg.exclude
    checksums = {corpus.name: corpus.checksum for corpus in corpora.values()}
    tracking.experiment_id(cfg.study, description=cfg.question)  # the question above the experiment's runs
    run_id = tracking.open_run(
        cfg.study,
        f"study {cfg.study}",
        params,
        {
            "rnnlab.role": "study",
            "rnnlab.study": cfg.study,
            "rnnlab.task": study.cells[0].config.task,
            "rnnlab.study_file": study.source,
            "rnnlab.question": cfg.question,
            "rnnlab.metric": cfg.metric.name,
            "rnnlab.goal": cfg.metric.goal,
            "rnnlab.cells": str(len(study.cells)),
            "data.checksum": ",".join(f"{name}:{sha}" for name, sha in sorted(checksums.items())),
            **({"mlflow.note.content": cfg.question} if cfg.question else {}),
        },
    )
    tracking.log_text(run_id, study.definition(), "study.yaml")
    log_grid(run_id, study.cells, keys)
    return run_id


def log_grid(run_id: str, cells: list[Cell] | tuple[Cell, ...], keys: list[str]) -> None:
    """The execution's cells (`grid.json`): what its comparison reads. A tuned study's cells name their recipe."""
    grid = [
        {
            "variant": c.id,
            "label": c.label,
            "seed": c.seed,
            "cell_key": key,
            "run_name": c.name,
            "factors": {k: show(v) for k, v in c.factors.items()},
            **({"recipe": c.recipe} if c.recipe else {}),
        }
        for c, key in zip(cells, keys)
    ]
    tracking.log_text(run_id, json.dumps(grid, indent=1), "grid.json")


@task(name="cell")
def run_cell(
    cell: Cell,
    corpus: Any,
    study: str,
    parent_run_id: str,
    key: str,
    threads: int,
    store: str,
    shared_prefect: bool,
    fresh_since_ms: int | None = None,
    status: str | None = None,
    log: str | None = None,
) -> dict[str, Any]:
    """Train one cell, unless another process is training it (then wait for it) or has finished it meanwhile (then
    reuse its run). `store`: the study's tracking URI, where the cell records whatever its worker's environment says
    (a Dask worker on another machine); `corpus`: the study's, rebuilt here if its cache is not on this machine;
    `shared_prefect`: the study talks to a Prefect server (which other machines may share), so the claim on the cell
    is held there too, not only on this machine.
    `fresh_since_ms` (with --force): only a run started after that counts as finished, and the cell's old
    checkpoints are discarded. `status`: the file its progress is written to for the study's display
    (rnnlab/runtime/cell_status.py); `log`: where its output goes meanwhile (the display draws on the terminal)."""
    tags = {
        "rnnlab.role": "cell",
        "rnnlab.study": study,
        "rnnlab.variant": cell.label,
        "rnnlab.cell": cell.id,
        "rnnlab.cell_key": key,
        **({"rnnlab.recipe": cell.recipe, "rnnlab.tuned": str(cell.recipe == "tuned").lower()} if cell.recipe else {}),
        **{f"factor.{k}": show(v) for k, v in cell.factors.items()},
    }
    try:
        with (
            output_to(log),
            in_cell_worker(threads),
            tracking_at(store),
            claimed(key, cell.name, cell_dir(key).with_suffix(".lock"), shared_prefect),
        ):
            corpus = corpus_here(cell.config, corpus)
            found = tracking.finished_run(study, key)
            if found and (fresh_since_ms is None or found["start_time"] >= fresh_since_ms):
                print(
                    f"rnnlab: [{cell.name}] reusing run {found['run_id']}, finished by another execution meanwhile",
                    file=sys.stderr,
                    flush=True,
                )
                return found
            tags["rnnlab.claimed_by"] = holder()
            checkpoints = cell_dir(key) / "checkpoints"
            if fresh_since_ms is not None:
                shutil.rmtree(cell_dir(key), ignore_errors=True)
            elif not (checkpoints / "last.ckpt").is_file() and not is_local_store(tracking.tracking_uri()):
                shipped_by = fetch_shipped(study, key, checkpoints, cell.name)  # interrupted on another machine
                if shipped_by:
                    tags["rnnlab.resumed_from_run"] = shipped_by
            callbacks = (StatusFile(status, cell.name),) if status else ()
            return run_steps(cell.config, corpus, parent_run_id, tags, str(cell_dir(key)), callbacks=callbacks)
    except (KeyboardInterrupt, SystemExit) as err:  # its run is closed as KILLED by now
        # As an Exception: the process pool hands a BaseException from a worker to no one (a traceback on a thread
        # of the study, and a cell that never completes).
        raise CellInterrupted(f"interrupted ({err or type(err).__name__})") from None


class CellInterrupted(RuntimeError):
    """A cell stopped by SIGINT/SIGTERM (its run KILLED)."""


def tune_arms(
    study: Study,
    corpora: dict[str, Any],
    parent_run_id: str,
    runner: TaskRunner,
    code: str,
    display: StudyDisplay,
    todo: list[tuple[Cell, str]],
) -> tuple[Study, list[str]]:
    """Search every arm with the same budget (flows/tune.py); record each arm's best values on the parent; return the
    study with its final cells: each arm over the seeds at its best values (tuned) and at the base recipe (base).
    `todo`: the base cells left to train, for the display's ETA (the tuned cells are counted at their budget)."""
    storage = storage_url(tracking.tracking_uri(), project_dir())
    display.progress.plan(
        sum(cell_steps(cell, corpora) for cell, _ in todo) + sum(cell_steps(cell, corpora) for cell in study.cells)
    )
    best = search_arms(
        study, corpora, parent_run_id, runner, storage, threads_per_cell(study), interrupt_workers, display
    )
    digest = search_digest(study)
    tracking.log_text(parent_run_id, json.dumps(best, indent=1, default=str), "tuning.json")
    tracking.set_tags(parent_run_id, {"rnnlab.search": digest, "rnnlab.optuna_storage": storage})
    tracking.log_params(
        parent_run_id, {f"best.{metric_key(b['label'])}.{k}": v for b in best.values() for k, v in b["values"].items()}
    )
    tracking.log_metrics(
        parent_run_id,
        {
            f"best.{metric_key(b['label'])}.{study.config.metric.name}": b["value"]
            for b in best.values()
            if b["value"] is not None and math.isfinite(b["value"])
        },
    )
    log_expected_best(study, parent_run_id, digest)
    study = dataclasses.replace(study, cells=(*study.cells, *tuned_cells(study, best)))
    keys = [cell_key(cell, corpora[data_key(cell)].checksum, code) for cell in study.cells]
    log_grid(parent_run_id, study.cells, keys)
    return study, keys


def log_expected_best(study: Study, parent_run_id: str, digest: str) -> None:
    """Each arm's expected best score against the number of trials, as a metric curve on the parent (step = n)."""
    trials = tracking.trial_runs(study.name, digest)
    metric, goal = study.config.metric.name, study.config.metric.goal
    for _arm, mine in trials.groupby("arm", sort=False) if not trials.empty else []:
        curve = expected_best(trial_values(mine, metric, goal), goal)
        label = metric_key(mine["label"].iloc[0])
        for n, value in enumerate(curve, start=1):
            if math.isfinite(value):
                tracking.log_metrics(parent_run_id, {f"expected_best.{label}.{metric}": float(value)}, step=n)


@task(name="compare")
def compare_and_log(study: str, parent_run_id: str) -> dict[str, Any]:
    """The comparison table and the study's answer in words: logged to the parent run (its artifacts, and its
    description, so the answer is on the run's page)."""
    parent, grid, runs = cell_results(study, parent_run_id)
    c = compare(study, parent, grid, runs)
    result = answer(c)
    if any(g.get("recipe") for g in grid):  # a tuned study: its answer beside the base recipe's
        base = compare(study, *cell_results(study, parent_run_id, recipe="base"))
        result = tuned_answer(c, result, base, answer(base))
    log_comparison(c, result)
    tracking.log_metrics(parent_run_id, summary_metrics(c, {g["variant"]: g.get("label", g["variant"]) for g in grid}))
    tracking.set_tags(
        parent_run_id,
        {
            "mlflow.note.content": f"{c.question}\n\n**Answer.** {result.text}".strip(),
            "rnnlab.answer": result.text[:5000],
        },
    )
    return as_json(c, result)


@task(name="held-out-test")
def test_after_decision(study: Study, corpora: dict[str, Any], parent_run_id: str) -> list[str]:
    """After the decision on validation data: the test split, scored once, for the variants the answer names (their
    trained runs; a run scored by an earlier execution is not scored again). The variants scored are recorded on the
    parent run, or why nothing was."""
    parent, grid, runs = cell_results(study.name, parent_run_id)
    c = compare(study.name, parent, grid, runs)
    named = named_variants(c)
    cells = {(cell.id, cell.seed): cell for cell in study.cells if cell.recipe in ("", "tuned")}  # what was decided
    corpus = corpora[data_key(study.cells[0])]
    if not has_split(corpus, "test"):
        tracking.set_tags(
            parent_run_id, {SPLIT_TAG: f"none: corpus '{corpus.name}' has no test split", NAMED_TAG: json.dumps(named)}
        )
        return []
    scored = (
        set(runs.loc[runs.get(f"tags.{SCORED_TAG}", pd.Series(index=runs.index)).notna(), "run_id"])
        if not runs.empty
        else set()
    )
    for row in runs_to_score(c, named).itertuples(index=False):
        if row.run_id not in scored:
            cell = cells[(row.variant, row.seed)]
            score_held_out(cell.config, corpora[data_key(cell)], row.run_id)
    tracking.set_tags(parent_run_id, {SPLIT_TAG: "test", NAMED_TAG: json.dumps(named)})
    return named


def split_reused(study: Study, keys: list[str], force: bool) -> tuple[list[dict[str, Any]], list[tuple[Cell, str]]]:
    """(results of the cells already finished with the same identity, the (cell, key) pairs left to train)."""
    reused, todo = [], []
    for cell, key in zip(study.cells, keys):
        found = None if force else tracking.finished_run(study.name, key)
        if found:
            reused.append({**found, "cell": cell.name})
        else:
            todo.append((cell, key))
    return reused, todo


def cell_steps(cell: Cell, corpora: dict[str, Any]) -> int:
    """The optimizer steps of a cell's budget (tasks/kinds/estimate.py counts them the same way)."""
    return kind_of(cell.config).steps(cell.config, corpora[data_key(cell)])


def study_progress(study: Study, reused: int, parent_run_id: str) -> StudyProgress:
    """What the display counts: the cells (a tuned study's twice: at the base recipe and tuned), and the runs' status
    files, where the study can read them (not from cells on the machines of a remote Dask cluster)."""
    remote = study.config.runner.kind == "dask" and bool(study.config.runner.address)
    cells = len(study.cells) * (2 if study.config.tune else 1)
    folder = None if remote else status_dir(parent_run_id)
    if folder is not None:
        forget_stale_status(folder.parent)
    return StudyProgress(study.name, cells, reused, study.config.concurrency, DIVERGED, FAILED_TO_LEARN, folder)


def run_grid(
    study: Study,
    corpora: dict[str, Any],
    todo: list[tuple[Cell, str]],
    reused: list[dict[str, Any]],
    parent_run_id: str,
    runner: TaskRunner,
    fresh_since_ms: int | None,
    shared_prefect: bool,
    display: StudyDisplay,
) -> tuple[list[dict[str, Any]], list[str]]:
    results = list(reused)
    failures: list[str] = []
    slots = max(1, min(study.config.concurrency, len(todo)))
    progress = display.progress
    progress.cells(len(study.cells), len(results), slots)
    if results:
        print(f"rnnlab: study: reusing {len(results)} finished cell(s); training {len(todo)}", file=sys.stderr)
    threads = threads_per_cell(study)
    futures = {}
    for cell, key in todo:
        status = progress.submitted(key, cell.name, cell_steps(cell, corpora))
        arguments = {
            "cell": cell,
            "corpus": corpora[data_key(cell)],
            "study": study.name,
            "parent_run_id": parent_run_id,
            "key": key,
            "threads": threads,
            "store": tracking.tracking_uri(),
            "shared_prefect": shared_prefect,
            "fresh_since_ms": fresh_since_ms,
            "status": status,
            "log": log_beside(status) if display.live else None,
        }
        futures[runner.submit(run_cell, arguments)] = (cell, key)
    pending = set(futures)
    display.show(line=True)
    try:
        collect(pending, futures, study, results, failures, display)
    except BaseException:  # Ctrl-C or SIGTERM: interrupt the cells as well, so each records its run as KILLED
        interrupt_workers(list(futures))
        close_stale(study.name, None, "the study was interrupted")
        raise
    return results, failures


def collect(
    pending: set,
    futures: dict,
    study: Study,
    results: list[dict[str, Any]],
    failures: list[str],
    display: StudyDisplay,
) -> None:
    """Wait for the cells: a progress line per completion (and every 30 s), or the live display redrawn every
    second with a line above it as each cell ends."""
    while pending:
        done, pending = wait(list(pending), timeout=display.every)
        for future in done:
            cell, key = futures[future]
            try:
                result = {"reused": False, **future.result(), "cell": cell.name}
            except Exception as err:  # one broken cell must not stop the study
                failures.append(f"{cell.name}: {why_failed(err)}")
                close_stale(study.name, key, f"the cell failed: {why_failed(err)}"[:5000])
                result = None
            else:
                elsewhere = recorded_elsewhere(result)
                if elsewhere:  # its worker's store, not the study's: nobody would ever read it
                    failures.append(f"{cell.name}: {elsewhere}")
                    result = None
                else:
                    results.append(result)
            display.progress.finished(result, key)
            display.event(cell_ended(cell, result, failures[-1] if result is None else "", study.config.metric.name))
        display.show(line=True)


def cell_ended(cell: Cell, result: dict[str, Any] | None, failure: str, metric: str) -> str:
    """A cell's end in a line (above the live display)."""
    if result is None:
        return f"✗ {failure}"[:300]
    words = [result["outcome"].replace("_", " ")]
    if result["metrics"].get("diverged_step") is not None:
        words[0] += f" at step {int(result['metrics']['diverged_step'])}"
    value = result["metrics"].get(metric)
    if isinstance(value, int | float) and math.isfinite(value):
        words.append(f"{metric} {value:,.2f}")
    if result.get("reused"):
        words.append("finished by another execution")
    mark = "✓" if result["outcome"] == TRAINED else "!"  # a finding (diverged, failed to learn), not a success
    return f"{mark} {cell.name}: " + " · ".join(words)


def log_beside(status: str | None) -> str | None:
    """Where a run's output goes while the live display draws on the terminal: beside its status file."""
    return str(Path(status).with_suffix(".log")) if status else None


def forget_status(progress: StudyProgress, keep_logs: bool) -> None:
    """The runs' status files are read: removed with their folder, unless a run's log tells why it failed."""
    if progress.folder is None or not progress.folder.is_dir():
        return
    if not keep_logs:
        shutil.rmtree(progress.folder, ignore_errors=True)
        return
    for path in progress.folder.glob("*.json"):
        path.unlink(missing_ok=True)
    print(f"rnnlab: the cells' output is in {progress.folder}", file=sys.stderr)


def recorded_elsewhere(result: dict[str, Any]) -> str | None:
    """Why a cell's result is not in the study's store (None when it is, FINISHED)."""
    try:
        status = tracking.get_run(result["run_id"]).info.status
    except LookupError:
        return (
            f"its run {result['run_id']} is not in the study's tracking store {tracking.tracking_uri()} (its worker "
            "recorded it elsewhere: give the workers MLFLOW_TRACKING_URI)"
        )
    return None if status == "FINISHED" else f"its run {result['run_id']} is {status} in the study's store"


@flow(name="study", log_prints=False)
def study_flow(study_file: str, overrides: list[str] | None = None, force: bool = False) -> dict[str, Any]:
    """Run (or resume) the study in `study_file` with command-line style `overrides`. Takes a path and strings, so
    that a Prefect deployment (a schedule, `prefect deployment run`) can start it with JSON parameters; the command
    line, which has loaded the study and prepared its corpora to check them before anything starts, hands those to
    `run_study` instead."""
    study = load_study(study_file, overrides or [])
    corpora = {}
    for cell in study.cells:
        if data_key(cell) not in corpora:
            corpora[data_key(cell)] = prepare_data(cell.config)
    check_cells_fit(study.cells, corpora)
    return execute(study, corpora, force)


# validate_parameters=False: the study and its corpora are already validated objects; Prefect records them as JSON.
@flow(name="study", log_prints=False, validate_parameters=False)
def run_study(study: Study, corpora: dict[str, Any], force: bool = False, live: bool = False) -> dict[str, Any]:
    """Run (or resume) a loaded study on its prepared corpora (by data key: tasks/kinds/steps.py prepare_study);
    `live`: its progress as a live display on the terminal (rnnlab/runtime/live.py), not plain lines."""
    return execute(study, {data_key(cell): corpora[data_key(cell)] for cell in study.cells}, force, live)


def execute(study: Study, corpora: dict[str, Any], force: bool, live: bool = False) -> dict[str, Any]:
    started = time.perf_counter()
    fresh_since_ms = int(time.time() * 1000) if force else None
    code = tracking.code_version()
    keys = [cell_key(cell, corpora[data_key(cell)].checksum, code) for cell in study.cells]
    reused, todo = split_reused(study, keys, force)
    shared_prefect = bool(os.environ.get("PREFECT_API_URL"))  # a server, not this process's temporary one
    with workers_share_this_prefect_api(), task_runner(study, CELL_WORKER_PRELOAD) as runner:
        start_workers(runner, study, len(todo))
        parent_run_id = open_study_run(study, keys, corpora)
        with tracking.closing(parent_run_id):
            sweep_orphans(study.name)
            progress = study_progress(study, len(reused), parent_run_id)
            try:
                with StudyDisplay(progress, live) as display:
                    if study.config.tune:  # the search first; then the arms at their best settings and the base recipe
                        study, keys = tune_arms(study, corpora, parent_run_id, runner, code, display, todo)
                        reused, todo = split_reused(study, keys, force)
                    results, failures = run_grid(
                        study, corpora, todo, reused, parent_run_id, runner, fresh_since_ms, shared_prefect, display
                    )
            except BaseException:  # interrupted, or a step failed: its status files go too (the logs tell what ran)
                forget_status(progress, keep_logs=live)
                raise
            forget_status(progress, keep_logs=live and bool(failures))
            compared = compare_and_log(study.name, parent_run_id)
            test_after_decision(study, corpora, parent_run_id)
            reused_here = sum(r.get("reused", False) for r in results)
            counts = {
                "cells": len(study.cells),
                "reused": reused_here,
                "trained": len(results) - reused_here,
                "diverged": sum(r["outcome"] == DIVERGED for r in results),
                "failed_to_learn": sum(r["outcome"] == FAILED_TO_LEARN for r in results),
                "failed": len(failures),
            }
            tracking.set_tags(parent_run_id, {f"rnnlab.{k}": v for k, v in counts.items()})
            if failures:
                tracking.log_text(parent_run_id, "\n".join(failures) + "\n", "failures.txt")
            # here, not at import: workers need no matplotlib or scipy
            from tasks.reporting.study_report import build_report

            report = build_report(study.name, parent_run_id, str(project_dir() / "reports" / study.name))
            if failures:  # after everything is recorded: the execution (Prefect flow run, parent run) shows as failed
                raise StudyFailed(
                    f"{len(failures)} of {len(study.cells)} cells failed (the others are recorded, see "
                    f"`rnnlab compare {study.name}`): " + "; ".join(failures)
                )
    return {
        "study": study.name,
        "parent_run_id": parent_run_id,
        "experiment": study.name,
        **counts,
        "failures": failures,
        "question": compared["question"],
        "answer": compared["answer"],
        "factors": compared["factors"],
        "table": compared["table"],
        "report": report,
        "study_seconds": time.perf_counter() - started,
    }
