"""What the machine's matrix units reach, measured in the benchmark's own process: the yardstick for "share of
peak". A model's training FLOPs per token over this is how much of the hardware it uses.

Measured, not taken from a datasheet: the machines this project runs on change from one session to the next (AVX2
only, AVX-512, AVX-512 BF16, AMX), and what counts is what torch's kernels reach here, with these threads."""

from __future__ import annotations

import statistics
import time

import torch

from tasks.record import hardware

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def matmul_gflops(m: int, k: int, n: int, dtype: torch.dtype, seconds: float = 1.0) -> float:
    """The best of repeated (m×k)@(k×n) products, in GFLOP/s (2·m·k·n FLOPs each), after a warm-up."""
    a, b = torch.randn(m, k, dtype=dtype), torch.randn(k, n, dtype=dtype)
    for _ in range(3):
        a @ b
    best, spent = 0.0, 0.0
    while spent < seconds:
        start = time.perf_counter()
        a @ b
        took = time.perf_counter() - start
        spent += took
        best = max(best, 2 * m * k * n / took / 1e9)
    return best


def peaks(shape: tuple[int, int, int]) -> dict[str, dict[str, float]]:
    """Per precision this CPU runs: GFLOP/s of the model's own largest matmul (`shape`) and of a square 2048 one;
    the peak is the larger."""
    found = {}
    for name, dtype in DTYPES.items():
        if dtype == torch.bfloat16 and not hardware.cpu_runs_bf16():
            continue
        model, square = matmul_gflops(*shape, dtype), matmul_gflops(2048, 2048, 2048, dtype)
        found[name] = {"model_shape": model, "square_2048": square, "peak": max(model, square)}
    return found


def machine_line() -> str:
    return (
        f"torch {torch.__version__}, {torch.get_num_threads()} threads; CPU: {hardware.cpu_model()}; "
        f"{hardware.cpu_offers()}"
    )


def print_peaks(found: dict[str, dict[str, float]], shape: tuple[int, int, int]) -> None:
    m, k, n = shape
    for name, p in found.items():
        print(
            f"matmul peak {name}: {p['peak']:,.0f} GFLOP/s (the model's {m}×{k}@{k}×{n}: {p['model_shape']:,.0f}; "
            f"2048³: {p['square_2048']:,.0f})",
            flush=True,
        )
    if "bf16" not in found:
        print(
            f"bf16: this CPU cannot run torch's bf16 kernels ({hardware.cpu_offers()}): the bf16 side is skipped",
            flush=True,
        )
    elif not hardware.native_bf16():
        print("bf16: emulated on this CPU (no bf16 instructions): expect it no faster than fp32", flush=True)


def share(tokens_per_second: float, flops_per_token: float, peak_gflops: float) -> str:
    achieved = tokens_per_second * flops_per_token / 1e9
    return f"{achieved:,.0f} GFLOP/s = {achieved / peak_gflops:.0%} of peak"


def report(speeds: dict[str, list[float]], flops: float, found: dict, unit: str = "tok/s") -> None:
    """Medians, ratios to bare fp32 (of the medians, and the median of the per-round ratios), shares of peak."""
    base = statistics.median(speeds["bare fp32"])
    for side, values in speeds.items():
        median = statistics.median(values)
        paired = statistics.median(v / b for v, b in zip(values, speeds["bare fp32"]))
        precision = side.split()[-1]
        print(
            f"{side:>12}: {median:,.0f} {unit} · ×{median / base:.3f} bare fp32 (per-round ×{paired:.3f}) · "
            f"{share(median, flops, found[precision]['peak'])} {precision}"
        )
    if "rnnlab bf16" in speeds:
        ours = statistics.median(speeds["rnnlab bf16"])
        print(
            f"rnnlab bf16 / rnnlab fp32: ×{ours / statistics.median(speeds['rnnlab fp32']):.3f}; "
            f"rnnlab bf16 / bare bf16: ×{ours / statistics.median(speeds['bare bf16']):.3f}"
        )
