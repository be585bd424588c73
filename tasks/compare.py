"""A study's comparison table, from MLflow alone: one row per variant, mean ± std over its seeds.

Which cells belong to an execution comes from its parent run's `grid.json`; a cell's result is the latest FINISHED
run with that cell's identity (so cells reused from an earlier execution count too).
"""

from __future__ import annotations

import json
import math
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from tasks import tracking

KEY_METRICS = ("valid_ppl", "test_ppl", "valid_bleu_greedy", "test_bleu", "test_bleu_greedy", "test_chrf",
               "tokens_per_second", "train_seconds", "clipped_share", "max_grad_norm")
SHORT = {"tokens_per_second": "tok/s", "train_seconds": "train s", "clipped_share": "clipped",
         "max_grad_norm": "max grad", "valid_bleu_greedy": "valid_bleu"}


def read_text(run_id: str, path: str) -> str:
    with tempfile.TemporaryDirectory() as tmp:
        return tracking.download_artifact(run_id, path, tmp).read_text(encoding="utf-8")


def cell_results(study: str, parent_run_id: str | None = None) -> tuple[Any, list[dict[str, Any]], pd.DataFrame]:
    """(parent run, the execution's grid, one row per cell × seed with a finished run: its tags and metrics)."""
    parent, runs = tracking.study_runs(study, parent_run_id)
    grid = json.loads(read_text(parent.info.run_id, "grid.json"))
    keys = {g["cell_key"] for g in grid}
    if runs.empty:
        return parent, grid, runs
    runs = runs[runs["tags.rnnlab.cell_key"].isin(keys) & (runs["status"] == "FINISHED")]
    runs = runs.sort_values("start_time").drop_duplicates("tags.rnnlab.cell_key", keep="last")
    return parent, grid, runs.reset_index(drop=True)


def comparison(study: str, parent_run_id: str | None = None) -> pd.DataFrame:
    return table_of(study, *cell_results(study, parent_run_id))


def table_of(study: str, parent: Any, grid: list[dict[str, Any]], runs: pd.DataFrame) -> pd.DataFrame:
    metric, goal = parent.data.tags["rnnlab.metric"], parent.data.tags["rnnlab.goal"]
    names = [metric] + [m for m in KEY_METRICS if m != metric]
    names = [m for m in names if f"metrics.{m}" in runs.columns]
    rows = []
    for variant in dict.fromkeys(g["variant"] for g in grid):
        cells = [g for g in grid if g["variant"] == variant]
        mine = runs[runs["tags.rnnlab.cell"] == variant] if not runs.empty else runs
        diverged = mine["tags.rnnlab.diverged"] == "true" if not mine.empty else pd.Series(dtype=bool)
        ok = mine[~diverged] if not mine.empty else mine
        row: dict[str, Any] = {"variant": variant, **cells[0]["factors"], "seeds": len(cells),
                               "finished": len(ok), "diverged": int(diverged.sum())}
        for name in names:
            values = ok[f"metrics.{name}"].dropna()
            row[f"{name}_mean"] = values.mean() if len(values) else math.nan
            with np.errstate(over="ignore", invalid="ignore"):  # a blown-up model's astronomical values: inf
                row[f"{name}_std"] = values.std(ddof=1) if len(values) > 1 else math.nan
        rows.append(row)
    table = pd.DataFrame(rows)
    table["best"] = False
    scored = table[f"{metric}_mean"].dropna() if f"{metric}_mean" in table else pd.Series(dtype=float)
    if len(scored):
        table.loc[scored.idxmin() if goal == "min" else scored.idxmax(), "best"] = True
    table.attrs.update(metric=metric, goal=goal, parent_run_id=parent.info.run_id, study=study)
    return table


def number(value: float, digits: int = 2) -> str:
    """Fixed decimals, except for the astronomically large values of a model that blew up."""
    if math.isnan(value):
        return "–"
    return f"{value:.3g}" if math.isfinite(value) and abs(value) >= 1e6 else f"{value:.{digits}f}"


def mean_std(mean: float, std: float, digits: int) -> str:
    if math.isnan(mean):
        return "–"
    return number(mean, digits) + ("" if math.isnan(std) else f" ± {number(std, digits)}")


def digits_for(name: str) -> int:
    return 0 if name in ("tokens_per_second", "train_seconds") else 3 if name == "clipped_share" else 2


def formatted(table: pd.DataFrame) -> pd.DataFrame:
    """The table as people read it: mean ± std per metric, seed counts, diverged cells said in words, best starred."""
    metric = table.attrs["metric"]
    shown = pd.DataFrame({"variant": table["variant"] + table["best"].map({True: " *", False: ""})})
    shown["n"] = table["finished"].astype(str) + "/" + table["seeds"].astype(str)
    shown["diverged"] = table["diverged"]
    for column in table.columns:
        if column.endswith("_mean"):
            name = column.removesuffix("_mean")
            label = f"{name} ({'lower' if table.attrs['goal'] == 'min' else 'higher'} is better)" if name == metric else SHORT.get(name, name)
            cells = [mean_std(m, s, digits_for(name)) for m, s in zip(table[column], table[f"{name}_std"])]
            shown[label] = ["diverged" if f == 0 and d else c for c, f, d in zip(cells, table["finished"], table["diverged"])]
    return shown


def as_markdown(table: pd.DataFrame) -> str:
    shown = formatted(table)
    lines = ["| " + " | ".join(shown.columns) + " |", "|" + "---|" * len(shown.columns)]
    lines += ["| " + " | ".join(str(v) for v in row) + " |" for row in shown.itertuples(index=False)]
    return "\n".join(lines) + "\n\n* best mean " + table.attrs["metric"] + "; mean ± std over finished seeds.\n"


def log_comparison(parent_run_id: str, table: pd.DataFrame) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        table.to_csv(Path(tmp) / "comparison.csv", index=False)
        (Path(tmp) / "comparison.md").write_text(as_markdown(table), encoding="utf-8")
        for name in ("comparison.csv", "comparison.md"):
            tracking.log_artifact(parent_run_id, Path(tmp) / name)
