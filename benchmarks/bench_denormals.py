"""Why every fit flushes denormal floats to zero (tasks.record.hardware.flush_denormals): the step time of the PTB small
LSTM (2x200, V=10k, bptt 20, batch 20) when healthy and when saturated, with denormals flushed or not.

A saturated LSTM is what an unclipped one often becomes after a loss spike at a high learning rate: its gates sit
at 0 or 1, the loss settles near the unigram level, and its gradients underflow into denormal floats, which x86
CPUs compute in microcode. Here the saturation is made by scaling the recurrent weights (x300). Each setting runs
in a fresh process, because the flag must be set before torch starts its threads (they inherit it).

    python benchmarks/bench_denormals.py [--steps 20] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

CHILD = """
import json, sys, time
import torch
import torch.nn.functional as F
sys.path.insert(0, {repo!r})
from tasks.record import hardware
flush, threads, steps = {flush}, {threads}, {steps}
if flush:
    hardware.flush_denormals()
torch.set_num_threads(threads)
from models.lm import RNNLM
from models.settings import LMSettings
torch.manual_seed(0)
net = RNNLM(10000, LMSettings(cell="lstm", layers=2, embedding_size=200, hidden_size=200, init_range=0.1))
tokens = torch.randint(10000, (21, 20))

def seconds_per_step():
    for _ in range(2):
        net.zero_grad(); F.cross_entropy(net(tokens[:-1], None)[0].flatten(0, 1), tokens[1:].flatten()).backward()
    start = time.perf_counter()
    for _ in range(steps):
        net.zero_grad(); F.cross_entropy(net(tokens[:-1], None)[0].flatten(0, 1), tokens[1:].flatten()).backward()
    return (time.perf_counter() - start) / steps

healthy = seconds_per_step()
with torch.no_grad():
    for name, p in net.named_parameters():
        if "weight_hh" in name or "weight_ih" in name:
            p.mul_(300)
print(json.dumps({{"healthy": healthy, "saturated": seconds_per_step(),
                  "capability": torch.backends.cpu.get_cpu_capability()}}))
"""


def measure(flush: bool, threads: int, steps: int) -> dict:
    code = CHILD.format(repo=str(REPO), flush=flush, threads=threads, steps=steps)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    sys.path.insert(0, str(REPO))
    from tasks.record import hardware

    print(
        f"CPU: {hardware.cpu_model()}; {hardware.cpu_offers()}; {args.steps} forward+backward steps, median of "
        f"{args.rounds} fresh processes per row",
        flush=True,
    )
    print(f"{'threads':>7} {'denormals':>10} {'healthy ms':>11} {'saturated ms':>13} {'saturated/healthy':>18}")
    for threads in (1, 2):
        for flush in (False, True):
            rows = [measure(flush, threads, args.steps) for _ in range(args.rounds)]
            healthy = statistics.median(r["healthy"] for r in rows) * 1e3
            saturated = statistics.median(r["saturated"] for r in rows) * 1e3
            print(
                f"{threads:>7} {'flushed' if flush else 'kept':>10} {healthy:>11.1f} {saturated:>13.1f} "
                f"{saturated / healthy:>17.1f}x",
                flush=True,
            )


if __name__ == "__main__":
    main()
