"""A study's worker processes and what they share: the task runner (a local process pool, or Dask), each worker's
start, the lock a cell is trained under, the Prefect API the workers talk to, and interrupting them. The study flow
(flows/study.py) composes these; nothing here knows what a cell trains."""

from __future__ import annotations

import contextlib
import functools
import gc
import importlib
import os
import signal
from collections.abc import Iterator
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager

import psutil
from prefect import get_client, task
from prefect.futures import wait
from prefect.task_runners import ProcessPoolTaskRunner, TaskRunner

from rnnlab.runtime.env import EnvironmentProblem, die_with_parent, expect_workers
from rnnlab.runtime.processes import interrupt_once_in_worker
from rnnlab.runtime.store import is_local_store, tracking_uri
from rnnlab.schemas.study import Study


def task_runner(study: Study, preload: tuple[str, ...]) -> TaskRunner:
    """Worker processes, not threads: cells in one process would share torch's global RNG (and the GIL), so a
    cell's result would depend on its neighbours. Local workers start on demand (none when every cell is reused)
    and die with the study process, even when it is SIGKILLed; each imports `preload` as it starts (see
    `start_cell_worker`). Or a Dask cluster: an existing one, or a local cluster of `concurrency` single-threaded
    worker processes."""
    runner = study.config.runner
    if runner.kind == "dask":
        from prefect_dask import DaskTaskRunner  # lazy: Dask (~1.3 s), only when a study asks for it

        if runner.address:
            check_remote_cells_can_record()
            return DaskTaskRunner(address=runner.address)
        return DaskTaskRunner(
            cluster_kwargs={
                "n_workers": study.config.concurrency,
                "threads_per_worker": 1,
                "processes": True,
                "dashboard_address": None,
            }
        )
    expect_workers()
    initializer = functools.partial(start_cell_worker, *preload)
    return ProcessPoolTaskRunner(max_workers=study.config.concurrency, initializer=initializer)


def check_remote_cells_can_record() -> None:
    """Cells on other machines record into the study's tracking store and claim their cells on its Prefect server:
    both must be servers they can reach, not this machine's files or its temporary Prefect server."""
    missing = []
    if is_local_store(tracking_uri()):
        missing.append("MLFLOW_TRACKING_URI (a tracking server, e.g. `rnnlab server start`)")
    if not os.environ.get("PREFECT_API_URL"):
        missing.append("PREFECT_API_URL (a Prefect server)")
    if missing:
        raise EnvironmentProblem(
            "runner.address: cells on a remote Dask cluster record into the study's store and claim their cells on "
            f"its Prefect server, which this machine's files are not: set {' and '.join(missing)}"
        )


def start_cell_worker(*preload: str) -> None:
    """A local worker's start: die with the study, take one interrupt only, import what its cells need (`module`
    or `module:function` to call), and freeze what the imports built (torch, Lightning, MLflow: millions of objects)
    out of the garbage collector's reach. Without that, every full collection walks them, and the interpreter's last
    collections at exit took ~2 s per worker while the study waited for its pool to close."""
    die_with_parent()
    interrupt_once_in_worker()
    for name in preload:  # imported while the collector is paused (rnnlab.runtime.env.pause_gc_in_spawned_worker)
        module, _, function = name.partition(":")
        loaded = importlib.import_module(module)
        if function:
            getattr(loaded, function)()
    gc.freeze()
    gc.enable()


@contextmanager
def in_cell_worker(threads: int) -> Iterator[None]:
    """A cell's stay in its worker: the collector on (a local Dask worker spawned by the command line starts with it
    paused, and no `start_cell_worker` ran there), torch at `threads` threads (0: its default), and the worker settled
    afterwards, however the cell ends."""
    gc.enable()
    if threads:
        import torch  # the worker has it already: the cell's own imports brought it

        torch.set_num_threads(threads)
    try:
        yield
    finally:
        settle_worker()


def settle_worker() -> None:
    """After a cell: collect its garbage, then freeze what is left (the worker's long-lived state) out of the
    collector's reach, as at the worker's start; so a worker's exit, and the study that waits for it, is quick."""
    gc.collect()
    gc.freeze()


@task(name="start-worker")
def start_worker() -> int:
    return os.getpid()


def start_workers(runner: TaskRunner, study: Study, cells: int) -> None:
    """Start the local worker processes now, so that they import torch and Lightning while this process opens the
    study's run, instead of after it. (A Dask runner's workers are started with the runner.)"""
    if isinstance(runner, ProcessPoolTaskRunner):
        for _ in range(min(study.config.concurrency, cells)):
            runner.submit(start_worker, {})


@contextmanager
def workers_share_this_prefect_api() -> Iterator[None]:
    """Without a Prefect server, each worker process would start a temporary server of its own (seconds each, on the
    same database): point them at this process's instead, for as long as the workers live."""
    if os.environ.get("PREFECT_API_URL"):
        yield
        return
    with get_client(sync_client=True) as prefect:
        os.environ["PREFECT_API_URL"] = str(prefect.api_url).rstrip("/")
    try:
        yield
    finally:
        del os.environ["PREFECT_API_URL"]


def threads_per_cell(study: Study) -> int:
    """Torch threads per cell, so that the cells running side by side share the cores instead of fighting
    (0 = leave torch's default: the cores of a remote Dask worker are not ours to count)."""
    if study.config.runner.kind == "dask" and study.config.runner.address:
        return 0
    return max(1, (os.cpu_count() or 1) // study.config.concurrency)


def interrupt_workers(cells: list, grace: float = 5.0) -> None:
    """SIGINT to the cell workers (a terminal's Ctrl-C has sent them one already: they take the first only), then
    wait for their cells to end, each closing its run as KILLED; a worker still busy after `grace` seconds is
    killed (the caller closes its run)."""
    workers = []
    for child in psutil.Process().children(recursive=True):
        try:  # the cell workers, not Prefect's own server process
            if "multiprocessing.spawn" in " ".join(child.cmdline()):
                child.send_signal(signal.SIGINT)
                workers.append(child)
        except psutil.Error:
            pass
    _, busy = wait(cells, timeout=grace)
    if busy:
        for worker in workers:
            with contextlib.suppress(psutil.Error):
                worker.kill()


def why_failed(err: Exception) -> str:
    if isinstance(err, BrokenProcessPool):  # and the pool ended every other worker's cell with it
        return (
            "its worker process died (killed, or out of memory), and the cells running beside it were stopped; "
            "run the study again to resume them from their checkpoints"
        )
    return f"{type(err).__name__}: {err}"
