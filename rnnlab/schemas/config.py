"""One validated, frozen config object per run, built from a YAML file in conf/ plus `key=value` overrides.

The dotted key names used here (`train.clip_norm`) are the same names used for MLflow params,
study factors and report columns.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
import re
import types
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, TypeVar, Union, get_args, get_origin, get_type_hints

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    create_model,
    model_validator,
)
from pydantic.fields import FieldInfo

from models.settings import LMSettings, OptimSettings, Seq2SeqShape, check_encoder_split


class ConfigError(ValueError):
    """A config file or override is invalid; the message names the key and what is allowed."""


def scalar_kinds(annotation: Any) -> set[type]:
    """The types a field's annotation admits, through Optional, unions and Annotated: bool, int and float as
    themselves, any other (str, a Literal, a section) as `object`."""
    origin = get_origin(annotation)
    if origin is Annotated:
        return scalar_kinds(get_args(annotation)[0])
    if origin in (Union, types.UnionType):
        return set().union(*(scalar_kinds(a) for a in get_args(annotation)))
    if annotation is type(None):
        return set()
    return {annotation} if annotation in (bool, int, float) else {object}


def element_kinds(annotation: Any) -> set[type]:
    """The scalar kinds of the elements of a list or tuple field (`seeds: list[int]`, `uniform: tuple[float, float]`),
    through Optional; empty for any other field."""
    origin = get_origin(annotation)
    if origin in (Union, types.UnionType):
        return set().union(*(element_kinds(a) for a in get_args(annotation)))
    if origin in (list, tuple):
        return set().union(*(scalar_kinds(a) for a in get_args(annotation) if a is not Ellipsis))
    return set()


def model_in(annotation: Any) -> type[BaseModel] | None:
    """The one model (a section) a field holds, through Optional and Annotated; None for anything else."""
    origin = get_origin(annotation)
    if origin is Annotated:
        return model_in(get_args(annotation)[0])
    if origin in (Union, types.UnionType):
        found = [m for m in map(model_in, get_args(annotation)) if m is not None]
        others = [a for a in get_args(annotation) if a is not type(None) and model_in(a) is None]
        return found[0] if len(found) == 1 and not others else None
    return annotation if isinstance(annotation, type) and issubclass(annotation, BaseModel) else None


def mixed_scalar(kinds: set[type], value: Any) -> str | None:
    """What is wrong with a bool where a number is expected, or anything but a bool where only a bool is: pydantic's
    lax mode would take `true` as 1, and 1 or "yes" as true."""
    if isinstance(value, bool):
        if bool not in kinds and float in kinds:
            return "Input should be a valid number, not a boolean"
        if bool not in kinds and int in kinds:
            return "Input should be a valid integer, not a boolean"
    elif kinds == {bool}:
        return "Input should be a valid boolean, true or false"
    return None


def scalar_problems(model: type[BaseModel], tree: Any, prefix: str = "") -> list[str]:
    """Strict scalar types, as `key: problem (got value)` lines: a bool is not a number (`train.max_epochs=true` is
    not 1 epoch), and a number or a word not a bool (`model.tied=1`), through the sections (and a dict of sections,
    such as a tuning space). Everything else keeps pydantic's own conversions (`train.lr=1` is 1.0)."""
    if not isinstance(tree, dict):
        return []
    found = []
    for name, value in tree.items():
        field = model.model_fields.get(name) if isinstance(name, str) else None
        if field is None or value is None:
            continue
        key = f"{prefix}{name}"
        inner = model_in(field.annotation)
        if inner is not None:
            found += scalar_problems(inner, value, f"{key}.")
            continue
        if get_origin(field.annotation) is dict and isinstance(value, dict):
            each = model_in(get_args(field.annotation)[-1])
            if each is not None:
                found += [line for k, v in value.items() for line in scalar_problems(each, v, f"{key}.{k}.")]
                continue
        problem = mixed_scalar(scalar_kinds(field.annotation), value)
        if problem is None and isinstance(value, list | tuple):
            kinds = element_kinds(field.annotation)
            problem = next(filter(None, (mixed_scalar(kinds, v) for v in value)), None)
        if problem:
            found.append(f"{key}: {problem} (got {value!r})")
    return found


Model = TypeVar("Model", bound=BaseModel)


class Section(BaseModel):
    # allow_inf_nan=False: `train.lr=.inf` is a typo, not a setting; a number in a config is always a finite one.
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


def section(name: str, settings: type, after: dict[str, dict[str, tuple]] | None = None) -> type[Section]:
    """A config section whose fields are a models/ settings dataclass's: each with the type, bounds, default and
    description written there once (fields without a default, such as a vocabulary size, come from the data, not
    the config). `after` inserts config-only fields after the named setting, in the order the YAML shows them."""
    hints = get_type_hints(settings, include_extras=True)
    fields: dict[str, tuple] = {}
    for f in dataclasses.fields(settings):
        if f.default is dataclasses.MISSING:
            continue
        fields[f.name] = (hints[f.name], Field(f.default, description=f.metadata.get("description")))
        fields.update((after or {}).get(f.name, {}))
    return create_model(name, __base__=Section, **fields)


def recipe(base: type[Section], name: str, **defaults: Any) -> type[Section]:
    """`base` with other defaults (a task kind's recipe): each field keeps its type, bounds and description; a
    (default, description) pair also says what the field means in this kind."""
    fields: dict[str, tuple] = {}
    for key, value in defaults.items():
        default, description = value if isinstance(value, tuple) else (value, None)
        info = base.model_fields[key]
        changes = {"default": default, **({"description": description} if description else {})}
        fields[key] = (info.annotation, FieldInfo.merge_field_infos(info, **changes))
    return create_model(name, __base__=base, **fields)


class DataConfig(Section):
    KNOWN: ClassVar[tuple[str, ...]] = ("ptb", "wikitext-2")  # tasks/data/lm_corpus.py KNOWN_CORPORA's names

    corpus: str = Field(
        "ptb", description="a known corpus (ptb, wikitext-2) or a directory with train/valid[/test] text files"
    )
    dir: str | None = Field(
        None,
        description="data directory; null = $RNNLAB_DATA_DIR, else ../shared/data beside the project if it exists, "
        "else <project>/data",
    )
    download: bool = Field(True, description="fetch a missing known corpus from its public source (sha256-checked)")
    # A seed that only changes the initialisation understates how much results move between seeds (Bouthillier et al.
    # 2021): the order of the training data moves them too.
    order: Literal["shuffled", "fixed"] = Field(
        "shuffled",
        description="order of the training sentences. shuffled: each epoch in a new order drawn from "
        "(seed, epoch), then streamed into train.batch_size columns cut into train.bptt segments, so the seed varies "
        "the data order as well as the initialisation and a resumed run sees the same order; fixed: the corpus's "
        "own order in every epoch",
    )


class LMModelConfig(
    section(
        "LMModelFields",
        LMSettings,
        after={
            "residual": {
                "bidirectional": (
                    bool,
                    Field(False, description="always rejected for a language model: it would see the future"),
                )
            }
        },
    )
):
    @model_validator(mode="after")
    def _check(self) -> LMModelConfig:
        if self.bidirectional:
            raise ValueError(
                "model.bidirectional=true is invalid for a language model: a bidirectional RNN reads the words "
                "after the one it must predict, so it would see the future and its perplexity would be meaningless. "
                "Use model.bidirectional only for translation encoders."
            )
        if self.tied and self.embedding_size != self.hidden_size:
            raise ValueError(
                f"model.tied=true needs model.embedding_size == model.hidden_size "
                f"(got {self.embedding_size} and {self.hidden_size}): the output layer reuses the embedding matrix"
            )
        return self


class TrainConfig(section("OptimFields", OptimSettings)):
    """Shared by both tasks; the defaults are the language-model ones (see NMTTrainConfig)."""

    batch_size: int = Field(
        20, ge=1, description="language model: the training text is laid out as this many columns, read side by side"
    )
    max_epochs: int = Field(13, ge=1, description="training budget: epochs")
    max_steps: int | None = Field(None, ge=1, description="training budget: optimizer steps (null = none)")
    max_minutes: float | None = Field(None, gt=0.0, description="wall-clock training budget (null = none)")
    clip_norm: float | None = Field(0.25, gt=0.0, description="clip the total gradient norm; null = off")
    clip_value: float | None = Field(None, gt=0.0, description="clip each gradient element; null = off")
    val_every_n_steps: int | None = Field(None, ge=1, description="also validate every n steps (null = once per epoch)")
    log_every_n_steps: int = Field(1, ge=1, description="metric logging interval (metrics are sent in batches)")
    accelerator: Literal["auto", "cpu", "gpu", "cuda", "mps"] = Field(
        "auto", description="Lightning's accelerator (auto: a GPU when there is one)"
    )
    precision: Literal["32-true", "bf16-mixed"] = Field(
        "32-true",
        description="32-true: fp32 throughout; bf16-mixed: matmuls and recurrences in bf16 under autocast "
        "(Lightning's precision plugin), weights, gradients, clipping, losses and evaluation in fp32",
    )
    num_threads: int | None = Field(None, ge=1, description="torch CPU threads (null = torch default)")
    # The blow-up rule: a run whose training loss has left the uniform guess far behind (upwards) has exploded; it
    # stops as `diverged` instead of spending the rest of its budget (an exploded model is also the slowest one).
    blowup_ratio: float | None = Field(
        1.5,
        gt=1.0,
        description="stop as diverged when the mean training loss over "
        "`blowup_window` steps exceeds this × ln(vocabulary size), the loss of a "
        "uniform guess; null = never",
    )
    blowup_window: int = Field(25, ge=1, description="steps the mean training loss of the blow-up rule is taken over")
    blowup_after: int = Field(25, ge=0, description="warm-up steps before the blow-up rule applies")

    @model_validator(mode="after")
    def _check(self) -> TrainConfig:
        if self.clip_norm is not None and self.clip_value is not None:
            raise ValueError(
                f"train.clip_norm={self.clip_norm} and train.clip_value={self.clip_value} are both set: "
                "choose one way of clipping (set the other to null)"
            )
        return self

    @property
    def clip(self) -> tuple[str, float] | None:
        if self.clip_norm is not None:
            return "norm", self.clip_norm
        if self.clip_value is not None:
            return "value", self.clip_value
        return None


class LMTrainConfig(TrainConfig):
    bptt: int = Field(20, ge=1, description="truncated-BPTT segment length; hidden state carried across segments")


class NMTTrainConfig(
    recipe(
        TrainConfig,
        "NMTTrainRecipe",
        optimizer="adam",
        lr=1e-3,
        lr_schedule="constant",
        batch_size=(64, "sentence pairs per batch"),
        max_epochs=10,
        clip_norm=1.0,
    )
):
    label_smoothing: float = Field(0.0, ge=0.0, lt=1.0, description="label smoothing of the training loss")


class EvalConfig(Section):
    batch_size: int = Field(10, ge=1, description="batch size of the evaluation after training")
    splits: tuple[Literal["valid", "test"], ...] = Field(
        ("valid", "test"), description="splits scored after training (test skipped if the corpus has none)"
    )
    floor: Literal["unigram", "uniform"] = Field(
        "unigram",
        description="what a run must beat to count as trained: "
        "unigram = the training split's word frequencies on the same split "
        "(a model at or above it learned nothing); uniform = a uniform guess "
        "over the vocabulary, far weaker: only for tiny smoke-test runs",
    )


class ParallelDataConfig(Section):
    KNOWN: ClassVar[tuple[str, ...]] = ("multi30k", "chr_en")  # tasks/data/nmt_corpus.py KNOWN_PARALLEL's names

    corpus: str = Field(
        "multi30k",
        description="a known parallel corpus (multi30k, chr_en) or a directory with train/valid[/test].<lang> files",
    )
    dir: str | None = Field(
        None,
        description="data directory; null = $RNNLAB_DATA_DIR, else ../shared/data beside the project if it exists, "
        "else <project>/data",
    )
    download: bool = Field(True, description="fetch a missing known corpus from its public source (sha256-checked)")
    src: str = Field("de", min_length=1, description="the source language: the suffix of its files")
    tgt: str = Field("en", min_length=1, description="the target language: the suffix of its files")
    vocab_size: int = Field(
        8000, ge=16, description="SentencePiece vocabulary per language, trained on the train split"
    )
    max_len: int = Field(
        100, ge=1, description="training pairs longer than this many subwords (either side) are filtered"
    )


class NMTModelConfig(section("NMTModelFields", Seq2SeqShape)):
    @model_validator(mode="after")
    def _check(self) -> NMTModelConfig:
        check_encoder_split(self.hidden_size, self.bidirectional)
        return self


class NMTEvalConfig(Section):
    batch_size: int = Field(64, ge=1, description="sentences per batch when translating")
    beam: int = Field(5, ge=1, description="beam size for the final test translation (1 = greedy)")
    length_penalty: float = Field(1.0, ge=0.0, description="beam search's GNMT length penalty")
    max_len_ratio: float = Field(2.0, gt=0.0, description="at most ratio × source length + 10 subwords are produced")
    min_bleu: float = Field(
        3.0,
        ge=0.0,
        description="a run whose validation BLEU stays below this failed to learn: "
        "one constant sentence ('A man in a blue shirt is standing .') scores 2.9 on Multi30k",
    )
    splits: tuple[Literal["valid", "test"], ...] = Field(
        ("valid", "test"), description="splits scored after training (test skipped if the corpus has none)"
    )
    floor: Literal["unigram", "uniform"] = Field(
        "unigram",
        description="what a run must beat to count as trained: "
        "unigram = the training split's word frequencies on the same split "
        "(a model at or above it learned nothing); uniform = a uniform guess "
        "over the vocabulary, far weaker: only for tiny smoke-test runs",
    )


# What every run logs, whatever its task: the training summary (tasks/training/fitting.py fit_module, flows/train.py
# record).
SUMMARY_METRICS = (
    "train_loss",
    "train_seconds",
    "fit_seconds",
    "eval_seconds",
    "tokens_per_second",
    "train_steps",
    "clipped_share",
    "max_grad_norm",
)


class RunBase(Section):
    """What every run config has. Each task kind's config (below) is that kind's schema, and says what its runs
    log: the kind's code (tasks/kinds/) writes those metrics, a study is decided by one of them."""

    experiment: str = Field("rnnlab", min_length=1, description="the MLflow experiment")
    run_name: str | None = Field(None, description="the MLflow run's name")
    seed: int = Field(
        1, description="seed for everything: the initialisation, the training data's order (data.order), dropout"
    )

    DURING: ClassVar[tuple[str, ...]] = ()  # the selected checkpoint's validation scores
    SCORES: ClassVar[tuple[str, ...]] = ()  # each evaluation split's final scores, as `<split>_<score>`

    def logged_metrics(self) -> list[str]:
        """The summaries a trained run of this config logs, so the ones a study can be decided by. (The curves
        during training are `valid/…` and `train/…`.)"""
        finals = (f"{split}_{score}" for split in self.eval.splits for score in self.SCORES)
        return list(dict.fromkeys([*self.DURING, *finals, *SUMMARY_METRICS]))

    def score_minimums(self) -> list[tuple[tuple[str, ...], float, str]]:
        """(metrics, in order of preference; the least a trained run must reach on the first one found; why), beyond
        the perplexity floor every kind has: a kind's own mark of a model that learned nothing."""
        return []

    def flat(self) -> dict[str, Any]:
        """Dotted key → value, the form logged as MLflow params."""
        return flatten(self.model_dump(mode="json"))

    def to_yaml(self) -> str:
        return dump_yaml(self.model_dump(mode="json"))

    def digest(self) -> str:
        """Identity of the resolved config (part of a run's identity with data checksum and code version)."""
        return hashlib.sha256(json.dumps(self.model_dump(mode="json"), sort_keys=True).encode()).hexdigest()[:16]


class LMRunConfig(RunBase):
    task: Literal["lm"] = Field("lm", description="language modelling")
    data: DataConfig = DataConfig()
    model: LMModelConfig = LMModelConfig()
    train: LMTrainConfig = LMTrainConfig()
    eval: EvalConfig = EvalConfig()

    DURING = ("valid_ppl", "valid_nll")
    SCORES = ("ppl", "nll", "tokens")


class NMTRunConfig(RunBase):
    task: Literal["nmt"] = Field("nmt", description="translation")
    data: ParallelDataConfig = ParallelDataConfig()
    model: NMTModelConfig = NMTModelConfig()
    train: NMTTrainConfig = NMTTrainConfig()
    eval: NMTEvalConfig = NMTEvalConfig()

    DURING = ("valid_bleu_greedy", "valid_ppl", "valid_nll")
    SCORES = (
        "bleu",
        "chrf",
        "bleu_greedy",
        "chrf_greedy",
        "ppl",
        "sentences_per_second",
        "sentences_per_second_greedy",
    )

    def score_minimums(self) -> list[tuple[tuple[str, ...], float, str]]:
        names = ("valid_bleu_greedy", "valid_bleu", "test_bleu_greedy", "test_bleu")
        return [(names, self.eval.min_bleu, "(eval.min_bleu), the level of a trivial translation")]


RunConfig = LMRunConfig | NMTRunConfig
SCHEMAS: dict[str, type[RunBase]] = {"lm": LMRunConfig, "nmt": NMTRunConfig}


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def known_keys(model: type[BaseModel] = LMRunConfig, prefix: str = "") -> list[str]:
    keys = []
    for name, field in model.model_fields.items():
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            keys += known_keys(annotation, f"{prefix}{name}.")
        else:
            keys.append(f"{prefix}{name}")
    return keys


def parse_overrides(overrides: list[str]) -> dict[str, Any]:
    """`a.b=1 c=[1,2] d=null` → nested dict; values are parsed as YAML scalars/lists."""
    tree: dict[str, Any] = {}
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"override {item!r} is not of the form key=value (e.g. train.clip_norm=null)")
        try:
            value = yaml.load(raw, Loader=UniqueKeyLoader) if raw != "" else ""
        except yaml.YAMLError as err:
            raise ConfigError(f"override {item!r}: the value {raw!r} is not valid YAML ({yaml_problem(err)})") from None
        set_dotted(tree, key, value)
    return tree


def set_dotted(tree: dict[str, Any], key: str, value: Any) -> None:
    *parents, leaf = key.split(".")
    node = tree
    for i, part in enumerate(parents):
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"'{'.'.join(parents[: i + 1])}' is a value, not a section: cannot set '{key}'")
        node = child
    node[leaf] = value


def deep_merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


# YAML 1.2's core schema, not PyYAML's YAML 1.1: only true/false are booleans (`run_name=no` stays the word "no"),
# `010` is ten, `1e-3` a number, `1:20` and `2026-12-06` stay strings. (tag, pattern, the characters it can start with)
YAML12_SCALARS = [
    ("tag:yaml.org,2002:bool", r"true|True|TRUE|false|False|FALSE", "tTfF"),
    ("tag:yaml.org,2002:int", r"[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+", "-+0123456789"),
    (
        "tag:yaml.org,2002:float",
        r"[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN)",
        "-+0123456789.",
    ),
    ("tag:yaml.org,2002:null", r"~|null|Null|NULL|", ["~", "n", "N", ""]),
    ("tag:yaml.org,2002:merge", r"<<", "<"),  # `<<: *base`, as before
]
YAML12_PATTERNS = [(tag, re.compile(f"^(?:{pattern})$")) for tag, pattern, _ in YAML12_SCALARS]


class Yaml12Loader(yaml.SafeLoader):
    """PyYAML's safe loader with YAML 1.2's core schema (YAML12_SCALARS) for plain scalars."""

    yaml_implicit_resolvers: ClassVar[dict] = {}  # its own, not SafeLoader's YAML 1.1 ones

    def construct_yaml_int(self, node: yaml.ScalarNode) -> int:
        text = self.construct_scalar(node)
        try:
            return int(text, 0) if text.lstrip("+-")[:2] in ("0o", "0x") else int(text, 10)
        except ValueError:
            raise yaml.constructor.ConstructorError(
                None, None, f"{text!r} is not a whole number", node.start_mark
            ) from None


for _tag, _pattern, _first in YAML12_SCALARS:
    Yaml12Loader.add_implicit_resolver(_tag, re.compile(f"^(?:{_pattern})$"), list(_first))
Yaml12Loader.add_constructor("tag:yaml.org,2002:int", Yaml12Loader.construct_yaml_int)


class Yaml12Dumper(yaml.SafeDumper):
    """PyYAML's safe dumper, quoting every string that either YAML 1.1 or 1.2 would read as another type (`'no'`,
    `'1e3'`): what it writes reads back the same with either loader."""

    def resolve(self, kind: type, value: Any, implicit: tuple[bool, bool]) -> str:
        tag = super().resolve(kind, value, implicit)
        if kind is yaml.ScalarNode and implicit[0] and tag == "tag:yaml.org,2002:str":
            tag = next((t for t, pattern in YAML12_PATTERNS if pattern.match(value)), tag)
        return tag


def load_yaml(text: str) -> Any:
    """YAML text (a file or an artifact rnnlab wrote), read with YAML 1.2's core schema."""
    return yaml.load(text, Loader=Yaml12Loader)


def dump_yaml(tree: Any) -> str:
    return yaml.dump(tree, Dumper=Yaml12Dumper, sort_keys=False, allow_unicode=False)


class UniqueKeyLoader(Yaml12Loader):
    """Safe YAML 1.2 that refuses a key given twice in one mapping: PyYAML would keep the last value without a word,
    so `lr: 1` further up a file would silently lose to another `lr:` below it."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        first_line: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *base` then overriding a key of it is intended
                continue
            key = self.construct_object(key_node, deep=True)
            try:
                seen = first_line.get(key)
            except TypeError:  # an unhashable key: SafeLoader's own check below reports it
                continue
            if seen is not None:
                raise yaml.constructor.ConstructorError(
                    None,
                    None,
                    f"key '{key}' is given twice, on lines {seen} and {key_node.start_mark.line + 1}: keep one",
                )
            first_line[key] = key_node.start_mark.line + 1
        return super().construct_mapping(node, deep)


def yaml_problem(err: yaml.YAMLError) -> str:
    """PyYAML's error on one line, where it is: its own text spans several lines and repeats the source."""
    problem = getattr(err, "problem", None) or str(err).splitlines()[0]
    context = getattr(err, "context", None)
    mark = getattr(err, "problem_mark", None)
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    return f"{context}: {problem}{where}" if context else f"{problem}{where}"


def read_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        tree = yaml.load(path.read_text(encoding="utf-8"), Loader=UniqueKeyLoader) or {}
    except UnicodeDecodeError as err:
        raise ConfigError(f"{path}: not valid UTF-8 (byte {err.start}: {err.reason}); save it as UTF-8") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {yaml_problem(err)}") from None
    if not isinstance(tree, dict):
        raise ConfigError(f"{path}: expected a mapping of config keys at the top level, got {type(tree).__name__}")
    return tree


def schema_for(tree: dict[str, Any], source: str) -> type[RunBase]:
    task = tree.get("task", "lm")
    if task not in SCHEMAS:
        raise ConfigError(
            f"{source}: invalid config: task: must be one of {', '.join(map(repr, SCHEMAS))} (got {task!r})"
        )
    return SCHEMAS[task]


def build(tree: dict[str, Any], source: str = "config") -> RunConfig:
    return validated(schema_for(tree, source), tree, source)


def validated(schema: type[Model], tree: dict[str, Any], source: str) -> Model:
    """`tree` validated by `schema`, with strict scalar types (scalar_problems): every problem in one ConfigError."""
    problems = scalar_problems(schema, tree)
    try:
        model = schema.model_validate(tree)
    except ValidationError as err:
        raise ConfigError(describe(err, source, schema, problems)) from None
    if problems:
        raise ConfigError(describe(None, source, schema, problems))
    return model


def load(path: str | Path | None = None, overrides: list[str] | None = None, tree: dict | None = None) -> RunConfig:
    """A run config from its file (or `tree`, the file's YAML where the caller has read it) and overrides."""
    tree = tree if tree is not None else read_yaml(path) if path is not None else {}
    tree = deep_merge(tree, parse_overrides(overrides or []))
    return build(tree, str(path) if path is not None else "config")


def names_under(keys: list[str], section: str) -> list[str]:
    """The names allowed directly in `section` ('' = the top level): its keys and its sub-sections, in order."""
    prefix = f"{section}." if section else ""
    return list(dict.fromkeys(k.removeprefix(prefix).partition(".")[0] for k in keys if k.startswith(prefix)))


def suggest(written: str, keys: list[str]) -> str | None:
    """The known key closest to a dotted key that is not one: as a whole ('modle.cell' → 'model.cell'), else its
    first unknown part among the names allowed where it stands ('modle' → 'model')."""
    close = difflib.get_close_matches(written, keys, n=1, cutoff=0.6)
    if close:
        return close[0]
    parts = written.split(".")
    for depth in range(len(parts)):
        section = ".".join(parts[:depth])
        names = names_under(keys, section)
        if parts[depth] not in names:
            close = difflib.get_close_matches(parts[depth], names, n=1, cutoff=0.6)
            return f"{section}.{close[0]}" if close and section else close[0] if close else None
    return None


def describe(err: ValidationError | None, source: str, schema: type[BaseModel], first: list[str] | None = None) -> str:
    """The problems of a config, one line each: `first` (lines already written, such as scalar_problems'), then
    pydantic's errors, unknown keys with the nearest known one."""
    keys = known_keys(schema)
    lines = list(first or [])
    named = {line.partition(": ")[0] for line in lines}  # a key named there: not again for what followed from it
    for e in err.errors() if err is not None else []:
        key = ".".join(str(p) for p in e["loc"]) or "(top level)"
        if key in named:
            continue
        if e["type"] == "extra_forbidden":
            # An unknown section arrives whole ({'modle': {'cell': 'gru'}}): one key under it is judged as the user
            # wrote it (modle.cell → model.cell) where that matches a known key; else the section's name is judged.
            leaves = list(flatten(e["input"])) if isinstance(e["input"], dict) else []
            written = f"{key}.{leaves[0]}" if len(leaves) == 1 else key
            if written != key and not difflib.get_close_matches(written, keys, n=1, cutoff=0.6):
                written = key
            close = suggest(written, keys)
            hint = f"; did you mean '{close}'?" if close else ""
            section = key.rpartition(".")[0]
            prefix = f"{section}." if section else ""
            allowed = [
                f"{prefix}{n}" if f"{prefix}{n}" in keys else f"{prefix}{n}.*" for n in names_under(keys, section)
            ]
            lines.append(f"unknown key '{written}'{hint} (allowed here: {', '.join(allowed)})")
        else:
            msg = e["msg"].removeprefix("Value error, ")
            got = "" if e["type"].startswith("value_error") else f" (got {e['input']!r})"
            lines.append(f"{key}: {msg}{got}")
    if len(lines) == 1:  # one problem, one line
        return f"{source}: invalid config: {lines[0]}"
    return f"{source}: invalid config:\n  " + "\n  ".join(lines)
