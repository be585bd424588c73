"""How long the command line takes to refuse an unknown name: a run id (`evaluate`, `probe`, `translate`), a study
(`report`, `compare`) or a corpus (`data`, `train`), and to list a study's runs (`rnnlab runs`): the whole process, as
a shell sees it. Each is checked in the project's SQLite store, or against the known corpora, before torch or MLflow
is imported (rnnlab/runtime/store.py check_run, check_study; tasks/data/corpus_files.py check_corpus).

    python benchmarks/bench_cli_refusals.py [--home DIR] [--study quick] [--baseline DIR] [--rounds 5]

--home: a project with a store (`make demo` runs `quick` there); --baseline: another checkout (an older commit:
`git archive COMMIT | tar -x -C DIR`) whose code is timed in turn with this one's, on the same machine, for a
before/after. The commands alternate and the medians are given, with the spread: on 2 shared cores single
measurements vary.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def timed(argv: list[str], code: Path, env: dict[str, str], expected: int) -> float | None:
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "rnnlab.cli", *argv], cwd=code, env=env, capture_output=True, text=True
    )
    seconds = time.perf_counter() - start
    if done.returncode != expected:
        print(f"  `rnnlab {' '.join(argv)}`: exit {done.returncode}, not {expected}: {done.stderr.strip()[-300:]}")
        return None
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--home", default=str(REPO), help="a project with a store (default this checkout)")
    parser.add_argument("--study", default="quick", help="a study in that store, for `rnnlab runs` (default quick)")
    parser.add_argument("--baseline", help="another checkout, timed in turn with this one")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    codes = [REPO, *([Path(args.baseline).resolve()] if args.baseline else [])]
    home = str(Path(args.home).resolve())
    envs = {code: {**os.environ, "RNNLAB_HOME": home, "PYTHONPATH": str(code)} for code in codes}
    text = Path(tempfile.mkdtemp(prefix="bench-refusals-")) / "t.txt"
    text.write_text("a b\n")
    commands = {
        "evaluate, unknown run": (["evaluate", "nosuchrun", "--file", str(text)], 2),
        "probe, unknown run": (["probe", "nosuchrun", "context"], 2),
        "translate, unknown run": (["translate", "nosuchrun", "--input", str(text)], 2),
        "report, unknown study": (["report", "nosuchstudy", "--out", str(text.parent)], 2),
        "compare, unknown study": (["compare", "nosuchstudy"], 2),
        "data, unknown corpus": (["data", "data.corpus=ptbx"], 2),
        "train, unknown corpus": (["train", str(REPO / "conf" / "runs" / "ptb_small.yaml"), "data.corpus=ptbx"], 2),
        f"runs {args.study}": (["runs", args.study], 0),
    }
    runnable = {  # once unmeasured: the files in the page cache; a command a checkout lacks is left out for it
        (code, name)
        for code in codes
        for name, (argv, expected) in commands.items()
        if timed(argv, code, envs[code], expected) is not None
    }
    seconds: dict[tuple[Path, str], list[float]] = {key: [] for key in runnable}
    for _ in range(args.rounds):
        for name, (argv, expected) in commands.items():
            for code in codes:
                if (code, name) in runnable:
                    seconds[code, name].append(timed(argv, code, envs[code], expected) or float("nan"))
    print(f"{os.cpu_count()} cores; Python {sys.version.split()[0]}; load average {os.getloadavg()[0]:.1f}")
    for code in codes:
        print(f"code: {code}")
        for name in commands:
            values = seconds.get((code, name))
            if values:
                print(
                    f"  {name}: median {statistics.median(values):.2f} s (min {min(values):.2f}, "
                    f"max {max(values):.2f}; {args.rounds} rounds)"
                )


if __name__ == "__main__":
    main()
