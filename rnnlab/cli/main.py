"""The `rnnlab` command: its parser (each command's arguments come from the command's module), the dispatch, and the
handling every command shares: -v, one clear line and exit 2 on bad input, an interrupt's exit. Heavy libraries are
imported inside the command that needs them, so --help is instant.

Human progress goes to stderr; with --json the last line on stdout is one JSON object.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import sys

from rnnlab.cli import compare, data, deploy, evaluate, probe, report, server, study, train, ui
from rnnlab.cli.common import Exit
from rnnlab.runtime import servers
from rnnlab.runtime.env import (
    EnvironmentProblem,
    configure,
    disk_full,
    pause_gc_in_spawned_worker,
    project_dir,
    redact,
    release_reserve,
)
from rnnlab.runtime.processes import Interrupts, abandon_prefect_api

pause_gc_in_spawned_worker()  # this module is re-imported first in the worker processes of a study

READ_ONLY_COMMANDS = ("compare", "report", "ui")  # they create nothing in the project, and work on a read-only store

# In the order of `rnnlab --help`; deploy adds serve, deploy and worker, evaluate adds evaluate and translate.
COMMANDS = (train, study, compare, report, server, deploy, evaluate, probe, ui, data)


def build_parser() -> argparse.ArgumentParser:
    """The whole command line: every command's arguments, from its module (docs/gen_reference.py writes the
    command-line reference from it)."""
    parser = argparse.ArgumentParser(
        prog="rnnlab", description="A reproducible ablation lab for recurrent language and translation models."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    for command in COMMANDS:
        command.register(commands)
    for command in commands.choices.values():
        command.add_argument(
            "-v",
            "--verbose",
            action="store_true",
            help="also show the libraries' own logs (Prefect, MLflow, Lightning), hidden by default",
        )
    return parser


def subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    """Command name → its parser."""
    return next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    commands = subcommands(parser)
    args, extra = parser.parse_known_args(argv)
    # Overrides may follow options (`rnnlab train run.yaml --json train.lr=1`), where argparse leaves them over with
    # anything it does not know: key=value items go to a command that takes overrides; the rest is still an error.
    takes_overrides = hasattr(args, "overrides")
    stray = [item for item in extra if not (takes_overrides and "=" in item and not item.startswith("-"))]
    if stray:
        commands[args.command].error(f"unrecognized arguments: {' '.join(stray)}")
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
        print(f"rnnlab: error: {redact(str(err))}", file=sys.stderr)
        return 2
    except Exception as err:
        # lazy: only on an error (pydantic ~0.1 s, torch): --help and a kept answer stay light
        from rnnlab.schemas.config import ConfigError
        from tasks.data.corpus_files import DataError

        if isinstance(err, (ConfigError, DataError)):
            print(f"rnnlab: error: {redact(str(err))}", file=sys.stderr)
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
