"""Timing a few optimizer steps on this machine, for a study's estimate (tasks/kinds/estimate.py): each task kind
times its own model (its `run_seconds`) with these."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

import torch

from tasks.record import hardware

# Measured on an Intel Xeon (2 cores, 2026-12-06), the small PTB LSTM at one thread: scoring PTB valid ran at ~9,900
# tokens/s against ~4,000 training in the demo's cells (side by side): ~2.5x. This timing of a few steps alone gave
# ~3,400 tokens/s, below what those cells reached side by side, so no further slowdown is applied for neighbours.
EVAL_SPEEDUP = 2.5
CELL_SECONDS = 5.0  # a run's own bookkeeping


@contextmanager
def measuring(threads: int) -> Iterator[None]:
    """Torch at `threads` threads, with denormal floats flushed as training will (before the threads start, so that
    they inherit it), and seeded, for the time of a timing."""
    hardware.flush_denormals()
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        torch.manual_seed(0)
        yield
    finally:
        torch.set_num_threads(previous)


def timed(step, repeats: int = 3) -> float:
    """Seconds per call, after two warm-up calls (the first ones allocate)."""
    step()
    step()
    started = time.perf_counter()
    for _ in range(repeats):
        step()
    return (time.perf_counter() - started) / repeats
