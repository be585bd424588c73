"""A recorded study's results as DataFrames: `load_study` (its runs, the table `rnnlab compare` prints, the factors'
paired effects, the answer) and `curves` (a metric's step curves over its runs). They read the project's tracking
store (MLFLOW_TRACKING_URI, else `$RNNLAB_HOME/mlruns`, else `./mlruns`) and write nothing to it. What they import
(MLflow, pandas, SciPy) is imported on the first call, not with `import rnnlab`.
"""

from __future__ import annotations

import contextlib
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from rnnlab.api.packages import rnnlab_packages

if TYPE_CHECKING:
    import pandas as pd

CURVE_COLUMNS = ["run_id", "variant", "seed", "step", "value"]


@dataclass(frozen=True, repr=False)
class StudyResults:
    """One execution of a study (the latest, unless another was asked for), as recorded in MLflow.

    - `runs`: one row per cell × seed of the execution, the runs its comparison is computed from (a cell's latest
      FINISHED run, reused from an earlier execution or not): `variant`, `seed`, `run_id`, `outcome` (`trained`,
      `diverged`, `failed_to_learn`) and `reason`, `diverged_step`, the deciding and key metrics, `factor.<key>`
      (the factor's value as the variant's name shows it), `status`, `start_time`, `end_time`, then every
      `metrics.<key>` the run logged (its last value; an infinity is inf again) and every `params.<key>` with its
      real type: `params.train.clip_norm` is `0.25` (a float), not the text `"0.25"`; a `null` is None, or NaN in a
      column of numbers (which is then float64).
    - `table`: one row per variant, the figures `rnnlab compare` prints, as numbers: outcome counts, `<metric>_mean`,
      `_low`, `_high` (95% interval; a geometric mean for a perplexity) for the deciding metric, `_mean` and `_std`
      for the others, `best`. `shown` is the same table as `rnnlab compare` prints it (text, with the unigram floor).
    - `effects`: each factor's paired effect, per value after its first (the baseline), within each setting of the
      other factors (`stratum`) and pooled (`all`): the runs that trained at either value, the mean paired
      difference (of log perplexity for a perplexity: its exp is the ratio) with its 95% interval, and tests.
    - `answer`: the study's answer in a few sentences; `findings`: what each factor changed, a line each; `basis`:
      the numbers behind the answer, a line per variant.
    """

    name: str
    question: str
    metric: str  # the deciding metric (the study file's `metric.name`)
    goal: str  # "min" or "max"
    parent_run_id: str  # the execution: its parent run in MLflow
    factors: dict[str, list[str]]  # factor → its values, in the grid's order (the first is the baseline)
    runs: pd.DataFrame
    table: pd.DataFrame
    shown: pd.DataFrame
    effects: pd.DataFrame
    answer: str
    findings: list[str] = field(default_factory=list)
    basis: list[str] = field(default_factory=list)
    markdown: str = ""  # answer, findings and table in Markdown, as the study's report shows them
    tracking_uri: str = ""

    @property
    def variants(self) -> list[str]:
        return list(self.table["variant"]) if len(self.table) else []

    def __repr__(self) -> str:
        return (
            f"<StudyResults {self.name!r}: {len(self.table)} variants, {len(self.runs)} runs, decided by "
            f"{self.metric} ({self.goal}), parent run {self.parent_run_id}>"
        )

    def __str__(self) -> str:
        """What `rnnlab compare` prints: the question, the answer, what each factor changed, the table."""
        lines = [f"Question: {self.question}"] if self.question else []
        lines += [f"Answer: {self.answer}", *(f"- {line}" for line in self.findings)]
        wrapped = "\n".join(textwrap.fill(line, width=110, subsequent_indent="  ") for line in lines)
        return f"{wrapped}\n\n{self.shown.to_string(index=False)}"

    def _repr_markdown_(self) -> str:  # how Jupyter shows the object
        return (f"**{self.question}**\n\n" if self.question else "") + self.markdown


@contextlib.contextmanager
def reading() -> Iterator[None]:
    """rnnlab's packages (rnnlab/api/packages.py), the environment its commands set up, and the store opened for
    reading only: a missing store is an error, not a new empty one."""
    with rnnlab_packages():
        from rnnlab.runtime import store
        from rnnlab.runtime.env import collector_paused, configure

        configure()
        with collector_paused():  # MLflow, SQLAlchemy, pandas, SciPy: see collector_paused
            import tasks.analysis.answer  # noqa: F401
            import tasks.analysis.compare  # noqa: F401
            from tasks.record.tracking import import_store

            import_store()
        before = store.READ_ONLY
        store.READ_ONLY = True
        try:
            yield
        finally:
            store.READ_ONLY = before


def load_study(name: str, parent_run_id: str | None = None) -> StudyResults:
    """The results of study `name` (its MLflow experiment: the `study:` of its file), from its latest execution or
    the one whose parent run is `parent_run_id`: runs, table, effects and answer, as `rnnlab compare` computes them.

    >>> study = rnnlab.load_study("lm_clipping")
    >>> study.table[["variant", "trained", "valid_ppl_mean"]]
    >>> study.runs.groupby("params.train.clip_norm", dropna=False)["valid_ppl"].median()

    Raises LookupError where the project has no store, the store no such study, or the study no execution."""
    with reading():
        from tasks.analysis.answer import answer
        from tasks.analysis.compare import as_markdown, cell_results, compare, formatted
        from tasks.record.tracking import tracking_uri

        parent, grid, recorded = cell_results(name, parent_run_id)
        c = compare(name, parent, grid, recorded)
        said = answer(c)
        findings = "".join(f"- {line}\n" for line in said.factors)
        return StudyResults(
            name=name,
            question=c.question,
            metric=c.metric,
            goal=c.goal,
            parent_run_id=c.parent_run_id,
            factors=c.factors,
            runs=run_table(c.runs, recorded),
            table=c.table,
            shown=formatted(c),
            effects=said.effects,
            answer=said.text,
            findings=list(said.factors),
            basis=list(said.basis),
            markdown=f"{said.text}\n\n{findings}\n{as_markdown(c)}",
            tracking_uri=tracking_uri(),
        )


def curves(name: str, metric: str, parent_run_id: str | None = None) -> pd.DataFrame:
    """Every step of metric `metric` (a curve, e.g. `valid/ppl`, `train/loss`, `train/grad_norm`) in each run of
    the study's latest execution (or `parent_run_id`'s), from MLflow's metric history: a long DataFrame with columns
    run_id, variant, seed, step, value, in the runs' order (as `load_study(name).runs`) and then by step. A run that
    logged no such metric has no rows (a diverged run's curve stops where it diverged: its last steps were not
    finite, and are not stored).

    >>> ppl = rnnlab.curves("lm_clipping", "valid/ppl")
    >>> ppl.groupby(["variant", "step"])["value"].median().unstack("variant").plot(logy=True)

    Raises LookupError where no run of the execution logged `metric`, naming the metrics they did log."""
    with reading():
        import pandas as pd

        from tasks.analysis.compare import cell_results, run_frame
        from tasks.record.tracking import metric_history

        parent, grid, recorded = cell_results(name, parent_run_id)
        logged = sorted(c.removeprefix("metrics.") for c in recorded.columns if c.startswith("metrics."))
        if metric not in logged:
            raise LookupError(
                f"no run of study '{name}' (execution {parent.info.run_id}) logged metric '{metric}'"
                + (f"; they logged: {', '.join(logged)}" if logged else "; it has no finished run")
            )
        rows = [
            (run.run_id, run.variant, run.seed, int(step), float(value))
            for run in run_frame(recorded, grid, []).itertuples(index=False)
            for step, value in metric_history(run.run_id, metric)
        ]
        return pd.DataFrame(rows, columns=CURVE_COLUMNS)


def run_table(frame: pd.DataFrame, recorded: pd.DataFrame) -> pd.DataFrame:
    """The comparison's runs (`frame`, compare.run_frame) with what MLflow recorded of each (`recorded`, its
    search_runs frame): status and times, every metric, every param typed."""
    import pandas as pd

    if frame.empty:
        return frame.copy()
    by_run = recorded.set_index("run_id").loc[list(frame["run_id"])]
    metrics = sorted(c for c in by_run.columns if c.startswith("metrics."))
    params = sorted(c for c in by_run.columns if c.startswith("params."))
    tasks = set(by_run["params.task"].dropna()) if "params.task" in by_run else set()
    text = text_fields(tasks)
    typed = {c: typed_column(by_run[c], text.get(c.removeprefix("params."))) for c in params}
    added = pd.DataFrame(
        {
            **{c: by_run[c] for c in ("status", "start_time", "end_time") if c in by_run},
            **{c: by_run[c] for c in metrics},
            **typed,
        }
    ).reset_index(drop=True)
    return pd.concat([frame.reset_index(drop=True), added], axis=1)


def typed_column(texts: pd.Series, text_field: bool | None) -> pd.Series:
    """A params column read back to the values that were logged (`tasks.record.tracking.param_from_text`), with the
    dtype pandas infers from them (numbers with a null: float64, the null NaN). A field that the config declares as
    text (`text_field`: True if it may also be null) stays text: a corpus named `2024` is not the number 2024."""
    import pandas as pd

    from tasks.record.tracking import param_from_text

    def value(text: Any) -> Any:
        if not isinstance(text, str):  # no such param in this run
            return None
        if text_field is None:
            return param_from_text(text)
        return None if text_field and text == "null" else text

    return pd.Series([value(t) for t in texts], index=texts.index, dtype=object).infer_objects()


def text_fields(tasks: set[str]) -> dict[str, bool]:
    """The run-config keys of these task kinds whose values are text (`str`, or `str | None`: True), which a
    param cannot tell from a number or `null` by its text alone."""
    import types
    import typing

    from pydantic import BaseModel

    from rnnlab.schemas.config import SCHEMAS

    found: dict[str, bool] = {}

    def walk(model: type[BaseModel], prefix: str) -> None:
        for name, info in model.model_fields.items():
            annotation = info.annotation
            if isinstance(annotation, type) and issubclass(annotation, BaseModel):
                walk(annotation, f"{prefix}{name}.")
            elif annotation is str:
                found[f"{prefix}{name}"] = False
            elif typing.get_origin(annotation) in (typing.Union, types.UnionType) and set(
                typing.get_args(annotation)
            ) == {str, type(None)}:
                found[f"{prefix}{name}"] = True

    for task in sorted(tasks):
        if task in SCHEMAS:
            walk(SCHEMAS[task], "")
    return found
