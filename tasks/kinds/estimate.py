"""What a study will cost before it is spent: this machine's training speed for each variant's model, measured by
timing a few optimizer steps on random tokens, then the budget of every cell and trial in optimizer steps and
validation passes. An estimate, and an upper bound where runs stop early (a blow-up, a pruned trial)."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from models.lm import RNNLM
from models.seq2seq import Seq2Seq, sequence_nll
from rnnlab.schemas.config import RunConfig
from rnnlab.schemas.study import Study
from tasks.data.nmt_corpus import BOS_ID
from tasks.record import hardware
from tasks.training.model_settings import lm_settings, seq2seq_shape

# Measured on an Intel Xeon (2 cores, 2026-12-06), the small PTB LSTM at one thread: scoring PTB valid ran at ~9,900
# tokens/s against ~4,000 training in the demo's cells (side by side): ~2.5x. This timing of a few steps alone gave
# ~3,400 tokens/s, below what those cells reached side by side, so no further slowdown is applied for neighbours.
EVAL_SPEEDUP = 2.5
START_SECONDS, CELL_SECONDS = 20.0, 5.0  # a study's start (imports, servers, workers); a run's own bookkeeping


@dataclass(frozen=True)
class Cost:
    runs: int
    seconds: float  # wall time on this machine, `concurrency` at a time


def timed(step, repeats: int = 3) -> float:
    """Seconds per call, after two warm-up calls (the first ones allocate)."""
    step()
    step()
    started = time.perf_counter()
    for _ in range(repeats):
        step()
    return (time.perf_counter() - started) / repeats


def training_speed(cfg: RunConfig, vocab_size: int, threads: int, steps: int = 3) -> float:
    """Tokens per second of this config's language model on this machine: a few SGD steps on random tokens."""
    hardware.flush_denormals()  # as training will: and before the threads below start, so that they inherit it
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        torch.manual_seed(0)
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
    finally:
        torch.set_num_threads(previous)


def run_seconds(cfg: RunConfig, corpus, speed: float, max_steps: int | None = None) -> float:
    """A run's whole budget: its optimizer steps, its validation passes and its final score of the valid split."""
    per_step = cfg.train.batch_size * cfg.train.bptt
    per_epoch = max(1, corpus.tokens["train"] // per_step)
    steps = min(x for x in (max_steps, cfg.train.max_steps, cfg.train.max_epochs * per_epoch) if x)
    every = cfg.train.val_every_n_steps or per_epoch
    validations = math.ceil(steps / every) + 1
    return steps * per_step / speed + validations * corpus.tokens["valid"] / (EVAL_SPEEDUP * speed) + CELL_SECONDS


def translation_run_seconds(cfg: RunConfig, corpus, threads: int) -> float:
    """A translation run's whole budget on this machine: its Adam steps (a batch of sentence pairs of the training
    split's mean lengths, random subwords), a greedy translation and a scoring pass of the valid split at every
    validation, and the final scores (greedy, beam, perplexity). Decoding is timed as one decoder step per target
    subword of the mean length (a trained model stops at its EOS; an untrained one runs to its length limit)."""
    hardware.flush_denormals()  # as training will: and before the threads below start, so that they inherit it
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        torch.manual_seed(0)
        train = corpus.load("train")
        src_len = max(1, round(sum(len(s) for s in train["src"]) / max(1, len(train["src"]))))
        tgt_len = max(1, round(sum(len(t) for t in train["tgt"]) / max(1, len(train["tgt"])))) + 1  # + EOS
        net = Seq2Seq(seq2seq_shape(cfg, corpus.src_vocab, corpus.tgt_vocab))
        optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)

        def batch(size: int):
            src = torch.randint(4, corpus.src_vocab, (size, src_len))
            return src, torch.full((size,), src_len), torch.randint(4, corpus.tgt_vocab, (size, tgt_len))

        src, lengths, tgt = batch(cfg.train.batch_size)
        prev = torch.cat([torch.full((cfg.train.batch_size, 1), BOS_ID), tgt[:, :-1]], dim=1)

        def train_step() -> None:
            loss, count = sequence_nll(net(src, lengths, prev), tgt)
            optimizer.zero_grad()
            (loss / count).backward()
            optimizer.step()

        step_seconds = timed(train_step)
        eval_size = min(cfg.eval.batch_size, max(1, corpus.pairs["valid"]))

        def decode_seconds(beam: int) -> float:
            e_src, e_len, _ = batch(eval_size * beam)
            with torch.no_grad():
                memory, states, mask = net.encode(e_src, e_len)
                token = torch.full((eval_size * beam, 1), BOS_ID)
                per_token = timed(lambda: net.decoder(token, states, memory, mask))
                encode = timed(lambda: net.encode(e_src, e_len), repeats=1)
            return math.ceil(corpus.pairs["valid"] / eval_size) * (encode + tgt_len * per_token)

        greedy = decode_seconds(1)
        beam = decode_seconds(cfg.eval.beam) if cfg.eval.beam > 1 else greedy
    finally:
        torch.set_num_threads(previous)
    per_epoch = math.ceil(corpus.pairs["train"] / cfg.train.batch_size)
    steps = min(x for x in (cfg.train.max_steps, cfg.train.max_epochs * per_epoch) if x)
    training = steps * step_seconds
    if cfg.train.max_minutes:
        training = min(training, cfg.train.max_minutes * 60)
    every = cfg.train.val_every_n_steps or per_epoch
    scoring = math.ceil(corpus.pairs["valid"] / cfg.train.batch_size) * step_seconds / 3  # a forward pass
    validations = math.ceil(steps / every)
    return training + validations * (greedy + scoring) + greedy + beam + scoring + CELL_SECONDS


def study_cost(study: Study, corpora: dict, threads: int) -> tuple[Cost, Cost | None]:
    """(the cells, the tuning trials or None): runs and wall seconds at the study's concurrency."""
    from tasks.kinds.steps import data_key  # the corpus of a config

    speeds: dict[str, float] = {}  # a language model's tokens/s, by its shape
    translation_seconds: dict[str, float] = {}  # a translation run's whole budget, by its recipe
    seconds = []
    for cell in study.cells:
        corpus = corpora[data_key(cell.config)]
        if cell.config.task != "lm":  # timed once per model and recipe (seeds share both)
            recipe = cell.config.model_copy(update={"seed": 0, "run_name": None}).model_dump_json()
            if recipe not in translation_seconds:
                translation_seconds[recipe] = translation_run_seconds(cell.config, corpus, threads)
            seconds.append(translation_seconds[recipe])
            continue
        shape = cell.config.model.model_dump_json()
        if shape not in speeds:
            speeds[shape] = training_speed(cell.config, corpus.vocab_size, threads)
        seconds.append(run_seconds(cell.config, corpus, speeds[shape]))
    tune = study.config.tune
    if tune and any(c.config.task != "lm" for c in study.cells):
        raise NotImplementedError("no estimate yet for tuning translation models")
    cells = Cost(len(seconds) * (2 if tune else 1), sum(seconds) * (2 if tune else 1) / study.config.concurrency)
    if not tune:
        return cells, None
    per_arm = {c.id: (c, corpora[data_key(c.config)]) for c in study.cells}
    trial_budget = tune.budget.max_steps or study.config.budget.max_steps
    trial_seconds = (
        sum(
            run_seconds(c.config, corpus, speeds[c.config.model.model_dump_json()], trial_budget)
            for c, corpus in per_arm.values()
        )
        * tune.trials
    )
    return cells, Cost(len(per_arm) * tune.trials, trial_seconds / study.config.concurrency)


def minutes(seconds: float) -> str:
    return f"{seconds / 60:.1f} min" if seconds >= 60 else f"{seconds:.0f} s"


def estimate_lines(study: Study, corpora: dict, threads: int) -> list[str]:
    """The plan in words: what will run and about how long, on this machine. No estimate, and the reason, where the
    timing cannot be taken (a model too large for this machine's memory: its study records that as a finding)."""
    try:
        cells, trials = study_cost(study, corpora, threads)
    except NotImplementedError as err:
        return [f"rnnlab: study '{study.name}': {len(study.cells)} cells; {err}"]
    except (RuntimeError, MemoryError) as err:  # torch's "can't allocate memory" is a RuntimeError
        return [f"rnnlab: study '{study.name}': no time estimate: timing its model failed ({str(err)[:120]})"]
    total = START_SECONDS + cells.seconds + (trials.seconds if trials else 0.0)
    lines = []
    if trials:
        lines.append(
            f"rnnlab: study '{study.name}': {trials.runs} tuning trials ({study.config.tune.trials} per arm), "
            f"then {cells.runs} cells (each arm's best setting and the base recipe × "
            f"{len(study.config.seeds)} seeds), {study.config.concurrency} at a time"
        )
    else:
        lines.append(f"rnnlab: study '{study.name}': {cells.runs} cells, {study.config.concurrency} at a time")
    lines.append(
        f"rnnlab: estimated wall time on this machine: about {minutes(total)} if every run uses its whole "
        f"budget (runs that blow up{' or are pruned' if trials else ''} end sooner; finished cells are reused "
        "and cost nothing)"
    )
    return lines
