"""The Prefect face of tasks/: each step looks up the run's task kind (tasks/kinds/registry.py) and asks it; nothing
here names a kind."""

from __future__ import annotations

import json
import sys
import tempfile

from prefect import task

from rnnlab.schemas.config import ConfigError, RunConfig
from tasks.data.corpus_files import DataError, PreparedCorpus
from tasks.kinds.registry import kind_of
from tasks.record import hardware
from tasks.record.tracking import download_artifact, set_tags
from tasks.training.fitting import FitResult
from tasks.training.scoring import skipped_splits

Corpus = PreparedCorpus  # of the run's task kind


def prepare_corpus(cfg: RunConfig) -> Corpus:
    check_machine(cfg)  # first: a setting this machine cannot run fails before any data is prepared
    corpus = kind_of(cfg).prepare(cfg.data)
    check_fits(cfg, corpus)
    skipped = skipped_eval_splits(cfg, corpus)
    if skipped:  # once per corpus a study prepares, not once per cell: each run carries the tag
        print(
            f"rnnlab: warning: eval.splits: {skipped['rnnlab.eval.skipped']}; it is skipped (its runs are tagged "
            "rnnlab.eval.skipped)",
            file=sys.stderr,
            flush=True,
        )
    return corpus


def corpus_here(cfg: RunConfig, prepared: Corpus) -> Corpus:
    """The corpus a study prepared, as this machine has it: `prepared` itself when its cache is here (the study's
    machine, a shared disk), else prepared here from the config (this machine's RNNLAB_DATA_DIR, or a download) and
    checked to be the same data by its checksum. So no path that exists only on the study's machine crosses to a
    cell on another (a Dask worker)."""
    if prepared.cached("meta.json").is_file():
        return prepared
    here = prepare_corpus(cfg)
    if here.checksum != prepared.checksum:
        raise DataError(
            f"corpus {prepared.name}: this machine's copy has checksum {here.checksum[:12]}, the study's "
            f"{prepared.checksum[:12]}: the machines hold different data (RNNLAB_DATA_DIR)"
        )
    return here


def skipped_eval_splits(cfg: RunConfig, corpus: Corpus) -> dict[str, str]:
    """The tag saying which configured evaluation splits the corpus lacks ({} when none)."""
    return skipped_splits(cfg.eval.splits, corpus.sizes, corpus.name)


def has_split(corpus: Corpus, split: str) -> bool:
    return split in corpus.sizes


def check_fits(cfg: RunConfig, corpus: Corpus) -> None:
    """Fail here, before any run opens, when the corpus cannot fill the batches the config asks for, or when this
    machine cannot run its accelerator or precision."""
    kind_of(cfg).check_fits(cfg, corpus)
    check_machine(cfg)


def check_machine(cfg: RunConfig) -> None:
    """ConfigError where this machine cannot run the config's accelerator or precision; a warning where it runs it
    slowly."""
    warning = hardware.check_runnable(cfg)
    if warning and warning not in _warned:  # once, not once per cell of a study
        _warned.add(warning)
        print(warning, file=sys.stderr, flush=True)


_warned: set[str] = set()


def check_cells_fit(cells: list, corpora: dict[str, Corpus]) -> None:
    """Every cell of a study against its corpus (`corpora` by `data_key`): a factor such as train.batch_size can
    make one cell unfit where the others fit."""
    for cell in cells:
        try:
            check_fits(cell.config, corpora[data_key(cell.config)])
        except DataError as err:
            raise DataError(f"cell {cell.name}: {err}") from None
        except ConfigError as err:
            raise ConfigError(f"cell {cell.name}: {err}") from None


def prepare_corpora(cells) -> dict[str, Corpus]:
    """Each corpus that a study's cells need, prepared once (by `data_key`)."""
    corpora: dict[str, Corpus] = {}
    for cell in cells:
        if data_key(cell.config) not in corpora:
            corpora[data_key(cell.config)] = prepare_corpus(cell.config)
    return corpora


def prepare_study(cells) -> dict[str, Corpus]:
    """Each corpus once, and every cell checked against its corpus: what a command does before anything starts,
    and hands to the flow."""
    corpora = prepare_corpora(cells)
    check_cells_fit(cells, corpora)
    return corpora


def data_key(cfg: RunConfig) -> str:
    """The data settings of a run: runs with the same key share one prepared corpus."""
    return json.dumps(cfg.data.model_dump(mode="json"), sort_keys=True)


@task(name="prepare-data")
def prepare_data(cfg: RunConfig) -> Corpus:
    return prepare_corpus(cfg)


@task(name="train")
def train(cfg: RunConfig, corpus: Corpus, run_id: str, workdir: str | None = None, callbacks: tuple = ()) -> FitResult:
    """`callbacks`: Lightning callbacks added to the house ones (a tuning trial's pruner)."""
    return kind_of(cfg).fit(cfg, corpus, run_id, workdir, callbacks)


@task(name="evaluate")
def evaluate(cfg: RunConfig, corpus: Corpus, run_id: str, fitted: FitResult) -> dict[str, float]:
    return kind_of(cfg).score(cfg, corpus, run_id, fitted)


@task(name="score-held-out")
def score_held_out(cfg: RunConfig, corpus: Corpus, run_id: str, split: str = "test") -> dict[str, float]:
    """Score a finished run's selected checkpoint (from the store) on `split`, once, after a study's decision: the
    split that no choice of checkpoint, setting or winner has seen. Logged to the run like its other scores."""
    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = download_artifact(run_id, "checkpoints/best.ckpt", tmp)
        held_out = cfg.model_copy(update={"eval": cfg.eval.model_copy(update={"splits": (split,)})})
        fitted = FitResult(str(checkpoint), None, None, 0, 0.0, 0.0, 0.0)  # only its checkpoint is read
        metrics = kind_of(cfg).score(held_out, corpus, run_id, fitted)
    set_tags(run_id, {f"rnnlab.{split}_scored": "after the study's decision"})
    return metrics
