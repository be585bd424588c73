# %% [markdown]
# # A study's results in a notebook
#
# A study that `rnnlab study` recorded, read back as pandas DataFrames: its answer, its table, its runs with their
# settings, each factor's effect, and its curves. Open this file as a notebook (VS Code and PyCharm run its `# %%`
# cells; Jupyter with jupytext), or run it as a script: `python docs/examples/notebook.py`.
#
# It reads the project's tracking store: run it from the project's folder (where `rnnlab study` ran), or set
# RNNLAB_HOME to that folder first. `tests/test_api.py` runs it against a tiny study, named by RNNLAB_STUDY.

# %%
import math
import os

import rnnlab

STUDY = os.environ.get("RNNLAB_STUDY", "lm_clipping")  # a study's name: its file's `study:`

study = rnnlab.load_study(STUDY)  # the latest execution; load_study(STUDY, parent_run_id) for another
print(repr(study))

# %% [markdown]
# The question, the answer and the table, as `rnnlab compare` prints them (in Jupyter, `study` alone shows them
# as Markdown).

# %%
print(study)

# %% [markdown]
# The same table as numbers: one row per variant. The deciding metric has its mean and 95% interval over the seeds
# that trained (for a perplexity a geometric mean), each other figure its mean and standard deviation.

# %%
metric = study.metric
table = study.table[["variant", "seeds", "trained", "diverged", f"{metric}_mean", f"{metric}_low", f"{metric}_high"]]
print(table.to_string(index=False))
best = study.table.loc[study.table["best"], "variant"].tolist()
print("best:", best)

# %% [markdown]
# One row per run. Its settings are the `params.*` columns, with their real types: `params.train.clip_norm` is
# None or 0.25 (not the text "null" or "0.25" that MLflow's `search_runs` gives), so they filter and group as
# numbers.

# %%
runs = study.runs
settings = [f"params.{key}" for key in study.factors]
print(runs[["variant", "seed", "outcome", *settings, metric]].to_string(index=False))
for column in settings:
    print(column, sorted({type(v).__name__ for v in runs[column]}))

trained = runs[runs["outcome"] == "trained"]
print(f"{len(trained)} of {len(runs)} runs trained")

# %% [markdown]
# Each factor's paired effect: within each setting of the other factors (`stratum`) and pooled (`all`), over the
# seeds in which both runs trained. For a perplexity `mean_difference` is a mean log ratio: its exp is the ratio.

# %%
effects = study.effects
if len(effects):
    effects = effects.assign(
        ratio=[math.exp(d) if log else math.nan for d, log in zip(effects["mean_difference"], effects["log"])]
    )
    print(effects[["factor", "from", "to", "stratum", "trained_from", "trained_to", "pairs", "ratio"]].to_string())

# %% [markdown]
# Curves: every logged step of a metric, one row per run and step (`valid/ppl`, `train/loss`, `train/grad_norm`,
# ...). A diverged run's curve stops where it diverged.

# %%
curve = rnnlab.curves(STUDY, "valid/ppl")
print(curve.groupby("variant")["step"].agg(["min", "max", "count"]))

if len(curve):  # none where no run got as far as a validation
    by_step = curve.groupby(["step", "variant"])["value"].median().unstack("variant")
    ax = by_step.plot(logy=True, marker="o", title=f"{STUDY}: validation perplexity (median over seeds)")
    ax.set_xlabel("step")
    ax.figure.savefig("valid_ppl.png", dpi=100, bbox_inches="tight")
    print("wrote valid_ppl.png")
