"""Translation, the task kind (`task: nmt`): batches of sentence pairs, fitting, decoding, and sacreBLEU scoring on
detokenized output against the raw references (with the metric signatures recorded)."""

from __future__ import annotations

import math
import tempfile
import time
from pathlib import Path

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import Callback
from sacrebleu.metrics import BLEU, CHRF
from torch.utils.data import DataLoader, Sampler

from models.metrics import perplexity
from models.search import beam_search, greedy
from models.seq2seq import PAD, Seq2Seq, Translator, sequence_nll
from models.settings import Seq2SeqShape
from rnnlab.schemas.config import NMTRunConfig
from tasks.data.corpus_files import read_lines
from tasks.data.nmt_corpus import (
    BOS_ID,
    EOS_ID,
    ParallelCorpus,
    check_fits,
    prepare_parallel_corpus,
    processor,
    read_pairs,
)
from tasks.kinds.base import TaskKind
from tasks.record.tracking import log_artifact, log_metrics, set_tags
from tasks.training.fitting import FitResult, fit_module, load_trained, seed_and_threads
from tasks.training.model_settings import as_dict, optim_settings, pick
from tasks.training.resuming import ResumableLoader
from tasks.training.scoring import metric_name, recorded_config, run_file, score_each_split
from tasks.training.timing import CELL_SECONDS, measuring, timed

Pairs = dict[str, list[torch.Tensor]]


def collate(items: list[tuple[torch.Tensor, torch.Tensor]]) -> tuple[torch.Tensor, ...]:
    """→ src [B, S] (each ending in EOS_ID, so no source is empty), lengths, decoder input (BOS_ID + y),
    targets (y + EOS_ID)."""
    eos, bos = torch.tensor([EOS_ID]), torch.tensor([BOS_ID])
    src = [torch.cat([s.long(), eos]) for s, _ in items]
    prev = [torch.cat([bos, t.long()]) for _, t in items]
    targets = [torch.cat([t.long(), eos]) for _, t in items]
    pad = lambda seqs: torch.nn.utils.rnn.pad_sequence(seqs, batch_first=True, padding_value=PAD)  # noqa: E731
    return pad(src), torch.tensor([len(s) for s in src]), pad(prev), pad(targets)


class PairDataset(torch.utils.data.Dataset):
    def __init__(self, pairs: Pairs):
        self.src, self.tgt = pairs["src"], pairs["tgt"]

    def __len__(self) -> int:
        return len(self.src)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.src[i], self.tgt[i]


class BucketBatches(Sampler[list[int]]):
    """Shuffled batches of pairs of similar length (less padding), reshuffled each epoch from the seed."""

    def __init__(self, lengths: list[int], batch_size: int, seed: int, pool: int = 50):
        self.lengths, self.batch_size, self.seed, self.pool = lengths, batch_size, seed, pool
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:  # Lightning calls this at each epoch start
        self.epoch = epoch

    def __len__(self) -> int:
        return math.ceil(len(self.lengths) / self.batch_size)

    def __iter__(self):
        g = torch.Generator().manual_seed(self.seed * 1000 + self.epoch)
        order = torch.randperm(len(self.lengths), generator=g).tolist()
        chunk = self.batch_size * self.pool
        batches = []
        for start in range(0, len(order), chunk):
            pooled = sorted(order[start : start + chunk], key=lambda i: self.lengths[i])
            batches += [pooled[i : i + self.batch_size] for i in range(0, len(pooled), self.batch_size)]
        for i in torch.randperm(len(batches), generator=g).tolist():
            yield batches[i]


@torch.no_grad()
def translate_ids(
    net: Seq2Seq,
    sources: list[torch.Tensor],
    batch_size: int,
    beam: int = 1,
    length_penalty: float = 1.0,
    max_len_ratio: float = 2.0,
) -> list[list[int]]:
    """Translate subword-id sentences in length-sorted batches; results come back in the input order."""
    net.eval()
    device = next(net.parameters()).device
    order = sorted(range(len(sources)), key=lambda i: len(sources[i]))
    out: list[list[int]] = [[] for _ in sources]
    for start in range(0, len(order), batch_size):
        index = order[start : start + batch_size]
        src, lengths, _, _ = collate([(sources[i], sources[i][:0]) for i in index])
        src, lengths = src.to(device), lengths.to(device)
        if beam == 1:
            hyps = greedy(net, src, lengths, BOS_ID, EOS_ID, max_len_ratio)
        else:
            hyps = beam_search(net, src, lengths, BOS_ID, EOS_ID, beam, max_len_ratio, length_penalty)
        for i, hyp in zip(index, hyps):
            out[i] = hyp
    return out


def bleu_chrf(hypotheses: list[str], references: list[str]) -> tuple[float, float, str, str]:
    """Corpus BLEU (13a tokenization, cased) and chrF of detokenized hypotheses against raw references."""
    bleu, chrf = BLEU(), CHRF()
    b = bleu.corpus_score(hypotheses, [references])
    c = chrf.corpus_score(hypotheses, [references])
    return b.score, c.score, str(bleu.get_signature()), str(chrf.get_signature())


class ValidationBLEU(Callback):
    """Greedy BLEU on the validation set after every validation: `valid_bleu_greedy` to Lightning (the checkpoint
    metric), the curve `valid/bleu_greedy` to the run (`valid_bleu_greedy` there is the selected checkpoint's)."""

    def __init__(self, corpus: ParallelCorpus, cfg: NMTRunConfig):
        self.sources = corpus.load("valid")["src"]
        self.references = corpus.references("valid")
        self.detok = processor(corpus.model_path("tgt"))
        self.cfg = cfg

    def on_validation_epoch_end(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        ids = translate_ids(
            module.net, self.sources, self.cfg.eval.batch_size, beam=1, max_len_ratio=self.cfg.eval.max_len_ratio
        )
        score, _, _, _ = bleu_chrf(self.detok.decode(ids), self.references)
        module.log("valid_bleu_greedy", score, logger=False)  # for the checkpoint monitor and the progress line
        trainer.logger.log_metrics({"valid/bleu_greedy": score}, step=trainer.global_step)  # the curve


def validation_words(metrics) -> list[str]:
    """The greedy BLEU on a progress line at a validation (the floor shows the perplexity)."""
    if "valid_bleu_greedy" in metrics:
        return [f"valid BLEU {float(metrics['valid_bleu_greedy']):.2f} (greedy)"]
    return []


def fit_nmt(
    cfg: NMTRunConfig, corpus: ParallelCorpus, run_id: str, workdir: str | None = None, callbacks: tuple = ()
) -> FitResult:
    seed_and_threads(cfg)
    train, valid = corpus.load("train"), corpus.load("valid")
    lengths = [len(t) for t in train["tgt"]]
    train_loader = ResumableLoader(
        PairDataset(train), batch_sampler=BucketBatches(lengths, cfg.train.batch_size, cfg.seed), collate_fn=collate
    )
    valid_loader = DataLoader(PairDataset(valid), batch_size=cfg.eval.batch_size, collate_fn=collate)
    module = Translator(
        as_dict(seq2seq_shape(cfg, corpus.src_vocab, corpus.tgt_vocab)),
        as_dict(optim_settings(cfg)),
        cfg.train.label_smoothing,
    )
    return fit_module(
        cfg,
        module,
        train_loader,
        valid_loader,
        run_id,
        monitor="valid_bleu_greedy",
        mode="max",
        vocab_size=corpus.output_vocab,
        callbacks=(ValidationBLEU(corpus, cfg), *callbacks),
        workdir=workdir,
        validation_words=validation_words,
    )


def seq2seq_shape(cfg: NMTRunConfig, src_vocab: int, tgt_vocab: int) -> Seq2SeqShape:
    return pick(Seq2SeqShape, cfg.model, src_vocab=src_vocab, tgt_vocab=tgt_vocab)


def load_translator(cfg: NMTRunConfig, src_vocab: int, tgt_vocab: int, checkpoint: str | Path) -> Seq2Seq:
    return load_trained(Seq2Seq(seq2seq_shape(cfg, src_vocab, tgt_vocab)), checkpoint)


@torch.no_grad()
def token_perplexity(net: Seq2Seq, pairs: Pairs, batch_size: int) -> float:
    loader = DataLoader(PairDataset(pairs), batch_size=batch_size, collate_fn=collate)
    nll, tokens = 0.0, 0
    for src, lengths, prev, targets in loader:
        loss, count = sequence_nll(net(src, lengths, prev), targets)
        nll, tokens = nll + float(loss), tokens + count
    return perplexity(nll / tokens)


def score_translations(
    net: Seq2Seq,
    cfg: NMTRunConfig,
    sources: list[torch.Tensor],
    references: list[str],
    detok,
    run_id: str,
    name: str,
    pairs: Pairs | None = None,
) -> dict[str, float]:
    """BLEU/chrF with beam and greedy, translation speed, (perplexity), and the translations as artifacts."""
    metrics: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for label, beam in (("greedy", 1), ("beam", cfg.eval.beam)):
            start = time.perf_counter()
            ids = translate_ids(
                net, sources, cfg.eval.batch_size, beam, cfg.eval.length_penalty, cfg.eval.max_len_ratio
            )
            seconds = time.perf_counter() - start
            hypotheses = detok.decode(ids)
            bleu, chrf, bleu_sig, chrf_sig = bleu_chrf(hypotheses, references)
            suffix = "" if label == "beam" else "_greedy"
            metrics.update(
                {
                    f"{name}_bleu{suffix}": bleu,
                    f"{name}_chrf{suffix}": chrf,
                    f"{name}_sentences_per_second{suffix}": len(sources) / seconds,
                }
            )
            path = Path(tmp) / f"{name}.{label}.hyp"
            path.write_text("".join(h + "\n" for h in hypotheses), encoding="utf-8")
            log_artifact(run_id, path, "translations")
        path = Path(tmp) / f"{name}.ref"  # beside the translations, so significance tests need only the store
        path.write_text("".join(r + "\n" for r in references), encoding="utf-8")
        log_artifact(run_id, path, "translations")
        if pairs is not None:
            metrics[f"{name}_ppl"] = token_perplexity(net, pairs, cfg.eval.batch_size)
            metrics[f"{name}_nll"] = math.log(metrics[f"{name}_ppl"])  # nats per token: the chartable twin
    set_tags(
        run_id,
        {"sacrebleu.bleu_signature": bleu_sig, "sacrebleu.chrf_signature": chrf_sig, f"{name}.beam": cfg.eval.beam},
    )
    return metrics


def score_nmt(cfg: NMTRunConfig, corpus: ParallelCorpus, run_id: str, fitted: FitResult) -> dict[str, float]:
    net = load_translator(cfg, corpus.src_vocab, corpus.tgt_vocab, fitted.checkpoint)
    detok = processor(corpus.model_path("tgt"))

    def score(split: str) -> dict[str, float]:
        pairs = corpus.load(split)
        return score_translations(net, cfg, pairs["src"], corpus.references(split), detok, run_id, split, pairs)

    return score_each_split(run_id, cfg.eval.splits, corpus.pairs, score)


def load_run(run_id: str, tmp: str, purpose: str = "use") -> tuple[NMTRunConfig, Seq2Seq, object, object]:
    """(config, net, source and target subword models) of a recorded translation run."""
    _, cfg = recorded_config(
        run_id,
        tmp,
        NMTRunConfig,
        purpose,
        ", not a translation run (task: nmt); a language model is scored with `rnnlab evaluate RUN --file FILE`",
    )
    src_sp = processor(run_file(run_id, "subwords/src.model", tmp))
    tgt_sp = processor(run_file(run_id, "subwords/tgt.model", tmp))
    net = load_translator(
        cfg, src_sp.get_piece_size(), tgt_sp.get_piece_size(), run_file(run_id, "checkpoints/best.ckpt", tmp)
    )
    return cfg, net, src_sp, tgt_sp


def encode_sources(src_sp, lines: list[str]) -> list[torch.Tensor]:
    return [torch.tensor(ids, dtype=torch.int32) for ids in src_sp.encode(lines)]


def translate_file(run_id: str, path: str | Path, beam: int | None = None) -> list[str]:
    lines = read_lines(Path(path))
    with tempfile.TemporaryDirectory() as tmp:
        cfg, net, src_sp, tgt_sp = load_run(run_id, tmp, "translate with")
    ids = translate_ids(
        net,
        encode_sources(src_sp, lines),
        cfg.eval.batch_size,
        beam or cfg.eval.beam,
        cfg.eval.length_penalty,
        cfg.eval.max_len_ratio,
    )
    return tgt_sp.decode(ids)


def evaluate_pair(run_id: str, src: str | Path, ref: str | Path) -> dict[str, float]:
    """BLEU/chrF (beam and greedy) of a recorded run on any parallel pair of files, logged to that run."""
    sources, references = read_pairs(Path(src), Path(ref))
    with tempfile.TemporaryDirectory() as tmp:
        cfg, net, src_sp, tgt_sp = load_run(run_id, tmp, "evaluate")
    name = metric_name(Path(src))
    metrics = score_translations(net, cfg, encode_sources(src_sp, sources), references, tgt_sp, run_id, name)
    log_metrics(run_id, metrics)
    return metrics


def budget_steps(cfg: NMTRunConfig, corpus: ParallelCorpus, max_steps: int | None = None) -> tuple[int, int]:
    """(the Adam steps of the run's budget, the steps of one epoch: a batch of sentence pairs each)."""
    per_epoch = math.ceil(corpus.pairs["train"] / cfg.train.batch_size)
    return min(x for x in (max_steps, cfg.train.max_steps, cfg.train.max_epochs * per_epoch) if x), per_epoch


def translation_run_seconds(cfg: NMTRunConfig, corpus: ParallelCorpus, threads: int) -> float:
    """A translation run's whole budget on this machine: its Adam steps (a batch of sentence pairs of the training
    split's mean lengths, random subwords), a greedy translation and a scoring pass of the valid split at every
    validation, and the final scores (greedy, beam, perplexity). Decoding is timed as one decoder step per target
    subword of the mean length (a trained model stops at its EOS; an untrained one runs to its length limit)."""
    with measuring(threads):
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
    steps, per_epoch = budget_steps(cfg, corpus)
    training = steps * step_seconds
    if cfg.train.max_minutes:
        training = min(training, cfg.train.max_minutes * 60)
    every = cfg.train.val_every_n_steps or per_epoch
    scoring = math.ceil(corpus.pairs["valid"] / cfg.train.batch_size) * step_seconds / 3  # a forward pass
    validations = math.ceil(steps / every)
    return training + validations * (greedy + scoring) + greedy + beam + scoring + CELL_SECONDS


class Translation(TaskKind):
    name = "nmt"
    description = "translation"
    tuning_metric = "valid_bleu_greedy"

    def prepare(self, data) -> ParallelCorpus:
        return prepare_parallel_corpus(data)

    def check_fits(self, cfg: NMTRunConfig, corpus: ParallelCorpus) -> None:
        check_fits(cfg, corpus)

    def fit(
        self, cfg: NMTRunConfig, corpus: ParallelCorpus, run_id: str, workdir: str | None, callbacks: tuple
    ) -> FitResult:
        return fit_nmt(cfg, corpus, run_id, workdir, callbacks)

    def score(self, cfg: NMTRunConfig, corpus: ParallelCorpus, run_id: str, fitted: FitResult) -> dict[str, float]:
        return score_nmt(cfg, corpus, run_id, fitted)

    def steps(self, cfg: NMTRunConfig, corpus: ParallelCorpus, max_steps: int | None = None) -> int:
        return budget_steps(cfg, corpus, max_steps)[0]

    def run_seconds(self, cfg: NMTRunConfig, corpus: ParallelCorpus, threads: int, timings: dict) -> float:
        """Timed once per recipe (the seeds of a variant share it)."""
        recipe = ("nmt", cfg.model_copy(update={"seed": 0, "run_name": None}).model_dump_json())
        if recipe not in timings:
            timings[recipe] = translation_run_seconds(cfg, corpus, threads)
        return timings[recipe]
