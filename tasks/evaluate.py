"""Perplexity: exp(total NLL / total tokens) over a whole split, hidden state carried through it.

Per-sentence NLL is kept (one row per line) so reports can bootstrap over test sentences.
"""

from __future__ import annotations

import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import torch
import yaml
from prefect import task

from models.metrics import perplexity as perplexity_of
from models.lm import RNNLM, token_nll
from rnnlab.config import LMRunConfig, RunConfig, build
from tasks.data import EOS, LMCorpus, encode, read_lines, read_vocab, words
from tasks.train import FitResult, lm_columns, load_weights
from tasks.tracking import download_artifact, get_run, log_artifact, log_metrics


@dataclass(frozen=True)
class Perplexity:
    nll: float  # summed over all tokens, nats
    tokens: int

    @property
    def ppl(self) -> float:
        return perplexity_of(self.nll / self.tokens)


@torch.inference_mode()
def token_losses(net: RNNLM, ids: torch.Tensor, eos_id: int, batch_size: int, bptt: int) -> torch.Tensor:
    """NLL of every token of `ids`, in the original order (float64)."""
    net.eval()
    inputs, targets, _ = lm_columns(ids, eos_id, batch_size, pad=True)
    losses = torch.empty(targets.shape, dtype=torch.float64)
    hidden = None
    for t in range(0, len(inputs), bptt):
        nll, hidden = token_nll(net, inputs[t : t + bptt], targets[t : t + bptt], hidden)
        losses[t : t + bptt] = nll.double()
    return losses.t().reshape(-1)[: len(ids)]


def sentence_table(losses: torch.Tensor, ids: torch.Tensor, eos_id: int) -> pd.DataFrame:
    """One row per line (a line ends at its `<eos>`): summed NLL and token count."""
    line = torch.cumsum((ids == eos_id).long(), 0) - (ids == eos_id).long()
    nll = torch.zeros(int(line.max()) + 1, dtype=torch.float64).index_add_(0, line, losses)
    tokens = torch.bincount(line)
    return pd.DataFrame({"nll": nll.numpy(), "tokens": tokens.numpy()})


def perplexity(net: RNNLM, ids: torch.Tensor, eos_id: int, batch_size: int, bptt: int) -> tuple[Perplexity, pd.DataFrame]:
    losses = token_losses(net, ids, eos_id, batch_size, bptt)
    return Perplexity(float(losses.sum()), len(ids)), sentence_table(losses, ids, eos_id)


def load_net(cfg: LMRunConfig, vocab_size: int, checkpoint: str | Path) -> RNNLM:
    net = RNNLM(vocab_size, cfg.model)
    net.load_state_dict(load_weights(checkpoint))
    return net


def score_splits(cfg: LMRunConfig, corpus: LMCorpus, run_id: str, fitted: FitResult) -> dict[str, float]:
    net = load_net(cfg, corpus.vocab_size, fitted.checkpoint)
    eos = read_vocab(corpus.vocab_path).index(EOS)
    metrics: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for split in cfg.eval.splits:
            if split not in corpus.tokens:
                continue
            result, sentences = perplexity(net, corpus.load(split), eos, cfg.eval.batch_size, cfg.train.bptt)
            metrics.update({f"{split}_ppl": result.ppl, f"{split}_nll": result.nll / result.tokens,
                            f"{split}_tokens": result.tokens})
            path = Path(tmp) / f"{split}_sentences.csv"
            sentences.to_csv(path, index_label="sentence")
            log_artifact(run_id, path, "eval")
    log_metrics(run_id, metrics, step=fitted.steps)
    return metrics


@task(name="evaluate")
def evaluate(cfg: RunConfig, corpus: Any, run_id: str, fitted: FitResult) -> dict[str, float]:
    if cfg.task == "nmt":
        from tasks.nmt import score_nmt

        return score_nmt(cfg, corpus, run_id, fitted)
    return score_splits(cfg, corpus, run_id, fitted)


def finished_run(run_id: str, purpose: str):
    """The run, if it FINISHED: a run that failed, was killed or is still training has no best checkpoint recorded
    (flows/train.py `record` logs it last), and MLflow would only say that a download failed."""
    run = get_run(run_id)
    if run.info.status != "FINISHED":
        raise LookupError(f"run {run_id} is {run.info.status}: it has no checkpoint to {purpose} "
                          "(only a FINISHED run has one)")
    return run


def run_file(run_id: str, path: str, tmp: str) -> Path:
    """One of a recorded run's artifacts, or a LookupError naming the one it lacks."""
    from mlflow.exceptions import MlflowException

    try:
        return download_artifact(run_id, path, tmp)
    except (MlflowException, OSError):
        raise LookupError(f"run {run_id} has no artifact {path}: it was not recorded by `rnnlab train`, "
                          "or its artifacts were deleted") from None


def metric_name(path: Path) -> str:
    return "file." + re.sub(r"[^0-9A-Za-z_.-]+", "_", path.name)


def evaluate_file(run_id: str, path: str | Path) -> dict[str, float]:
    """Perplexity of a recorded run on any text file (OOV words count as <unk>), logged to that run."""
    path = Path(path)
    lines = read_lines(path)  # fails early with a clear error on a missing, empty or undecodable file
    run = finished_run(run_id, "evaluate")
    with tempfile.TemporaryDirectory() as tmp:
        cfg = build(yaml.safe_load(run_file(run_id, "config.yaml", tmp).read_text()), f"run {run_id} config.yaml")
        if cfg.task != "lm":
            raise LookupError(f"run {run_id} is a {cfg.task} run: score it with --src and --ref, not --file")
        vocab = read_vocab(run_file(run_id, "vocab.txt", tmp))
        checkpoint = run_file(run_id, "checkpoints/best.ckpt", tmp)
        net = load_net(cfg, len(vocab), checkpoint)
    index = {w: i for i, w in enumerate(vocab)}
    tokens = words(lines)
    ids = encode(tokens, index)
    result, _ = perplexity(net, ids, index[EOS], cfg.eval.batch_size, cfg.train.bptt)
    oov = sum(1 for t in tokens if t not in index) / len(tokens)
    name = metric_name(path)
    metrics = {f"{name}.ppl": result.ppl, f"{name}.tokens": result.tokens, f"{name}.oov_rate": oov}
    log_metrics(run_id, metrics, step=int(run.data.metrics.get("train_steps", 0)))
    return metrics

