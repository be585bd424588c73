"""Exact resume (issue, point 3): a checkpoint at every validation carries everything training depends on (the
loader's place in its epoch, the hidden state carried across truncated-BPTT segments, every RNG state, the training
loss window, the last validation's metrics), so a cell interrupted after a checkpoint and resumed by a fresh fit ends
with the same metrics and weights, bit for bit, as the same cell uninterrupted. On tiny real data, each interrupted
mid-epoch and at an epoch's end: a language model (dropout on, its lr halved at the epoch boundary the resumed part
crosses) and a translation model (dropout, shuffled length buckets, a plateau schedule that halves the lr at the end of
an epoch the resumed part finishes). Under 20 s a case on 2 cores."""

from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch
from conftest import DATA_DIR
from test_flows_nmt import NMT_CONFIG

from rnnlab.schemas import config
from tasks.data.lm_corpus import prepare_lm_corpus
from tasks.data.nmt_corpus import prepare_parallel_corpus
from tasks.kinds.lm import fit_lm, score_lm
from tasks.kinds.nmt import fit_nmt, score_nmt
from tasks.record import tracking


class Interrupted(Exception):
    """What stops the first fit: a kill, as far as the checkpoints on disk can tell."""


class InterruptAt(pl.Callback):
    """Stops the fit as it is about to train past `step`: a few steps after the last validation's checkpoint, so the
    work since then is lost and done again, as after a kill."""

    def __init__(self, step: int):
        self.step = step

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        if trainer.global_step == self.step:
            raise Interrupted(f"interrupted at step {self.step}")


SUMMARIES = ("train_loss", "train_steps", "clipped_share", "max_grad_norm")


def curves(run_id: str, keys: tuple[str, ...]) -> dict[str, dict[int, float]]:
    mlflow = tracking.client()
    return {k: {m.step: m.value for m in mlflow.get_metric_history(run_id, k)} for k in keys}


def checkpoint(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


def same_tensors(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def fit_three_ways(fit, cfg, corpus, tmp_path: Path, stop_at: int) -> dict:
    """The cell uninterrupted; then again, interrupted at `stop_at`; then resumed from its `last.ckpt` by a fresh
    fit (fresh module, loaders and seeds, as a new worker process builds them). Each in a run of its own."""

    def run(workdir: Path, callbacks=()):
        run_id = tracking.open_run(cfg.experiment, None, cfg.flat(), {})
        return run_id, fit(cfg, corpus, run_id, str(workdir), callbacks)

    whole = run(tmp_path / "whole")
    with pytest.raises(Interrupted):
        run(tmp_path / "cut", (InterruptAt(stop_at),))
    at_interruption = checkpoint(tmp_path / "cut" / "checkpoints" / "last.ckpt")
    resumed = run(tmp_path / "cut")
    return {"whole": whole, "resumed": resumed, "interrupted_at": at_interruption}


def assert_resumed_exactly(runs: dict, tmp_path: Path, curve_keys: tuple[str, ...], resumed_from: int) -> None:
    (whole_id, whole), (resumed_id, resumed) = runs["whole"], runs["resumed"]
    mlflow = tracking.client()
    assert mlflow.get_run(resumed_id).data.tags["rnnlab.resumed_from_step"] == str(resumed_from)
    assert resumed.steps == whole.steps
    # the summaries of the whole training: the loss window and gradient statistics carried over the interruption
    whole_metrics, resumed_metrics = mlflow.get_run(whole_id).data.metrics, mlflow.get_run(resumed_id).data.metrics
    summaries = [k for k in whole_metrics if k in SUMMARIES or k.startswith("grad_norm_layer")]
    assert {k: resumed_metrics[k] for k in summaries} == {k: whole_metrics[k] for k in summaries}
    # every step the resumed fit trained and validated, value for value (a training step's values are logged at the
    # step it started from; the validation at `resumed_from` is not repeated)
    whole_curves, resumed_curves = curves(whole_id, curve_keys), curves(resumed_id, curve_keys)
    for key in curve_keys:
        first = resumed_from + key.startswith("valid/")
        after = {s: v for s, v in whole_curves[key].items() if s >= first}
        assert after and resumed_curves[key] == after, key
    # the same weights, optimizer and schedule state at the end, and the same checkpoint selected as best
    last = {name: checkpoint(tmp_path / name / "checkpoints" / "last.ckpt") for name in ("whole", "cut")}
    assert same_tensors(last["whole"]["state_dict"], last["cut"]["state_dict"])
    assert last["whole"]["lr_schedulers"] == last["cut"]["lr_schedulers"]
    for a, b in zip(
        last["whole"]["optimizer_states"][0]["state"].values(), last["cut"]["optimizer_states"][0]["state"].values()
    ):
        assert same_tensors(a, b)
    best = {name: checkpoint(tmp_path / name / "checkpoints" / "best.ckpt") for name in ("whole", "cut")}
    assert best["whole"]["global_step"] == best["cut"]["global_step"]
    assert same_tensors(best["whole"]["state_dict"], best["cut"]["state_dict"])


# (validation every n steps or once an epoch, interrupted at, the step of the checkpoint resumed from)
LM_CASES = {
    # 106 training segments an epoch: validations at steps 20, 40, ... 100, then 126 and 146
    "mid-epoch": (20, 83, 80),
    # a validation at the end of each epoch (steps 106 and 212): resumed at the start of epoch 1
    "at an epoch's end": (None, 108, 106),
}


@pytest.mark.parametrize("case", LM_CASES)
def test_a_language_model_interrupted_and_resumed_ends_as_if_never_interrupted(tiny_cfg, tmp_path, case):
    every, stop_at, resumed_from = LM_CASES[case]
    cfg = tiny_cfg(
        "model.dropout=0.3",  # masks drawn from the global generator
        "train.max_epochs=5",
        f"train.max_steps={146 if every else 212}",
        f"train.val_every_n_steps={every or 'null'}",
        "train.decay_after=1",  # the lr halved after epoch 0
        "train.lr=5.0",
        "train.blowup_window=100",  # the final training loss: a mean over steps on both sides of the interruption
        experiment="exact_resume",
    )
    corpus = prepare_lm_corpus(cfg.data)
    runs = fit_three_ways(fit_lm, cfg, corpus, tmp_path, stop_at)
    saved = runs["interrupted_at"]
    assert (saved["global_step"], saved["epoch"]) == (resumed_from, 0)  # the checkpoint of the last validation
    assert saved["loops"]["fit_loop"]["state_dict"]["combined_loader"] == [{"batches": resumed_from}]
    keys = ("train/loss", "train/grad_norm", "train/lr", "valid/nll", "valid/ppl")
    assert_resumed_exactly(runs, tmp_path, keys, resumed_from)
    # the cell's final scores, from its best checkpoint
    whole, resumed = (score_lm(cfg, corpus, run_id, fitted) for run_id, fitted in (runs["whole"], runs["resumed"]))
    assert resumed == whole
    print(f"LM {case}: valid ppl {whole['valid_ppl']!r} uninterrupted, {resumed['valid_ppl']!r} resumed")


def cut_parallel(target: Path, train: int, held_out: int) -> Path:
    """A tiny de→en corpus cut from Multi30k."""
    target.mkdir(parents=True, exist_ok=True)
    for split, name in (("train", "train"), ("valid", "val"), ("test", "test_2016_flickr")):
        for lang in ("de", "en"):
            lines = (DATA_DIR / "multi30k" / f"{name}.{lang}").read_text(encoding="utf-8").splitlines(keepends=True)
            (target / f"{split}.{lang}").write_text("".join(lines[: train if split == "train" else held_out]))
    return target


NMT_CASES = {
    # 10 batches an epoch, a validation every 4 steps (4, 8, then 14, 18, then 24): resumed at step 18, so the
    # plateau schedule steps at the end of epoch 1 (step 20) on the metrics of the validation before the interruption
    "mid-epoch": (4, 19, 18, 24),
    # a validation at the end of each epoch (10, 20, 30): resumed at the start of epoch 1; the schedule's step at the
    # end of epoch 0 comes after its checkpoint
    "at an epoch's end": (None, 12, 10, 30),
}


@pytest.mark.parametrize("case", NMT_CASES)
def test_a_translation_model_interrupted_and_resumed_ends_as_if_never_interrupted(tmp_path, case):
    every, stop_at, resumed_from, steps = NMT_CASES[case]
    cfg = config.load(
        NMT_CONFIG,  # dropout 0.3, label smoothing, a plateau schedule
        [
            f"data.corpus={cut_parallel(tmp_path / 'mt', train=160, held_out=20)}",
            "data.vocab_size=80",
            "model.embedding_size=16",
            "model.hidden_size=16",
            "train.batch_size=16",
            "train.lr=0.01",
            "train.max_minutes=null",
            f"train.max_steps={steps}",
            f"train.val_every_n_steps={every or 'null'}",
            "eval.batch_size=20",
            "eval.beam=2",
            "train.num_threads=1",
            "experiment=exact_resume",
        ],
    )
    corpus = prepare_parallel_corpus(cfg.data)
    assert corpus.pairs["train"] == 158  # 2 filtered: 10 batches of 16
    runs = fit_three_ways(fit_nmt, cfg, corpus, tmp_path / "runs", stop_at)
    assert runs["interrupted_at"]["global_step"] == resumed_from
    keys = ("train/loss", "train/grad_norm", "train/lr", "valid/nll", "valid/bleu_greedy")
    assert_resumed_exactly(runs, tmp_path / "runs", keys, resumed_from)
    # greedy BLEU stays 0 this early: the schedule's second step, at the end of epoch 1, halves the lr
    assert curves(runs["resumed"][0], ("train/lr",))["train/lr"] == {20: 0.005}
    whole, resumed = (score_nmt(cfg, corpus, run_id, fitted) for run_id, fitted in (runs["whole"], runs["resumed"]))
    assert resumed.keys() == whole.keys()
    assert {k: v for k, v in resumed.items() if "per_second" not in k} == {
        k: v for k, v in whole.items() if "per_second" not in k
    }
    print(
        f"NMT {case}: valid nll {whole['valid_nll']!r}, test BLEU {whole['test_bleu']!r} uninterrupted, "
        f"{resumed['valid_nll']!r}, {resumed['test_bleu']!r} resumed"
    )
