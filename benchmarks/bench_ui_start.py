"""How long `rnnlab ui` takes to answer: from the command's start until its server answers /health, on a project
whose store holds a study (`make demo` runs `quick`; without a store, an empty one is made in a temporary project),
with how many processes it runs. The median of --rounds starts, with the spread: on 2 shared cores single
measurements vary by ±20%. (The suite checks what the UI shows and that it runs one web worker, not how fast.)

    python benchmarks/bench_ui_start.py [--home .] [--rounds 5]
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from rnnlab.runtime import servers  # noqa: E402
from tasks.record import hardware  # noqa: E402  (torch, in this process only: the command timed is another process)


def port_for_the_next_start() -> int:
    """A port free now. A guess only another process could spoil; here, on a quiet machine, nothing else binds."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def one_start(home: Path) -> tuple[float, int]:
    """(seconds until it answers, processes it runs then)."""
    port = port_for_the_next_start()
    started = time.perf_counter()
    ui = subprocess.Popen(
        [sys.executable, "-m", "rnnlab.cli", "ui", "--port", str(port)],
        cwd=REPO,
        env={**os.environ, "RNNLAB_HOME": str(home)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        while not servers.healthy(f"http://127.0.0.1:{port}/health", timeout=1.0):
            if ui.poll() is not None:
                sys.exit(f"bench_ui_start: rnnlab ui exited {ui.returncode}:\n{ui.stderr.read()[-2000:]}")
            time.sleep(0.05)
        seconds = time.perf_counter() - started
        processes = 1 + len(psutil.Process(ui.pid).children(recursive=True))
    finally:
        os.killpg(ui.pid, signal.SIGTERM)
        ui.wait(timeout=60)
    return seconds, processes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--home", default=".", help="the project whose store the UI serves")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    home = Path(args.home).resolve()
    if not (home / "mlruns" / "mlflow.db").exists():
        home = Path(tempfile.mkdtemp(prefix="rnnlab-bench-ui-"))
        print(f"no store in {args.home}: timing an empty project at {home}")
    print(f"CPU: {hardware.cpu_model()}; {hardware.cpu_offers()}; {os.cpu_count()} cores")
    runs = [one_start(home) for _ in range(args.rounds)]
    seconds = [s for s, _ in runs]
    print(
        f"rnnlab ui answers after {statistics.median(seconds):.2f} s (median of {len(seconds)}; "
        f"{min(seconds):.2f}-{max(seconds):.2f}), in {max(p for _, p in runs)} processes"
    )


if __name__ == "__main__":
    main()
