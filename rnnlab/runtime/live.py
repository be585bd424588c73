"""How a study shows its progress (rnnlab/runtime/progress.py): in a terminal, one live display (rich) redrawn every
second: a study bar (cells done, trials where it tunes, the ETA) and one line per run in progress (its step, loss and
latest validation), with a line above it as each run ends. Otherwise (stderr not a terminal, `--json`), plain lines as
ever: one per finished cell and every 30 s."""

from __future__ import annotations

import sys
from typing import Any

from rnnlab.runtime.progress import Run, StudyProgress

BAR_WIDTH = 24


def clock(seconds: float | None) -> str:
    """0:42, 12:05, 1:02:03; ? for no estimate yet."""
    if seconds is None:
        return "?"
    seconds = round(seconds)
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"


def study_words(progress: StudyProgress) -> str:
    """The counts and times first, the outcomes after: a narrow terminal cuts the line's end (80 columns keep the
    ETA)."""
    words = [f"{progress.done}/{progress.total} cells"]
    if progress.trials_total:
        words.append(f"{progress.trials_done}/{progress.trials_total} trials")
    words.append(f"ETA {clock(progress.eta_seconds())} · {clock(progress.elapsed())} elapsed")
    words.append(f"{len(progress.running())} running")
    for count, what in (
        (progress.diverged, "diverged"),
        (progress.failed_to_learn, "failed to learn"),
        (progress.crashed, "crashed"),
    ):
        if count:
            words.append(f"{count} {what}")
    return " · ".join(words)


def run_words(run: Run) -> str:
    status = run.status or {}
    words = [f"step {run.step}/{run.total}"]
    if status.get("loss") is not None:
        words.append(f"loss {status['loss']:.3f}")
    if status.get("valid"):
        words.append(status["valid"])
    if status.get("tokens_per_second"):
        words.append(f"{status['tokens_per_second']:,.0f} tok/s")
    if status.get("ended"):  # its training is over: it is being scored and recorded
        words.append("diverged, recording" if status.get("stopped") else "scoring")
    return " · ".join(words)


def render(progress: StudyProgress) -> Any:
    """The display for the progress as it stands: a rich renderable."""
    from rich.progress_bar import ProgressBar
    from rich.table import Table
    from rich.text import Text

    grid = Table.grid(padding=(0, 1))
    grid.add_column(no_wrap=True, overflow="ellipsis", max_width=40)
    grid.add_column(width=BAR_WIDTH)
    grid.add_column(no_wrap=True, overflow="ellipsis")
    done, total = progress.steps()
    if not total:  # no steps known (every cell reused, or none read): the cells instead
        done, total = progress.done, max(progress.total, 1)
    grid.add_row(
        Text(f"study {progress.name}", style="bold"),
        ProgressBar(total=total, completed=done, width=BAR_WIDTH),
        Text(study_words(progress)),
    )
    for run in progress.running():
        grid.add_row(
            Text(f"  {run.label}"),
            ProgressBar(total=max(run.total, 1), completed=min(run.step, run.total), width=BAR_WIDTH),
            Text(run_words(run), style="dim" if run.status and run.status.get("ended") else ""),
        )
    return grid


class StudyDisplay:
    """The live display (`live`), or plain lines; `every`: seconds between two looks at the runs."""

    def __init__(self, progress: StudyProgress, live: bool):
        self.progress, self.live = progress, live
        self.every = 1.0 if live else 30.0
        self._live: Any = None

    def __enter__(self) -> StudyDisplay:
        if self.live:
            from rich.console import Console
            from rich.live import Live

            # The study's own lines (warnings, a cell's end) are printed above the display, not through it; its
            # stdout too where that is the same terminal (not where it is a file).
            self._live = Live(
                render(self.progress),
                console=Console(file=sys.stderr),
                auto_refresh=False,
                redirect_stdout=sys.stdout.isatty(),
            )
            self._live.start(refresh=True)
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._live is not None:
            try:
                self.show()  # the last frame stays on the terminal
            finally:
                self._live.stop()
                self._live = None

    def show(self, line: bool = False) -> None:
        """Read the runs' status and redraw; without a terminal, print the study's line if `line`."""
        self.progress.poll()
        if self._live is not None:
            self._live.update(render(self.progress), refresh=True)
        elif line and not self.live:
            print(self.progress.line(), file=sys.stderr, flush=True)

    def event(self, text: str) -> None:
        """A line above the live display (a run that ended); nothing in plain lines, whose own lines say it."""
        if self._live is not None:
            from rich.text import Text

            self._live.console.print(Text(text, style="dim"))
