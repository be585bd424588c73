"""Training throughput of rnnlab's Lightning path vs a bare PyTorch loop, same model, same steps, one process.

The model is the 2x200 LSTM LM (V=10k, PTB) at bptt 35, batch 20, SGD lr 20, clip 0.25. rnnlab's side runs the
real `fit_lm` (Trainer, callbacks, pre-clip grad norm, metrics batched to an MLflow SQLite store). The two sides
alternate for several rounds and medians are compared: on 2 shared cores, single measurements vary by ~10%.

    python benchmarks/bench_lm_speed.py [--steps 150] [--rounds 5]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
os.environ.setdefault("RNNLAB_HOME", tempfile.mkdtemp(prefix="rnnlab-bench-"))
os.environ.setdefault("RNNLAB_DATA_DIR", str(REPO.parent / "shared" / "data"))

from rnnlab.env import configure  # noqa: E402

configure()

import torch  # noqa: E402
from torch import nn  # noqa: E402

from rnnlab import config  # noqa: E402
from tasks import tracking  # noqa: E402
from tasks.lm_corpus import prepare_lm_corpus  # noqa: E402
from tasks.lm import eos_index, fit_lm, lm_columns  # noqa: E402


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


def bare_tokens_per_second(ids: torch.Tensor, eos: int, vocab: int, steps: int, bptt: int, batch: int) -> float:
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
        logits, hidden = model(x, hidden)
        loss = nn.functional.cross_entropy(logits.flatten(0, 1), y.flatten())
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 0.25)
        optimizer.step()
        tokens += y.numel()
    return tokens / (time.perf_counter() - start)


def rnnlab_tokens_per_second(steps: int, bptt: int, batch: int) -> float:
    cfg = config.load(REPO / "conf" / "runs" / "ptb_small.yaml",
                      [f"train.bptt={bptt}", f"train.batch_size={batch}", f"train.max_steps={steps}", "experiment=bench"])
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
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; 2x200 LSTM, V={corpus.vocab_size}, "
          f"bptt {args.bptt}, batch {args.batch}, {args.steps} steps per side per round", flush=True)
    bare, ours = [], []
    for round_ in range(args.rounds):
        bare.append(bare_tokens_per_second(ids, eos, corpus.vocab_size, args.steps, args.bptt, args.batch))
        ours.append(rnnlab_tokens_per_second(args.steps, args.bptt, args.batch))
        print(f"round {round_ + 1}: bare {bare[-1]:,.0f} tok/s, rnnlab {ours[-1]:,.0f} tok/s", flush=True)
    b, o = statistics.median(bare), statistics.median(ours)
    paired = statistics.median(r / b_ for r, b_ in zip(ours, bare))
    print(f"median: bare {b:,.0f} tok/s · rnnlab {o:,.0f} tok/s · ratio rnnlab/bare {o / b:.3f} "
          f"(median of the per-round ratios {paired:.3f})")


if __name__ == "__main__":
    main()
