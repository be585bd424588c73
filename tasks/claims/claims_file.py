"""A claims file: claims quoted from the course notes, each with the studies that measure it, the measurement (a
named kind with its parameters: one module per kind in tasks/claim_kinds/, registered in tasks/claims/registry.py),
the criterion (its thresholds, and the parts of the measurement that hold by construction and so are not counted as
support) and what each verdict means in words. Whether a criterion was committed before the data it judges is not
declared here but computed, from git and MLflow (tasks/claims/registration.py). `rnnlab study` recognises one by its
top-level `claims:` list.

Every study the claims name is loaded (every cell validated) and every criterion checked against its measurement's
kind before anything trains, so a typo fails at once, naming the file, the claim and the key.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Union

from pydantic import Field, ValidationError, field_validator, model_validator

from rnnlab.schemas.config import ConfigError, Section, read_yaml, scalar_problems
from rnnlab.schemas.study import Study, load_study
from tasks.claims.registry import KINDS

# A claim's `measure:`: one of the kinds' measurement models, chosen by its `kind` (in the registry's order)
Measure = Annotated[Union[tuple(k.measurement for k in KINDS.values())], Field(discriminator="kind")]  # noqa: UP007


class Meanings(Section):
    """What each verdict means for this claim, in words (committed with the thresholds)."""

    supported: str = Field(min_length=1)
    not_supported: str = Field(min_length=1)
    inconclusive: str = Field(min_length=1)
    not_testable: str | None = None


class Claim(Section):
    id: str = Field(pattern=r"^[a-z0-9_]+$", description="short name, e.g. context")
    quote: str = Field(min_length=1, description="the claim, as the course notes put it")
    studies: list[str] = Field(default_factory=list, description="study files, relative to the claims file")
    measure: Measure
    criterion: dict[str, Any]
    verdicts: Meanings

    @model_validator(mode="after")
    def _criterion_fits(self) -> Claim:
        try:
            self.rule()
        except ValidationError as err:
            raise ValueError(f"criterion for a {self.measure.kind} measure: {problems(err)}") from None
        return self

    def rule(self) -> Any:
        """The criterion, validated by the model of its measurement's kind."""
        return KINDS[self.measure.kind].criterion.model_validate(self.criterion)


class ClaimsConfig(Section):
    study: str = Field(min_length=1, description="the claims study's name: its MLflow experiment")
    title: str = ""
    claims: list[Claim] = Field(min_length=1)
    published: dict[str, list[str]] = Field(
        default_factory=dict,
        description="study name → commits that published its results before the runs this "
        "store holds: the data was seen from then on (dates read from git)",
    )

    @field_validator("claims")
    @classmethod
    def _unique(cls, claims: list[Claim]) -> list[Claim]:
        ids = [c.id for c in claims]
        twice = sorted({i for i in ids if ids.count(i) > 1})
        if twice:
            raise ValueError(f"claim ids repeat: {', '.join(twice)}")
        return claims


def problems(err: ValidationError) -> str:
    """A validation error as one line: each problem's key path (a claim by its position) and message."""
    found = []
    for e in err.errors():
        key = ".".join(str(p) for p in e["loc"]) or "(top level)"
        if e["type"] == "extra_forbidden":
            found.append(f"unknown key '{key}'")
            continue
        msg = e["msg"].removeprefix("Value error, ")
        got = "" if e["type"].startswith("value_error") else f" (got {e['input']!r})"
        found.append(f"{key}: {msg}{got}")
    return "; ".join(found)


def claims_scalar_problems(tree: Any) -> list[str]:
    """Strict scalar types in a claims file, as in run configs and study files (a bool is not a number, and only
    true/false are bools): through each claim's measure and criterion, by the models of its measure's kind."""
    found = scalar_problems(ClaimsConfig, tree)
    claims = tree.get("claims") if isinstance(tree, dict) else None
    for i, claim in enumerate(claims if isinstance(claims, list) else []):
        if not isinstance(claim, dict):
            continue
        found += scalar_problems(Claim, claim, f"claims.{i}.")
        measure = claim.get("measure")
        kind = KINDS.get(measure.get("kind")) if isinstance(measure, dict) else None
        if kind is not None:
            found += scalar_problems(kind.measurement, measure, f"claims.{i}.measure.")
            found += scalar_problems(kind.criterion, claim.get("criterion"), f"claims.{i}.criterion.")
    return found


@dataclass(frozen=True)
class Lecture:
    """A loaded claims file: its config, and each named study (by its name) loaded with its overrides."""

    config: ClaimsConfig
    source: str
    studies: dict[str, Study]  # study name → the study, every cell validated
    files: dict[str, str]  # study name → its file
    overrides: dict[str, list[str]]  # study name → the command-line overrides it runs with

    @property
    def name(self) -> str:
        return self.config.study


def is_claims_file(path: str | Path) -> bool:
    """A claims file has a top-level `claims:` list (a study file never does)."""
    try:
        return "claims" in read_yaml(path)
    except ConfigError:
        return False  # load_study names the problem


def split_study_overrides(overrides: list[str], names: list[str], source: str) -> dict[str, list[str]]:
    """`key=value` goes to every study; `<study>:key=value` to that study alone."""
    each: dict[str, list[str]] = {name: [] for name in names}
    for item in overrides:
        target, sep, rest = item.partition(":")
        if sep and "=" not in target:
            if target not in each:
                raise ConfigError(
                    f"{source}: override '{item}' names study '{target}', which this claims file does "
                    f"not run (its studies: {', '.join(names)})"
                )
            each[target].append(rest)
        else:
            for name in names:
                each[name].append(item)
    return each


def load_claims(path: str | Path, overrides: list[str] | None = None, tree: dict | None = None) -> Lecture:
    """A claims file with its overrides, every study it names loaded (once each) and every criterion validated.
    `tree`: the file's YAML, where the caller has read it already."""
    path = Path(path)
    tree = read_yaml(path) if tree is None else tree
    strict = claims_scalar_problems(tree)
    if strict:
        raise ConfigError(f"{path}: invalid claims file: {'; '.join(strict)}")
    try:
        cfg = ClaimsConfig.model_validate(tree)
    except ValidationError as err:
        raise ConfigError(f"{path}: invalid claims file: {problems(err)}") from None
    files = list(dict.fromkeys(f for claim in cfg.claims for f in claim.studies))
    for f in files:
        if not (path.parent / f).is_file():
            raise ConfigError(f"{path}: study file not found: {f} (relative to {path.parent})")
    trees = {f: read_yaml(path.parent / f) for f in files}  # each read once: names first, to route the overrides
    named = {f: str(tree.get("study") or Path(f).stem) for f, tree in trees.items()}
    routed = split_study_overrides(overrides or [], list(named.values()), str(path))
    loaded = {f: load_study(path.parent / f, routed[named[f]], tree) for f, tree in trees.items()}
    studies = {s.name: s for s in loaded.values()}
    by_file = {s.name: str(path.parent / f) for f, s in loaded.items()}
    for claim in cfg.claims:
        measure = claim.measure
        for name in measure.studies_read():
            if name not in studies:
                raise ConfigError(
                    f"{path}: claim '{claim.id}': measure.study '{name}' is not one of the studies the "
                    f"claims name ({', '.join(studies) or 'none'}); add its file under `studies`"
                )
        for key, file in measure.files_read().items():
            if not (path.parent / file).is_file():
                raise ConfigError(f"{path}: claim '{claim.id}': measure.{key} not found: {file}")
    unknown = sorted(set(cfg.published) - set(studies))
    if unknown:
        raise ConfigError(
            f"{path}: published: {', '.join(unknown)} is not one of the studies the claims name ({', '.join(studies)})"
        )
    return Lecture(cfg, str(path), studies, by_file, routed)
