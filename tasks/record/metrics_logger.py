"""The Lightning logger that writes a run's curves to its MLflow run: apart from tasks/record/tracking.py, so that
reading the store (`rnnlab compare`, `report`) does not import Lightning and torch (~3 s)."""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from lightning.pytorch.loggers import Logger
from lightning.pytorch.utilities import rank_zero_only
from mlflow.entities import Metric
from mlflow.tracking import MlflowClient

from tasks.record.tracking import client, storable


class MlflowMetricsLogger(Logger):
    """A Lightning logger that writes to an existing MLflow run in batches, off the training thread.

    Values are buffered and handed, every `flush_every` values or `flush_seconds`, to a sender thread that makes
    one `log_batch` call per hand-off: training never waits for the store (SQLite or a server over HTTP), except in
    `flush()`, which returns once everything logged so far is stored (at checkpoints and at the end).

    `ship_checkpoints`: each checkpoint Lightning writes is also stored with the run's artifacts (`checkpoints/`),
    through the tracking server, so that another machine can resume the run (tasks/record/shipped.py)."""

    def __init__(
        self, run_id: str, flush_every: int = 500, flush_seconds: float = 15.0, ship_checkpoints: bool = False
    ):
        super().__init__()
        self.run_id = run_id
        self.ship_checkpoints = ship_checkpoints
        self.flush_every = flush_every
        self.flush_seconds = flush_seconds
        self._buffer: list[Metric] = []
        self._last_hand_off = time.monotonic()
        self._client: MlflowClient | None = None
        self._outbox: queue.Queue[list[Metric] | None] = queue.Queue()
        self._sender: threading.Thread | None = None
        self._error: BaseException | None = None
        self.batches_sent = 0

    @property
    def name(self) -> str:
        return "mlflow"

    @property
    def version(self) -> str:
        return self.run_id

    @property
    def experiment(self) -> MlflowClient:
        if self._client is None:
            self._client = client()
        return self._client

    @rank_zero_only
    def log_hyperparams(self, params: Any) -> None:
        pass  # the resolved config is logged as params when the run is opened

    @rank_zero_only
    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        now = int(time.time() * 1000)
        self._buffer.extend(Metric(k, v, now, step or 0) for k, v in storable(metrics, curve=True).items())
        if len(self._buffer) >= self.flush_every or time.monotonic() - self._last_hand_off > self.flush_seconds:
            self._hand_off()

    def _hand_off(self) -> None:
        self._last_hand_off = time.monotonic()
        if not self._buffer:
            return
        if self._sender is None:
            self.experiment  # noqa: B018  (create the client on this thread, before the sender uses it)
            self._sender = threading.Thread(target=self._send, name=f"mlflow-metrics-{self.run_id[:8]}", daemon=True)
            self._sender.start()
        self._outbox.put(self._buffer)
        self._buffer = []

    def _send(self) -> None:
        while True:
            metrics = self._outbox.get()
            try:
                if metrics is None:
                    return
                self.experiment.log_batch(self.run_id, metrics=metrics)  # chunked by MlflowClient as the store needs
                self.batches_sent += 1
            except BaseException as err:  # re-raised on the training thread at the next flush
                self._error = err
            finally:
                self._outbox.task_done()

    def flush(self) -> None:
        """Block until every value logged so far is in the store."""
        self._hand_off()
        self._outbox.join()
        if self._error is not None:
            error, self._error = self._error, None
            raise error

    @rank_zero_only
    def save(self) -> None:
        pass  # Lightning calls this after every log_metrics: flushing here would undo the batching

    def after_save_checkpoint(self, checkpoint_callback: Any) -> None:
        self.flush()  # metrics up to a checkpoint are stored before anyone can resume from it
        if self.ship_checkpoints:  # the files this callback has written (Lightning calls this after each save)
            written = {checkpoint_callback.last_model_path, checkpoint_callback.best_model_path} - {""}
            for path in sorted(written):
                if Path(path).is_file():
                    self.experiment.log_artifact(self.run_id, path, "checkpoints")

    @rank_zero_only
    def finalize(self, status: str) -> None:
        self.flush()  # the run's status is set by whoever opened it, once evaluation is done too
        if self._sender is not None:
            self._outbox.put(None)
            self._sender.join()
            self._sender = None
