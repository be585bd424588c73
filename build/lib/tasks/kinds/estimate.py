"""What a study will cost before it is spent: each task kind times its model on this machine (a few optimizer steps
on random data: its `run_seconds`), then the budget of every cell and trial in optimizer steps and validation passes
is added up. An estimate, and an upper bound where runs stop early (a blow-up, a pruned trial)."""

from __future__ import annotations

from dataclasses import dataclass

from rnnlab.schemas.study import Study
from tasks.kinds.registry import kind_of
from tasks.kinds.steps import data_key

START_SECONDS = 20.0  # a study's start (imports, servers, workers)


@dataclass(frozen=True)
class Cost:
    runs: int
    seconds: float  # wall time on this machine, `concurrency` at a time


def study_cost(study: Study, corpora: dict, threads: int) -> tuple[Cost, Cost | None]:
    """(the cells, the tuning trials or None): runs and wall seconds at the study's concurrency."""
    timings: dict = {}  # what each kind timed, shared by the runs of the same model
    seconds = [
        kind_of(cell.config).run_seconds(cell.config, corpora[data_key(cell.config)], threads, timings)
        for cell in study.cells
    ]
    tune = study.config.tune
    untunable = next((kind_of(c.config) for c in study.cells if not kind_of(c.config).tunable()), None)
    if tune and untunable:
        raise NotImplementedError(f"no estimate yet for tuning {untunable.description} models")
    cells = Cost(len(seconds) * (2 if tune else 1), sum(seconds) * (2 if tune else 1) / study.config.concurrency)
    if not tune:
        return cells, None
    per_arm = {c.id: (c, corpora[data_key(c.config)]) for c in study.cells}
    trial_budget = tune.budget.max_steps or study.config.budget.max_steps
    trial_seconds = (
        sum(kind_of(c.config).trial_seconds(c.config, corpus, timings, trial_budget) for c, corpus in per_arm.values())
        * tune.trials
    )
    return cells, Cost(len(per_arm) * tune.trials, trial_seconds / study.config.concurrency)


def minutes(seconds: float) -> str:
    return f"{seconds / 60:.1f} min" if seconds >= 60 else f"{seconds:.0f} s"


def estimate_lines(study: Study, corpora: dict, threads: int) -> list[str]:
    """The plan in words: what will run and about how long, on this machine. No estimate, and the reason, where the
    timing cannot be taken (a model too large for this machine's memory: its study records that as a finding)."""
    try:
        cells, trials = study_cost(study, corpora, threads)
    except NotImplementedError as err:
        return [f"rnnlab: study '{study.name}': {len(study.cells)} cells; {err}"]
    except (RuntimeError, MemoryError) as err:  # torch's "can't allocate memory" is a RuntimeError
        return [f"rnnlab: study '{study.name}': no time estimate: timing its model failed ({str(err)[:120]})"]
    total = START_SECONDS + cells.seconds + (trials.seconds if trials else 0.0)
    lines = []
    if trials:
        lines.append(
            f"rnnlab: study '{study.name}': {trials.runs} tuning trials ({study.config.tune.trials} per arm), "
            f"then {cells.runs} cells (each arm's best setting and the base recipe × "
            f"{len(study.config.seeds)} seeds), {study.config.concurrency} at a time"
        )
    else:
        lines.append(f"rnnlab: study '{study.name}': {cells.runs} cells, {study.config.concurrency} at a time")
    lines.append(
        f"rnnlab: estimated wall time on this machine: about {minutes(total)} if every run uses its whole "
        f"budget (runs that blow up{' or are pruned' if trials else ''} end sooner; finished cells are reused "
        "and cost nothing)"
    )
    return lines
