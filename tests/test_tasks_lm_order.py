"""A language model's seed orders its training sentences, on tiny real data through Lightning: each epoch trains on
the order drawn from (seed, epoch), a run resumed at an epoch boundary trains on the order the uninterrupted run
had, and the order (`data.order`) is recorded as a param of the run."""

from contextlib import contextmanager
from pathlib import Path

import lightning.pytorch as pl
import torch
from test_tasks_lm import epoch_batches, same

from flows.train import open_run
from tasks.data.lm_corpus import prepare_lm_corpus
from tasks.kinds.lm import eos_index, fit_lm, segment_loader, training_loader
from tasks.record import tracking
from tasks.training.fitting import load_weights


class BatchRecorder(pl.Callback):
    """Every training batch Lightning hands to the model, by epoch."""

    def __init__(self):
        self.epochs: dict[int, list[tuple[torch.Tensor, ...]]] = {}

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        self.epochs.setdefault(trainer.current_epoch, []).append(tuple(t.clone() for t in batch))


@contextmanager
def extra_callbacks(*callbacks: pl.Callback):
    """The Trainer that fit_lm builds, with `callbacks` attached."""
    original = pl.Trainer.__init__

    def with_callbacks(self, *args, **kwargs):
        original(self, *args, **{**kwargs, "callbacks": [*kwargs["callbacks"], *callbacks]})

    pl.Trainer.__init__ = with_callbacks
    try:
        yield
    finally:
        pl.Trainer.__init__ = original


def fit(cfg, workdir: Path | None = None) -> tuple[str, BatchRecorder, str]:
    """(run id, the batches it trained on, its best checkpoint): a run opened as `rnnlab train` opens it."""
    corpus = prepare_lm_corpus(cfg.data)
    run_id = open_run.fn(cfg, corpus)  # the flow's own step: params as every run logs them
    recorder = BatchRecorder()
    with extra_callbacks(recorder):
        fitted = fit_lm(cfg, corpus, run_id, str(workdir) if workdir else None)
    return run_id, recorder, fitted.checkpoint


def expected_batches(cfg, epoch: int):
    corpus = prepare_lm_corpus(cfg.data)
    loader = training_loader(
        corpus.load("train"), eos_index(corpus), cfg.train.batch_size, cfg.train.bptt, cfg.data.order, cfg.seed
    )
    return epoch_batches(loader, epoch)


def test_each_epoch_of_a_fit_trains_on_the_order_of_its_seed_and_epoch_and_the_run_records_the_order(tiny_cfg):
    cfg = tiny_cfg("train.max_epochs=2", "seed=5", experiment="order")
    run_id, recorder, _ = fit(cfg)
    assert sorted(recorder.epochs) == [0, 1]
    for epoch in (0, 1):  # Lightning told the loader each epoch as it began
        assert same(recorder.epochs[epoch], expected_batches(cfg, epoch))
    assert not same(recorder.epochs[0], recorder.epochs[1])
    assert tracking.get_run(run_id).data.params["data.order"] == "shuffled"


def test_the_fixed_order_trains_on_the_corpus_order_every_epoch_and_is_recorded(tiny_cfg):
    cfg = tiny_cfg("train.max_epochs=2", "data.order=fixed", experiment="order")
    run_id, recorder, _ = fit(cfg)
    corpus = prepare_lm_corpus(cfg.data)
    today = epoch_batches(segment_loader(corpus.load("train"), eos_index(corpus), 4, 8, pad=False), 0)
    assert same(recorder.epochs[0], today) and same(recorder.epochs[1], today)
    assert tracking.get_run(run_id).data.params["data.order"] == "fixed"


def test_a_run_resumed_at_an_epoch_boundary_trains_on_the_order_the_uninterrupted_run_had(tiny_cfg, tmp_path):
    _, uninterrupted, uninterrupted_best = fit(tiny_cfg("train.max_epochs=2", experiment="order"), tmp_path / "whole")
    fit(tiny_cfg("train.max_epochs=1", experiment="order"), tmp_path / "cut")
    _, resumed, resumed_best = fit(tiny_cfg("train.max_epochs=2", experiment="order"), tmp_path / "cut")
    assert sorted(resumed.epochs) == [1]  # it went on from the first epoch's checkpoint
    assert same(resumed.epochs[1], uninterrupted.epochs[1])
    whole, cut = load_weights(uninterrupted_best), load_weights(resumed_best)
    assert all(torch.equal(whole[k], cut[k]) for k in whole)  # and so ended with the same weights
