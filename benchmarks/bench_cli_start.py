"""How long the command line takes to answer: `rnnlab --help`, and `rnnlab compare STUDY` on a finished study (the
whole process, as a shell sees it: Python's start, the imports, the store's queries, the table, the exit), both
computed (`--fresh`) and asked again of the unchanged store (the answer kept by rnnlab/runtime/answers.py).

    python benchmarks/bench_cli_start.py [--study quick] [--home .] [--rounds 7]

The study must exist in the project at --home (`make demo` runs `quick` there; without a store only --help is
timed). The two commands alternate and the medians are given, with the spread: on 2 shared cores single
measurements vary by ±20%.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tasks.record import hardware  # noqa: E402  (torch, in this process only: the commands timed are other processes)


def timed(argv: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "rnnlab.cli", *argv], cwd=REPO, env=env, capture_output=True, text=True
    )
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        sys.exit(f"bench_cli_start: `rnnlab {' '.join(argv)}` failed (exit {done.returncode}):\n{done.stderr[-2000:]}")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--study", default="quick", help="a finished study in the project (default quick)")
    parser.add_argument("--home", default=str(REPO), help="the project with the study's store (default this checkout)")
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    home = Path(args.home).resolve()
    env = {**os.environ, "RNNLAB_HOME": str(home)}
    commands = {
        "rnnlab --help": ["--help"],
        f"rnnlab compare {args.study} --fresh (computed)": ["compare", args.study, "--fresh"],
        f"rnnlab compare {args.study} (unchanged store: the kept answer)": ["compare", args.study],
    }
    if not (home / "mlruns" / "mlflow.db").exists():
        print(
            f"bench_cli_start: no MLflow store in {home}: run `make demo` there first (the `quick` study); "
            "only `rnnlab --help` is measured"
        )
        commands = {"rnnlab --help": ["--help"]}
    for argv in commands.values():  # once unmeasured: the files are in the page cache for every measured round
        timed(argv, env)
    seconds: dict[str, list[float]] = {name: [] for name in commands}
    for _ in range(args.rounds):
        for name, argv in commands.items():
            seconds[name].append(timed(argv, env))
    print(
        f"CPU: {hardware.cpu_model()}; {hardware.cpu_offers()}; {os.cpu_count()} cores; Python {sys.version.split()[0]}"
    )
    for name, values in seconds.items():
        print(
            f"{name}: median {statistics.median(values):.2f} s (min {min(values):.2f}, max {max(values):.2f}; "
            f"{args.rounds} rounds)"
        )


if __name__ == "__main__":
    main()
