"""A study's comparison, from MLflow alone: one row per variant, saying how its seeds ended (trained, diverged,
failed to learn) and, over the seeds that trained and no others, the deciding metric (a perplexity: geometric mean
and 95% interval, computed in log space) and the runs' other key figures (mean ± std).

Which cells belong to an execution comes from its parent run's `grid.json`; a cell's result is the latest FINISHED
run with that cell's identity (so cells reused from an earlier execution count too).
"""

from __future__ import annotations

import json
import math
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from tasks.analysis import stats
from tasks.record import tracking
from tasks.record.outcome import DIVERGED, FAILED_TO_LEARN, OUTCOMES, TRAINED

KEY_METRICS = (
    "valid_ppl",
    "test_ppl",
    "valid_bleu_greedy",
    "test_bleu",
    "test_bleu_greedy",
    "test_chrf",
    "tokens_per_second",
    "train_seconds",
    "clipped_share",
    "max_grad_norm",
)
BOUNDED = {m: (0.0, 100.0) for m in ("valid_bleu_greedy", "valid_bleu", "test_bleu", "test_bleu_greedy", "test_chrf")}
SHORT = {
    "tokens_per_second": "tok/s",
    "train_seconds": "train s",
    "clipped_share": "clipped",
    "max_grad_norm": "max grad",
    "valid_bleu_greedy": "valid_bleu",
}


CURVE_COLUMNS = ["variant", "seed", "step", "value"]


@dataclass(frozen=True)
class Comparison:
    study: str
    question: str
    metric: str  # the deciding metric
    goal: str  # min or max
    parent_run_id: str
    factors: dict[str, list[str]]  # factor → its values, in the grid's order (the first is the baseline)
    runs: pd.DataFrame  # one row per cell × seed with a finished run: variant, seed, run_id, outcome, factors, metrics
    table: pd.DataFrame  # one row per variant
    # The unigram model of the training split, per perplexity metric ({"valid_ppl": 687.03}): at or above it a model
    # has learned nothing (tasks/data/unigram.py); from the runs' data.unigram_ppl.<split> tags, {} for older runs.
    floor: dict[str, float] = field(default_factory=dict)
    # What the study file declared under `effect` (rnnlab/schemas/study.py Effect), on the metric's comparison scale (a
    # perplexity ratio, or points): the smallest effect worth detecting, and the margin within which two variants
    # count as equivalent. None where not declared (and for executions recorded before they could be).
    smallest_effect: float | None = None
    margin: float | None = None
    # The trained runs' validation curves (validation_curves): variant, seed, step, value; empty where none.
    curves: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=CURVE_COLUMNS))

    @property
    def log_scale(self) -> bool:
        return stats.on_log_scale(self.metric)

    @property
    def better(self) -> str:
        return "lower" if self.goal == "min" else "higher"


def read_text(run_id: str, path: str) -> str:
    with tempfile.TemporaryDirectory() as tmp:
        return tracking.download_artifact(run_id, path, tmp).read_text(encoding="utf-8")


def cell_results(
    study: str, parent_run_id: str | None = None, recipe: str | None = None
) -> tuple[Any, list[dict[str, Any]], pd.DataFrame]:
    """(parent run, the execution's grid, one row per cell × seed with a finished run: its tags and metrics).
    A tuned study's grid holds two recipes: `recipe` picks one, by default the tuned one (the study's decision)."""
    parent, runs = tracking.study_runs(study, parent_run_id)
    grid = json.loads(read_text(parent.info.run_id, "grid.json"))
    recipes = {g["recipe"] for g in grid if g.get("recipe")}
    if recipes:
        wanted = recipe or ("tuned" if "tuned" in recipes else "base")
        grid = [g for g in grid if g.get("recipe") == wanted]
    keys = {g["cell_key"] for g in grid}
    if runs.empty:
        return parent, grid, runs
    runs = runs[runs["tags.rnnlab.cell_key"].isin(keys) & (runs["status"] == "FINISHED")]
    runs = runs.sort_values("start_time").drop_duplicates("tags.rnnlab.cell_key", keep="last")
    return parent, grid, runs.reset_index(drop=True)


def floor_of_runs(runs: pd.DataFrame) -> dict[str, float]:
    """{"valid_ppl": the unigram model's perplexity on valid, ...} from the runs' data tags (one corpus per study)."""
    found = {}
    for column in runs.columns:
        if column.startswith("tags.data.unigram_ppl."):
            values = pd.to_numeric(runs[column], errors="coerce").dropna()
            if len(values):
                found[f"{column.rpartition('.')[2]}_ppl"] = float(values.iloc[0])
    return found


def recorded_outcome(run: pd.Series) -> str:
    """The run's `rnnlab.outcome` tag; for runs recorded before outcomes were (an older store), judged the same way
    from what they did record: diverged, or a perplexity at or above the uniform guess over the vocabulary."""
    tag = run.get("tags.rnnlab.outcome")
    if isinstance(tag, str) and tag in OUTCOMES:
        return tag
    if run.get("tags.rnnlab.diverged") == "true":
        return DIVERGED
    vocab = run.get("tags.data.vocab_size", run.get("tags.data.tgt_vocab"))
    ppl = run.get("metrics.valid_ppl", math.nan)
    if isinstance(vocab, str) and vocab.isdigit() and not ppl < int(vocab):
        return FAILED_TO_LEARN
    return TRAINED


def run_frame(runs: pd.DataFrame, grid: list[dict[str, Any]], metrics: list[str]) -> pd.DataFrame:
    """One row per cell × seed with a finished run: variant, seed, run_id, outcome (and why), factor values,
    the step it stopped at if it diverged, and `metrics`; in the grid's order."""
    if runs.empty:
        return pd.DataFrame(columns=["variant", "seed", "run_id", "outcome", "reason", "diverged_step", *metrics])
    frame = pd.DataFrame(
        {
            "variant": runs["tags.rnnlab.cell"],
            "seed": runs["params.seed"].astype(int),
            "run_id": runs["run_id"],
            "outcome": runs.apply(recorded_outcome, axis=1),
            "reason": runs.get("tags.rnnlab.outcome_reason", pd.Series("", index=runs.index)).fillna(""),
            "diverged_step": runs.get("metrics.diverged_step", pd.Series(math.nan, index=runs.index)),
        }
    )
    for name in metrics:
        frame[name] = runs.get(f"metrics.{name}", pd.Series(math.nan, index=runs.index))
        nll = runs.get(f"metrics.{name.removesuffix('ppl')}nll") if name.endswith("ppl") else None
        if nll is not None:  # a perplexity that overflowed is not stored (tracking.storable): its NLL says what it was
            frame[name] = frame[name].fillna(nll.map(perplexity_of))
    for factor in grid[0]["factors"]:
        frame[f"factor.{factor}"] = runs[f"tags.factor.{factor}"]
    order = {(g["variant"], g["seed"]): i for i, g in enumerate(grid)}
    frame["order"] = [order.get(key, len(order)) for key in zip(frame["variant"], frame["seed"])]
    return frame.sort_values("order", kind="stable").drop(columns="order").reset_index(drop=True)


def curve_key(metric: str) -> str | None:
    """The curve logged during training that tracks a deciding metric: `valid/ppl` for a perplexity (models/metrics.py),
    `valid/bleu_greedy` for BLEU (tasks/kinds/nmt.py); None for any other (speed, time: no curve)."""
    return "valid/ppl" if "ppl" in metric else "valid/bleu_greedy" if "bleu" in metric else None


Points = Callable[[str, str], list[tuple[int, float]]]  # (run id, metric key) → (step, value) in step order


def legacy_curve(points: list[tuple[int, float]]) -> list[tuple[int, float]]:
    """A curve logged under a summary's name (`valid_ppl`), as runs recorded before the curves had names of their
    own did: kept where it has a point after step 0; values all at step 0 are the run's summary, logged once at its
    end (tracking logs summaries at step 0), and no curve."""
    return points if any(step > 0 for step, _ in points) else []


def validation_curves(frame: pd.DataFrame, metric: str, points: Points | None = None) -> pd.DataFrame:
    """The validation curve of every trained run in `frame` (run_frame): variant, seed, step, value. Runs recorded
    before the curves had names of their own logged it under the metric's name (`valid_ppl`), the final evaluation
    repeating the last step: the first value at a step is kept (and a summary at step 0 is no curve: legacy_curve)."""
    key = curve_key(metric)
    points = points or tracking.metric_history
    rows = []
    for run in frame[frame["outcome"] == TRAINED].itertuples(index=False):
        found = (points(run.run_id, key) if key else []) or (
            legacy_curve(points(run.run_id, metric)) if metric.startswith("valid_") else []
        )
        seen = set()
        for step, value in found:
            if step not in seen:
                seen.add(step)
                rows.append((run.variant, run.seed, int(step), float(value)))
    return pd.DataFrame(rows, columns=CURVE_COLUMNS)


def declared_effect(parent: Any) -> dict[str, float | None]:
    """The study file's `effect` (smallest, margin) as the study flow logged it, the param `study.effect`; both None
    for executions recorded before studies could declare it."""
    params = getattr(parent.data, "params", None) or {}
    try:
        declared = json.loads(params.get("study.effect") or "null") or {}
    except json.JSONDecodeError:
        declared = {}
    return {"smallest_effect": declared.get("smallest"), "margin": declared.get("margin")}


def comparison(study: str, parent_run_id: str | None = None) -> Comparison:
    return compare(study, *cell_results(study, parent_run_id))


def compare(
    study: str, parent: Any, grid: list[dict[str, Any]], runs: pd.DataFrame, points: Points | None = None
) -> Comparison:
    """The comparison of an execution's runs; `points` reads a run's metric history (MLflow's, unless given)."""
    metric, goal = parent.data.tags["rnnlab.metric"], parent.data.tags["rnnlab.goal"]
    # Test scores stay out of the study's table: the test split is scored after the decision, for the variants the
    # answer names only, and reported apart (tasks/analysis/held_out.py).
    names = [metric] + [
        m for m in KEY_METRICS if m != metric and not m.startswith("test_") and f"metrics.{m}" in runs.columns
    ]
    frame = run_frame(runs, grid, names)
    trained = frame[frame["outcome"] == TRAINED]
    if len(trained) and trained[metric].isna().all():  # a trained run logged all it ever will: the name is wrong
        logged = sorted(
            c.removeprefix("metrics.") for c in runs.columns if c.startswith("metrics.") and runs[c].notna().any()
        )
        raise LookupError(
            f"study '{study}' is decided by metric '{metric}', which none of its trained runs logged; "
            f"they logged: {', '.join(logged)}. Fix metric.name in the study file and run it again "
            "(finished cells are reused)"
        )
    factors = {k: list(dict.fromkeys(g["factors"][k] for g in grid)) for k in grid[0]["factors"]}
    rows = []
    for variant in dict.fromkeys(g["variant"] for g in grid):
        cells = [g for g in grid if g["variant"] == variant]
        mine = frame[frame["variant"] == variant]
        trained = mine[mine["outcome"] == TRAINED]
        row: dict[str, Any] = {
            "variant": variant,
            **cells[0]["factors"],
            "seeds": len(cells),
            **{o: int((mine["outcome"] == o).sum()) for o in OUTCOMES},
            "missing": len(cells) - len(mine),
        }
        for name in names:  # over the seeds that trained, and no others
            values = trained[name].dropna()
            if name == metric or stats.on_log_scale(name):
                interval = stats.mean_interval(values, log=stats.on_log_scale(name))
                low, high = interval.low, interval.high
                if name in BOUNDED:  # a t interval over two seeds can reach past what the metric can be
                    low, high = max(low, BOUNDED[name][0]), min(high, BOUNDED[name][1])
                row.update({f"{name}_mean": interval.mean, f"{name}_low": low, f"{name}_high": high})
            else:
                row[f"{name}_mean"] = values.mean() if len(values) else math.nan
                row[f"{name}_std"] = values.std(ddof=1) if len(values) > 1 else math.nan
        rows.append(row)
    table = pd.DataFrame(rows)
    table["best"] = False
    scored = table[f"{metric}_mean"].dropna() if f"{metric}_mean" in table else pd.Series(dtype=float)
    if len(scored):
        table.loc[scored.idxmin() if goal == "min" else scored.idxmax(), "best"] = True
    note = parent.data.tags.get("mlflow.note.content", "")  # where executions recorded before rnnlab.question kept it
    question = parent.data.tags.get("rnnlab.question", note.partition("\n\n**Answer.**")[0])
    return Comparison(
        study,
        question,
        metric,
        goal,
        parent.info.run_id,
        factors,
        frame,
        table,
        floor=floor_of_runs(runs) if not runs.empty else {},
        **declared_effect(parent),
        curves=validation_curves(frame, metric, points),
    )


def perplexity_of(mean_nll: float) -> float:
    return math.exp(mean_nll) if mean_nll < 709.0 else math.inf  # exp overflows float64 past ~709.78


def metric_key(label: str) -> str:
    """A variant's label as an MLflow metric-key prefix (keys allow letters, digits, _ - . / : and spaces)."""
    return "".join(ch if ch.isalnum() or ch in "_-. :" else ":" if ch == "=" else "_" for ch in label)


def summary_metrics(c: Comparison, labels: dict[str, str]) -> dict[str, float]:
    """The study's answer as the parent run's metrics, per variant (by its label): the deciding metric over the
    seeds that trained, its mean (geometric for a perplexity), 95% interval, standard deviation (of its log for a
    perplexity: `_log_std`) and n; and the seeds that diverged or failed to learn."""
    found: dict[str, float] = {}
    for row in c.table.itertuples(index=False):
        prefix = metric_key(labels.get(row.variant, row.variant))
        mine = c.runs[(c.runs["variant"] == row.variant) & (c.runs["outcome"] == TRAINED)][c.metric].dropna()
        values = mine[mine.map(math.isfinite)].to_numpy(dtype=float)
        spread = (pd.Series(values).map(math.log) if c.log_scale else pd.Series(values)).std(ddof=1)
        found.update(
            {
                f"{prefix}/{c.metric}_mean": getattr(row, f"{c.metric}_mean"),
                f"{prefix}/{c.metric}_low": getattr(row, f"{c.metric}_low"),
                f"{prefix}/{c.metric}_high": getattr(row, f"{c.metric}_high"),
                f"{prefix}/{c.metric}_{'log_std' if c.log_scale else 'std'}": spread,
                f"{prefix}/n": float(len(values)),
                f"{prefix}/diverged": float(getattr(row, DIVERGED)),
                f"{prefix}/failed_to_learn": float(getattr(row, FAILED_TO_LEARN)),
            }
        )
    return {k: v for k, v in found.items() if not math.isnan(v)}  # no value (a single seed's std) is no metric


def number(value: float, digits: int = 2) -> str:
    """Fixed decimals, but 3 significant digits for very large values."""
    if math.isnan(value):
        return "–"
    return f"{value:.3g}" if math.isfinite(value) and abs(value) >= 1e6 else f"{value:.{digits}f}"


def digits_for(name: str) -> int:
    return (
        0
        if name in ("tokens_per_second", "train_seconds")
        else 3
        if name == "clipped_share"
        else 1
        if "ppl" in name
        else 2
    )


def with_interval(mean: float, low: float, high: float, digits: int) -> str:
    if math.isnan(mean):
        return "–"
    return number(mean, digits) + ("" if math.isnan(low) else f" [{number(low, digits)}, {number(high, digits)}]")


def mean_std(mean: float, std: float, digits: int) -> str:
    if math.isnan(mean):
        return "–"
    return number(mean, digits) + ("" if math.isnan(std) else f" ± {number(std, digits)}")


def outcome_words(row: Any) -> str:
    """'2/2 trained', '0/2 trained: 2 diverged', '1/3 trained: 1 diverged, 1 failed to learn'."""
    ended = [
        f"{getattr(row, o)} {w}"
        for o, w in ((DIVERGED, "diverged"), (FAILED_TO_LEARN, "failed to learn"), ("missing", "without a result"))
        if getattr(row, o)
    ]
    return f"{row.trained}/{row.seeds} trained" + (": " + ", ".join(ended) if ended else "")


def formatted(c: Comparison) -> pd.DataFrame:
    """The table as people read it: outcomes in words, the deciding metric as mean [95% interval] over the seeds
    that trained (a geometric mean for perplexities), other figures as mean ± std; the best variant starred."""
    table = c.table
    shown = pd.DataFrame({"variant": table["variant"] + table["best"].map({True: " *", False: ""})})
    shown["outcome"] = [outcome_words(row) for row in table.itertuples(index=False)]
    for column in table.columns:
        if not column.endswith("_mean"):
            continue
        name = column.removesuffix("_mean")
        if name == c.metric:
            label = f"{name} ({'geometric ' if c.log_scale else ''}mean [95% CI], {c.better} is better)"
        else:
            label = SHORT.get(name, name)
        if f"{name}_low" in table:
            shown[label] = [
                with_interval(m, lo, hi, digits_for(name))
                for m, lo, hi in zip(table[column], table[f"{name}_low"], table[f"{name}_high"])
            ]
        else:
            shown[label] = [mean_std(m, s, digits_for(name)) for m, s in zip(table[column], table[f"{name}_std"])]
    if c.floor:  # the level a model must beat to have learned anything, beside the variants
        row = {"variant": FLOOR_LABEL, "outcome": "no training: word frequencies"}
        for column in shown.columns[2:]:
            name = next((n for n in c.floor if column == n or column.startswith(f"{n} (")), None)
            row[column] = number(c.floor[name], 1) if name else "–"
        shown = pd.concat([shown, pd.DataFrame([row])], ignore_index=True)
    return shown


FLOOR_LABEL = "unigram model (floor)"


def md_table(frame: pd.DataFrame) -> str:
    """A Markdown table (pandas' to_markdown): floats with 2 decimals (3 significant digits when huge), text exactly
    as written (no number parsing: "1.50" stays "1.50")."""
    shown = frame.apply(lambda column: column.map(lambda v: number(v) if isinstance(v, float) else str(v)))
    return shown.to_markdown(index=False, disable_numparse=True) + "\n"


def as_markdown(c: Comparison) -> str:
    floor = (
        f" The last row, *{FLOOR_LABEL}*, is the training split's word frequencies with no context, scored on "
        "the same split: a run at or above its perplexity failed to learn."
        if c.floor
        else ""
    )
    return (
        md_table(formatted(c))
        + f"\n\\* the {'lowest' if c.goal == 'min' else 'highest'} mean {c.metric} among variants with a trained "
        "seed: a mark, not a verdict (the answer says which differences the seeds can tell apart). "
        "Statistics are over the seeds that trained, and no others; a perplexity is a geometric mean (its 95% "
        f"interval is a Student-t interval on log perplexity), other figures mean ± std.{floor}\n"
    )


def as_json(c: Comparison, answer: Any) -> dict[str, Any]:
    return {
        "study": c.study,
        "question": c.question,
        "answer": answer.text,
        "factors": answer.factors,
        "metric": c.metric,
        "goal": c.goal,
        "parent_run_id": c.parent_run_id,
        "floor": c.floor,
        "table": json.loads(c.table.to_json(orient="records")),
    }


def log_comparison(c: Comparison, answer: Any) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        c.table.to_csv(Path(tmp) / "comparison.csv", index=False)
        factors = "".join(f"- {line}\n" for line in answer.factors)
        (Path(tmp) / "comparison.md").write_text(f"{answer.text}\n\n{factors}\n{as_markdown(c)}", encoding="utf-8")
        for name in ("comparison.csv", "comparison.md"):
            tracking.log_artifact(c.parent_run_id, Path(tmp) / name)
