"""The `rnnlab` command: its parser (each command's arguments come from the command's module), the dispatch, and the
handling every command shares: --version, -v and --json before or after the command, one clear line and exit 2 on bad
input, an interrupt's exit. Heavy libraries are imported inside the command that needs them, so --help is instant.

Human progress goes to stderr; with --json the last line on stdout is one JSON object, an error's too.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import sys

from rnnlab.cli import compare, data, deploy, evaluate, probe, report, runs, server, study, train, ui
from rnnlab.cli.common import Exit, version_line
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

# They create nothing in the project, and work on a read-only store.
READ_ONLY_COMMANDS = ("compare", "report", "runs", "ui")

# In the order of `rnnlab --help`; deploy adds serve, deploy and worker, evaluate adds evaluate and translate.
COMMANDS = (train, study, compare, report, runs, server, deploy, evaluate, probe, ui, data)

EPILOG = """\
-v and --json go before or after the command (rnnlab --json compare quick = rnnlab compare quick --json). With --json
  the last line on stdout is one JSON object, an error's too: {"error": "...", "exit_code": 2}, beside the error line
  on stderr.
the project directory, where a command keeps its stores (mlruns/mlflow.db, .prefect/, .cache/, checkpoints, reports/):
  $RNNLAB_HOME if set; else, as git finds its checkout, the nearest directory from the current one upwards that holds
  a project's mark: mlruns/mlflow.db (its MLflow store), .rnnlab-reserve (left by every command that writes there) or
  rnnlab's own pyproject.toml; else the current directory, where a new project begins. Not .prefect/ or mlruns/ alone:
  Prefect keeps ~/.prefect, and MLflow makes mlruns/ wherever it runs."""


class Parser(argparse.ArgumentParser):
    """argparse's parser (its commands' too), whose refusal (the usage, one `error:` line, exit 2) also prints the
    JSON error object on stdout where --json was given."""

    json_wanted = False

    def error(self, message: str):  # argparse's: it never returns
        if Parser.json_wanted:
            print(json.dumps({"error": message, "exit_code": 2}))
        super().error(message)


class Version(argparse.Action):
    """--version: the line is made only when asked for (it runs git), not for every command."""

    def __init__(self, option_strings: list[str], dest: str = argparse.SUPPRESS, **kwargs) -> None:
        super().__init__(option_strings, dest=dest, default=argparse.SUPPRESS, nargs=0, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        print(version_line())
        parser.exit()


def build_parser() -> tuple[Parser, argparse._SubParsersAction]:
    parser = Parser(
        prog="rnnlab",
        description="A reproducible ablation lab for recurrent language and translation models.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action=Version, help="the version of rnnlab, with its git commit where known")
    verbose = "also show the libraries' own logs (Prefect, MLflow, Lightning), hidden by default"
    parser.add_argument("-v", "--verbose", action="store_true", help=verbose)
    parser.add_argument("--json", action="store_true", help="print one JSON object as the last line on stdout")
    commands = parser.add_subparsers(dest="command", required=True)
    for command in COMMANDS:
        command.register(commands)
    for command in commands.choices.values():
        # The same options after the command: set there only when given, so as not to undo one given before it.
        command.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS, help=verbose)
        for action in command._actions:
            if "--json" in action.option_strings:
                action.default = argparse.SUPPRESS
    return parser, commands


def subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    """Command name → its parser (docs/gen_reference.py writes the command-line reference from them)."""
    return next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices


def has_json(command: argparse.ArgumentParser) -> bool:
    return any("--json" in action.option_strings for action in command._actions)


def refuse(message: str, code: int, as_json: bool) -> int:
    """The error line on stderr, and with --json its JSON object on stdout."""
    print(f"rnnlab: error: {message}", file=sys.stderr)
    if as_json:
        print(json.dumps({"error": message, "exit_code": code}))
    return code


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    Parser.json_wanted = "--json" in argv
    parser, commands = build_parser()
    args, extra = parser.parse_known_args(argv)
    # Overrides may follow options (`rnnlab train run.yaml --json train.lr=1`), where argparse leaves them over with
    # anything it does not know: key=value items go to a command that takes overrides; the rest is still an error.
    takes_overrides = hasattr(args, "overrides")
    stray = [item for item in extra if not (takes_overrides and "=" in item and not item.startswith("-"))]
    if stray:
        commands.choices[args.command].error(f"unrecognized arguments: {' '.join(stray)}")
    if extra:
        args.overrides = [*args.overrides, *extra]
    if args.json and not has_json(commands.choices[args.command]):
        parser.error(f"--json: `rnnlab {args.command}` has no JSON output")
    try:
        configure(verbose=args.verbose, read_only=args.command in READ_ONLY_COMMANDS)
        Interrupts.install()
        try:
            return args.handler(args)
        finally:
            abandon_prefect_api()  # a server this command launched and never needed (it failed first): stopped now
    except (LookupError, servers.ServerError, EnvironmentProblem) as err:
        return refuse(redact(str(err)), 2, args.json)
    except Exception as err:
        # lazy: only on an error (pydantic ~0.1 s, torch): --help and a kept answer stay light
        from rnnlab.schemas.config import ConfigError
        from tasks.data.corpus_files import DataError

        if isinstance(err, (ConfigError, DataError)):
            return refuse(redact(str(err)), 2, args.json)
        full = disk_full(err)
        if full:
            release_reserve()
            return refuse(
                f"no space left on device ({full}); free some space on the disk of {project_dir()} "
                "and run the command again (a study resumes its cells). The run in progress was closed as FAILED, "
                "or, where even that could not be written, the next command marks it KILLED",
                1,
                args.json,
            )
        raise
    except BaseException as err:  # Ctrl-C, SIGTERM (also as Lightning's exit or Prefect's TerminationSignal)
        if Interrupts.received is None and type(err).__name__ != "TerminationSignal":
            raise
        print(
            f"rnnlab: {args.command} interrupted by {Interrupts.name()}: runs in progress were closed as KILLED; "
            "run the same command again to resume",
            file=sys.stderr,
        )
        if args.json:
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
