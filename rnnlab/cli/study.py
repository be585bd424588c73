"""`rnnlab study`: run (or resume) a study's grid and compare it, print what it would run (--dry-run), or, given a
claims file, run its studies, probes and verdicts."""

from __future__ import annotations

import argparse
import os
import sys

from flows.launch import check_environment, run_loaded_study
from rnnlab.cli.common import answer_block, check_corpora, finish, quietly
from rnnlab.runtime.processes import start_prefect_api


def register(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser(
        "study", help="run (or resume) a study: every variant × seed of its grid, then the comparison"
    )
    p.add_argument("study", help="a study file, e.g. conf/studies/lm_clipping.yaml")
    p.add_argument(
        "overrides", nargs="*", help="study fields (seeds=[1,2] concurrency=1) or run-config keys (train.max_epochs=2)"
    )
    p.add_argument("--force", action="store_true", help="retrain every cell, even those already finished")
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="print the cells and trials it would run, with an estimated wall time on this machine, and exit",
    )
    p.add_argument(
        "--recorded",
        action="store_true",
        help="a claims file only: run no study, judge each one's latest "
        "recorded execution (the report names its code version)",
    )
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=cmd_study)


# A run config's top-level keys, none of which a study file has (its run keys sit under `overrides:`).
RUN_CONFIG_KEYS = {"task", "experiment", "run_name", "seed", "data", "model", "train", "eval"}


def dry_run(study) -> int:
    """What `rnnlab study` would run (cells, trials) and about how long it would take here; trains and records
    nothing (the corpora are prepared: their sizes enter the estimate)."""
    from rnnlab.runtime.workers import threads_per_cell  # lazy: Prefect
    from tasks.kinds.estimate import estimate_lines
    from tasks.kinds.steps import prepare_corpora

    corpora = prepare_corpora(study.cells)
    for cell in study.cells:
        print(f"  cell  {cell.name}", file=sys.stderr)
    if study.config.tune:
        tune = study.config.tune
        for variant in study.variants:
            print(
                f"  trials  {variant}: {tune.trials} ({tune.sampler.name} sampler, seed {tune.sampler.seed})",
                file=sys.stderr,
            )
    print("\n".join(estimate_lines(study, corpora, threads_per_cell(study))), file=sys.stderr)
    return 0


def cmd_study(args: argparse.Namespace) -> int:
    from rnnlab.schemas.config import ConfigError, read_yaml  # lazy: pydantic, not needed by --help
    from rnnlab.schemas.study import load_study
    from tasks.record.outcome import StudyFailed

    tree = read_yaml(args.study)  # read once: to tell a claims file from a study file, then loaded from it
    if "claims" in tree:
        return cmd_claims(args, tree)
    if "study" not in tree and "factors" not in tree and tree.keys() & RUN_CONFIG_KEYS:
        raise ConfigError(
            f"{args.study} is a run config, not a study file: train it with `rnnlab train {args.study}` "
            "(`rnnlab study` takes a study file, e.g. conf/studies/quick.yaml)"
        )
    if args.recorded:
        raise ConfigError(
            f"--recorded: {args.study} is a study file; the option is for a claims file (one with a "
            "top-level `claims:` list), whose studies it judges as recorded"
        )

    study = load_study(args.study, args.overrides, tree)  # every cell is validated here, before anything trains
    check_corpora(cell.config for cell in study.cells)  # a misspelt corpus: refused before torch is imported
    if args.dry_run:
        return dry_run(study)
    with quietly(args.json):
        try:
            result = run_loaded_study(study, args.force, live=not args.json and live_terminal())
        except StudyFailed as err:
            print(f"rnnlab: study '{study.name}' failed: {err}", file=sys.stderr)
            return 1
    from tasks.analysis.compare import comparison, formatted  # loaded by the flow already: costs nothing here
    from tasks.record.tracking import tracking_uri

    table = formatted(comparison(study.name, result["parent_run_id"]))
    result["tracking_uri"] = tracking_uri()
    return finish(
        result,
        args.json,
        f"\n{table.to_string(index=False)}\n\n"
        + answer_block(result["question"], result["answer"], result["factors"])
        + "\n\n"
        f"rnnlab: study '{study.name}' (parent run {result['parent_run_id']}): {result['trained']} cells "
        f"trained here, {result['reused']} reused\n"
        f"rnnlab: report in {result['report']} (and .html); compare again with `rnnlab compare {study.name}`; "
        f"browse with `rnnlab ui`",
    )


def live_terminal() -> bool:
    """Whether stderr is a terminal that can hold a live display (not a pipe, a file or a dumb terminal)."""
    return sys.stderr.isatty() and os.environ.get("TERM", "") != "dumb"


def cmd_claims(args: argparse.Namespace, tree: dict) -> int:
    """A claims file (a top-level `claims:` list, read as `tree`): its studies, the probes, the verdicts and the
    claims report."""
    from tasks.claims.claims_file import load_claims  # lazy: pydantic, not needed by --help

    lecture = load_claims(args.study, args.overrides, tree)  # every study's cells and every criterion validated here
    check_corpora(cell.config for study in lecture.studies.values() for cell in study.cells)
    with quietly(args.json):
        check_environment()
        from tasks.kinds.steps import prepare_study  # lazy: torch, Prefect (~6 s)

        cells = [cell for study in lecture.studies.values() for cell in study.cells]
        corpora = prepare_study(cells)  # each corpus once for all the studies; bad data fails here, before Prefect
        print(
            f"rnnlab: claims '{lecture.name}': {len(lecture.config.claims)} claims over "
            f"{len(lecture.studies)} studies ({', '.join(lecture.studies)})",
            file=sys.stderr,
        )
        start_prefect_api()
        from flows.claims import run_claims  # lazy: Lightning and the probes, only once the data is ready
        from tasks.claims.report import terminal_table

        result = run_claims(lecture, corpora, args.force, args.recorded)
    failed = "".join(f"\nrnnlab: study {line}" for line in result["failures"])
    code = finish(
        result,
        args.json,
        f"\n{terminal_table(result['claims'])}\n{failed}\n"
        f"rnnlab: claims '{lecture.name}' (parent run {result['parent_run_id']}): report in "
        f"{result['report']} (and .html); again with `rnnlab report {lecture.name}`",
    )
    return 1 if result["failures"] else code
