"""A study's report, built from what MLflow recorded and nothing else: the question and its answer in words, the grid,
the results table, each factor's effect, significance on the evaluation data, plots, and the environment that
produced it.

Written as report.md with PNGs beside it and a self-contained report.html; byte-identical when rebuilt from the same
store (no timestamps, fixed bootstrap seeds, PNGs without metadata).
"""

from __future__ import annotations

import base64
import json
import math
import re
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import markdown
import numpy as np
import pandas as pd
from prefect import task

from rnnlab.schemas.config import load_yaml
from tasks.analysis import held_out, stats, tuned_answer
from tasks.analysis.answer import Answer, answer, declared, effect_size, factor
from tasks.analysis.compare import (
    Comparison,
    as_markdown,
    cell_results,
    compare,
    legacy_curve,
    md_table,
    number,
    read_text,
)
from tasks.record import tracking
from tasks.record.outcome import TRAINED, WORDS
from tasks.reporting import plots


def curve_name(metric: str) -> str:
    """The training-time curve of a metric: `valid_ppl` (the selected checkpoint's score) → `valid/ppl` (validation
    during training), `grad_norm` → `train/grad_norm`."""
    split, _, name = metric.partition("_")
    return f"{split}/{name}" if split == "valid" else f"train/{metric}"


def history(run_id: str, metric: str) -> pd.Series:
    """The curve of `metric` over training steps, from its curve's name (`valid/ppl`, `train/loss`); runs recorded
    before the curves had names of their own logged it under the metric's name, with the final evaluation repeating
    the last step. Never a summary: values logged only at step 0 under the metric's name are the run's end result
    (legacy_curve), drawn in final.png and not as a curve."""
    points = tracking.metric_history(run_id, curve_name(metric)) or legacy_curve(
        tracking.metric_history(run_id, metric)
    )
    series = pd.Series([v for _, v in points], index=[s for s, _ in points], dtype=float)
    return series[~series.index.duplicated(keep="first")]


def artifact_names(run_id: str, folder: str) -> set[str]:
    return {a.path for a in tracking.client().list_artifacts(run_id, folder)}


TESTS = {
    "lm": "a paired bootstrap over sentences of the per-sentence NLL saved at evaluation (corpus perplexity "
    "difference; 1000 resamples, seed 12345; two-sided, null-centred: the resampled differences are "
    "shifted to no difference and p counts those at least as far from it as the observed one, either way)",
    "nmt": "sacrebleu's paired bootstrap resampling on the saved translations (1000 resamples, seed 12345; "
    "two-sided: it compares absolute differences, centred)",
}


def significance(c: Comparison, task_kind: str) -> pd.DataFrame:
    """The best variant against each other one, seed by seed, where both trained: a paired bootstrap on the saved
    per-sentence scores (language models) or translations (translation), on the test split where both runs have
    it, else on validation. All these tests are one family (the best against the rest): their p-values are
    Holm-adjusted together (`p_holm`), and `significant` is judged on the adjusted p."""
    best = c.table[c.table["best"]]
    if best.empty:
        return pd.DataFrame()
    best_variant = best.iloc[0]["variant"]
    trained = c.runs[c.runs["outcome"] == TRAINED]
    best_runs = trained[trained["variant"] == best_variant].set_index("seed")["run_id"]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:

        def fetch(run_id: str, path: str) -> Path:
            return tracking.download_artifact(run_id, path, Path(tmp) / run_id)

        def shared_split(run_ids: list[str], folder: str, name: str) -> str:
            return (
                "test"
                if all(f"{folder}/{name.format('test')}" in artifact_names(r, folder) for r in run_ids)
                else "valid"
            )

        for row in trained[trained["variant"] != best_variant].itertuples(index=False):
            if row.seed not in best_runs:
                continue
            best_id = best_runs[row.seed]
            if task_kind == "lm":
                split = shared_split([best_id, row.run_id], "eval", "{}_sentences.csv")
                result = stats.perplexity_bootstrap(
                    pd.read_csv(fetch(best_id, f"eval/{split}_sentences.csv")),
                    pd.read_csv(fetch(row.run_id, f"eval/{split}_sentences.csv")),
                )
                measure = f"{split} perplexity"
            else:
                split = shared_split([best_id, row.run_id], "translations", "{}.beam.hyp")
                lines = [
                    fetch(r, f"translations/{split}.{kind}").read_text(encoding="utf-8").splitlines()
                    for r, kind in ((best_id, "beam.hyp"), (row.run_id, "beam.hyp"), (row.run_id, "ref"))
                ]
                result = stats.bleu_bootstrap(*lines)
                measure = f"{split} BLEU"
            rows.append(
                {
                    "variant": row.variant,
                    "seed": row.seed,
                    "measure": measure,
                    "variant_value": result.baseline,
                    "best_value": result.system,
                    "difference": result.difference,
                    "ci_low": result.ci_low,
                    "ci_high": result.ci_high,
                    "p_value": result.p_value,
                }
            )
    found = pd.DataFrame(rows)
    if not found.empty:
        found["p_holm"] = stats.holm(found["p_value"])
        found["significant"] = found["p_holm"] < stats.ALPHA
    return found


def answer_section(c: Comparison, answer: Answer) -> str:
    question = c.question or "(no question was written down)"
    factors = (
        (
            "What each factor changed, in each setting of the others:\n\n"
            + "\n".join(f"- {line}" for line in answer.factors)
            + "\n\n"
        )
        if answer.factors
        else ""
    )
    return (
        f"> {question}\n\n**{answer.text}**\n\n{factors}The numbers behind it:\n\n"
        + "\n".join(f"- {line}" for line in answer.basis)
        + "\n"
    )


def effects_section(c: Comparison, effects: pd.DataFrame) -> str:
    if effects.empty:
        return "No factor could be paired.\n"

    def ratio_or_points(v: float) -> str:
        return "–" if math.isnan(v) else factor(c, v)

    smallest = declared(c, c.smallest_effect)
    detectable = [stats.detectable_effect(sd, n) for sd, n in zip(effects["sd"], effects["pairs"])]
    shown = pd.DataFrame(
        {
            "factor": effects["factor"],
            "change": effects["from"] + " → " + effects["to"],
            "with": effects["stratum"],
            "trained": [
                f"{a}/{n} → {b}/{m}"
                for a, n, b, m in zip(
                    effects["trained_from"], effects["runs_from"], effects["trained_to"], effects["runs_to"]
                )
            ],
            "Fisher p": ["–" if math.isnan(p) else f"{p:.2g}" for p in effects["outcome_p"]],
            "pairs that both trained": effects["pairs"],
            f"{c.metric} {'ratio' if c.log_scale else 'Δ'}": [ratio_or_points(v) for v in effects["mean_difference"]],
            "95% CI": [
                f"[{ratio_or_points(lo)}, {ratio_or_points(hi)}]" if not math.isnan(lo) else "–"
                for lo, hi in zip(effects["ci_low"], effects["ci_high"])
            ],
            "lower / higher": [f"{d} / {u}" for d, u in zip(effects["down"], effects["up"])],
            "sign test p": [f"{p:.2g}" if n else "–" for p, n in zip(effects["sign_p"], effects["pairs"])],
            "detectable at 80% power": ["–" if math.isnan(d) else effect_size(c, d) for d in detectable],
        }
    )
    if smallest is not None:
        had = [stats.power(smallest, sd, n) for sd, n in zip(effects["sd"], effects["pairs"])]
        needed = [stats.seeds_needed(smallest, sd) for sd in effects["sd"]]
        shown[f"power for {effect_size(c, smallest)}"] = ["–" if math.isnan(h) else f"{h:.0%}" for h in had]
        shown["seeds for 80% power"] = [
            "–" if math.isnan(sd) or sd == 0 else str(n) if n else f"> {stats.MOST_SEEDS:,}"
            for sd, n in zip(effects["sd"], needed)
        ]
    what = (
        "the geometric mean of the paired perplexity ratios (changed / original, from differences of log perplexity)"
        if c.log_scale
        else "the mean paired difference (changed − original)"
    )
    power = (
        f" *power for {effect_size(c, smallest)}*: the power these pairs had for the study's declared smallest "
        "effect, and *seeds for 80% power*: how many pairs that effect would need, from the same spread."
        if smallest is not None
        else " The study declared no smallest effect of interest (`effect.smallest`), so no power for it is given."
    )
    return (
        f"Each row changes one factor from its first value and holds the other factors and the seed fixed, within "
        f"each combination of the other factors' values (*with*) and pooled over them (*all*). "
        f"Outcomes are compared as counts: how many runs trained at each value, with Fisher's exact test "
        f"(two-sided). {c.metric} is compared only over the pairs in which both runs trained: {what}, with a "
        f"Student-t 95% interval (two-sided), and how many pairs went lower or higher, with the exact sign test "
        f"(two-sided; {c.better} is better). A pair in which either run did not train is counted, never averaged. "
        f"*Detectable at 80% power*: the smallest true effect, either way, that a two-sided paired t-test "
        f"(α = {stats.ALPHA}) over these pairs would detect 80% of the time, from the noncentral t with the "
        f"observed standard deviation of the paired differences taken as the true one.{power} No row is "
        f"corrected for the others: read them as estimates, and the answer's comparisons for the verdict.\n\n"
        f"Why these tests: one run per variant says little, so every figure is over seeds (Reimers & Gurevych "
        f"2017); the sign test assumes no distribution, which a handful of seeds cannot check (Dror et al. 2018); "
        f"a bootstrap across seeds (Agarwal et al. 2021) needs more runs than this: over two values its interval is "
        f"just their range, falsely narrow. Perplexities are compared in log space, as ratios.\n\n" + md_table(shown)
    )


def seeds_words(seeds: list[int]) -> str:
    return f"seed{'s' if len(seeds) > 1 else ''} {', '.join(str(s) for s in seeds)}"


def significance_section(c: Comparison, sig: pd.DataFrame) -> str:
    if sig.empty:
        return (
            "No two variants trained in the same seed, so there is nothing to test on the evaluation data.\n"
            if not c.table["best"].any() or len(c.table[c.table["trained"] > 0]) > 1
            else "Only one variant trained: there is nothing to test it against.\n"
        )
    best = c.table[c.table["best"]].iloc[0]["variant"]

    def p_words(p: float) -> str:
        return f"{p:.2g}" if p >= 0.001 else "< 0.001"

    shown = pd.DataFrame(
        {
            "variant": sig["variant"],
            "seed": sig["seed"],
            "measure": sig["measure"],
            "variant value": sig["variant_value"],
            f"`{best}`": sig["best_value"],
            "Δ (best − variant)": sig["difference"],
            "95% CI of Δ": [
                f"[{number(lo)}, {number(hi)}]" if not math.isnan(lo) else "–"
                for lo, hi in zip(sig["ci_low"], sig["ci_high"])
            ],
            "p (two-sided)": [p_words(p) for p in sig["p_value"]],
            "Holm p": [p_words(p) for p in sig["p_holm"]],
            "verdict": ["significant" if s else "**not significant**" for s in sig["significant"]],
        }
    )
    kind = sig["measure"].iloc[0]
    how = TESTS["nmt" if "BLEU" in kind else "lm"]
    way = "lower" if "perplexity" in kind else "higher"  # the better direction of what was tested
    plain = []
    for variant, group in sig.groupby("variant", sort=False):
        significant = group[group["significant"]]
        best_ahead = significant[(significant["difference"] < 0) == (way == "lower")]["seed"].tolist()
        variant_ahead = significant[(significant["difference"] < 0) != (way == "lower")]["seed"].tolist()
        neither = group[~group["significant"]]["seed"].tolist()
        parts = (
            ([f"`{best}` {way} in {seeds_words(best_ahead)}"] if best_ahead else [])
            + ([f"`{variant}` {way} in {seeds_words(variant_ahead)}"] if variant_ahead else [])
            + ([f"no significant difference in {seeds_words(neither)}"] if neither else [])
        )
        plain.append(f"- `{best}` against `{variant}`: " + "; ".join(parts) + ".")
    return (
        f"The best variant `{best}` against each other variant, seed by seed, only where both trained, with {how}. "
        f"These {len(sig)} tests are one family (the best against each other variant): each p is adjusted "
        f"with Holm's step-down method, and a difference is significant where the adjusted p is below "
        f"{stats.ALPHA}. This asks whether a difference is larger than the noise of the evaluation sentences for "
        "one pair of runs; whether it holds across seeds is the factor table's question.\n\n"
        + md_table(shown)
        + "\n"
        + "\n".join(plain)
        + "\n"
    )


def environment_section(runs: pd.DataFrame, parent: Any) -> str:
    def found(column: str) -> list[str]:
        return sorted(set(runs[column].dropna().astype(str))) if column in runs else []

    def values(column: str) -> str:
        return ", ".join(f"`{v}`" for v in found(column)) or "–"

    # runs recorded before precision was a setting trained in fp32
    precisions = sorted(
        set(runs.get("params.train.precision", pd.Series(dtype=object)).fillna("32-true").astype(str)) or {"32-true"}
    )
    rows = [
        ("study execution (parent run)", f"`{parent.info.run_id}`"),
        ("git commit", values("tags.git.commit")),
        ("uncommitted changes", values("tags.git.dirty")),
        ("code version", values("tags.rnnlab.code_version")),
        ("data checksum", values("tags.data.checksum")),
        ("python", values("tags.python")),
        ("platform", values("tags.platform")),
        ("CPU", values("tags.cpu")),
        ("CPU capability (torch kernels)", values("tags.cpu.capability")),
        ("CPU count", values("tags.cpu.count")),
        ("torch threads per cell", values("tags.torch.threads")),
        ("CPU bf16 instructions", values("tags.cpu.bf16")),
        ("training precision", ", ".join(f"`{v}`" for v in precisions)),
        ("torch deterministic algorithms", values("tags.torch.deterministic")),
        ("CUDA", values("tags.cuda")),
        ("GPU", values("tags.gpu")),
    ]
    rows += [
        (column.removeprefix("tags.pkg."), values(column))
        for column in sorted(runs.columns)
        if column.startswith("tags.pkg.")
    ]
    text = md_table(pd.DataFrame(rows, columns=["what", "value"]))
    capabilities = found("tags.cpu.capability")
    if len(capabilities) > 1 or len(found("tags.torch.threads")) > 1:
        text = (
            f"**Warning: the cells of this study ran on different CPU kernels ({', '.join(capabilities)}) or "
            "thread counts.** Floating-point results differ between them (a lot for chaotic runs), so the "
            "variants were not compared on equal terms: rerun the study on one kind of machine.\n\n" + text
        )
    if len(precisions) > 1 and "grid.train.precision" not in parent.data.params:
        text = (
            f"**Warning: the cells of this study trained in different precisions ({', '.join(precisions)}), "
            "and precision is not one of its factors.** Rerun them in one precision to compare the variants.\n\n" + text
        )
    return text + (
        "\nResults reproduce bit for bit on the same machine (same CPU capability and thread count), "
        "not across machines: other kernels round differently.\n"
    )


def runs_section(c: Comparison) -> str:
    shown = c.runs[["variant", "seed", "run_id"]].assign(outcome=c.runs["outcome"].map(WORDS), why=c.runs["reason"])
    return md_table(shown)


DRAWN = ("effects.png", "curve.png", "train_loss.png", "grad_norm.png", "final.png", "expected_best.png")


def layout(c: Comparison) -> plots.Panels:
    """The curves' small multiples: one panel per setting of all factors but the first for three or more factors."""
    settings = {row["variant"]: {k: row[k] for k in c.factors} for _, row in c.table.iterrows()}
    return plots.panels(settings, c.factors)


def param_words(runs: pd.DataFrame, key: str) -> str | None:
    values = sorted(set(runs.get(f"params.{key}", pd.Series(dtype=object)).dropna().astype(str)))
    return f"`{key}` {', '.join(values)}" if values else None


def figures(c: Comparison, runs: pd.DataFrame, out: Path) -> list[tuple[str, str, str]]:
    """Draw the study's plots into `out`: (file, or "" where there is nothing to draw; title; a note in words) each."""
    colour = plots.colours(list(c.table["variant"]))
    panels = layout(c)
    shown = []
    if c.metric.startswith("valid_"):
        curves: dict[str, list] = {v: [] for v in c.table["variant"]}
        stops: dict[str, list] = {v: [] for v in c.table["variant"]}
        for row in c.runs.itertuples(index=False):
            series = history(row.run_id, c.metric)
            if len(series) or row.outcome == TRAINED:
                curves[row.variant].append((row.outcome, series))
            elif not math.isnan(row.diverged_step):
                stops[row.variant].append((row.outcome, int(row.diverged_step)))
        title = f"{c.metric} during training"
        if any(len(series) > 1 for runs_of in curves.values() for _, series in runs_of):
            plots.metric_curves(
                curves, stops, c.metric, c.log_scale, colour, out / "curve.png", c.floor.get(c.metric), panels
            )
            shown.append(("curve.png", title, ""))
        else:  # one point is no curve: a study that validates only at its end shows that point in final.png
            how = [w for w in (param_words(runs, "train.val_every_n_steps"), param_words(runs, "train.max_steps")) if w]
            shown.append(
                (
                    "",
                    title,
                    "No curve: no run validated more than once during training"
                    + (f" ({'; '.join(how)})" if how else "")
                    + f", so there is no {c.metric} curve to draw. Each run's {c.metric} at the end of its training "
                    "is in the final plot below.",
                )
            )
    losses = {
        v: [(row.outcome, history(row.run_id, "loss")) for row in c.runs[c.runs["variant"] == v].itertuples()]
        for v in c.table["variant"]
    }
    if any(len(s) for runs_of in losses.values() for _, s in runs_of):
        vocab = pd.to_numeric(runs.get("tags.data.vocab_size", pd.Series(dtype=float)), errors="coerce").dropna()
        floor = c.floor.get("valid_ppl")
        plots.training_losses(
            losses,
            colour,
            out / "train_loss.png",
            math.log(vocab.iloc[0]) if len(vocab) else None,
            math.log(floor) if floor else None,
            layout=panels,
        )
        shown.append(("train_loss.png", "training loss", ""))
    else:
        shown.append(("", "training loss", "No run logged its training loss (`train/loss`)."))
    norms = {v: [history(r, "grad_norm") for r in c.runs[c.runs["variant"] == v]["run_id"]] for v in c.table["variant"]}
    clip = {
        v: runs[runs["tags.rnnlab.cell"] == v]["params.train.clip_norm"].iloc[0]
        for v in c.table["variant"]
        if (runs["tags.rnnlab.cell"] == v).any()
    }
    thresholds = {v: None if value in (None, "null") else float(value) for v, value in clip.items()}
    plots.gradient_norms(norms, thresholds, colour, out / "grad_norm.png", layout=panels)
    shown.append(("grad_norm.png", "pre-clip gradient norm", ""))
    plots.final_metric(c.table, c.runs, c.metric, c.log_scale, colour, out / "final.png", c.floor.get(c.metric))
    shown.append(("final.png", f"final {c.metric} per variant", ""))
    return shown


def plots_section(shown: list[tuple[str, str, str]], several: bool) -> str:
    """One subsection per plot: its note, then the image (or the note alone where nothing could be drawn)."""
    lead = (
        "With three or more factors the curves are small multiples: one panel per setting of all factors but the "
        "first, whose values are the lines within each panel; every panel has the same axes.\n\n"
        if several
        else ""
    )
    return lead + "\n".join(
        f"### {title}\n\n" + "\n\n".join(part for part in (note, f"![{title}]({name})" if name else "") if part) + "\n"
        for name, title, note in shown
    )


def effects_figure(c: Comparison, effects: pd.DataFrame, out: Path) -> str:
    """The forest plot of the factor effects (effects.png) as the Markdown that shows it, or why there is none."""
    if effects.empty or not effects["mean_difference"].map(math.isfinite).any():
        return (
            "No effect plot: no factor has a pair of runs (same seed and other factors) in which both trained, "
            "so there is no paired effect to draw; the table below counts the outcomes.\n\n"
        )
    plots.factor_effects(effects, c.metric, c.log_scale, c.better, out / "effects.png", declared(c, c.smallest_effect))
    return f"![effect of each factor on {c.metric}](effects.png)\n\n"


def tuning_section(c: Comparison, parent: Any, out: Path) -> tuple[str, list[tuple[str, str]]]:
    """A tuned study's search: each arm's trials, how they ended, its best setting, and the expected best score
    against the number of trials per arm (Dodge et al. 2019), with the budget at which the ranking changes."""
    trials = tracking.trial_runs(c.study, parent.data.tags["rnnlab.search"])
    if trials.empty:
        return "No finished trials are recorded for this search.\n", []
    labels = dict(zip(trials["arm"], trials["label"]))
    curves = {
        arm: tuned_answer.expected_best_curve(tuned_answer.trial_values(mine, c.metric, c.goal), c.goal)
        for arm, mine in trials.groupby("arm", sort=False)
    }
    plots.expected_best(curves, labels, c.metric, c.log_scale, out / "expected_best.png")
    leaders = tuned_answer.leader_by_budget(curves, c.goal)
    words = (
        f"{tuned_answer.ranking_words(leaders, labels)}; "
        f"{tuned_answer.band_words(curves, leaders, c.goal) if leaders else ''}"
    )
    text = (
        "Every arm was searched with the same Optuna budget (the same space, trials, per-trial budget and sampler "
        "seed, recorded on each trial run); a trial that diverged, failed to learn or was pruned counts as one of "
        "its arm's trials. Each arm's best setting was then trained over the study's seeds (the results above).\n\n"
        + md_table(tuned_answer.arms_table(trials, c.metric, c.goal, labels))
        + f"\n\nExpected best {c.metric} against the number of trials per arm (Dodge et al. 2019, from the trials in "
        f"closed form; band: 95% bootstrap over the trials): {words}.\n"
    )
    return text, [("expected_best.png", f"expected best {c.metric} vs trials per arm")]


def render(study: str, parent_run_id: str | None, out: Path) -> tuple[Path, str]:
    """Write report.md, report.html and the PNGs into `out`; return the Markdown file and the execution's run id."""
    parent, grid, runs = cell_results(study, parent_run_id)
    c = compare(study, parent, grid, runs)
    definition = load_yaml(read_text(c.parent_run_id, "study.yaml"))
    result = answer(c)
    tuned = "rnnlab.search" in parent.data.tags
    if tuned:
        base = compare(study, *cell_results(study, c.parent_run_id, recipe="base"))
        result = tuned_answer.tuned_answer(c, result, base, answer(base))
    out.mkdir(parents=True, exist_ok=True)

    sections = [f"# Study `{study}`\n", "## Answer\n", answer_section(c, result)]
    grid_rows = [(k, ", ".join(f"`{v}`" for v in vals)) for k, vals in c.factors.items()]
    grid_rows += [
        ("seeds", ", ".join(map(str, definition["seeds"]))),
        ("excluded", json.dumps(definition.get("exclude") or []) if definition.get("exclude") else "none"),
        ("deciding metric", f"`{c.metric}` ({c.better} is better)"),
        (
            "budget per cell",
            ", ".join(f"{k} {v}" for k, v in definition["budget"].items() if v is not None) or "the base config's",
        ),
        ("base config", f"`{definition['base']}` with {json.dumps(definition.get('overrides') or {})}"),
        ("cells", f"{len(c.table)} variants × {len(definition['seeds'])} seeds = {len(grid)}"),
    ]
    sections += ["## The grid\n", md_table(pd.DataFrame(grid_rows, columns=["", "values"]))]
    sections += [
        "## Results\n",
        "Outcomes: *trained*; *diverged* (the loss became NaN/inf, or the blow-up rule "
        "stopped it: `train.blowup_*`); *failed to learn* (a perplexity at or above the unigram model's: the training "
        "split's word frequencies, no context, on the same split; "
        "or for translation a BLEU below `eval.min_bleu`).\n\n" + as_markdown(c),
    ]
    tuning_shown = []
    if tuned:
        text, tuning_shown = tuning_section(c, parent, out)
        sections += [
            "## Tuning\n",
            text,
            "At the base recipe (the base config's values of the tuned keys):\n\n" + as_markdown(base),
        ]
    if not c.runs.empty:
        sections += [
            "## Effect of each factor\n",
            effects_figure(c, result.effects, out) + effects_section(c, result.effects),
        ]
        sections += ["## Held-out test\n", held_out.section(c, parent, runs)]
        sections += [
            "## Significance on the evaluation data\n",
            significance_section(c, significance(c, parent.data.tags.get("rnnlab.task", "lm"))),
        ]
        with np.errstate(all="ignore"):  # a diverged run's logged values may be inf: drawn on the axes' edge
            shown = figures(c, runs, out) + [(name, title, "") for name, title in tuning_shown]
        sections += ["## Plots\n", plots_section(shown, not layout(c).single)]
        sections += ["## Environment\n", environment_section(runs, parent)]
        sections += ["## Runs\n", runs_section(c)]
    sections += [
        "## Reproduce\n",
        f"Rebuild this report from the store: `rnnlab report {study} --parent-run {c.parent_run_id}`. "
        f"Rerun the study from its definition (logged as `study.yaml` on the parent run): "
        f"`rnnlab study study.yaml` (finished cells are reused; `--force` retrains).\n",
    ]
    text = "\n".join(sections)
    (out / "report.md").write_text(text, encoding="utf-8")
    (out / "report.html").write_text(html(text, out, study), encoding="utf-8")
    return out / "report.md", c.parent_run_id


CSS = (
    "body{font-family:system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem;color:#222}"
    "table{border-collapse:collapse;margin:1rem 0;font-size:.9rem}th,td{border:1px solid #ccc;padding:.3rem .6rem}"
    "th{background:#f4f4f4}img{max-width:100%}"
    "blockquote{color:#555;border-left:4px solid #ddd;margin:0;padding-left:1rem}"
    "nav.toc{background:#f8f8f8;border:1px solid #e2e2e2;padding:.4rem 1rem;margin:1rem 0}"
    "nav.toc h2{font-size:1rem;margin:.3rem 0}nav.toc ul{margin:.2rem 0;padding-left:1.2rem}"
)


def html(text: str, folder: Path, title: str) -> str:
    """The Markdown as one offline HTML file: a table of contents of its sections and subsections (links to their
    headings) under the title, and the PNGs embedded as data URIs."""
    converter = markdown.Markdown(extensions=["tables", "toc"], extension_configs={"toc": {"toc_depth": "2-3"}})
    body = converter.convert(text)
    if converter.toc_tokens:
        contents = f'<nav class="toc" aria-label="Contents">\n<h2>Contents</h2>\n{converter.toc}</nav>\n'
        heading = body.find("</h1>")
        at = heading + len("</h1>\n") if heading >= 0 else 0
        body = body[:at] + contents + body[at:]

    def embed(match: re.Match) -> str:
        data = base64.b64encode((folder / match.group(1)).read_bytes()).decode("ascii")
        return f'src="data:image/png;base64,{data}"'

    body = re.sub(r'src="([^"/]+\.png)"', embed, body)
    return (
        f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n<title>rnnlab study {title}</title>\n'
        f"<style>{CSS}</style>\n</head>\n<body>\n{body}\n</body>\n</html>\n"
    )


def log_report(parent_run_id: str, folder: Path) -> None:
    for path in sorted(folder.iterdir()):
        tracking.log_artifact(parent_run_id, path, "report")


def rendered(
    render_into: Callable[[str, str | None, Path], tuple[Path, str]],
    study: str,
    parent_run_id: str | None,
    folder: Path,
    log: bool = True,
    tolerate_unlogged: bool = False,
) -> tuple[Path, str, str | None]:
    """Render a report in a private folder beside `folder`, log it to its parent run (`log`), then publish it into
    `folder` file by file with atomic renames: two executions of one study (a cron one meeting a manual one)
    finishing at once never read or delete each other's half-drawn plots, and a failed build leaves the last report
    whole. Returns the published Markdown, the execution's run id, and why the report could not be logged: None if
    it was; where it could not, the error is raised unless `tolerate_unlogged` (a read-only store)."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    private = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        _, run_id = render_into(study, parent_run_id, private)
        not_logged = None
        if log:
            try:
                log_report(run_id, private)
            except Exception as err:
                if not tolerate_unlogged:
                    raise
                not_logged = str(err).splitlines()[0][:200] if str(err) else type(err).__name__
        folder.mkdir(exist_ok=True)
        drawn = {p.name for p in private.iterdir()}
        for name in DRAWN:  # a plot an earlier build drew and this one has no data for must not outlive it
            if name not in drawn:
                (folder / name).unlink(missing_ok=True)
        for path in sorted(private.iterdir(), key=lambda p: p.name.startswith("report.")):  # the pages last
            path.replace(folder / path.name)
    finally:
        shutil.rmtree(private, ignore_errors=True)
    return folder / "report.md", run_id, not_logged


def write_report(
    render_into: Callable[[str, str | None, Path], tuple[Path, str]], study: str, parent_run_id: str, out: str
) -> str:
    """A report rendered into `out` (a study's, or a claims study's) and logged to its parent run: its Markdown."""
    return str(rendered(render_into, study, parent_run_id, Path(out))[0])


@task(name="report")
def build_report(study: str, parent_run_id: str, out: str) -> str:
    return write_report(render, study, parent_run_id, out)
