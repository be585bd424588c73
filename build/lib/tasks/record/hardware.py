"""What this machine can run: bf16 on its CPU, a CUDA device. Checked before anything trains, so that a setting the
hardware cannot run is bad input (one line naming what the machine offers, exit 2), not a crash halfway through a
study. The CPU's description is also recorded with every run (tasks/record/tracking.py)."""

from __future__ import annotations

import functools
import platform
from pathlib import Path

import torch

from rnnlab.schemas.config import ConfigError, RunConfig

# The CPU instructions that compute in bf16 natively: AMX tiles (Intel Sapphire Rapids and later), AVX-512 BF16 dot
# products (Intel Cooper Lake and later, AMD Zen 4 and later), AVX-NE-CONVERT. Without them oneDNN emulates bf16 by
# converting to fp32, which is correct but no faster than fp32.
BF16_FLAGS = ("amx_bf16", "avx512_bf16", "avx_ne_convert")


@functools.cache
def cpuinfo(field: str) -> str:
    """The first value of `field` in /proc/cpuinfo ("flags", "model name"); "" where there is none (not Linux)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.partition(":")[0].strip() == field:
                return line.partition(":")[2].strip()
    except OSError:
        pass
    return ""


def cpu_flags() -> frozenset[str]:
    return frozenset(cpuinfo("flags").split())


def cpu_model() -> str:
    return cpuinfo("model name") or platform.processor() or platform.machine()


def native_bf16() -> list[str]:
    """This CPU's bf16 instructions, [] where bf16 would be emulated."""
    return [flag for flag in BF16_FLAGS if flag in cpu_flags()]


def cpu_offers() -> str:
    """What the CPU offers, in words: `torch CPU capability AVX512; bf16 instructions: avx512_bf16`."""
    return (
        f"torch CPU capability {torch.backends.cpu.get_cpu_capability()}; "
        f"bf16 instructions: {', '.join(native_bf16()) or 'none'}"
    )


def flush_denormals() -> None:
    """Compute with denormal floats flushed to zero (FTZ/DAZ), in this thread and every thread it starts afterwards.

    A saturated network (an LSTM whose gates sit at 0 or 1 after a loss spike, an exploded one) computes with floats
    below 1e-38, which x86 CPUs handle in microcode, ~100x slower than normal ones. Measured on an Intel Xeon
    (benchmarks/bench_denormals.py): a saturated 2x200 LSTM's step took ~10x as long as a healthy one's, and in the
    tuned clipping study one unclipped trial spent 17 minutes on 300 steps that take 35 s. Healthy training does
    not reach such floats, so its results do not change (checked: the demo's perplexities, to the last digit).
    MXCSR is per thread and a new thread inherits its creator's, so this must run before torch starts its
    intra-op threads: before the first parallel op of the process (tasks.training.fitting.seed_and_threads, the
    estimate)."""
    torch.set_flush_denormal(True)


def cpu_runs_bf16() -> bool:
    """Whether torch's CPU kernels take bf16 here. torch has no public query: this is the test its oneDNN kernels
    make (AVX-512 BW/VL/DQ, or AVX-NE-CONVERT); an AVX2-only CPU fails it."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # a torch built without oneDNN
        return False


def on_cuda(cfg: RunConfig) -> bool:
    """Whether Lightning will train this run on a CUDA device (`auto` takes one where there is one)."""
    return cfg.train.accelerator in ("gpu", "cuda") or (cfg.train.accelerator == "auto" and torch.cuda.is_available())


def check_runnable(cfg: RunConfig, where: str = "") -> str | None:
    """Raise ConfigError (prefixed by `where`, e.g. a study cell's name) if this machine cannot run `cfg`'s
    accelerator or precision; return a warning to print where it can, but slowly (bf16 emulated)."""
    accelerator, precision = cfg.train.accelerator, cfg.train.precision
    if accelerator in ("gpu", "cuda") and not torch.cuda.is_available():
        build = "a CPU-only build" if torch.version.cuda is None else f"built for CUDA {torch.version.cuda}"
        raise ConfigError(
            f"{where}train.accelerator={accelerator}: torch {torch.__version__} ({build}) sees no CUDA "
            "device on this machine; use train.accelerator=cpu (or auto: a GPU where there is one)"
        )
    if accelerator == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(
            f"{where}train.accelerator=mps: this machine has no Apple GPU (MPS); use train.accelerator=cpu"
        )
    if not precision.startswith("bf16"):
        return None
    if on_cuda(cfg):
        if not torch.cuda.is_bf16_supported():
            raise ConfigError(
                f"{where}train.precision={precision}: the GPU {torch.cuda.get_device_name()} has no bf16 "
                "support (it needs compute capability 8.0 or newer); use train.precision=32-true"
            )
        return None
    if not cpu_runs_bf16():
        raise ConfigError(
            f"{where}train.precision={precision}: this CPU cannot run torch's bf16 kernels ({cpu_offers()}; "
            "they need AVX-512 BW/VL/DQ or AVX-NE-CONVERT); use train.precision=32-true"
        )
    if not native_bf16():
        return (
            f"rnnlab: warning: {where}train.precision={precision} on a CPU without bf16 instructions ({cpu_offers()}): "
            "bf16 is emulated, expect it no faster than 32-true"
        )
    return None
