"""The report's figures (matplotlib, PNG). One colour per variant across every figure; PNGs carry no timestamp or
version metadata, so the same data gives byte-identical files."""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

STYLE = {"figure.figsize": (7.5, 4.2), "figure.dpi": 100, "axes.grid": True, "grid.alpha": 0.3,
         "legend.fontsize": 8, "axes.titlesize": 11, "font.size": 9}


def colours(variants: list[str]) -> dict[str, tuple]:
    palette = plt.get_cmap("tab10" if len(variants) <= 10 else "tab20")
    return {v: palette(i % palette.N) for i, v in enumerate(variants)}


def save(fig: plt.Figure, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, format="png", metadata={"Software": None})
    plt.close(fig)
    return path


def band(curves: list[pd.Series]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Curves of several seeds on their common steps: (steps, mean, min, max)."""
    frame = pd.concat(curves, axis=1, join="inner").sort_index()
    return frame.index.to_numpy(), frame.mean(axis=1).to_numpy(), frame.min(axis=1).to_numpy(), frame.max(axis=1).to_numpy()


def metric_curves(histories: dict[str, list[pd.Series]], metric: str, colour: dict[str, tuple], path: Path) -> Path:
    """Validation metric vs step per variant: mean over seeds, band from min to max."""
    with plt.rc_context(STYLE):
        fig, ax = plt.subplots()
        for variant, curves in histories.items():
            if not curves:
                continue
            steps, mean, low, high = band(curves)
            ax.plot(steps, mean, color=colour[variant], label=f"{variant} (n={len(curves)})", marker="o", markersize=3)
            ax.fill_between(steps, low, high, color=colour[variant], alpha=0.2, linewidth=0)
        if metric.endswith("ppl"):
            ax.set_yscale("log")
        ax.set(xlabel="training step", ylabel=metric, title=f"{metric} during training (mean, band: min–max over seeds)")
        ax.legend(loc="best")
        return save(fig, path)


def gradient_norms(histories: dict[str, list[pd.Series]], thresholds: dict[str, float | None],
                   colour: dict[str, tuple], path: Path, points: int = 300) -> Path:
    """Pre-clip total gradient norm vs step, log scale: per variant the geometric mean over seeds (binned to at most
    `points` steps, median per bin), band min–max; the clipping threshold dashed in the variant's colour."""
    with plt.rc_context(STYLE):
        fig, ax = plt.subplots()
        for variant, curves in histories.items():
            finite = [c[np.isfinite(c) & (c > 0)] for c in curves]
            finite = [c for c in finite if len(c)]
            if not finite:
                continue
            frame = pd.concat([np.log10(c) for c in finite], axis=1).sort_index()
            width = max(1, math.ceil(len(frame) / points))
            binned = frame.groupby(np.arange(len(frame)) // width)
            steps = frame.index.to_series().groupby(np.arange(len(frame)) // width).median().to_numpy()
            mean = binned.median().mean(axis=1).to_numpy()
            low, high = binned.min().min(axis=1).to_numpy(), binned.max().max(axis=1).to_numpy()
            ax.plot(steps, 10 ** mean, color=colour[variant], label=variant, linewidth=1.2)
            ax.fill_between(steps, 10 ** low, 10 ** high, color=colour[variant], alpha=0.15, linewidth=0)
            if thresholds.get(variant):
                ax.axhline(thresholds[variant], color=colour[variant], linestyle="--", linewidth=1,
                           label=f"{variant}: clip at {thresholds[variant]:g}")
        ax.set_yscale("log")
        ax.set(xlabel="training step", ylabel="total gradient norm before clipping",
               title="Pre-clip gradient norm (geometric mean over seeds, band: min–max)")
        ax.legend(loc="best")
        return save(fig, path)


def final_metric(table: pd.DataFrame, metric: str, colour: dict[str, tuple], path: Path) -> Path:
    """The deciding metric per variant, mean with ±1 std error bars; variants with no finished seed say why."""
    with plt.rc_context(STYLE):
        fig, ax = plt.subplots()
        positions = np.arange(len(table))
        for i, row in enumerate(table.itertuples(index=False)):
            mean, std = getattr(row, f"{metric}_mean"), getattr(row, f"{metric}_std")
            if math.isnan(mean):
                ax.annotate("diverged" if row.diverged else "no result", (i, 0), xycoords=("data", "axes fraction"),
                            xytext=(0, 8), textcoords="offset points", ha="center", color=colour[row.variant])
                continue
            ax.errorbar(i, mean, yerr=0 if math.isnan(std) else std, fmt="o", color=colour[row.variant], capsize=5,
                        markersize=7)
        ax.set_xticks(positions, table["variant"], rotation=20, ha="right")
        ax.set_xlim(-0.5, len(table) - 0.5)
        ax.set(ylabel=metric, title=f"final {metric} per variant (mean ± std over finished seeds)")
        return save(fig, path)
