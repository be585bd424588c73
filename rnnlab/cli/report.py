"""`rnnlab report`: a study's (or a claims file's) report, Markdown + self-contained HTML + PNGs, from MLflow alone."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from rnnlab.cli.common import finish, quietly
from rnnlab.runtime import store
from rnnlab.runtime.env import project_dir


def register(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser("report", help="a study's report (Markdown + self-contained HTML + PNGs) from MLflow alone")
    p.add_argument("study", help="the study's name (its MLflow experiment)")
    p.add_argument("--parent-run", help="a particular execution of the study (default: the latest)")
    p.add_argument(
        "--out",
        default=None,
        help="folder for <study>/report.md, report.html and the plots (default: "
        "reports/ in the project directory, where `rnnlab study` writes them)",
    )
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=cmd_report)


def cmd_report(args: argparse.Namespace) -> int:
    folder = (Path(args.out) if args.out else project_dir() / "reports") / args.study
    existing = next(p for p in (folder.resolve(), *folder.resolve().parents) if p.exists())
    if not existing.is_dir() or not os.access(existing, os.W_OK):  # checked before the report is computed
        raise LookupError(
            f"--out {args.out or folder.parent}: cannot write the report in {folder} ({existing} is "
            f"{'not a folder' if not existing.is_dir() else 'not writable'}); choose a writable folder "
            "with --out"
        )
    store.read_only()
    store.check_study(args.study)  # an unknown one: refused in SQLite's time, not MLflow's
    with quietly(True):
        from tasks.claims.report import is_claims_study  # lazy: MLflow, matplotlib, scipy (~6 s)
        from tasks.claims.report import render as render_claims
        from tasks.reporting.study_report import render, rendered

        claims = is_claims_study(args.study)
        path, parent_run_id, not_logged = rendered(  # a read-only store: the report is written all the same
            render_claims if claims else render, args.study, args.parent_run, folder, tolerate_unlogged=True
        )
        logged = (
            f"not logged to the parent run (the store cannot be written: {not_logged})"
            if not_logged
            else "logged to the parent run under report/"
        )
    return finish(
        {"study": args.study, "parent_run_id": parent_run_id, "report": str(path), "html": str(folder / "report.html")},
        args.json,
        f"rnnlab: {'claims report' if claims else 'report of study'} '{args.study}' (execution {parent_run_id}): "
        f"{path} and {folder / 'report.html'}; " + logged,
    )
