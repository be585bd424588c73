"""rnnlab: a reproducible ablation lab for recurrent language and translation models.

In Python (a notebook), on the project's tracking store (MLFLOW_TRACKING_URI, else `$RNNLAB_HOME/mlruns`, else
`./mlruns`); see docs/howto/notebooks.md:

- `rnnlab.load_study(name)`: a recorded study's `.runs` (params with their real types), `.table` (what `rnnlab
  compare` shows), `.effects` (the factors' paired effects) and `.answer`;
- `rnnlab.curves(name, metric)`: a metric's step curves over the study's runs, one row per step;
- `rnnlab.run_study(path, overrides=..., force=...)`: run (or resume) a study, as `rnnlab study` does, and return
  its results.

`import rnnlab` loads none of it: each is imported on first use.
"""

__version__ = "0.1.0"
__all__ = ["StudyResults", "curves", "load_study", "run_study"]


def __getattr__(name: str):
    """The API's functions, imported when first asked for (PEP 562): `import rnnlab` stays instant."""
    if name in ("StudyResults", "curves", "load_study"):
        from rnnlab.api import results

        return getattr(results, name)
    if name == "run_study":
        from rnnlab.api.run import run_study

        return run_study
    raise AttributeError(f"module 'rnnlab' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
