"""Language modelling, the task kind (`task: lm`): a token stream laid out as columns and cut into BPTT segments (the
training split's sentences shuffled anew each epoch), fitting a recurrent language model, and perplexity: exp(total
NLL / total tokens) over a whole split, hidden state carried through it.

Per-sentence NLL is kept (one row per line) so reports can bootstrap over test sentences.
"""

from __future__ import annotations

import math
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset, Sampler

from models.lm import RNNLM, VALID_TOKEN_NLL, LanguageModel, token_nll
from models.metrics import perplexity
from models.settings import LMSettings
from rnnlab.schemas.config import LMRunConfig
from tasks.data.corpus_files import read_lines
from tasks.data.lm_corpus import EOS, LMCorpus, check_fits, encode, prepare_lm_corpus, read_vocab, words
from tasks.kinds.base import TaskKind
from tasks.record.tracking import log_artifact, log_metrics
from tasks.training.fitting import FitResult, fit_module, load_trained, seed_and_threads
from tasks.training.model_settings import as_dict, optim_settings, pick
from tasks.training.resuming import ResumableLoader
from tasks.training.scoring import metric_name, recorded_config, run_file, score_each_split
from tasks.training.timing import CELL_SECONDS, EVAL_SPEEDUP, measuring, timed


def lm_columns(ids: torch.Tensor, eos_id: int, batch_size: int, pad: bool) -> tuple[torch.Tensor, ...]:
    """Lay a token stream out as `batch_size` contiguous columns, time-major [T, B].

    Every token is a target exactly once, predicted from the token before it (the first from `<eos>`), so
    summing over all targets covers the whole split. Evaluation pads the last column and masks the padding;
    training trims the remainder instead.
    """
    inputs = torch.cat([ids.new_tensor([eos_id]), ids[:-1]])
    n = len(ids)
    length = math.ceil(n / batch_size) if pad else n // batch_size
    if length == 0:
        raise ValueError(f"a split of {n} tokens is too short for batch size {batch_size}")
    total = length * batch_size
    mask = torch.arange(total) < n
    if total > n:
        inputs = torch.cat([inputs, inputs.new_zeros(total - n)])
        ids = torch.cat([ids, ids.new_zeros(total - n)])

    def layout(t: torch.Tensor) -> torch.Tensor:
        return t[:total].view(batch_size, length).t().contiguous()

    return layout(inputs), layout(ids), layout(mask.to(torch.float32))


class Segments(Dataset):
    """Consecutive BPTT segments of column-laid tensors; item i is a whole [bptt, B] batch, in order."""

    def __init__(self, tensors: tuple[torch.Tensor, ...], bptt: int):
        self.tensors, self.bptt = tensors, bptt

    def __len__(self) -> int:
        return math.ceil(len(self.tensors[0]) / self.bptt)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, ...]:
        return tuple(t[i * self.bptt : (i + 1) * self.bptt] for t in self.tensors)


def segment_loader(ids: torch.Tensor, eos_id: int, batch_size: int, bptt: int, pad: bool) -> DataLoader:
    tensors = lm_columns(ids, eos_id, batch_size, pad)
    if not pad:
        tensors = tensors[:2]
    # Order matters: the hidden state carried between segments only makes sense if they arrive in sequence.
    # Resumable: in the fixed order it is the training loader.
    return ResumableLoader(Segments(tensors, bptt), batch_size=None, shuffle=False)


def sentence_spans(ids: torch.Tensor, eos_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(start, length) of each sentence of a token stream: a sentence ends with its `<eos>`; tokens after the last
    `<eos>` make one more."""
    ends = torch.nonzero(ids == eos_id).flatten() + 1
    if len(ends) == 0 or int(ends[-1]) != len(ids):
        ends = torch.cat([ends, ends.new_tensor([len(ids)])])
    starts = torch.cat([ends.new_zeros(1), ends[:-1]])
    return starts, ends - starts


def epoch_order(seed: int, epoch: int, sentences: int) -> torch.Tensor:
    """The order of the training sentences in one epoch, a pure function of (seed, epoch): a run resumed at any epoch
    sees what it would have seen uninterrupted. Its own generator: the global one (initialisation, dropout) draws
    exactly what it drew before the order was shuffled."""
    generator = np.random.default_rng([seed % 2**64, epoch])  # seeded from both numbers as one entropy sequence
    return torch.from_numpy(generator.permutation(sentences))


def reorder_sentences(ids: torch.Tensor, spans: tuple[torch.Tensor, torch.Tensor], order: torch.Tensor) -> torch.Tensor:
    """The stream with its whole sentences (`spans`, from `sentence_spans`) in `order`: each token once."""
    starts, lengths = spans[0][order], spans[1][order]
    new_starts = torch.cumsum(lengths, 0) - lengths
    # token j of the new stream is token j + (old start - new start) of its sentence's old place
    return ids[torch.repeat_interleave(starts - new_starts, lengths) + torch.arange(len(ids))]


class ShuffledSegments(Segments):
    """The training split's BPTT segments of one epoch: its sentences in that epoch's order (`epoch_order`), then laid
    out as columns and cut into segments as in the fixed order. Laid out again when `set_epoch` names a new epoch:
    25 ms for PTB's 930k-token training split (measured, one thread)."""

    def __init__(self, ids: torch.Tensor, eos_id: int, batch_size: int, bptt: int, seed: int):
        super().__init__((), bptt)
        self.ids, self.eos_id, self.batch_size, self.seed = ids, eos_id, batch_size, seed
        self.spans = sentence_spans(ids, eos_id)
        self.epoch: int | None = None
        self.set_epoch(0)

    def set_epoch(self, epoch: int) -> None:
        if epoch != self.epoch:
            stream = reorder_sentences(self.ids, self.spans, epoch_order(self.seed, epoch, len(self.spans[0])))
            self.tensors, self.epoch = lm_columns(stream, self.eos_id, self.batch_size, pad=False)[:2], epoch


class EpochInOrder(Sampler[int]):
    """Every segment once, in sequence (the hidden state carried between them needs that). Lightning calls
    `set_epoch(current epoch)` on a training loader's sampler before each epoch, a resumed one included: passed on to
    the segments, which lay out that epoch's sentence order."""

    def __init__(self, segments: ShuffledSegments):
        self.segments = segments

    def __len__(self) -> int:
        return len(self.segments)

    def __iter__(self) -> Iterator[int]:
        return iter(range(len(self.segments)))

    def set_epoch(self, epoch: int) -> None:
        self.segments.set_epoch(epoch)


def training_loader(ids: torch.Tensor, eos_id: int, batch_size: int, bptt: int, order: str, seed: int) -> DataLoader:
    """The training split as segments: its sentences shuffled anew each epoch from (seed, epoch), or in the corpus's
    order every epoch (`data.order: fixed`)."""
    if order == "fixed":
        return segment_loader(ids, eos_id, batch_size, bptt, pad=False)
    segments = ShuffledSegments(ids, eos_id, batch_size, bptt, seed)
    return ResumableLoader(segments, batch_size=None, sampler=EpochInOrder(segments))


def lm_settings(cfg: LMRunConfig) -> LMSettings:
    return pick(LMSettings, cfg.model)


def eos_index(corpus: LMCorpus) -> int:
    return read_vocab(corpus.vocab_path).index(EOS)


def fit_lm(
    cfg: LMRunConfig, corpus: LMCorpus, run_id: str, workdir: str | None = None, callbacks: tuple = ()
) -> FitResult:
    seed_and_threads(cfg)
    eos = eos_index(corpus)
    train_loader = training_loader(
        corpus.load("train"), eos, cfg.train.batch_size, cfg.train.bptt, cfg.data.order, cfg.seed
    )
    valid_loader = segment_loader(corpus.load("valid"), eos, cfg.eval.batch_size, cfg.train.bptt, pad=True)
    module = LanguageModel(corpus.vocab_size, as_dict(lm_settings(cfg)), as_dict(optim_settings(cfg)))
    return fit_module(
        cfg,
        module,
        train_loader,
        valid_loader,
        run_id,
        monitor="valid_nll",
        mode="min",
        vocab_size=corpus.output_vocab,
        callbacks=callbacks,
        workdir=workdir,
    )


@dataclass(frozen=True)
class Perplexity:
    nll: float  # summed over all tokens, nats
    tokens: int

    @property
    def ppl(self) -> float:
        return perplexity(self.nll / self.tokens)


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


def split_perplexity(
    net: RNNLM, ids: torch.Tensor, eos_id: int, batch_size: int, bptt: int, losses: torch.Tensor | None = None
) -> tuple[Perplexity, pd.DataFrame]:
    """`losses`: the tokens' losses measured already (else measured here)."""
    if losses is None:
        losses = token_losses(net, ids, eos_id, batch_size, bptt)
    return Perplexity(float(losses.sum()), len(ids)), sentence_table(losses, ids, eos_id)


def validated_losses(checkpoint: str | Path, tokens: int) -> torch.Tensor | None:
    """The validation tokens' losses that the training's validation pass measured on exactly these weights, where
    the checkpoint carries them: the pass `token_losses` would repeat (same layout, batch size, BPTT length and
    carried state, at full precision), ~7 s of a 500-step PTB cell. None for a checkpoint saved without a
    validation at its step (a diverged or very short run), or trained under reduced precision."""
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)
    saved = state.get(VALID_TOKEN_NLL)
    if (
        not saved
        or saved["step"] != state["global_step"]
        or saved["precision"] != "32-true"
        or len(saved["losses"]) != tokens
    ):
        return None
    return saved["losses"]


def load_net(cfg: LMRunConfig, vocab_size: int, checkpoint: str | Path) -> RNNLM:
    return load_trained(RNNLM(vocab_size, lm_settings(cfg)), checkpoint)


def score_lm(cfg: LMRunConfig, corpus: LMCorpus, run_id: str, fitted: FitResult) -> dict[str, float]:
    """Perplexity of each evaluation split, with its per-sentence table as an artifact."""
    net = load_net(cfg, corpus.vocab_size, fitted.checkpoint)
    eos = eos_index(corpus)
    with tempfile.TemporaryDirectory() as tmp:

        def score(split: str) -> dict[str, float]:
            ids = corpus.load(split)
            measured = validated_losses(fitted.checkpoint, len(ids)) if split == "valid" else None
            result, sentences = split_perplexity(net, ids, eos, cfg.eval.batch_size, cfg.train.bptt, measured)
            path = Path(tmp) / f"{split}_sentences.csv"
            sentences.to_csv(path, index_label="sentence")
            log_artifact(run_id, path, "eval")
            return {
                f"{split}_ppl": result.ppl,
                f"{split}_nll": result.nll / result.tokens,
                f"{split}_tokens": result.tokens,
            }

        return score_each_split(run_id, cfg.eval.splits, corpus.tokens, score)


def evaluate_file(run_id: str, path: str | Path) -> dict[str, float]:
    """Perplexity of a recorded run on any text file (OOV words count as <unk>), logged to that run."""
    path = Path(path)
    lines = read_lines(path)  # fails early with a clear error on a missing, empty or undecodable file
    with tempfile.TemporaryDirectory() as tmp:
        _, cfg = recorded_config(run_id, tmp, LMRunConfig, "evaluate", ": score it with --src and --ref, not --file")
        vocab = read_vocab(run_file(run_id, "vocab.txt", tmp))
        net = load_net(cfg, len(vocab), run_file(run_id, "checkpoints/best.ckpt", tmp))
    index = {w: i for i, w in enumerate(vocab)}
    tokens = words(lines)
    ids = encode(tokens, index)
    result, _ = split_perplexity(net, ids, index[EOS], cfg.eval.batch_size, cfg.train.bptt)
    oov = sum(1 for t in tokens if t not in index) / len(tokens)
    name = metric_name(path)
    metrics = {
        f"{name}.ppl": result.ppl,
        f"{name}.nll": result.nll / result.tokens,
        f"{name}.tokens": result.tokens,
        f"{name}.oov_rate": oov,
    }
    log_metrics(run_id, metrics)
    return metrics


def training_speed(cfg: LMRunConfig, vocab_size: int, threads: int, steps: int = 3) -> float:
    """Tokens per second of this config's language model on this machine: a few SGD steps on random tokens."""
    with measuring(threads):
        net = RNNLM(vocab_size, lm_settings(cfg))
        optimizer = torch.optim.SGD(net.parameters(), lr=0.1)
        tokens = torch.randint(vocab_size, (cfg.train.bptt + 1, cfg.train.batch_size))

        def step() -> None:
            logits, _ = net(tokens[:-1], None)
            loss = F.cross_entropy(logits.flatten(0, 1), tokens[1:].flatten())
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()

        return tokens[1:].numel() / timed(step, steps)


def budget_steps(cfg: LMRunConfig, corpus: LMCorpus, max_steps: int | None = None) -> tuple[int, int]:
    """(the optimizer steps of the run's budget, the steps of one epoch: the training split laid out as
    train.batch_size columns, its remainder trimmed, cut into train.bptt segments, the last one shorter)."""
    per_epoch = max(1, math.ceil(corpus.tokens["train"] // cfg.train.batch_size / cfg.train.bptt))
    return min(x for x in (max_steps, cfg.train.max_steps, cfg.train.max_epochs * per_epoch) if x), per_epoch


def run_seconds(cfg: LMRunConfig, corpus: LMCorpus, speed: float, max_steps: int | None = None) -> float:
    """A run's whole budget: its optimizer steps, its validation passes and its final score of the valid split."""
    per_step = cfg.train.batch_size * cfg.train.bptt
    steps, per_epoch = budget_steps(cfg, corpus, max_steps)
    every = cfg.train.val_every_n_steps or per_epoch
    validations = math.ceil(steps / every) + 1
    return steps * per_step / speed + validations * corpus.tokens["valid"] / (EVAL_SPEEDUP * speed) + CELL_SECONDS


class LanguageModelling(TaskKind):
    name = "lm"
    description = "language"
    tuning_metric = "valid_nll"

    def prepare(self, data) -> LMCorpus:
        return prepare_lm_corpus(data)

    def check_fits(self, cfg: LMRunConfig, corpus: LMCorpus) -> None:
        check_fits(cfg, corpus)

    def fit(self, cfg: LMRunConfig, corpus: LMCorpus, run_id: str, workdir: str | None, callbacks: tuple) -> FitResult:
        return fit_lm(cfg, corpus, run_id, workdir, callbacks)

    def score(self, cfg: LMRunConfig, corpus: LMCorpus, run_id: str, fitted: FitResult) -> dict[str, float]:
        return score_lm(cfg, corpus, run_id, fitted)

    def speed(self, cfg: LMRunConfig, corpus: LMCorpus, threads: int, timings: dict) -> float:
        """Tokens/s of the config's model, timed once per model shape (its cells and trials share it)."""
        shape = ("lm", cfg.model.model_dump_json())
        if shape not in timings:
            timings[shape] = training_speed(cfg, corpus.vocab_size, threads)
        return timings[shape]

    def run_seconds(self, cfg: LMRunConfig, corpus: LMCorpus, threads: int, timings: dict) -> float:
        return run_seconds(cfg, corpus, self.speed(cfg, corpus, threads, timings))

    def steps(self, cfg: LMRunConfig, corpus: LMCorpus, max_steps: int | None = None) -> int:
        return budget_steps(cfg, corpus, max_steps)[0]

    def tunable(self) -> bool:
        return True

    def trial_seconds(self, cfg: LMRunConfig, corpus: LMCorpus, timings: dict, steps: int) -> float:
        return run_seconds(cfg, corpus, timings[("lm", cfg.model.model_dump_json())], steps)
