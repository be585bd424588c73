"""A study's progress: the ETA from the optimizer steps left across its runs, the live display rendered from a given
state, the status files its runs write and it reads, and a study under a pseudo-terminal showing the live display
instead of interleaved plain lines."""

import fcntl
import os
import pty
import re
import select
import struct
import subprocess
import sys
import termios
import time

import pytest
from conftest import REPO, rnnlab_command
from rich.console import Console
from test_flows_study import tiny_study

from rnnlab.runtime.cell_status import forget_stale_status, output_to, read_status, write_status
from rnnlab.runtime.live import render
from rnnlab.runtime.progress import StudyProgress


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def three_cells(folder, clock) -> tuple[StudyProgress, dict[str, str]]:
    """A study of three cells of 100 steps each, two at a time, their status files in `folder` (None: unread)."""
    progress = StudyProgress("tiny", 3, 0, 2, "diverged", "failed_to_learn", folder, clock)
    return progress, {key: progress.submitted(key, f"cell {key}", 100) for key in "abc"}


def status(step: int, started: float, at: float, from_step: int = 0, **more) -> dict:
    """A run's status as its worker writes it: `started` training at that time, written `at` that time."""
    return {"step": step, "from_step": from_step, "total": 100, "started": started, "time": at, **more}


def test_the_eta_is_the_steps_left_at_the_rate_trained_and_a_diverged_cell_has_none_left(tmp_path):
    clock = Clock()
    progress, paths = three_cells(tmp_path, clock)
    assert progress.eta() == "?" and progress.steps() == (0, 300)
    clock.now = 10.0  # the workers started: a and b begin training
    write_status(paths["a"], status(0, started=10, at=10))
    write_status(paths["b"], status(0, started=10, at=10))
    progress.poll()
    clock.now = 20.0  # a blew up at step 10; b is at step 20
    write_status(paths["a"], status(10, started=10, at=20, stopped="the training loss became nan at step 10"))
    write_status(paths["b"], status(20, started=10, at=20))
    progress.finished({"outcome": "diverged"}, "a")
    progress.poll()
    # a's steps count as done: its whole budget, none left; 30 steps trained in 10 s, 80 + 100 left at 3 steps/s
    assert progress.steps() == (120, 300) and progress.steps_left() == 180
    assert progress.eta_seconds() == pytest.approx(60.0)  # by cells it would be 20 s × 2 cells left: 40 s
    assert progress.line() == (
        "rnnlab: study: 1/3 cells done · 2 running · 1 diverged · 0 failed to learn · 0 crashed · 0.3 min elapsed · "
        "ETA 1.0 min"
    )
    clock.now = 30.0  # c resumed from a checkpoint at step 50: only the steps trained now count towards the rate
    write_status(paths["b"], status(40, started=10, at=30))
    write_status(paths["c"], status(70, started=25, at=30, from_step=50))
    progress.poll()
    assert progress.steps_left() == 60 + 30
    assert progress.eta_seconds() == pytest.approx(90 / ((10 + 40 + 20) / 20))
    progress.finished({"outcome": "trained"}, "b")
    progress.finished({"outcome": "trained"}, "c")
    assert progress.steps() == (300, 300) and progress.eta_seconds() == 0.0


def test_the_rate_is_timed_by_the_runs_not_by_when_the_study_read_them(tmp_path):
    """Without a terminal the study reads the status files only when it prints a line (a cell's end, every 30 s):
    two runs that trained 150 steps between them in 50 s run at 3 steps/s, however late the study looks."""
    clock = Clock()
    progress, paths = three_cells(tmp_path, clock)
    clock.now = 60.0  # the first look: a and b started at 5 s and have been training for 50 s
    write_status(paths["a"], status(100, started=5, at=55, stopped="blew up"))
    write_status(paths["b"], status(50, started=5, at=55))
    progress.finished({"outcome": "diverged"}, "a")
    progress.poll()
    # 150 steps in 50 s: 3 steps/s; left: b's 50 and c's 100
    assert progress.steps_left() == 150 and progress.eta_seconds() == pytest.approx(50.0)


def test_without_status_files_the_eta_falls_back_to_the_cells_done():
    """Cells on another machine's Dask workers: their status files cannot be read here."""
    clock = Clock()
    progress, paths = three_cells(None, clock)
    assert paths == {"a": None, "b": None, "c": None}
    clock.now = 20.0
    progress.finished({"outcome": "trained"}, "a")
    assert progress.eta_seconds() == pytest.approx(40.0)


def rendered(progress: StudyProgress, width: int = 130) -> list[str]:
    console = Console(record=True, width=width, file=open(os.devnull, "w"))  # noqa: SIM115
    console.print(render(progress))
    return console.export_text().rstrip("\n").splitlines()


def test_the_display_is_a_study_bar_and_a_line_per_running_cell(tmp_path):
    clock = Clock()
    progress, paths = three_cells(tmp_path, clock)
    clock.now = 10.0
    write_status(paths["a"], status(0, started=10, at=10))
    write_status(paths["b"], status(0, started=10, at=10))
    progress.poll()
    clock.now = 20.0
    write_status(paths["a"], status(10, started=10, at=20))
    write_status(
        paths["b"], status(20, started=10, at=20, loss=5.1234, valid="valid ppl 180.20", tokens_per_second=3210.4)
    )
    progress.finished({"outcome": "diverged"}, "a")
    progress.poll()
    lines = rendered(progress)
    assert len(lines) == 2, lines  # the study, and b: not a (ended), nor c (not started)
    assert re.fullmatch(
        r"study tiny +[━╸╺ ]{24} 1/3 cells · ETA 1:00 · 0:20 elapsed · 1 running · 1 diverged *", lines[0]
    ), lines[0]
    assert re.fullmatch(
        r"  cell b +[━╸╺ ]{24} step 20/100 · loss 5\.123 · valid ppl 180\.20 · 3,210 tok/s *", lines[1]
    ), lines[1]
    narrow = rendered(progress, width=80)  # a common terminal: the line's end is cut, the ETA stays
    assert "1/3 cells · ETA 1:00 · 0:20 elapsed" in narrow[0] and len(narrow[0]) <= 80, narrow


def test_a_tuned_studys_display_counts_its_trials(tmp_path):
    clock = Clock()
    progress = StudyProgress("tuned", 8, 0, 2, "diverged", "failed_to_learn", tmp_path, clock)
    progress.plan(8 * 100)  # its cells, after the search
    progress.trials(6, 2)  # a resumed search: two trials finished before
    progress.plan(4 * 60)
    path = progress.submitted("arm trial 2", "clip=0.25 trial 2", 60, trial=True)
    assert progress.steps() == (0, 8 * 100 + 4 * 60)  # the trial's budget moved from the plan to it
    write_status(path, {"step": 30, "from_step": 0, "total": 60})
    progress.poll()
    lines = rendered(progress)
    assert "0/8 cells · 2/6 trials · ETA ? · 0:00 elapsed · 1 running" in lines[0], lines
    assert re.fullmatch(r"  clip=0\.25 trial 2 +[━╸╺ ]{24} step 30/60 *", lines[1]), lines


def test_a_status_file_is_replaced_whole_or_not_at_all(tmp_path):
    path = tmp_path / "runs" / "a.json"
    assert read_status(path) is None  # not started
    assert write_status(path, status(3, started=0, at=3)) and read_status(path) == status(3, started=0, at=3)
    assert write_status(path, status(4, started=0, at=4)) and read_status(path) == status(4, started=0, at=4)
    assert sorted(p.name for p in path.parent.iterdir()) == ["a.json"]  # no temporary file left
    path.write_text('{"step": 5, "fr')  # what a reader would see of a file rewritten in place
    assert read_status(path) is None
    (tmp_path / "a file").write_text("")
    assert (
        write_status(tmp_path / "a file" / "b.json", status(1, started=0, at=1)) is False
    )  # a run trains on regardless


def test_status_folders_nothing_wrote_to_for_a_week_are_removed(tmp_path):
    """Those of a study killed before it could remove its own; a recent one (a study running now) is kept."""
    old, recent = tmp_path / "old-parent-run", tmp_path / "running-parent-run"
    for folder in (old, recent):
        write_status(folder / "cell.json", status(1, started=0, at=1))
    week_ago = time.time() - 8 * 86400
    os.utime(old / "cell.json", (week_ago, week_ago))
    forget_stale_status(tmp_path)
    assert not old.exists() and read_status(recent / "cell.json")["step"] == 1


def test_a_run_writes_its_progress_as_it_trains_and_ends(tiny_cfg, tmp_path, monkeypatch):
    """The status callback on a real fit: step of the budget Lightning counts (the one a study plans with), the
    loss, the latest validation, the throughput; and a diverged run's last word says why it stopped."""
    import tasks.training.fitting as fitting
    from tasks.data.lm_corpus import prepare_lm_corpus
    from tasks.kinds.lm import fit_lm
    from tasks.kinds.registry import kind_of
    from tasks.record import tracking

    written = []
    monkeypatch.setattr(fitting, "write_status", lambda path, s: written.append(s) or write_status(path, s))
    cfg = tiny_cfg("train.max_epochs=2")
    corpus = prepare_lm_corpus(cfg.data)
    path = tmp_path / "cell.json"
    run_id = tracking.open_run(cfg.experiment, None, cfg.flat(), {})
    result = fit_lm(cfg, corpus, run_id, callbacks=(fitting.StatusFile(path, "cell", every_seconds=0.0),))
    last = read_status(path)
    planned = kind_of(cfg).steps(cfg, corpus)
    assert last["label"] == "cell" and last["ended"] and last["stopped"] is None
    assert last["step"] == result.steps == last["total"] == planned
    assert last["valid"].startswith("valid ppl ") and last["loss"] > 0 and last["tokens_per_second"] > 0
    assert written[0]["step"] == 0 and written[0]["valid"] is None  # at the start of training
    steps = [s["step"] for s in written]
    assert steps == sorted(steps) and len(written) > result.steps  # every batch (every_seconds=0) and at the end
    # the ETA's clock: one start of training, written with every status, and each status's time after it
    assert len({s["started"] for s in written}) == 1 and all(s["time"] >= s["started"] for s in written)

    cfg = tiny_cfg("train.clip_norm=null", "train.lr=1e38", "model.cell=rnn_tanh", "model.init_range=1.0")
    run_id = tracking.open_run(cfg.experiment, None, cfg.flat(), {})
    result = fit_lm(cfg, corpus, run_id, callbacks=(fitting.StatusFile(path, "cell", every_seconds=0.0),))
    last = read_status(path)
    assert last["ended"] and last["stopped"].startswith("the training loss became ")
    assert last["step"] == result.steps < last["total"]


def test_a_runs_output_goes_to_its_log_meanwhile(tmp_path, capfd):
    log = tmp_path / "cell.log"
    with output_to(log):
        print("from python", file=sys.stderr)
        os.write(2, b"from C\n")
        subprocess.run(["sh", "-c", "echo from a child >&2"], check=True)
    print("back on the terminal", file=sys.stderr)
    assert log.read_text() == "from python\nfrom C\nfrom a child\n"
    assert capfd.readouterr().err == "back on the terminal\n"


ERASE_LINE, ANSI = "\x1b[2K", re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b[()][A-Z0-9]|\r")


def lines_drawn(written: str) -> list[str]:
    """The lines a terminal was given, each redrawn one apart (a live display erases a line before drawing it)."""
    return [line for line in ANSI.sub("", written.replace(ERASE_LINE, "\n")).splitlines() if line.strip()]


def under_a_terminal(args: list[str], env: dict, timeout: float = 600) -> tuple[int, str]:
    """(exit code, what it wrote) for a command whose stdout and stderr are a pseudo-terminal 140 columns wide."""
    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 140, 0, 0))
    process = subprocess.Popen(
        args, cwd=REPO, env=env, stdin=subprocess.DEVNULL, stdout=follower, stderr=follower, start_new_session=True
    )
    os.close(follower)
    written, deadline = bytearray(), time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            if select.select([leader], [], [], 1.0)[0]:
                try:
                    chunk = os.read(leader, 1 << 16)
                except OSError:  # EIO: every end of the terminal is closed
                    break
                if not chunk:
                    break
                written += chunk
            elif process.poll() is not None:
                break
        return process.wait(timeout=30), written.decode("utf-8", "replace")
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(30)
        os.close(leader)


def test_a_study_in_a_terminal_shows_one_live_display(tmp_path, tiny_corpus):
    """A trained cell and one that blows up, side by side: a study bar and a line per running cell, redrawn in place,
    a line above it as each cell ends; none of the plain progress lines, neither the study's nor the cells'."""
    path = tiny_study(
        tmp_path,
        "tiny_live",
        tiny_corpus,
        {"train.lr": [1.0, 1.0e38]},
        **{"train.max_epochs": 6, "train.clip_norm": None},
    )
    env = {**os.environ, "RNNLAB_HOME": str(tmp_path), "TERM": "xterm", "COLUMNS": "140", "LINES": "40"}
    code, written = under_a_terminal(rnnlab_command("study", str(path)), env)
    lines = lines_drawn(written)
    screen = "\n".join(lines)
    assert code == 0, screen[-4000:]
    study_bars = [line for line in lines if re.match(r"study tiny_live +[━╸╺ ]+ [0-2]/2 cells · ", line)]
    cell_lines = [line for line in lines if re.match(r"  lr=1\.0 s1 +[━╸╺ ]+ step \d+/\d+ · loss ", line)]
    assert study_bars and cell_lines, screen[-4000:]
    assert re.match(r"study tiny_live .* 2/2 cells · ETA 0:00 · .* elapsed · 0 running · 1 diverged", study_bars[-1])
    assert any(re.match(r"! lr=1\S*38 s1: diverged at step \d+$", line) for line in lines), screen[-4000:]
    assert any(re.match(r"✓ lr=1\.0 s1: trained · valid_ppl [\d,.]+$", line) for line in lines), screen[-4000:]
    assert not [line for line in lines if line.startswith(("rnnlab: [", "rnnlab: study: "))], screen[-4000:]
    assert "Answer: " in screen  # the study's end as ever, below the display
    assert not (tmp_path / ".cache" / "rnnlab" / "progress").exists() or not any(
        (tmp_path / ".cache" / "rnnlab" / "progress").iterdir()
    )
