"""Training throughput of rnnlab's Lightning path vs a bare PyTorch loop, same model, same steps, one process, in
fp32 and in bf16-mixed, each against the matmul peak measured in the same process for its precision.

The model is the 2x200 LSTM LM (V=10k, PTB) at bptt 35, batch 20, SGD lr 20, clip 0.25. rnnlab's side runs the
real `fit_lm` (Trainer, callbacks, pre-clip grad norm, metrics batched to an MLflow SQLite store), with
`train.precision` 32-true or bf16-mixed; the bare side is the hand-written loop, fp32 or under the same bf16
autocast. The sides alternate for several rounds and medians are compared: on 2 shared cores, single measurements
vary by ~10%. Training FLOPs per token ≈ 6 per non-embedding parameter (2 forward, 4 backward). Where the CPU cannot
run bf16, that side is skipped and the benchmark says so.

    python benchmarks/bench_lm_speed.py [--steps 150] [--rounds 5]
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
from torch import nn  # noqa: E402

from rnnlab.schemas import config  # noqa: E402
from tasks.data.lm_corpus import prepare_lm_corpus  # noqa: E402
from tasks.kinds.lm import eos_index, fit_lm, lm_columns  # noqa: E402
from tasks.record import tracking  # noqa: E402


class BareLM(nn.Module):
    """What one writes by hand: the pytorch/examples word_language_model, fused 2-layer LSTM."""

    def __init__(self, vocab: int, size: int = 200, layers: int = 2):
        super().__init__()
        self.embedding = nn.Embedding(vocab, size)
        self.rnn = nn.LSTM(size, size, layers)
        self.decoder = nn.Linear(size, vocab)
        for p in self.parameters():
            nn.init.uniform_(p, -0.1, 0.1)

    def forward(self, x, hidden):
        out, hidden = self.rnn(self.embedding(x), hidden)
        return self.decoder(out), hidden


def bare_tokens_per_second(
    ids: torch.Tensor, eos: int, vocab: int, steps: int, bptt: int, batch: int, bf16: bool = False
) -> float:
    torch.manual_seed(1)
    model = BareLM(vocab)
    optimizer = torch.optim.SGD(model.parameters(), lr=20.0)
    inputs, targets, _ = lm_columns(ids, eos, batch, pad=False)
    hidden, tokens = None, 0
    start = time.perf_counter()
    for step in range(steps):
        x, y = inputs[step * bptt : (step + 1) * bptt], targets[step * bptt : (step + 1) * bptt]
        hidden = None if hidden is None else tuple(h.detach() for h in hidden)
        optimizer.zero_grad()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            logits, hidden = model(x, hidden)
            loss = nn.functional.cross_entropy(logits.flatten(0, 1), y.flatten())
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 0.25)
        optimizer.step()
        tokens += y.numel()
    return tokens / (time.perf_counter() - start)


def rnnlab_tokens_per_second(steps: int, bptt: int, batch: int, precision: str = "32-true") -> float:
    cfg = config.load(
        REPO / "conf" / "runs" / "ptb_small.yaml",
        [
            f"train.bptt={bptt}",
            f"train.batch_size={batch}",
            f"train.max_steps={steps}",
            "experiment=bench",
            f"train.precision={precision}",
        ],
    )
    corpus = prepare_lm_corpus(cfg.data)
    run_id = tracking.open_run(cfg.experiment, "bench", cfg.flat(), {})
    with tracking.closing(run_id):
        result = fit_lm(cfg, corpus, run_id)
    return result.tokens_per_second


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--bptt", type=int, default=35)
    parser.add_argument("--batch", type=int, default=20)
    args = parser.parse_args()

    cfg = config.load(REPO / "conf" / "runs" / "ptb_small.yaml")
    corpus = prepare_lm_corpus(cfg.data)
    ids, eos = corpus.load("train"), eos_index(corpus)
    shape = (args.bptt * args.batch, 200, corpus.vocab_size)  # the output projection: most of a step's FLOPs
    flops = 6 * sum(
        p.numel() for name, p in BareLM(corpus.vocab_size).named_parameters() if not name.startswith("embedding")
    )
    print(machine_line())
    print(
        f"2x200 LSTM, V={corpus.vocab_size}, bptt {args.bptt}, batch {args.batch}, {args.steps} steps per side per "
        f"round; training ≈ {flops / 1e6:.1f} MFLOP per token (6 per non-embedding parameter)",
        flush=True,
    )
    found = peaks(shape)
    print_peaks(found, shape)
    sides = {
        "bare fp32": lambda: bare_tokens_per_second(ids, eos, corpus.vocab_size, args.steps, args.bptt, args.batch),
        "rnnlab fp32": lambda: rnnlab_tokens_per_second(args.steps, args.bptt, args.batch),
    }
    if "bf16" in found:
        sides["bare bf16"] = lambda: bare_tokens_per_second(
            ids, eos, corpus.vocab_size, args.steps, args.bptt, args.batch, bf16=True
        )
        sides["rnnlab bf16"] = lambda: rnnlab_tokens_per_second(args.steps, args.bptt, args.batch, "bf16-mixed")
    speeds: dict[str, list[float]] = {side: [] for side in sides}
    for round_ in range(args.rounds):
        for side, measure in sides.items():
            speeds[side].append(measure())
        print(
            f"round {round_ + 1}: " + ", ".join(f"{side} {v[-1]:,.0f}" for side, v in speeds.items()) + " tok/s",
            flush=True,
        )
    report(speeds, flops, found)


if __name__ == "__main__":
    main()
