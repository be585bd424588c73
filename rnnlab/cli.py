"""The `rnnlab` command. Heavy libraries are imported inside the command that needs them, so --help is instant.

Human progress goes to stderr; with --json the last line on stdout is one JSON object.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import math
import os
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

from rnnlab.runtime import answers, servers, store
from rnnlab.runtime.env import (
    EnvironmentProblem,
    check_project,
    collector_paused,
    configure,
    disk_full,
    pause_gc_in_spawned_worker,
    project_dir,
    release_reserve,
)
from rnnlab.runtime.processes import Interrupts, abandon_prefect_api, start_prefect_api

pause_gc_in_spawned_worker()  # this module is re-imported first in the worker processes of a study


def port(text: str) -> int:
    """An argparse type: a TCP port a server can listen on (a socket refuses anything else, with a traceback)."""
    if not text.isdigit() or not 1 <= int(text) <= 65535:
        raise argparse.ArgumentTypeError(f"invalid port {text!r}: expected a whole number from 1 to 65535")
    return int(text)


def positive_int(text: str) -> int:
    """An argparse type: a whole number of at least 1 (a beam of 0 or less has nothing to search with)."""
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"invalid value {text!r}: expected a whole number of at least 1")
    return int(text)


def existing_file(text: str) -> str:
    """An argparse type: an input file that exists, so a typo fails at once, naming it, before a model is loaded."""
    if Path(text).is_dir():
        raise argparse.ArgumentTypeError(f"{text}: a directory, not a file")
    if not Path(text).is_file():
        raise argparse.ArgumentTypeError(f"{text}: no such file")
    return text


READ_ONLY_COMMANDS = ("compare", "report", "ui")  # they create nothing in the project, and work on a read-only store


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="rnnlab", description="A reproducible ablation lab for recurrent language and translation models."
    )
    commands = parser.add_subparsers(dest="command", required=True)

    p = commands.add_parser("train", help="train one run (prepare → train → evaluate → record, as a Prefect flow)")
    p.add_argument("config", help="a run config, e.g. conf/runs/ptb_small.yaml")
    p.add_argument("overrides", nargs="*", help="dotted key=value overrides, e.g. model.cell=gru train.clip_norm=null")
    p.add_argument("--json", action="store_true", help="print one JSON summary as the last line on stdout")
    p.set_defaults(handler=cmd_train)

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

    p = commands.add_parser(
        "server", help="a Prefect server and an MLflow tracking server for this project (127.0.0.1)"
    )
    p.add_argument("action", choices=["start", "stop", "status"])
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--prefect-port", type=port, default=4200)
    p.add_argument("--mlflow-port", type=port, default=5000)
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=cmd_server)

    p = commands.add_parser(
        "serve", help="register the deployments in conf/schedules.yaml (study + cron) and serve them"
    )
    p.add_argument("--schedules", default="conf/schedules.yaml")
    p.set_defaults(handler=cmd_serve)

    p = commands.add_parser(
        "deploy",
        help="register the deployments in conf/schedules.yaml on a Prefect work pool, "
        "whose workers (`rnnlab worker`, on any machine) run them",
    )
    p.add_argument("--pool", required=True, help="the work pool (created, of type process, if missing)")
    p.add_argument("--schedules", default="conf/schedules.yaml")
    p.add_argument(
        "--source",
        default=None,
        help="what workers pull to run a study: this checkout's path (default; "
        "the same path on every machine) or a git URL",
    )
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=cmd_deploy)

    p = commands.add_parser(
        "worker",
        help="a Prefect worker of a work pool (`prefect worker start`), with this "
        "project's environment: runs the studies deployed there",
    )
    p.add_argument("--pool", required=True)
    p.add_argument("--limit", type=positive_int, default=1, help="studies at once on this machine (default 1)")
    p.set_defaults(handler=cmd_worker)

    p = commands.add_parser(
        "evaluate",
        help="score a trained run on other data, logged to that run: perplexity of a "
        "language model on --file, or BLEU/chrF of a translation run on --src/--ref",
    )
    p.add_argument("run_id")
    p.add_argument("--file", type=existing_file, help="language model: a text file, one sentence per line")
    p.add_argument("--src", type=existing_file, help="translation: source sentences, one per line")
    p.add_argument("--ref", type=existing_file, help="translation: reference translations, line by line with --src")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=cmd_evaluate)

    p = commands.add_parser("translate", help="translate a file with a trained translation run (to stdout)")
    p.add_argument("run_id")
    p.add_argument("--input", required=True, type=existing_file, help="source sentences, one per line")
    p.add_argument(
        "--beam", type=positive_int, default=None, help="beam size (1 = greedy; default: the run's eval.beam)"
    )
    p.set_defaults(handler=cmd_translate)

    p = commands.add_parser(
        "probe",
        help="measure a trained language-model run, logged to it (metrics probe_*, "
        "artifacts probes/): how much context it uses, or how the gradient reaching earlier "
        "hidden states decays",
    )
    p.add_argument("run_id")
    p.add_argument(
        "probe",
        choices=["context", "gradient-flow"],
        help="context: perplexity with the context cut to the last k tokens (k = 1 … 200) and with the "
        "words beyond k shuffled; gradient-flow: ‖∂L_t/∂h_{t−k}‖ against k at initialisation and trained, "
        "and σ₁ of the recurrent weights",
    )
    p.add_argument("--split", default="valid", help="a split of the run's corpus (default valid)")
    p.add_argument(
        "--positions",
        type=positive_int,
        default=None,
        help="target positions sampled (default 500 for context, 200 for gradient-flow)",
    )
    p.add_argument("--force", action="store_true", help="compute again even if a result with the same inputs is logged")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=cmd_probe)

    p = commands.add_parser("ui", help="the MLflow UI over this project's store (127.0.0.1 by default), until Ctrl-C")
    p.add_argument("study", nargs="?", help="a study (its MLflow experiment): also print the address of its runs")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=port, default=5000)
    p.add_argument(
        "--jobs",
        action="store_true",
        help="also run MLflow's job runner (GenAI evaluation jobs: scorers, "
        "judges; ~10 processes more), off by default",
    )
    p.set_defaults(handler=cmd_ui)

    p = commands.add_parser("data", help="prepare (and if needed download) a corpus, printing its sizes")
    p.add_argument(
        "overrides",
        nargs="*",
        help="config overrides, e.g. data.corpus=wikitext-2, or task=nmt data.corpus=chr_en data.src=chr",
    )
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=cmd_data)

    for command in commands.choices.values():
        command.add_argument(
            "-v",
            "--verbose",
            action="store_true",
            help="also show the libraries' own logs (Prefect, MLflow, Lightning), hidden by default",
        )
    args, extra = parser.parse_known_args(argv)
    # Overrides may follow options (`rnnlab train run.yaml --json train.lr=1`), where argparse leaves them over with
    # anything it does not know: key=value items go to a command that takes overrides; the rest is still an error.
    takes_overrides = hasattr(args, "overrides")
    stray = [item for item in extra if not (takes_overrides and "=" in item and not item.startswith("-"))]
    if stray:
        commands.choices[args.command].error(f"unrecognized arguments: {' '.join(stray)}")
    if extra:
        args.overrides = [*args.overrides, *extra]
    try:
        configure(verbose=args.verbose, read_only=args.command in READ_ONLY_COMMANDS)
        Interrupts.install()
        try:
            return args.handler(args)
        finally:
            abandon_prefect_api()  # a server this command launched and never needed (it failed first): stopped now
    except (LookupError, servers.ServerError, EnvironmentProblem) as err:
        print(f"rnnlab: error: {err}", file=sys.stderr)
        return 2
    except Exception as err:
        # lazy: only on an error (pydantic ~0.1 s, torch): --help and a kept answer stay light
        from rnnlab.schemas.config import ConfigError
        from tasks.data.corpus_files import DataError

        if isinstance(err, (ConfigError, DataError)):
            print(f"rnnlab: error: {err}", file=sys.stderr)
            return 2
        full = disk_full(err)
        if full:
            release_reserve()
            print(
                f"rnnlab: error: no space left on device ({full}); free some space on the disk of {project_dir()} "
                "and run the command again (a study resumes its cells). The run in progress was closed as FAILED, "
                "or, where even that could not be written, the next command marks it KILLED",
                file=sys.stderr,
            )
            return 1
        raise
    except BaseException as err:  # Ctrl-C, SIGTERM (also as Lightning's exit or Prefect's TerminationSignal)
        if Interrupts.received is None and type(err).__name__ != "TerminationSignal":
            raise
        print(
            f"rnnlab: {args.command} interrupted by {Interrupts.name()}: runs in progress were closed as KILLED; "
            "run the same command again to resume",
            file=sys.stderr,
        )
        if getattr(args, "json", False):
            print(json.dumps({"status": "KILLED", "signal": Interrupts.name(), "exit_code": Interrupts.exit_code()}))
        return Interrupts.exit_code()


def finish(result: dict[str, Any], as_json: bool, human: str) -> int:
    print(human, file=sys.stderr)
    if as_json:
        print(json.dumps(result, default=_json_default))
    return 0


def _json_default(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return str(value)


def check_environment(launch_prefect: bool = False) -> None:
    """Before any data is prepared: the project directory can be written and has room, the tracking store is
    reachable and sound; and runs that a dead process left RUNNING (a SIGKILL, a full disk) are marked KILLED.
    `launch_prefect`: also launch Prefect's temporary server (a command that trains waits for it later), so that its
    start overlaps these checks and the data's preparation; it is stopped with the command, on a failure too."""
    check_project()
    if launch_prefect:
        start_prefect_api(wait=False)
    store.check_store()  # before the heavy imports below: an unreachable server fails the command in a second
    from tasks.record import tracking  # lazy: MLflow and Prefect (~5 s of imports), after the store answered

    tracking.mark_orphans()


def quietly(as_json: bool) -> contextlib.AbstractContextManager:
    """Keep stdout for the JSON line: anything libraries print goes to stderr instead."""
    return contextlib.redirect_stdout(sys.stderr) if as_json else contextlib.nullcontext()


def cmd_train(args: argparse.Namespace) -> int:
    from rnnlab.schemas import config  # lazy, as every heavy import in a command: --help loads none of them

    cfg = config.load(args.config, args.overrides)
    with quietly(args.json):
        check_environment(launch_prefect=True)
        from tasks.kinds.steps import prepare_corpus  # lazy: torch, Prefect (~6 s), after the cheap checks

        prepare_corpus(cfg)  # bad data fails here, with a clear message, before Prefect or MLflow start
        start_prefect_api()
        from flows.train import train_flow  # lazy: Lightning, only once the data is ready
        from tasks.record.tracking import tracking_uri

        result = train_flow(cfg)
    result["tracking_uri"] = tracking_uri()
    metrics = result["metrics"]
    shown = ", ".join(
        f"{k} {metrics[k]:.2f}" for k in ("valid_ppl", "test_ppl", "test_bleu", "test_chrf") if k in metrics
    )
    verdict = (
        shown
        if result["outcome"] == "trained"
        else f"{result['outcome'].replace('_', ' ')}: {result['outcome_reason']}"
    )
    return finish(
        result,
        args.json,
        f"rnnlab: run {result['run_id']} in experiment '{cfg.experiment}': {verdict}\n"
        f"rnnlab: results in {result['tracking_uri']}; browse them with `rnnlab ui`",
    )


def dry_run(study) -> int:
    """What `rnnlab study` would run (cells, trials) and about how long it would take here; trains and records
    nothing (the corpora are prepared: their sizes enter the estimate)."""
    from flows.study import threads_per_cell  # lazy: torch
    from tasks.kinds.estimate import estimate_lines
    from tasks.kinds.steps import data_key, prepare_corpus

    corpora = {data_key(c.config): prepare_corpus(c.config) for c in study.cells}
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
    from rnnlab.schemas.study import load_study  # lazy: pydantic, not needed by --help
    from tasks.claims.claims_file import is_claims_file  # lazy: pydantic, not needed by --help

    if is_claims_file(args.study):
        return cmd_claims(args)
    if args.recorded:
        print(
            f"rnnlab: error: --recorded: {args.study} is a study file; the option is for a claims file (one with a "
            "top-level `claims:` list), whose studies it judges as recorded",
            file=sys.stderr,
        )
        return 2

    study = load_study(args.study, args.overrides)  # every cell is validated here, before anything trains
    if args.dry_run:
        return dry_run(study)
    with quietly(args.json):
        check_environment(launch_prefect=True)
        from tasks.kinds.steps import check_cells_fit, data_key, prepare_corpus  # lazy: torch, Prefect (~6 s)

        corpora = {data_key(c.config): c.config for c in study.cells}
        corpora = {key: prepare_corpus(config) for key, config in corpora.items()}  # bad data fails here, before
        check_cells_fit(study.cells, corpora)  # Prefect or MLflow start
        print(
            f"rnnlab: study '{study.name}': {len(study.variants)} variants × {len(study.config.seeds)} seed(s) "
            f"= {len(study.cells)} cells, {study.config.concurrency} at a time",
            file=sys.stderr,
        )
        from flows.study import threads_per_cell  # lazy: loaded by the flow next anyway
        from tasks.kinds.estimate import estimate_lines

        print(*estimate_lines(study, corpora, threads_per_cell(study))[-1:], file=sys.stderr)
        start_prefect_api()
        from flows.study import StudyFailed, study_flow  # lazy: Lightning, only once the data is ready

        try:
            result = study_flow(args.study, args.overrides, args.force)
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


def cmd_claims(args: argparse.Namespace) -> int:
    """A claims file (a top-level `claims:` list): its studies, the probes, the verdicts and the claims report."""
    from tasks.claims.claims_file import load_claims  # lazy: pydantic, not needed by --help

    lecture = load_claims(args.study, args.overrides)  # every study's cells and every criterion validated here
    with quietly(args.json):
        check_environment()
        from tasks.kinds.steps import check_cells_fit, data_key, prepare_corpus  # lazy: torch, Prefect (~6 s)

        for study in lecture.studies.values():  # bad data fails here, before Prefect or MLflow start
            corpora = {data_key(c.config): c.config for c in study.cells}
            check_cells_fit(study.cells, {key: prepare_corpus(config) for key, config in corpora.items()})
        print(
            f"rnnlab: claims '{lecture.name}': {len(lecture.config.claims)} claims over "
            f"{len(lecture.studies)} studies ({', '.join(lecture.studies)})",
            file=sys.stderr,
        )
        start_prefect_api()
        from flows.claims import claims_flow  # lazy: Lightning and the probes, only once the data is ready
        from tasks.claims.report import terminal_table

        result = claims_flow(args.study, args.overrides, args.force, args.recorded)
    failed = "".join(f"\nrnnlab: study {line}" for line in result["failures"])
    code = finish(
        result,
        args.json,
        f"\n{terminal_table(result['claims'])}\n{failed}\n"
        f"rnnlab: claims '{lecture.name}' (parent run {result['parent_run_id']}): report in "
        f"{result['report']} (and .html); again with `rnnlab report {lecture.name}`",
    )
    return 1 if result["failures"] else code


def answer_block(question: str, answer: str, factors: list[str]) -> str:
    """The question, the study's answer and what each factor changed, wrapped for a terminal."""
    lines = [f"Question: {question}"] if question else []
    lines.append(f"Answer: {answer}")
    lines += [f"- {line}" for line in factors]
    return "\n".join(textwrap.fill(line, width=110, subsequent_indent="  ") for line in lines)


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
    with quietly(True):
        with collector_paused():
            from tasks.analysis.answer import answer
            from tasks.analysis.compare import as_json, comparison, formatted  # lazy: MLflow, pandas, SciPy (~2 s)
            from tasks.record.tracking import import_store

            import_store()  # SQLAlchemy's store, inside the pause too (`client()` would import it after it)

        store.read_only()

        c = comparison(args.study, args.parent_run)
        result = answer(c)
    if args.csv:
        c.table.to_csv(args.csv, index=False)
        print(f"rnnlab: wrote {args.csv}", file=sys.stderr)
    if args.json:
        shown = json.dumps(as_json(c, result), default=_json_default) + "\n"
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


def cmd_report(args: argparse.Namespace) -> int:
    folder = (Path(args.out) if args.out else project_dir() / "reports") / args.study
    existing = next(p for p in (folder.resolve(), *folder.resolve().parents) if p.exists())
    if not existing.is_dir() or not os.access(existing, os.W_OK):  # checked before the report is computed
        raise LookupError(
            f"--out {args.out or folder.parent}: cannot write the report in {folder} ({existing} is "
            f"{'not a folder' if not existing.is_dir() else 'not writable'}); choose a writable folder "
            "with --out"
        )
    with quietly(True):
        from tasks.claims.report import is_claims_study  # lazy: MLflow, matplotlib, scipy (~6 s)
        from tasks.claims.report import render as render_claims
        from tasks.reports.study_report import log_report, render

        store.read_only()
        claims = is_claims_study(args.study)
        path, parent_run_id = (render_claims if claims else render)(args.study, args.parent_run, folder)
        try:
            log_report(parent_run_id, folder)
            logged = "logged to the parent run under report/"
        except Exception as err:  # a read-only store: the report is written all the same
            logged = f"not logged to the parent run (the store cannot be written: {str(err).splitlines()[0][:200]})"
    return finish(
        {"study": args.study, "parent_run_id": parent_run_id, "report": str(path), "html": str(folder / "report.html")},
        args.json,
        f"rnnlab: {'claims report' if claims else 'report of study'} '{args.study}' (execution {parent_run_id}): "
        f"{path} and {folder / 'report.html'}; " + logged,
    )


def cmd_server(args: argparse.Namespace) -> int:
    if args.action == "stop":
        stopped = servers.stop_all()
        return finish(
            {"stopped": stopped}, args.json, f"rnnlab: stopped {', '.join(stopped) or 'nothing (none was running)'}"
        )
    if args.action == "start":
        started = {
            name: servers.start(name, args.host, port)
            for name, port in (("prefect", args.prefect_port), ("mlflow", args.mlflow_port))
        }
        lines = [
            f"rnnlab: {name} server up at {state['url']} (pid {state['pid']}, log {state['log']})"
            for name, state in started.items()
        ]
        lines.append(
            f"rnnlab: use them from another shell with\n  export PREFECT_API_URL={started['prefect']['url']}"
            f"\n  export MLFLOW_TRACKING_URI={started['mlflow']['url']}\n"
            "rnnlab: `rnnlab serve` and `rnnlab server stop` find them by themselves"
        )
        return finish(started, args.json, "\n".join(lines))
    found = servers.status()
    lines = [
        f"rnnlab: {name}: "
        + (
            f"running at {state.get('url', '')} (pid {state['pid']})"
            + ("" if state.get("healthy", True) else ", NOT answering its health check")
            if state
            else "not running"
        )
        for name, state in found.items()
    ]
    return finish(found, args.json, "\n".join(lines))


def use_prefect_server(command: str) -> str:
    """PREFECT_API_URL: the environment's, else this project's `rnnlab server`; without one, say how to start it."""
    for variable, url in servers.project_urls().items():
        os.environ.setdefault(variable, url)  # this project's servers, unless the environment names others
    if not os.environ.get("PREFECT_API_URL"):
        raise LookupError(
            "a cron schedule needs a Prefect server: in Prefect's ephemeral mode (no server) schedules "
            "never fire. Start one with `rnnlab server start` (or set PREFECT_API_URL), then run "
            f"`rnnlab {command}` again."
        )
    return os.environ["PREFECT_API_URL"]


def tracking_target() -> str:
    return os.environ.get("MLFLOW_TRACKING_URI", "the local SQLite store")


def cmd_serve(args: argparse.Namespace) -> int:
    api = use_prefect_server("serve")
    from flows.deploy import load_schedules, serve  # lazy: Prefect (~1 s)

    schedules = load_schedules(args.schedules)  # every study is validated before anything is registered
    servers.write_state(servers.SERVE, pid=os.getpid(), schedules=str(args.schedules))
    print(
        f"rnnlab: serving {len(schedules)} deployment(s) on {api} (tracking: {tracking_target()}): "
        + ", ".join(f"study/{s.name} ({s.cron} {s.timezone})" for s, _ in schedules),
        file=sys.stderr,
        flush=True,
    )
    serve(args.schedules)
    return 0


def cmd_deploy(args: argparse.Namespace) -> int:
    api = use_prefect_server(f"deploy --pool {args.pool}")
    from flows.deploy import CHECKOUT, deploy_to_pool  # lazy: Prefect (~1 s)

    source = args.source or str(CHECKOUT)
    with quietly(args.json):
        deployed = deploy_to_pool(args.schedules, args.pool, source)
    return finish(
        {"pool": args.pool, "source": source, "deployments": {f"study/{s.name}": i for s, i in deployed}},
        args.json,
        f"rnnlab: {len(deployed)} deployment(s) on work pool '{args.pool}' at {api}: "
        + ", ".join(f"study/{s.name} ({s.cron} {s.timezone})" for s, _ in deployed)
        + f"\nrnnlab: on each machine that should run them (with this project installed, RNNLAB_DATA_DIR "
        f"and MLFLOW_TRACKING_URI set): `rnnlab worker --pool {args.pool}`",
    )


def cmd_worker(args: argparse.Namespace) -> int:
    api = use_prefect_server(f"worker --pool {args.pool}")
    command = [
        os.path.join(os.path.dirname(sys.executable), "prefect"),
        "worker",
        "start",
        "--pool",
        args.pool,
        "--type",
        "process",
        "--limit",
        str(args.limit),
    ]
    print(
        f"rnnlab: worker of pool '{args.pool}' on {api} (tracking: {tracking_target()}): {' '.join(command)}",
        file=sys.stderr,
        flush=True,
    )
    os.execv(command[0], command)  # Prefect's own worker, in this environment (configured above); it never returns


def cmd_evaluate(args: argparse.Namespace) -> int:
    if bool(args.file) == bool(args.src or args.ref) or bool(args.src) != bool(args.ref):
        raise LookupError("give either --file (language model) or both --src and --ref (translation)")
    with quietly(args.json):
        if args.file:
            from tasks.kinds.lm import evaluate_file  # lazy: torch, Lightning (~5 s)

            metrics = evaluate_file(args.run_id, args.file)
        else:
            from tasks.kinds.nmt import evaluate_pair  # lazy: torch, Lightning (~5 s)

            metrics = evaluate_pair(args.run_id, args.src, args.ref)
    shown = ", ".join(
        f"{k.rpartition('.')[2]} {v:.2f}" for k, v in metrics.items() if k.endswith(("ppl", "bleu", "chrf"))
    )
    return finish(
        {"run_id": args.run_id, "file": args.file or args.src, "metrics": metrics},
        args.json,
        f"rnnlab: {shown} on {args.file or args.src} (logged to run {args.run_id})",
    )


def cmd_probe(args: argparse.Namespace) -> int:
    with quietly(args.json):
        from tasks.claims import probes  # lazy: torch, Lightning, matplotlib (~5 s)

        if args.probe == "context":
            result = probes.context_probe(args.run_id, args.split, args.positions, args.force)
        else:
            result = probes.gradient_flow_probe(args.run_id, args.split, args.positions, args.force)
    head = f"rnnlab: run {args.run_id} ({result['cell']}), {result['positions']} positions of {result['split']}"
    if args.probe == "context":

        def k(prefix: str, name: str) -> str:
            return f"k = {result[f'{prefix}_{name}']}" + (
                "" if result[f"{prefix}_{name}_reached"] else " (not reached)"
            )

        human = (
            f"{head}: full-context ppl {result['full_ppl']:.2f}; the last k tokens come within 1% of it from "
            f"{k('k', '1pct')}, within 5% from {k('k', '5pct')}; shuffling the words beyond k costs less than 1% "
            f"from {k('order_k', '1pct')}, less than 5% from {k('order_k', '5pct')}"
        )
    else:
        sigmas = lambda when: "/".join(f"{s:.2f}" for s in result[f"sigma_{when}"])  # noqa: E731
        human = (
            f"{head}: ‖∂L_t/∂h_(t−k)‖ changes ×{result['rate_init']:.3f} per step at initialisation "
            f"(σ₁(W_hh) {sigmas('init')}), ×{result['rate_trained']:.3f} trained (σ₁ {sigmas('trained')})"
        )
    return finish(result, args.json, human + (" [reused]" if result["reused"] else ""))


def cmd_translate(args: argparse.Namespace) -> int:
    with contextlib.redirect_stdout(sys.stderr):
        from tasks.kinds.nmt import translate_file  # lazy: torch, Lightning (~5 s)

        translations = translate_file(args.run_id, args.input, args.beam)
    sys.stdout.write("".join(t + "\n" for t in translations))
    return 0


def cmd_ui(args: argparse.Namespace) -> int:
    store.read_only()
    uri = store.tracking_uri()
    if uri.startswith(("http://", "https://")):
        raise LookupError(
            f"MLFLOW_TRACKING_URI={uri} is a tracking server, which serves the MLflow UI itself: open "
            f"{uri} in a browser (`rnnlab ui` serves a store that no server serves)"
        )
    if store.is_local_store(uri):
        # With SQLite alone, not MLflow (~3 s of imports): an empty project has no store to show (the server would
        # create one), a damaged one is named.
        experiments = store.experiments(uri)
    elif args.study:  # another database: MLflow's client reads it
        from mlflow import MlflowClient

        experiments = {e.name: e.experiment_id for e in MlflowClient(uri).search_experiments()}
    if args.study and args.study not in experiments:
        raise LookupError(
            f"no study or experiment '{args.study}' in {uri}; there are: {', '.join(sorted(experiments)) or 'none'}"
        )

    def ready(url: str) -> None:
        print(f"rnnlab: MLflow UI for {uri} at {url} (Ctrl-C stops it)", file=sys.stderr)
        if args.study:
            # MLflow 3.17's UI opens an experiment in its GenAI mode (traces, evaluations) whatever the experiment's
            # tags, unless the browser was switched to "Model training" (kept in the browser's local storage); this
            # parameter opens the study's runs in that mode.
            print(
                f"rnnlab: study '{args.study}': {url}/#/experiments/{experiments[args.study]}/runs"
                "?workflowType=machine_learning",
                file=sys.stderr,
            )
        sys.stderr.flush()

    try:
        code = servers.run_ui(uri, args.host, args.port, args.jobs, ready)
    except KeyboardInterrupt:
        print(f"rnnlab: MLflow UI stopped ({Interrupts.name()})", file=sys.stderr)
        return Interrupts.exit_code()
    if code:
        print(f"rnnlab: the MLflow UI server exited with code {code}; its output is above", file=sys.stderr)
    return 0 if code == 0 else 1


def cmd_data(args: argparse.Namespace) -> int:
    from rnnlab.schemas import config  # lazy, as every heavy import in a command: --help loads none of them

    cfg = config.load(None, args.overrides)
    with quietly(args.json):
        from tasks.kinds.steps import prepare_corpus  # lazy: torch, Prefect (~6 s)

        corpus = prepare_corpus(cfg)
    sizes = getattr(corpus, "tokens", None) or corpus.pairs
    shown = ", ".join(f"{split} {n:,}" for split, n in sizes.items())
    return finish(
        {"corpus": corpus.name, "sizes": sizes, "checksum": corpus.checksum, "cache_dir": corpus.cache_dir},
        args.json,
        f"rnnlab: {corpus.name} ({'sentence pairs' if cfg.task == 'nmt' else 'tokens with <eos>'}): {shown}",
    )


class Exit:
    at_once = False  # set by a command that has only read, printed and closed its files: `compare`


def run() -> None:
    """The `rnnlab` command (and `python -m rnnlab.cli`): `main`, then the exit. After `compare` the process skips the
    interpreter's teardown (`os._exit`, once stdout, stderr and the logs are flushed): freeing the modules of MLflow,
    SQLAlchemy, pandas and SciPy took ~1 s, more than the comparison itself, and that command has nothing left to
    write or close (its SQLite reads are done; a --csv file is closed). `main` itself always returns, for callers
    in-process (the tests)."""
    code = main()
    if Exit.at_once:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(OSError, ValueError):  # a closed pipe (`| head`) has nothing left to take
                stream.flush()
        logging.shutdown()
        os._exit(code)
    sys.exit(code)


if __name__ == "__main__":
    run()
