"""`rnnlab compare`: a study's table from MLflow, one row per variant, with the study's answer. Loads no torch,
Lightning or Prefect (`tests/test_layout.py`), and prints a kept answer while the store and the code are unchanged."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from rnnlab.cli.common import Exit, answer_block, json_default, quietly
from rnnlab.runtime import answers, store
from rnnlab.runtime.env import collector_paused


def register(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser("compare", help="a study's table from MLflow: one row per variant, mean ± std over seeds")
    p.add_argument("study", help="the study's name (its MLflow experiment)")
    p.add_argument("--parent-run", help="a particular execution of the study (default: the latest)")
    p.add_argument("--csv", help="also write the full table to this CSV file")
    p.add_argument("--json", action="store_true", help="print the table as a JSON list of rows instead")
    p.add_argument(
        "--fresh",
        action="store_true",
        help="compute the answer again, even if the store is unchanged since it was last printed",
    )
    p.set_defaults(handler=cmd_compare)


def cmd_compare(args: argparse.Namespace) -> int:
    if args.csv:  # checked before the comparison is computed, not once it is done
        folder = Path(args.csv).resolve().parent
        if not folder.is_dir():
            raise LookupError(f"--csv {args.csv}: the folder {folder} does not exist; create it first")
        if Path(args.csv).is_dir():
            raise LookupError(f"--csv {args.csv}: a directory; give a file name, e.g. {Path(args.csv) / 'table.csv'}")
    # The answer printed before, if nothing it came from has changed (rnnlab.runtime.answers): ~0.1 s instead of ~3 s.
    # A --csv file is written from the table itself, so that command computes it.
    kept = answers.lookup("compare", args.study, args.parent_run, args.json)
    if kept.found and not (args.fresh or args.csv):
        sys.stdout.write(kept.found["stdout"])
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(kept.found.get("kept", 0)))
        print(
            f"rnnlab: the answer computed at {when}: the store and the code are unchanged since (--fresh computes "
            "it again)",
            file=sys.stderr,
        )
        return 0
    store.read_only()
    store.check_study(args.study)  # an unknown one: refused in SQLite's time, not MLflow's
    with quietly(True):
        with collector_paused():
            from tasks.analysis.answer import answer
            from tasks.analysis.compare import as_json, comparison, formatted  # lazy: MLflow, pandas, SciPy (~2 s)
            from tasks.record.tracking import import_store

            import_store()  # SQLAlchemy's store, inside the pause too (`client()` would import it after it)

        c = comparison(args.study, args.parent_run)
        result = answer(c)
    if args.csv:
        c.table.to_csv(args.csv, index=False)
        print(f"rnnlab: wrote {args.csv}", file=sys.stderr)
    if args.json:
        shown = json.dumps(as_json(c, result), default=json_default) + "\n"
    else:
        shown = (
            answer_block(c.question, result.text, result.factors)
            + "\n\n"
            + formatted(c).to_string(index=False)
            + "\n\n"
            + "\n".join(f"- {line}" for line in result.basis)
            + "\n"
        )
    sys.stdout.write(shown)
    kept.keep(shown)
    Exit.at_once = True  # all is printed and written; nothing of the process is left to tear down
    return 0
