"""Orchestration overhead of a study: its wall time against the time its cells spent training and evaluating.

    python benchmarks/bench_study_overhead.py [--study conf/studies/quick.yaml] [--home DIR] [overrides ...]

Runs `rnnlab study STUDY --force` (every cell trained) in a fresh project directory unless --home is given, then
reads each cell's fit_seconds (all of trainer.fit) and eval_seconds from MLflow. With `slots` cells side by side,

    overhead = 1 − Σ(fit_seconds + eval_seconds) / (wall × slots)

i.e. the share of the available cell-time spent on anything but training and evaluation: worker start-up,
Prefect, MLflow, data loading, checkpoint upload, slots left idle at the end of the grid, the comparison and the
report, the workers' exit. It is given for the study flow (from the flow's first line to its last, workers' exit
included: the `study_seconds` of its result) and for the whole command (Python's start, imports and Prefect's
temporary server included). Then a timeline: when each cell's run opened and closed, relative to the flow's start.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--study", default=str(REPO / "conf" / "studies" / "quick.yaml"))
    parser.add_argument("--home", help="project directory for the stores (default: a fresh temporary one)")
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    home = Path(args.home or tempfile.mkdtemp(prefix="rnnlab-bench-study-")).resolve()
    env = {**os.environ, "RNNLAB_HOME": str(home)}
    env.setdefault("RNNLAB_DATA_DIR", str(REPO.parent / "shared" / "data"))
    env.pop("MLFLOW_TRACKING_URI", None)
    command = [sys.executable, "-m", "rnnlab.cli", "study", args.study, *args.overrides, "--force", "--json"]
    start = time.perf_counter()
    done = subprocess.run(command, cwd=REPO, env=env, stdout=subprocess.PIPE, text=True)
    command_wall = time.perf_counter() - start
    if done.returncode != 0:
        sys.exit(f"study failed (exit {done.returncode})")
    result = json.loads(done.stdout.splitlines()[-1])

    os.environ["RNNLAB_HOME"] = str(home)
    sys.path.insert(0, str(REPO))
    from rnnlab.runtime.env import configure

    configure()
    from tasks.record import tracking

    client = tracking.client()
    parent = client.get_run(result["parent_run_id"])
    children = client.search_runs([parent.info.experiment_id], f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'")
    slots = int(parent.data.params["study.concurrency"])
    busy = sum(r.data.metrics.get("fit_seconds", 0.0) + r.data.metrics.get("eval_seconds", 0.0) for r in children)
    flow_wall = result["study_seconds"]
    print(
        f"study {result['study']}: {len(children)} cells trained, {slots} at a time, "
        f"{result['diverged']} diverged, {result['failed']} failed"
    )
    print(f"cells training + evaluating: {busy:.1f} s summed over cells")
    for label, wall in (("study flow", flow_wall), ("whole command", command_wall)):
        print(
            f"{label:>18}: wall {wall:.1f} s, capacity {wall * slots:.1f} cell-s, "
            f"overhead {100 * (1 - busy / (wall * slots)):.1f}%"
        )
    timeline(parent, children, flow_wall)


def timeline(parent, children, flow_wall: float) -> None:
    """Where the rest of the time went: each cell's run against the flow's clock (the parent run closes last)."""
    flow_start = parent.info.end_time / 1000 - flow_wall
    print(f"{'cell':<44} {'seed':>4} {'opened':>7} {'closed':>7} {'fit':>6} {'eval':>5} {'rest':>5}")
    for run in sorted(children, key=lambda r: r.info.start_time):
        fit, evaluation = (run.data.metrics.get(k, 0.0) for k in ("fit_seconds", "eval_seconds"))
        opened, closed = run.info.start_time / 1000 - flow_start, run.info.end_time / 1000 - flow_start
        print(
            f"{run.data.tags['rnnlab.cell']:<44} {run.data.params['seed']:>4} {opened:7.1f} {closed:7.1f} {fit:6.1f} "
            f"{evaluation:5.1f} {closed - opened - fit - evaluation:5.1f}"
        )
    last = max(r.info.end_time for r in children) / 1000 - flow_start
    print(
        f"first cell opened {min(r.info.start_time for r in children) / 1000 - flow_start:.1f} s into the flow; "
        f"after the last cell closed: {flow_wall - last:.1f} s (comparison, report)"
    )


if __name__ == "__main__":
    main()
