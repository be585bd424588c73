"""A study: one question, a grid of variants (the product of `factors`, minus `exclude`) × `seeds`, one base run.

Every cell of the grid is expanded into a full, validated RunConfig before anything trains, so a bad factor key,
a value of the wrong type or a variant the model rejects fails at once, naming the cell.
"""

from __future__ import annotations

import difflib
import itertools
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from rnnlab.schemas.config import (
    ConfigError,
    RunConfig,
    Section,
    build,
    deep_merge,
    dump_yaml,
    flatten,
    known_keys,
    parse_overrides,
    read_yaml,
    schema_for,
    set_dotted,
    suggest,
    validated,
)

# Run-config keys that a study sets in every cell itself, and what to do instead of setting them.
SET_BY_STUDY = {
    "seed": "every cell runs once per seed listed under `seeds`: set those instead (e.g. seeds=[1,2,3])",
    "experiment": "a study's runs go to the experiment named after the study: set `study` instead "
    "(e.g. study=my_study)",
    "run_name": "each cell's run is named after its variant and seed (e.g. lstm clip=0.25 s1)",
    "eval.splits": "a study scores every cell on the validation split, where it decides, and the test split once, "
    "after the decision, for the variants its answer names (tasks/analysis/held_out.py)",
}
# The splits each cell is scored on: the test split is held out until the study has decided.
CELL_SPLITS = ["valid"]


class Metric(Section):
    name: str = Field(
        "valid_ppl", min_length=1, description="the MLflow metric that decides, e.g. valid_ppl or test_bleu"
    )
    goal: Literal["min", "max"] = Field(
        "min", description="min: lower is better (perplexity); max: higher is better (BLEU)"
    )


class Effect(Section):
    """The effects the study cares about, on the scale its metric is compared on: a perplexity as a ratio (1.05 =
    5% either way), BLEU or chrF in points. Declared before the runs, they give the answer its power statement and
    its only licence to call two variants equivalent."""

    smallest: float | None = Field(
        None,
        gt=0.0,
        description="the smallest effect worth detecting: the report states "
        "the power the seeds had for it and how many seeds 80% power would need",
    )
    margin: float | None = Field(
        None,
        gt=0.0,
        description="differences within it are too small to matter: two "
        "variants are called equivalent only when two one-sided tests place them within it",
    )


def log_scale_metric(name: str) -> bool:
    """Perplexities are compared as ratios (tasks/analysis/stats.py on_log_scale: the same rule)."""
    return "ppl" in name


class Budget(Section):
    """Per-cell training budget, applied on top of the base config (steps keep results machine-independent)."""

    max_epochs: int | None = Field(None, ge=1, description="epochs per cell (train.max_epochs)")
    max_steps: int | None = Field(None, ge=1, description="optimizer steps per cell (train.max_steps)")
    max_minutes: float | None = Field(None, gt=0.0, description="wall-clock cap per cell (train.max_minutes)")


class Runner(Section):
    """Cells never share a process (they would share torch's global RNG), so results do not depend on neighbours."""

    kind: Literal["process", "dask"] = Field(
        "process", description="process: local worker processes; dask: a Dask cluster"
    )
    address: str | None = Field(
        None,
        description="dask: an existing scheduler (tcp://host:8786); null = a local "
        "cluster of `concurrency` single-threaded worker processes",
    )


class Range(Section):
    """One tuned key's range: exactly one of `log_uniform` or `uniform` ([low, high], floats), or `int_uniform`."""

    log_uniform: tuple[float, float] | None = Field(None, description="[low, high], sampled on a log scale")
    uniform: tuple[float, float] | None = Field(None, description="[low, high], sampled on a linear scale")
    int_uniform: tuple[int, int] | None = Field(None, description="[low, high], whole numbers")

    @model_validator(mode="after")
    def _one_range(self) -> Range:
        given = {k: v for k, v in self.model_dump().items() if v is not None}
        if len(given) != 1:
            raise ValueError("give exactly one of log_uniform, uniform, int_uniform: [low, high]")
        ((kind, (low, high)),) = given.items()
        if not low < high:
            raise ValueError(f"{kind}: [{low}, {high}] needs low < high")
        if kind == "log_uniform" and low <= 0:
            raise ValueError(f"log_uniform: [{low}, {high}] needs a positive low bound (a log scale has no 0)")
        return self

    @property
    def kind(self) -> str:
        return next(k for k, v in self.model_dump().items() if v is not None)

    @property
    def bounds(self) -> tuple[float, float]:
        return getattr(self, self.kind)


class Sampler(Section):
    name: Literal["tpe", "random"] = Field("tpe", description="Optuna's TPESampler or RandomSampler")
    seed: int = Field(0, description="the sampler's seed: the same for every arm")


class Pruner(Section):
    name: Literal["median", "hyperband", "none"] = Field(
        "median", description="Optuna's MedianPruner, HyperbandPruner, or none"
    )
    warmup_steps: int = Field(0, ge=0, description="median: no trial is pruned before this optimizer step")
    startup_trials: int = Field(5, ge=0, description="median: trials of an arm that run in full before any is pruned")


class Tune(Section):
    """Each arm (variant of the grid) searched with the same budget; its best setting then trains over `seeds`."""

    space: dict[str, Range] = Field(
        min_length=1, description="run-config key → its range, e.g. train.lr: {log_uniform: [1, 40]}"
    )
    trials: int = Field(ge=1, description="trials per arm, the same for every arm")
    budget: Budget = Field(Budget(), description="per trial: the study's `budget` unless set")
    sampler: Sampler = Field(Sampler(), description="Optuna's sampler, the same for every arm")
    pruner: Pruner = Field(Pruner(), description="Optuna's pruner: stops unpromising trials early")


def cpu_count() -> int:
    """the machine's CPU count"""
    return os.cpu_count() or 1


class StudyConfig(Section):
    study: str = Field(min_length=1, description="the study's name; also its MLflow experiment")
    question: str = Field("", description="the question the study answers, in words")
    base: str = Field(min_length=1, description="the base run config, relative to the study file")
    overrides: dict[str, Any] = Field(default_factory=dict, description="dotted run-config keys applied on the base")
    factors: dict[str, list[Any]] = Field(description="run-config key → values; the grid is their product")
    exclude: list[dict[str, Any]] = Field(
        default_factory=list,
        description="rules, each a mapping of factor keys to values: a variant that matches every key of a rule is "
        "left out of the grid",
    )
    seeds: list[int] = Field([1], min_length=1, description="every variant trains once per seed")
    metric: Metric = Field(Metric(), description="the metric that decides, and which way is better")
    effect: Effect = Field(
        Effect(),
        description="the smallest effect worth detecting and the equivalence margin: "
        "perplexity ratios (e.g. {smallest: 1.05, margin: 1.02}) or points",
    )
    budget: Budget = Budget()
    concurrency: int = Field(default_factory=cpu_count, ge=1, description="cells trained at once")
    runner: Runner = Field(
        Runner(),
        description="where cells run: `process` (local worker processes, the default) or `dask` (a Dask cluster)",
    )
    tune: Tune | None = Field(
        None,
        description="search each arm's setting with the same Optuna budget first, then "
        "compare the arms at their own best settings (and at the base recipe)",
    )

    @field_validator("runner", mode="before")
    @classmethod
    def _runner_shorthand(cls, value: Any) -> Any:
        return {"kind": value} if isinstance(value, str) else value  # `runner: dask` means `runner: {kind: dask}`

    @field_validator("factors")
    @classmethod
    def _factors(cls, factors: dict[str, list[Any]]) -> dict[str, list[Any]]:
        if not factors:
            raise ValueError("a study needs at least one factor (config key → list of values)")
        for key, values in factors.items():
            if key in SET_BY_STUDY:
                raise ValueError(f"'{key}' cannot be a factor: {SET_BY_STUDY[key]}")
            if not values:
                raise ValueError(f"factor '{key}' has an empty list of values")
            if len({repr(v) for v in values}) != len(values):
                raise ValueError(f"factor '{key}' lists a value twice: {values}")
        return factors

    @field_validator("overrides")
    @classmethod
    def _overrides(cls, overrides: dict[str, Any]) -> dict[str, Any]:
        for key in flatten(overrides):
            if key in SET_BY_STUDY:
                raise ValueError(f"'{key}' cannot be overridden: {SET_BY_STUDY[key]}")
        return overrides

    @field_validator("seeds")
    @classmethod
    def _seeds(cls, seeds: list[int]) -> list[int]:
        if len(set(seeds)) != len(seeds):
            raise ValueError(f"seeds repeat a value: {seeds}")
        return seeds

    @model_validator(mode="after")
    def _effect_on_the_metrics_scale(self) -> StudyConfig:
        for name, value in self.effect.model_dump().items():
            if value is not None and log_scale_metric(self.metric.name) and value <= 1.0:
                raise ValueError(
                    f"effect.{name}={value}: {self.metric.name} is compared as a ratio, so an effect is "
                    f"a ratio above 1 (e.g. 1.05 for 5%), not {value}"
                )
        return self

    @model_validator(mode="after")
    def _tuned_keys(self) -> StudyConfig:
        for key in self.tune.space if self.tune else {}:
            if key in self.factors:
                raise ValueError(
                    f"tune.space: '{key}' is also a factor: a key is either an arm (factors) or tuned "
                    "within each arm (tune.space), not both"
                )
            if key in SET_BY_STUDY:
                raise ValueError(f"tune.space: '{key}' cannot be tuned: {SET_BY_STUDY[key]}")
        return self

    @model_validator(mode="after")
    def _exclusions(self) -> StudyConfig:
        for rule in self.exclude:
            unknown = set(rule) - set(self.factors)
            if unknown:
                raise ValueError(f"exclude rule {rule} names keys that are not factors: {sorted(unknown)}")
        return self


@dataclass(frozen=True)
class Cell:
    """One variant of the grid with one seed, resolved into the config it trains."""

    id: str  # the variant, e.g. "cell=rnn_tanh,clip_norm=null" (the same for every seed): tables, reports, keys
    factors: dict[str, Any]
    seed: int
    config: RunConfig
    label: str = ""  # the variant as its runs are named, e.g. "rnn_tanh clip=null" (see variant_label)
    recipe: str = ""  # in a tuned study: "base" (the base config's values) or "tuned" (the arm's best trial's)

    @property
    def name(self) -> str:
        """Its run's name: variant first, then the seed, e.g. "rnn_tanh clip=null s1" (short: a runs table cuts
        names at ~20 characters, and what tells runs apart must come before the cut)."""
        return run_name(self.label or self.id, self.seed)


def run_name(label: str, seed: int) -> str:
    return f"{label} s{seed}"


@dataclass(frozen=True)
class Study:
    config: StudyConfig
    source: str
    base_tree: dict[str, Any]
    cells: tuple[Cell, ...]

    @property
    def name(self) -> str:
        return self.config.study

    @property
    def variants(self) -> list[str]:
        return list(dict.fromkeys(c.id for c in self.cells))

    def definition(self) -> str:
        return dump_yaml(self.config.model_dump(mode="json"))


def show(value: Any) -> str:
    return "null" if value is None else str(value).lower() if isinstance(value, bool) else str(value)


def variant_id(factors: dict[str, Any]) -> str:
    return ",".join(f"{key.rpartition('.')[2]}={show(value)}" for key, value in factors.items())


# Short names of the factor keys the studies vary, for run names (the last part of any other key is used).
SHORT_KEYS = {
    "train.clip_norm": "clip",
    "train.clip_value": "clipv",
    "model.residual": "res",
    "model.bidirectional": "bidir",
    "model.attention": "attn",
    "model.dropout": "drop",
    "model.hidden_size": "hidden",
    "model.embedding_size": "emb",
    "train.batch_size": "batch",
}
# Values that say nothing without their key (attention "none", residual "true").
NEEDS_KEY = {"none", "null", "true", "false", "default", "auto"}


def variant_label(factors: dict[str, Any], grid_factors: dict[str, list[Any]]) -> str:
    """A variant as a short name, e.g. {"model.cell": "lstm", "train.clip_norm": 0.25} → "lstm clip=0.25": a
    factor whose values are all self-explaining words (cell types) by its value alone, any other as short=value."""
    parts = []
    for key, value in factors.items():
        values = [show(v) for v in grid_factors.get(key, [value])]
        if all(isinstance(v, str) for v in grid_factors.get(key, [value])) and not NEEDS_KEY & {
            v.lower() for v in values
        }:
            parts.append(show(value))
        else:  # 1e+38 as 1e38: shorter, and a metric key may not hold a "+"
            parts.append(f"{SHORT_KEYS.get(key, key.rpartition('.')[2])}={show(value).replace('e+', 'e')}")
    return " ".join(parts) or "base"


def variant_labels(combos: list[dict[str, Any]], grid_factors: dict[str, list[Any]]) -> dict[str, str]:
    """variant id → its short label, unique within the study (where two short labels meet, the full ids are used)."""
    labels = {variant_id(f): variant_label(f, grid_factors) for f in combos}
    if len(set(labels.values())) < len(labels):
        return {vid: vid.replace(",", " ") for vid in labels}
    return labels


def excluded(factors: dict[str, Any], rules: list[dict[str, Any]]) -> bool:
    return any(all(factors[k] == v for k, v in rule.items()) for rule in rules)


def grid(cfg: StudyConfig) -> list[dict[str, Any]]:
    keys = list(cfg.factors)
    combos = (dict(zip(keys, values)) for values in itertools.product(*cfg.factors.values()))
    return [f for f in combos if not excluded(f, cfg.exclude)]


STUDY_KEYS = set(StudyConfig.model_fields)
STUDY_KEYS_IN_ORDER = list(StudyConfig.model_fields)


def split_overrides(overrides: list[str]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Command-line overrides: study fields (seeds=[1,2], concurrency=1, metric.name=…) vs run-config keys."""
    study, run = {}, {}
    shorthand = [f"runner.kind={item.partition('=')[2]}" if item.startswith("runner=") else item for item in overrides]
    for key, value in flatten(parse_overrides(shorthand)).items():
        target = study if key.partition(".")[0] in STUDY_KEYS else run
        set_dotted(target, key, value)
    return study, run


def check_run_overrides(path: Path, run_over: dict[str, Any], run_keys: list[str]) -> None:
    """Command-line overrides that are not study fields must be keys of the run config; a misspelt one is told the
    closest study field first (`seedz` → `seeds`, not the run's `seed`), else the closest run key."""
    study_keys = known_keys(StudyConfig)
    for key in flatten(run_over):
        if key in SET_BY_STUDY:
            raise ConfigError(f"{path}: '{key}' cannot be overridden: {SET_BY_STUDY[key]}")
        inside = [k for k in run_keys if k.startswith(f"{key}.")]
        if inside:  # a whole section as one value: a factor's section would silently replace it in the cells
            raise ConfigError(
                f"{path}: override '{key}' sets a whole section of the run config to one value: "
                f"set its keys instead (e.g. {inside[0]}=…)"
            )
        if any(key == k or key.startswith(f"{k}.") for k in run_keys):
            continue  # a key of the run config: building the cells judges its value
        close = (
            difflib.get_close_matches(key, study_keys, n=1, cutoff=0.6)
            or [suggest(key, [k for k in run_keys if k not in SET_BY_STUDY]) or suggest(key, study_keys)]
        )[0]
        hint = f"; did you mean '{close}'?" if close else ""
        raise ConfigError(
            f"{path}: unknown override '{key}'{hint} (an override is a study field: "
            f"{', '.join(STUDY_KEYS_IN_ORDER)}; or a key of the run config, e.g. train.lr)"
        )


def check_metric(path: Path, cfg: StudyConfig, cells: list[Cell]) -> None:
    """The deciding metric must be one that every cell's run logs: else every cell would train for nothing and the
    comparison would have no numbers to compare."""
    allowed = [m for m in cells[0].config.logged_metrics() if all(m in c.config.logged_metrics() for c in cells)]
    twin = "valid_" + cfg.metric.name.removeprefix("test_")
    if cfg.metric.name.startswith("test_") and twin in allowed:
        raise ConfigError(
            f"{path}: metric.name={cfg.metric.name!r} is a test score, but a study decides on "
            f"validation data and scores the test split once, after the decision, for the variants its "
            f"answer names; decide on {twin!r} instead"
        )
    if cfg.metric.name not in allowed:
        raise ConfigError(
            f"{path}: metric.name={cfg.metric.name!r} is not a metric that this study's "
            f"{cells[0].config.task} runs log; choose one of: {', '.join(allowed)}"
        )


def load_study(path: str | Path, overrides: list[str] | None = None, tree: dict | None = None) -> Study:
    """A study file with its overrides, loaded and every cell validated. `tree`: the file's YAML, where the caller
    has read it already (the command line reads a file once to tell a claims file from a study file)."""
    return read_study(Path(path), overrides, tree)


def read_study(path: Path, overrides: list[str] | None = None, tree: dict | None = None) -> Study:
    study_over, run_over = split_overrides(overrides or [])
    tree = deep_merge(read_yaml(path) if tree is None else tree, study_over)
    cfg = validated(StudyConfig, tree, str(path))
    base = (path.parent / cfg.base).resolve()
    base_tree = read_yaml(base)
    run_keys = known_keys(schema_for(deep_merge(base_tree, run_over), str(base)))
    check_run_overrides(path, run_over, run_keys)
    budget = {f"train.{k}": v for k, v in cfg.budget.model_dump().items() if v is not None}
    for key, value in {**flatten(cfg.overrides), **budget}.items():
        base_tree = deep_merge(base_tree, dotted(key, value))
    clash = sorted(set(flatten(run_over)) & set(cfg.factors))
    if clash:
        raise ConfigError(
            f"{path}: {', '.join(clash)} is a factor of this study: change its values under `factors` "
            "instead of overriding it for every cell"
        )
    base_tree = deep_merge(base_tree, run_over)  # the command line has the last word on everything but the factors
    combos = grid(cfg)
    if not combos:
        raise ConfigError(f"{path}: every combination of the factors is excluded: the grid is empty")
    cells = []
    labels = variant_labels(combos, cfg.factors)
    for factors in combos:
        vid = variant_id(factors)
        for seed in cfg.seeds:
            tree = base_tree
            for key, value in factors.items():
                tree = deep_merge(tree, dotted(key, value))
            tree = deep_merge(
                tree,
                {
                    "experiment": cfg.study,
                    "seed": seed,
                    "run_name": run_name(labels[vid], seed),
                    "eval": {"splits": CELL_SPLITS},
                },
            )
            cells.append(
                Cell(
                    vid,
                    factors,
                    seed,
                    build(tree, f"{path}: cell {vid} (seed {seed})"),
                    labels[vid],
                    recipe="base" if cfg.tune else "",
                )
            )
    check_metric(path, cfg, cells)
    if cfg.tune:
        check_space(path, cfg.tune, cells[0], run_keys)
    return Study(cfg, str(path), base_tree, tuple(cells))


def check_space(path: Path, tune: Tune, cell: Cell, run_keys: list[str]) -> None:
    """Every tuned key is a key of the run config, and a config at either end of its range is valid."""
    for key, spec in tune.space.items():
        if key not in run_keys:
            close = suggest(key, run_keys)
            hint = f"; did you mean '{close}'?" if close else ""
            raise ConfigError(
                f"{path}: tune.space: unknown key '{key}'{hint} (a tuned key is a key of the run config, e.g. train.lr)"
            )
        for bound in spec.bounds:
            tree = deep_merge(cell.config.model_dump(mode="json"), dotted(key, bound))
            build(tree, f"{path}: tune.space.{key} at {bound}")


def dotted(key: str, value: Any) -> dict[str, Any]:
    tree: dict[str, Any] = {}
    set_dotted(tree, key, value)
    return tree
