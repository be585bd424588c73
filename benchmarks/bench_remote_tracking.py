"""Training throughput with metrics logged to the local SQLite store vs to an MLflow tracking server over HTTP.

    python benchmarks/bench_remote_tracking.py [--steps 150] [--rounds 3]

Starts `mlflow server` on a free loopback port (via `rnnlab server`'s code, in a temporary project), then trains the
2x200 LSTM LM through rnnlab's path (pre-clip gradient norm and loss logged every step, sent in batches from a
background thread) against each store in turn, alternating, and compares median tokens/s.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))
os.environ["RNNLAB_HOME"] = tempfile.mkdtemp(prefix="rnnlab-bench-remote-")
os.environ.setdefault("RNNLAB_DATA_DIR", str(REPO.parent / "shared" / "data"))
os.environ.pop("MLFLOW_TRACKING_URI", None)

from bench_lm_speed import rnnlab_tokens_per_second  # noqa: E402  (configures the environment)

from rnnlab.runtime import servers  # noqa: E402


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    state = servers.start("mlflow", port=free_port())
    print(f"MLflow server at {state['url']} (pid {state['pid']})", flush=True)
    local, remote = [], []
    try:
        for round_ in range(args.rounds):
            os.environ.pop("MLFLOW_TRACKING_URI", None)
            local.append(rnnlab_tokens_per_second(args.steps, 35, 20))
            os.environ["MLFLOW_TRACKING_URI"] = state["url"]
            remote.append(rnnlab_tokens_per_second(args.steps, 35, 20))
            print(
                f"round {round_ + 1}: local SQLite {local[-1]:,.0f} tok/s, MLflow server {remote[-1]:,.0f} tok/s",
                flush=True,
            )
    finally:
        servers.stop_all()
    lo, re_ = statistics.median(local), statistics.median(remote)
    print(f"median: local {lo:,.0f} tok/s · remote {re_:,.0f} tok/s · ratio remote/local {re_ / lo:.3f}")


if __name__ == "__main__":
    main()
