"""The Prefect face of tasks/: each step picks the wing for the run's task kind (language modelling: tasks/lm*.py,
translation: tasks/nmt*.py) and does nothing else. The probes (tasks/claims/probes.py) are tasks on a recorded
language-model run, for a flow that measures runs it has trained; the CLI calls their plain functions."""

from __future__ import annotations

import json
import sys
import tempfile

from prefect import task

from rnnlab.schemas.config import ConfigError, RunConfig
from tasks.data import lm_corpus, nmt_corpus
from tasks.data.corpus_files import DataError
from tasks.data.lm_corpus import LMCorpus
from tasks.data.nmt_corpus import ParallelCorpus
from tasks.kinds import lm, nmt
from tasks.record import hardware
from tasks.record.tracking import download_artifact, set_tags
from tasks.training.fitting import FitResult
from tasks.training.scoring import skipped_splits

Corpus = LMCorpus | ParallelCorpus


def prepare_corpus(cfg: RunConfig) -> Corpus:
    check_machine(cfg)  # first: a setting this machine cannot run fails before any data is prepared
    if cfg.task == "nmt":
        corpus = nmt_corpus.prepare_parallel_corpus(cfg.data)
    else:
        corpus = lm_corpus.prepare_lm_corpus(cfg.data)
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


def skipped_eval_splits(cfg: RunConfig, corpus: Corpus) -> dict[str, str]:
    """The tag saying which configured evaluation splits the corpus lacks ({} when none)."""
    return skipped_splits(cfg.eval.splits, corpus.pairs if cfg.task == "nmt" else corpus.tokens, corpus.name)


def has_split(corpus: Corpus, split: str) -> bool:
    return split in (corpus.pairs if isinstance(corpus, ParallelCorpus) else corpus.tokens)


def check_fits(cfg: RunConfig, corpus: Corpus) -> None:
    """Fail here, before any run opens, when the corpus cannot fill the batches the config asks for, or when this
    machine cannot run its accelerator or precision."""
    (nmt_corpus if cfg.task == "nmt" else lm_corpus).check_fits(cfg, corpus)
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


def data_key(cfg: RunConfig) -> str:
    """The data settings of a run: runs with the same key share one prepared corpus."""
    return json.dumps(cfg.data.model_dump(mode="json"), sort_keys=True)


@task(name="prepare-data")
def prepare_data(cfg: RunConfig) -> Corpus:
    return prepare_corpus(cfg)


@task(name="train")
def train(cfg: RunConfig, corpus: Corpus, run_id: str, workdir: str | None = None, callbacks: tuple = ()) -> FitResult:
    """`callbacks`: Lightning callbacks added to the house ones (a tuning trial's pruner)."""
    if cfg.task == "nmt":
        return nmt.fit_nmt(cfg, corpus, run_id, workdir, callbacks)
    return lm.fit_lm(cfg, corpus, run_id, workdir, callbacks)


@task(name="evaluate")
def evaluate(cfg: RunConfig, corpus: Corpus, run_id: str, fitted: FitResult) -> dict[str, float]:
    if cfg.task == "nmt":
        return nmt.score_nmt(cfg, corpus, run_id, fitted)
    return lm.score_lm(cfg, corpus, run_id, fitted)


@task(name="score-held-out")
def score_held_out(cfg: RunConfig, corpus: Corpus, run_id: str, split: str = "test") -> dict[str, float]:
    """Score a finished run's selected checkpoint (from the store) on `split`, once, after a study's decision: the
    split that no choice of checkpoint, setting or winner has seen. Logged to the run like its other scores."""
    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = download_artifact(run_id, "checkpoints/best.ckpt", tmp)
        held_out = cfg.model_copy(update={"eval": cfg.eval.model_copy(update={"splits": (split,)})})
        fitted = FitResult(str(checkpoint), None, None, 0, 0.0, 0.0, 0.0)  # only its checkpoint is read
        metrics = (nmt.score_nmt if cfg.task == "nmt" else lm.score_lm)(held_out, corpus, run_id, fitted)
    set_tags(run_id, {f"rnnlab.{split}_scored": "after the study's decision"})
    return metrics


@task(name="probe-context")
def probe_context(run_id: str, split: str = "valid", positions: int | None = None, force: bool = False) -> dict:
    from tasks.claims import probes  # lazy: matplotlib, which a training flow never needs

    return probes.context_probe(run_id, split, positions, force)


@task(name="probe-gradient-flow")
def probe_gradient_flow(run_id: str, split: str = "valid", positions: int | None = None, force: bool = False) -> dict:
    from tasks.claims import probes  # lazy: matplotlib, which a training flow never needs

    return probes.gradient_flow_probe(run_id, split, positions, force)


@task(name="spectral-check")
def probe_spectral_check(radii: list[float]) -> dict:
    from tasks.claims import probes  # lazy: matplotlib, which a training flow never needs

    return probes.spectral_check(tuple(radii))
