"""Training throughput (target tokens/s) of the shipped seq2seq architecture through rnnlab's path vs a bare
PyTorch loop over the same batches, alternating sides, in fp32 and bf16-mixed, each against the matmul peak measured
in the same process for its precision; then translation speed (sentences/s), greedy and beam 5.

rnnlab's side is the real `fit_nmt` (Lightning Trainer, callbacks, pre-clip gradient norm, metrics batched to
MLflow) with `train.precision` 32-true or bf16-mixed; the bare side trains the same `Seq2Seq` module with Adam and
clip_grad_norm_ in a plain loop, fp32 or under the same bf16 autocast. Training FLOPs per target token ≈ 6 per
non-embedding parameter per token it passes (encoder parameters × source tokens, decoder parameters × target
tokens, per target token) plus the attention's 12 × source length × hidden size. Where the CPU cannot run bf16,
that side is skipped and the benchmark says so.

    python benchmarks/bench_nmt_speed.py [--steps 100] [--rounds 3] [--run RUN_ID]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
os.environ.setdefault("RNNLAB_HOME", tempfile.mkdtemp(prefix="rnnlab-bench-"))
os.environ.setdefault("RNNLAB_DATA_DIR", str(REPO.parent / "shared" / "data"))

from rnnlab.runtime.env import configure  # noqa: E402

configure()

import torch  # noqa: E402
from peak import machine_line, peaks, print_peaks, report  # noqa: E402  (beside this file)
from torch.utils.data import DataLoader  # noqa: E402

from models.seq2seq import Seq2Seq, sequence_nll  # noqa: E402
from rnnlab.schemas import config  # noqa: E402
from tasks.kinds.nmt import (  # noqa: E402
    BucketBatches,
    PairDataset,
    collate,
    fit_nmt,
    seq2seq_shape,  # noqa: E402
    translate_ids,
)
from tasks.kinds.steps import prepare_corpus  # noqa: E402
from tasks.record import tracking  # noqa: E402

CONFIG = REPO / "conf" / "runs" / "multi30k_deen.yaml"


def bare_tokens_per_second(cfg, corpus, steps: int, bf16: bool = False) -> float:
    torch.manual_seed(cfg.seed)
    train = corpus.load("train")
    batches = BucketBatches([len(t) for t in train["tgt"]], cfg.train.batch_size, cfg.seed)
    loader = DataLoader(PairDataset(train), batch_sampler=batches, collate_fn=collate)
    net = Seq2Seq(seq2seq_shape(cfg, corpus.src_vocab, corpus.tgt_vocab)).train()
    optimizer = torch.optim.Adam(net.parameters(), lr=cfg.train.lr)
    tokens, start = 0, time.perf_counter()
    for step, (src, lengths, prev, targets) in enumerate(loader):
        if step == steps:
            break
        optimizer.zero_grad()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss, count = sequence_nll(net(src, lengths, prev), targets, cfg.train.label_smoothing)
        (loss / count).backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), cfg.train.clip_norm)
        optimizer.step()
        tokens += count
    return tokens / (time.perf_counter() - start)


def training_flops(cfg, corpus) -> tuple[float, tuple[int, int, int]]:
    """Training FLOPs per target token, and the shape of the largest matmul (the output projection of a batch)."""
    net = Seq2Seq(seq2seq_shape(cfg, corpus.src_vocab, corpus.tgt_vocab))
    count = lambda module: sum(p.numel() for name, p in module.named_parameters() if "embedding" not in name)  # noqa: E731
    train = corpus.load("train")
    src_tokens, tgt_tokens = sum(map(len, train["src"])), sum(map(len, train["tgt"]))
    hidden = cfg.model.hidden_size
    per_target = 6 * (count(net.encoder) * src_tokens / tgt_tokens + count(net.decoder))
    if cfg.model.attention != "none":
        per_target += 12 * (src_tokens / len(train["src"])) * hidden
    rows = cfg.train.batch_size * round(tgt_tokens / len(train["tgt"]))
    return per_target, (rows, hidden, corpus.tgt_vocab)


def rnnlab_tokens_per_second(cfg, corpus) -> tuple[float, str]:
    run_id = tracking.open_run(cfg.experiment, "bench", cfg.flat(), {})
    with tracking.closing(run_id):
        result = fit_nmt(cfg, corpus, run_id)
    return result.tokens_per_second, result.checkpoint


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--translate", type=int, default=500, help="test sentences to translate for decoding speed")
    parser.add_argument("--run", help="time decoding with this trained run's model (e.g. a multi30k_deen run)")
    args = parser.parse_args()
    cfg = config.load(CONFIG, [f"train.max_steps={args.steps}", "experiment=bench"])
    corpus = prepare_corpus(cfg)
    m = cfg.model
    flops, shape = training_flops(cfg, corpus)
    print(machine_line())
    print(
        f"seq2seq emb {m.embedding_size}, hidden {m.hidden_size}, bidirectional={m.bidirectional}, attention="
        f"{m.attention}, vocab {corpus.src_vocab}/{corpus.tgt_vocab}, batch {cfg.train.batch_size}, {args.steps} "
        f"steps per side per round; training ≈ {flops / 1e6:.1f} MFLOP per target token",
        flush=True,
    )
    found = peaks(shape)
    print_peaks(found, shape)
    bf16_cfg = config.load(CONFIG, [f"train.max_steps={args.steps}", "experiment=bench", "train.precision=bf16-mixed"])
    sides = {
        "bare fp32": lambda: bare_tokens_per_second(cfg, corpus, args.steps),
        "rnnlab fp32": lambda: rnnlab_tokens_per_second(cfg, corpus),
    }
    if "bf16" in found:
        sides["bare bf16"] = lambda: bare_tokens_per_second(cfg, corpus, args.steps, bf16=True)
        sides["rnnlab bf16"] = lambda: rnnlab_tokens_per_second(bf16_cfg, corpus)
    speeds: dict[str, list[float]] = {side: [] for side in sides}
    checkpoint = None
    for round_ in range(args.rounds):
        for side, measure in sides.items():
            speed = measure()
            if isinstance(speed, tuple):
                speed, checkpoint = speed
            speeds[side].append(speed)
        print(
            f"round {round_ + 1}: " + ", ".join(f"{side} {v[-1]:,.0f}" for side, v in speeds.items()) + " tgt tok/s",
            flush=True,
        )
    report(speeds, flops, found, unit="tgt tok/s")

    if args.run:  # decoding speed depends on how well the model has learned when to stop: use a trained run
        from tasks.kinds.nmt import load_run

        _, net, _, _ = load_run(args.run, tempfile.mkdtemp())
        print(f"decoding with the model of run {args.run}")
    else:
        from tasks.kinds.nmt import load_translator

        net = load_translator(cfg, corpus.src_vocab, corpus.tgt_vocab, checkpoint)
    sources = corpus.load("test")["src"][: args.translate]
    for label, beam in (("greedy", 1), ("beam 5", 5)):
        start = time.perf_counter()
        translate_ids(net, sources, cfg.eval.batch_size, beam=beam, max_len_ratio=cfg.eval.max_len_ratio)
        print(
            f"translation, {label}: {len(sources) / (time.perf_counter() - start):,.1f} sentences/s "
            f"(batch {cfg.eval.batch_size})"
        )


if __name__ == "__main__":
    main()
