"""A claims file: claims quoted from the course notes, each with the studies that measure it, the measurement (a
named kind with its parameters, computed in tasks/claims/verdicts.py), the criterion (its thresholds, and the parts of
the measurement that hold by construction and so are not counted as support) and what each verdict means in words.
Whether a criterion was committed before the data it judges is not declared here but computed, from git and MLflow
(tasks/claims/registration.py). `rnnlab study` recognises one by its top-level `claims:` list.

Every study the claims name is loaded (every cell validated) and every criterion checked against its measurement's
kind before anything trains, so a typo fails at once, naming the file, the claim and the key.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, ValidationError, field_validator, model_validator

from rnnlab.schemas.config import ConfigError, Section, read_yaml
from rnnlab.schemas.study import Study, load_study

# "not testable here": the claim is about a scale the lab does not train at (a criterion's verdict); "not testable at
# this training level": a model it is judged on learned no more than word frequencies, or its reference model is
# more than 10% worse than the subject (the lab's rule for every claim on trained models: tasks/claims/verdicts.py)
VERDICTS = ("supported", "not supported", "inconclusive", "not testable here", "not testable at this training level")


# ---- measurements: what is computed, from which study's runs (tasks/claims/verdicts.py has one function per kind) ----


class EffectiveContext(Section):
    """The context probe's effective context (the k at which a model truncated to k tokens comes within 1% or 5% of
    its full-context perplexity) of one cell against another, median over the seeds that trained."""

    kind: Literal["effective_context"]
    study: str = Field(min_length=1, description="the study (by name) whose trained runs are probed")
    factor: str = "model.cell"
    subject: str = Field("rnn_tanh", description="the cell the claim is about")
    reference: str = Field("lstm", description="the cell it is compared with")
    level: Literal["k_1pct", "k_5pct"] = "k_5pct"


class VanishingGradient(Section):
    """The gradient-flow probe's per-step decay rate of the trained subject (< 1: the gradient reaching h_{t-k}
    shrinks exponentially in k), the controlled spectral check (decay below radius 1), and the exploding side: the
    share of the unclipped subject's runs that diverged, with their largest gradient norms."""

    kind: Literal["vanishing_gradient"]
    study: str = Field(min_length=1)
    factor: str = "model.cell"
    subject: str = "rnn_tanh"
    radii: list[float] = Field([0.9, 1.0, 1.1], min_length=1)
    explode_study: str = Field(min_length=1, description="the study whose unclipped runs show the exploding side")
    explode_where: dict[str, Any] = Field(default_factory=dict, description="factor → value selecting those runs")


class LSTMMemory(Section):
    """The LSTM against the tanh RNN: gradient-flow rate, norm(k_far)/norm(k=1) of the trained models, and the
    effective context, medians over seeds."""

    kind: Literal["lstm_memory"]
    study: str = Field(min_length=1)
    factor: str = "model.cell"
    subject: str = "lstm"
    reference: str = "rnn_tanh"
    far_k: int = Field(100, ge=2, description="the distance of the far gradient norm (the nearest k probed)")
    level: Literal["k_1pct", "k_5pct"] = "k_5pct"


class Clipping(Section):
    """Within each setting of the study's other factors (restricted by `where`): the share of runs that diverged
    unclipped against clipped."""

    kind: Literal["clipping"]
    study: str = Field(min_length=1)
    factor: str = "train.clip_norm"
    unclipped: Any = Field(None, description="the factor's value without clipping")
    clipped: Any = Field(0.25, description="its value with clipping")
    where: dict[str, Any] = Field(default_factory=dict)


class ResidualDepth(Section):
    """At each deep setting: the valid-perplexity ratio without / with residual connections (paired by seed, over
    pairs that both trained, geometric mean) and the lowest layer's share of the per-layer gradient norms
    (grad_norm_layer<i>_mean, logged by tasks/training/fitting.py) without / with."""

    kind: Literal["residual_depth"]
    study: str = Field(min_length=1)
    factor: str = "model.residual"
    depth: str = "model.layers"
    deep: list[int] = Field([4, 8], min_length=1)
    metric: str = "valid_ppl"


class Bidirectional(Section):
    """Translation: the BLEU difference bidirectional − unidirectional encoder, paired by seed, within each setting
    of `within`; language modelling: whether `lm_config` with model.bidirectional=true is refused."""

    kind: Literal["bidirectional"]
    study: str = Field(min_length=1)
    factor: str = "model.bidirectional"
    within: str = "model.attention"
    metric: str = "valid_bleu_greedy"
    lm_config: str = Field(min_length=1, description="a language-model run config, relative to the claims file")


class PerplexityScale(Section):
    """The best validation perplexity of a trained LSTM in the named studies, and the corpus it was measured on."""

    kind: Literal["perplexity_scale"]
    studies: list[str] = Field(min_length=1)
    factor: str = "model.cell"
    subject: str = "lstm"
    literature: list[str] = Field(default_factory=list, description="published figures, quoted in the report")


Measure = Annotated[
    EffectiveContext | VanishingGradient | LSTMMemory | Clipping | ResidualDepth | Bidirectional | PerplexityScale,
    Field(discriminator="kind"),
]


# ---- criteria: the thresholds, one model per measurement kind ----


class Range(Section):
    low: float
    high: float

    @model_validator(mode="after")
    def _ordered(self) -> Range:
        if not self.low <= self.high:
            raise ValueError(f"low {self.low:g} is above high {self.high:g}")
        return self


class ContextCriterion(Section):
    supported_range: Range = Field(description="supported: the subject's median k lies within")
    refuted_outside: Range = Field(description="not supported: the subject's median k lies outside this wider range")
    max_ratio: float = Field(gt=0, description="supported: subject's k ≤ max_ratio × reference's")
    refuted_ratio: float = Field(1.0, gt=0, description="not supported: subject's k ≥ refuted_ratio × reference's")
    min_seeds: int = Field(2, ge=1)


class VanishingCriterion(Section):
    max_rate: float = Field(gt=0, description="supported: the subject's trained per-step rate ≤ this")
    refuted_rate: float = Field(1.0, gt=0, description="not supported: rate ≥ this (no decay)")
    min_diverged_share: float = Field(
        0.5, ge=0, le=1, description="exploding side supported: unclipped runs that diverged, at least this share"
    )
    min_seeds: int = Field(2, ge=1)
    by_construction: list[Literal["spectral_check", "non_normal_check"]] = Field(
        default_factory=list, description="parts that hold by construction: shown, never counted as support"
    )


class MemoryCriterion(Section):
    min_far_gain: float = Field(gt=1, description="supported: subject's norm(k_far)/norm(1) ≥ this × reference's")
    min_context_ratio: float = Field(gt=1, description="supported: subject's k ≥ this × reference's")
    min_seeds: int = Field(2, ge=1)


class ClippingCriterion(Section):
    exploded_share: float = Field(
        0.5, gt=0, le=1, description="a setting explodes when at least this share of its unclipped runs diverged"
    )
    min_drop: float = Field(0.5, gt=0, le=1, description="rescued: clipping lowers the diverged share by at least this")
    require: Literal["any", "all"] = Field("any", description="how many exploding settings must be rescued")


class ResidualCriterion(Section):
    min_ppl_ratio: float = Field(
        gt=1, description="supported: ppl without / with residual ≥ this at every deep setting"
    )
    refuted_ppl_ratio: float = Field(1.0, gt=0, description="not supported: ≤ this at every deep setting")
    max_share_ratio: float = Field(
        gt=0, lt=1, description="supported: lowest layer's gradient share without / with ≤ this at every deep setting"
    )
    refuted_share_ratio: float = Field(1.0, gt=0, description="not supported: ≥ this at every deep setting")


class BidirectionalCriterion(Section):
    min_gain: float = Field(gt=0, description="BLEU points: a setting helps at ≥ +min_gain, hurts at ≤ −min_gain")
    require: Literal["any", "all"] = "any"
    min_pairs: int = Field(2, ge=1)
    by_construction: list[Literal["lm_refusal"]] = Field(
        default_factory=list, description="parts that hold by construction: shown, never counted as support"
    )


class ScaleCriterion(Section):
    claimed: Range
    testable_on: list[str] = Field(min_length=1, description="corpora on which the claim applies")
    tolerance: float = Field(
        0.1, ge=0, description="relative: supported within the range widened by this; not supported beyond twice that"
    )
    why_not_here: str = Field(min_length=1, description="why the claim cannot be checked on the corpora measured")


CRITERIA: dict[str, type[Section]] = {
    "effective_context": ContextCriterion,
    "vanishing_gradient": VanishingCriterion,
    "lstm_memory": MemoryCriterion,
    "clipping": ClippingCriterion,
    "residual_depth": ResidualCriterion,
    "bidirectional": BidirectionalCriterion,
    "perplexity_scale": ScaleCriterion,
}


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
        return CRITERIA[self.measure.kind].model_validate(self.criterion)


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


def load_claims(path: str | Path, overrides: list[str] | None = None) -> Lecture:
    path = Path(path)
    tree = read_yaml(path)
    try:
        cfg = ClaimsConfig.model_validate(tree)
    except ValidationError as err:
        raise ConfigError(f"{path}: invalid claims file: {problems(err)}") from None
    files = list(dict.fromkeys(f for claim in cfg.claims for f in claim.studies))
    for f in files:
        if not (path.parent / f).is_file():
            raise ConfigError(f"{path}: study file not found: {f} (relative to {path.parent})")
    first = {f: load_study(path.parent / f) for f in files}  # names first, to route `<study>:key=value` overrides
    names = [s.name for s in first.values()]
    routed = split_study_overrides(overrides or [], names, str(path))
    studies = {s.name: load_study(path.parent / f, routed[s.name]) for f, s in first.items()}
    by_file = {s.name: str(path.parent / f) for f, s in first.items()}
    for claim in cfg.claims:
        measure = claim.measure
        named = getattr(measure, "studies", None) or [measure.study] + (
            [measure.explode_study] if isinstance(measure, VanishingGradient) else []
        )
        for name in named:
            if name not in studies:
                raise ConfigError(
                    f"{path}: claim '{claim.id}': measure.study '{name}' is not one of the studies the "
                    f"claims name ({', '.join(studies) or 'none'}); add its file under `studies`"
                )
        if isinstance(measure, Bidirectional) and not (path.parent / measure.lm_config).is_file():
            raise ConfigError(f"{path}: claim '{claim.id}': measure.lm_config not found: {measure.lm_config}")
    unknown = sorted(set(cfg.published) - set(studies))
    if unknown:
        raise ConfigError(
            f"{path}: published: {', '.join(unknown)} is not one of the studies the claims name ({', '.join(studies)})"
        )
    return Lecture(cfg, str(path), studies, by_file, routed)
