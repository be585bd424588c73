"""A study's progress on stderr: one line per finished cell (and every 30 s)."""

from __future__ import annotations

import time
from typing import Any


class StudyProgress:
    """One line on stderr: cells done/total, running, how the finished ones ended, ETA."""

    def __init__(self, total: int, reused: int, slots: int, diverged: str, failed_to_learn: str):
        """`diverged` and `failed_to_learn`: the outcomes (tasks/record/outcome.py) counted apart."""
        self.total, self.done, self.slots = total, reused, slots
        self.outcomes = {"diverged": diverged, "failed_to_learn": failed_to_learn}
        self.crashed = self.diverged = self.failed_to_learn = 0
        self.started = time.monotonic()
        self.trained = 0

    def finished(self, result: dict[str, Any] | None) -> None:
        self.done += 1
        self.trained += 1
        if result is None:
            self.crashed += 1
        elif result["outcome"] == self.outcomes["diverged"]:
            self.diverged += 1
        elif result["outcome"] == self.outcomes["failed_to_learn"]:
            self.failed_to_learn += 1

    def line(self) -> str:
        left = self.total - self.done
        running = min(self.slots, left)
        elapsed = time.monotonic() - self.started
        eta = "0.0 min" if not left else "?" if not self.trained else f"{elapsed / self.trained * left / 60:.1f} min"
        return (
            f"rnnlab: study: {self.done}/{self.total} cells done · {running} running · {self.diverged} diverged · "
            f"{self.failed_to_learn} failed to learn · {self.crashed} crashed · {elapsed / 60:.1f} min elapsed · "
            f"ETA {eta}"
        )
