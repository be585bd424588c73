"""What the commands of `rnnlab` share: argparse types, the summary line (and --json), the environment's checks,
the answer block, and the exit flag that `rnnlab.cli.main.run` reads. Light: --help imports it."""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import sys
import textwrap
from pathlib import Path
from typing import Any

from rnnlab.runtime import store
from rnnlab.runtime.env import check_project
from rnnlab.runtime.processes import start_prefect_api


def port(text: str) -> int:
    """An argparse type: a TCP port a server can listen on (a socket refuses anything else, with a traceback)."""
    if not text.isdigit() or not 1 <= int(text) <= 65535:
        raise argparse.ArgumentTypeError(f"invalid port {text!r}: expected a whole number from 1 to 65535")
    return int(text)


def listen_port(text: str) -> int:
    """An argparse type: a TCP port to listen on, or 0 for any free one (the system picks it)."""
    if not text.isdigit() or not 0 <= int(text) <= 65535:
        raise argparse.ArgumentTypeError(
            f"invalid port {text!r}: expected a whole number from 0 (any free port) to 65535"
        )
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


def finish(result: dict[str, Any], as_json: bool, human: str) -> int:
    print(human, file=sys.stderr)
    if as_json:
        print(json.dumps(result, default=json_default))
    return 0


def json_default(value: Any) -> Any:
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


def answer_block(question: str, answer: str, factors: list[str]) -> str:
    """The question, the study's answer and what each factor changed, wrapped for a terminal."""
    lines = [f"Question: {question}"] if question else []
    lines.append(f"Answer: {answer}")
    lines += [f"- {line}" for line in factors]
    return "\n".join(textwrap.fill(line, width=110, subsequent_indent="  ") for line in lines)


class Exit:
    at_once = False  # set by a command that has only read, printed and closed its files: `compare`
