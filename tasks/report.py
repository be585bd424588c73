"""A study's report, built from what MLflow recorded and nothing else: the question and the grid, the results table,
each factor's paired effect, significance against the baseline, plots, and the environment that produced it.

Written as report.md with PNGs beside it and a self-contained report.html; byte-identical when rebuilt from the same
store (no timestamps, fixed bootstrap seeds, PNGs without metadata).
"""

from __future__ import annotations

import base64
import json
import math
import re
import tempfile
from pathlib import Path
from typing import Any

import markdown
import numpy as np
import pandas as pd
import yaml
from prefect import task

from tasks import plots, stats, tracking
from tasks.compare import as_markdown, cell_results, read_text, table_of
from tasks.compare import number as compare_number


def run_frame(runs: pd.DataFrame, factors: list[str], metric: str) -> pd.DataFrame:
    """One row per cell × seed: variant, factor values, seed, diverged, the deciding metric, run id."""
    frame = pd.DataFrame({"variant": runs["tags.rnnlab.cell"], "seed": runs["params.seed"].astype(int),
                          "diverged": runs["tags.rnnlab.diverged"] == "true", "run_id": runs["run_id"],
                          metric: runs.get(f"metrics.{metric}", pd.Series(math.nan, index=runs.index))})
    for factor in factors:
        frame[f"factor.{factor}"] = runs[f"tags.factor.{factor}"]
    return frame.sort_values(["variant", "seed"], kind="stable").reset_index(drop=True)


def history(run_id: str, key: str) -> pd.Series:
    points = sorted(tracking.client().get_metric_history(run_id, key), key=lambda m: (m.step, m.timestamp))
    series = pd.Series([m.value for m in points], index=[m.step for m in points], dtype=float)
    return series[~series.index.duplicated(keep="first")]  # the final evaluation repeats the last step


def artifact_names(run_id: str, folder: str) -> set[str]:
    return {a.path for a in tracking.client().list_artifacts(run_id, folder)}


def significance(frame: pd.DataFrame, baseline: str, task_kind: str, metric: str) -> pd.DataFrame:
    """Each variant against the baseline, seed by seed, on the saved per-sentence scores or test translations."""
    rows = []
    base_runs = frame[(frame["variant"] == baseline) & ~frame["diverged"]].set_index("seed")["run_id"]
    with tempfile.TemporaryDirectory() as tmp:
        def fetch(run_id: str, path: str) -> Path:
            return tracking.download_artifact(run_id, path, Path(tmp) / run_id)

        for row in frame[(frame["variant"] != baseline) & ~frame["diverged"]].itertuples(index=False):
            if row.seed not in base_runs:
                continue
            base_id = base_runs[row.seed]
            if task_kind == "lm":
                split = "test" if "eval/test_sentences.csv" in artifact_names(row.run_id, "eval") else "valid"
                result = stats.perplexity_bootstrap(pd.read_csv(fetch(row.run_id, f"eval/{split}_sentences.csv")),
                                                    pd.read_csv(fetch(base_id, f"eval/{split}_sentences.csv")))
                measure = f"{split} perplexity"
            else:
                split = "test" if "translations/test.ref" in artifact_names(row.run_id, "translations") else "valid"
                lines = [fetch(r, f"translations/{split}.{kind}").read_text(encoding="utf-8").splitlines()
                         for r, kind in ((row.run_id, "beam.hyp"), (base_id, "beam.hyp"), (row.run_id, "ref"))]
                result = stats.bleu_bootstrap(*lines)
                measure = f"{split} BLEU"
            rows.append({"variant": row.variant, "seed": row.seed, "measure": measure, "baseline": result.baseline,
                         "variant_value": result.system, "difference": result.difference, "ci_low": result.ci_low,
                         "ci_high": result.ci_high, "p_value": result.p_value, "significant": result.significant})
    return pd.DataFrame(rows)


def number(value: Any, digits: int = 2) -> str:
    if value is None:
        return "–"
    return compare_number(value, digits) if isinstance(value, float) else str(value)


def md_table(frame: pd.DataFrame) -> str:
    lines = ["| " + " | ".join(map(str, frame.columns)) + " |", "|" + "---|" * len(frame.columns)]
    lines += ["| " + " | ".join(number(v) if isinstance(v, float) else str(v) for v in row) + " |"
              for row in frame.itertuples(index=False)]
    return "\n".join(lines) + "\n"


def effects_section(effects: pd.DataFrame, metric: str, goal: str) -> str:
    if effects.empty:
        return "No factor could be paired.\n"
    shown = pd.DataFrame({
        "factor": effects["factor"], "change": effects["from"] + " → " + effects["to"],
        "pairs": effects["pairs"], f"mean Δ {metric}": effects["mean_difference"],
        "95% CI": [f"[{number(lo)}, {number(hi)}]" if not math.isnan(lo) else "–"
                   for lo, hi in zip(effects["ci_low"], effects["ci_high"])],
        "pairs with a diverged run": effects["diverged_pairs"]})
    better = "lower" if goal == "min" else "higher"
    return (f"Each row compares cells that differ only in that factor, with the other factors and the seed held fixed "
            f"(Δ = changed − original; {better} {metric} is better). Pairs where either run diverged are left out and "
            f"counted. The interval is Student's t over the pairs.\n\n" + md_table(shown))


def significance_section(sig: pd.DataFrame, baseline: str) -> str:
    if sig.empty:
        return f"No variant has a finished run to test against the baseline `{baseline}` on the same seed.\n"
    shown = pd.DataFrame({
        "variant": sig["variant"], "seed": sig["seed"], "measure": sig["measure"], "baseline": sig["baseline"],
        "variant value": sig["variant_value"], "Δ": sig["difference"],
        "95% CI of Δ": [f"[{number(lo)}, {number(hi)}]" if not math.isnan(lo) else "–"
                        for lo, hi in zip(sig["ci_low"], sig["ci_high"])],
        "p": [f"{p:.4f}" for p in sig["p_value"]],
        "verdict": ["significant" if s else "**not significant**" for s in sig["significant"]]})
    kind = sig["measure"].iloc[0]
    how = ("sacrebleu's paired bootstrap resampling on the saved translations (1000 resamples, seed 12345)"
           if "BLEU" in kind else "a paired bootstrap over sentences of the per-sentence NLL saved at evaluation "
           "(1000 resamples, seed 12345)")
    plain = []
    for variant, group in sig.groupby("variant", sort=False):
        n_sig = int(group["significant"].sum())
        verdict = ("is significantly different from" if n_sig == len(group) else
                   "is **not** significantly different from" if n_sig == 0 else "is only sometimes different from")
        plain.append(f"- `{variant}` {verdict} the baseline at p < {stats.ALPHA} ({n_sig} of {len(group)} seeds).")
    return (f"Each variant against the baseline `{baseline}`, seed by seed, with {how}.\n\n" + md_table(shown)
            + "\n" + "\n".join(plain) + "\n")


def environment_section(runs: pd.DataFrame, parent: Any) -> str:
    def values(column: str) -> str:
        found = sorted(set(runs[column].dropna().astype(str))) if column in runs else []
        return ", ".join(f"`{v}`" for v in found) or "–"

    rows = [("study execution (parent run)", f"`{parent.info.run_id}`"), ("git commit", values("tags.git.commit")),
            ("uncommitted changes", values("tags.git.dirty")), ("code version", values("tags.rnnlab.code_version")),
            ("data checksum", values("tags.data.checksum")), ("python", values("tags.python")),
            ("platform", values("tags.platform")), ("CPU", values("tags.cpu")), ("CPU count", values("tags.cpu.count")),
            ("torch threads per cell", values("tags.torch.threads")), ("CUDA", values("tags.cuda"))]
    rows += [(column.removeprefix("tags.pkg."), values(column)) for column in sorted(runs.columns)
             if column.startswith("tags.pkg.")]
    return md_table(pd.DataFrame(rows, columns=["what", "value"]))


def runs_section(frame: pd.DataFrame) -> str:
    shown = frame[["variant", "seed", "run_id"]].assign(result=frame["diverged"].map({True: "diverged", False: "finished"}))
    return md_table(shown)


@np.errstate(all="ignore")  # a blown-up model's astronomical metrics become inf in tables and plots, quietly
def render(study: str, parent_run_id: str | None, out: Path) -> tuple[Path, str]:
    """Write report.md, report.html and the PNGs into `out`; return the Markdown file and the execution's run id."""
    parent, grid, runs = cell_results(study, parent_run_id)
    parent_id = parent.info.run_id
    definition = yaml.safe_load(read_text(parent_id, "study.yaml"))
    table = table_of(study, parent, grid, runs)
    metric, goal = table.attrs["metric"], table.attrs["goal"]
    factors = {k: list(dict.fromkeys(g["factors"][k] for g in grid)) for k in grid[0]["factors"]}
    variants = list(table["variant"])
    baseline = variants[0]
    colour = plots.colours(variants)
    out.mkdir(parents=True, exist_ok=True)
    frame = run_frame(runs, list(factors), metric) if not runs.empty else pd.DataFrame()

    sections = [f"# Study `{study}`\n", f"> {definition.get('question') or '(no question was written down)'}\n"]
    grid_rows = [(k, ", ".join(f"`{v}`" for v in vals)) for k, vals in factors.items()]
    grid_rows += [("seeds", ", ".join(map(str, definition["seeds"]))),
                  ("excluded", json.dumps(definition.get("exclude") or []) if definition.get("exclude") else "none"),
                  ("deciding metric", f"`{metric}` ({'lower' if goal == 'min' else 'higher'} is better)"),
                  ("budget per cell", ", ".join(f"{k} {v}" for k, v in definition["budget"].items() if v is not None) or "the base config's"),
                  ("base config", f"`{definition['base']}` with {json.dumps(definition.get('overrides') or {})}"),
                  ("cells", f"{len(variants)} variants × {len(definition['seeds'])} seeds = {len(grid)}")]
    sections += ["## The grid\n", md_table(pd.DataFrame(grid_rows, columns=["", "values"]))]
    sections += ["## Results\n", f"Baseline: `{baseline}`.\n\n" + as_markdown(table)]

    if not frame.empty:
        effects = stats.factor_effects(frame, factors, metric)
        sections += ["## Effect of each factor\n", effects_section(effects, metric, goal)]
        sections += ["## Significance\n", significance_section(
            significance(frame, baseline, parent.data.tags.get("rnnlab.task", "lm"), metric), baseline)]
        figures = []
        finished = frame[~frame["diverged"]]
        if metric.startswith("valid_"):
            curves = {v: [history(r, metric) for r in finished[finished["variant"] == v]["run_id"]] for v in variants}
            figures.append(("curve.png", f"{metric} vs step", plots.metric_curves(curves, metric, colour, out / "curve.png")))
        norms = {v: [history(r, "grad_norm") for r in frame[frame["variant"] == v]["run_id"]] for v in variants}
        clip = {v: runs[runs["tags.rnnlab.cell"] == v]["params.train.clip_norm"].iloc[0] for v in variants
                if (runs["tags.rnnlab.cell"] == v).any()}
        thresholds = {v: None if c in (None, "null") else float(c) for v, c in clip.items()}
        figures.append(("grad_norm.png", "pre-clip gradient norm vs step",
                        plots.gradient_norms(norms, thresholds, colour, out / "grad_norm.png")))
        figures.append(("final.png", f"final {metric} per variant", plots.final_metric(table, metric, colour, out / "final.png")))
        sections += ["## Plots\n", "\n".join(f"![{alt}]({name})\n" for name, alt, _ in figures)]
        sections += ["## Environment\n", environment_section(runs, parent)]
        sections += ["## Runs\n", runs_section(frame)]
    sections += ["## Reproduce\n", f"Rebuild this report from the store: `rnnlab report {study} --parent-run {parent_id}`. "
                 f"Rerun the study from its definition (logged as `study.yaml` on the parent run): "
                 f"`rnnlab study study.yaml` (finished cells are reused; `--force` retrains).\n"]
    text = "\n".join(sections)
    (out / "report.md").write_text(text, encoding="utf-8")
    (out / "report.html").write_text(html(text, out, study), encoding="utf-8")
    return out / "report.md", parent_id


CSS = ("body{font-family:system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem;color:#222}"
       "table{border-collapse:collapse;margin:1rem 0;font-size:.9rem}th,td{border:1px solid #ccc;padding:.3rem .6rem}"
       "th{background:#f4f4f4}img{max-width:100%}blockquote{color:#555;border-left:4px solid #ddd;margin:0;padding-left:1rem}")


def html(text: str, folder: Path, title: str) -> str:
    """The Markdown as one offline HTML file: the PNGs embedded as data URIs."""
    body = markdown.markdown(text, extensions=["tables"])

    def embed(match: re.Match) -> str:
        data = base64.b64encode((folder / match.group(1)).read_bytes()).decode("ascii")
        return f'src="data:image/png;base64,{data}"'

    body = re.sub(r'src="([^"/]+\.png)"', embed, body)
    return (f"<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<title>rnnlab study {title}</title>\n"
            f"<style>{CSS}</style>\n</head>\n<body>\n{body}\n</body>\n</html>\n")


def log_report(parent_run_id: str, folder: Path) -> None:
    for path in sorted(folder.iterdir()):
        tracking.log_artifact(parent_run_id, path, "report")


@task(name="report")
def build_report(study: str, parent_run_id: str, out: str) -> str:
    folder = Path(out)
    render(study, parent_run_id, folder)
    log_report(parent_run_id, folder)
    return str(folder / "report.md")
