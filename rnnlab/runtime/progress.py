"""A study's progress: its cells (and tuning trials) done, the runs in progress as their status files tell
(rnnlab/runtime/cell_status.py), and an ETA from the optimizer steps left across its runs at the rate measured so far.
Shown as one plain line on stderr per finished cell (and every 30 s), or as a live display in a terminal
(rnnlab/runtime/live.py)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rnnlab.runtime.cell_status import read_status, status_path


@dataclass
class Run:
    """A cell or a trial submitted to the workers."""

    label: str
    budget: int  # optimizer steps planned (its status's count replaces it once it trains)
    trial: bool = False
    path: Path | None = None  # its status file
    status: dict[str, Any] | None = None  # the latest read
    done: bool = False

    @property
    def total(self) -> int:
        return int((self.status or {}).get("total") or self.budget)

    @property
    def step(self) -> int:
        return int((self.status or {}).get("step") or 0)

    @property
    def trained(self) -> int:
        """Steps trained in this execution (a resumed run's earlier steps not counted)."""
        return max(0, self.step - int((self.status or {}).get("from_step") or 0))

    @property
    def left(self) -> int:
        """Steps left: none once it has ended, however early (diverged, pruned, crashed)."""
        return 0 if self.done else max(0, self.total - self.step)


class StudyProgress:
    """Cells done/total, running, how the finished ones ended, trials where the study tunes, and an ETA."""

    def __init__(
        self,
        name: str,
        total: int,
        reused: int,
        slots: int,
        diverged: str,
        failed_to_learn: str,
        folder: Path | None = None,
        clock: Callable[[], float] = time.monotonic,
    ):
        """`diverged` and `failed_to_learn`: the outcomes (tasks/record/outcome.py) counted apart; `folder`: where
        the runs leave their status files (None: they cannot be read here, as from cells on other machines)."""
        self.name, self.total, self.done, self.slots = name, total, reused, slots
        self.outcomes = {"diverged": diverged, "failed_to_learn": failed_to_learn}
        self.crashed = self.diverged = self.failed_to_learn = 0
        self.folder, self.clock = folder, clock
        self.started = clock()
        self.finished_here = 0  # cells finished by this execution (the reused ones not counted)
        self.trials_total = self.trials_done = 0
        self.runs: dict[str, Run] = {}
        self.later = 0  # steps of runs planned but not yet submitted (trials to come, the cells after a search)

    # what the flow tells it

    def plan(self, steps: int) -> None:
        """More steps of runs still to be submitted (a search's trials, then its cells), for the ETA meanwhile."""
        self.later += max(0, steps)

    def cells(self, total: int, reused: int, slots: int) -> None:
        """The grid's cells, once they are known (after a search)."""
        self.total, self.done, self.slots, self.later = total, reused, slots, 0

    def trials(self, total: int, done: int) -> None:
        self.trials_total, self.trials_done = total, done

    def submitted(self, key: str, label: str, budget: int, trial: bool = False) -> str | None:
        """A run handed to the workers; the path of the status file it is to write (None: none is read)."""
        path = status_path(self.folder, key) if self.folder else None
        self.runs[key] = Run(label, budget, trial, path)
        self.later = max(0, self.later - budget)
        return str(path) if path else None

    def finished(self, result: dict[str, Any] | None, key: str | None = None) -> None:
        """A cell ended: `result` its result, None when it crashed (or was recorded elsewhere)."""
        self.ended(key)
        self.done += 1
        self.finished_here += 1
        if result is None:
            self.crashed += 1
        elif result["outcome"] == self.outcomes["diverged"]:
            self.diverged += 1
        elif result["outcome"] == self.outcomes["failed_to_learn"]:
            self.failed_to_learn += 1

    def trial_finished(self, key: str) -> None:
        self.ended(key)
        self.trials_done += 1

    def ended(self, key: str | None) -> None:
        run = self.runs.get(key) if key is not None else None
        if run is not None:
            self.read(run)  # its last word: the steps it trained count
            run.done = True

    def poll(self) -> None:
        """Read the status files of the runs in progress."""
        for run in list(self.runs.values()):
            if not run.done:
                self.read(run)

    def read(self, run: Run) -> None:
        status = read_status(run.path) if run.path else None
        if status is not None:
            run.status = status

    # what it shows

    def running(self) -> list[Run]:
        """The runs training now (those with a status), in the order they were submitted."""
        return [run for run in self.runs.values() if not run.done and run.status is not None]

    def steps(self) -> tuple[int, int]:
        """(steps done, steps in all) across the runs: a run that ended counts its whole budget as done."""
        done = sum(run.total if run.done else min(run.step, run.total) for run in self.runs.values())
        return done, done + self.steps_left()

    def steps_left(self) -> int:
        return sum(run.left for run in self.runs.values()) + self.later

    def eta_seconds(self) -> float | None:
        """Steps left ÷ the steps per second trained so far across the runs (in parallel, as they run): the steps
        trained over the span from the first run's start to the latest status, by the times the runs wrote (not
        when this process read them: without a terminal it reads them only when it prints a line). Before any
        status was read (cells on other machines), cells left × the mean wall time per finished cell. None until
        there is a rate."""
        elapsed = self.clock() - self.started
        left = self.steps_left()
        timed = [run.status for run in self.runs.values() if run.status and run.status.get("started")]
        if timed:
            trained = sum(run.trained for run in self.runs.values())
            seconds = max(s["time"] for s in timed) - min(s["started"] for s in timed)
            if not left:
                return 0.0
            return left / (trained / seconds) if trained and seconds > 0 else None
        cells_left = self.total - self.done
        if not cells_left and not (self.trials_total - self.trials_done):
            return 0.0
        return elapsed / self.finished_here * cells_left if self.finished_here else None

    def eta(self) -> str:
        seconds = self.eta_seconds()
        return "?" if seconds is None else f"{seconds / 60:.1f} min"

    def elapsed(self) -> float:
        return self.clock() - self.started

    def line(self) -> str:
        left = self.total - self.done
        running = min(self.slots, left)
        return (
            f"rnnlab: study: {self.done}/{self.total} cells done · {running} running · {self.diverged} diverged · "
            f"{self.failed_to_learn} failed to learn · {self.crashed} crashed · {self.elapsed() / 60:.1f} min elapsed "
            f"· ETA {self.eta()}"
        )
