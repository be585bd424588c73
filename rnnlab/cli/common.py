"""What the commands of `rnnlab` share: argparse types, the summary line (and --json),
the answer block, and the exit flag that `rnnlab.cli.main.run` reads. Light: --help imports it."""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import sys
import textwrap
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from rnnlab.runtime.env import CODE_ROOT, git_output, is_project


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


def check_corpora(configs: Iterable[Any]) -> None:
    """Each corpus of these run configs is a known one or a folder that exists, checked once each before torch is
    imported: a misspelt name is refused in a fraction of a second, naming the known corpora."""
    from tasks.data.corpus_files import check_corpus  # light: pydantic, no torch

    for data in dict.fromkeys(cfg.data for cfg in configs):
        check_corpus(data)


def quietly(as_json: bool) -> contextlib.AbstractContextManager:
    """Keep stdout for the JSON line: anything libraries print goes to stderr instead."""
    return contextlib.redirect_stdout(sys.stderr) if as_json else contextlib.nullcontext()


def answer_block(question: str, answer: str, factors: list[str]) -> str:
    """The question, the study's answer and what each factor changed, wrapped for a terminal."""
    lines = [f"Question: {question}"] if question else []
    lines.append(f"Answer: {answer}")
    lines += [f"- {line}" for line in factors]
    return "\n".join(textwrap.fill(line, width=110, subsequent_indent="  ") for line in lines)


def version_line() -> str:
    """`rnnlab 0.1.0 (commit 1a2b3c4)`: the version of the code that runs (its checkout's pyproject.toml, else the
    installed distribution's), with the commit of that checkout where it is one (`+ changes` where its tracked files
    differ from it)."""
    import importlib.metadata
    import tomllib

    try:
        project = tomllib.loads((CODE_ROOT / "pyproject.toml").read_text(encoding="utf-8")).get("project", {})
    except (OSError, ValueError):
        project = {}
    version = project.get("version") if project.get("name") == "rnnlab" else None
    if version is None:
        try:
            version = importlib.metadata.version("rnnlab")
        except importlib.metadata.PackageNotFoundError:
            version = "unknown"

    found = (git_output("rev-parse", "--show-toplevel", "--short", "HEAD") or "").splitlines()
    if not is_project(CODE_ROOT) or len(found) != 2 or Path(found[0]).resolve() != CODE_ROOT:
        return f"rnnlab {version}"  # not a checkout of rnnlab's own (an installed copy)
    changed = git_output("status", "--porcelain", "--untracked-files=no")
    return f"rnnlab {version} (commit {found[1]}{' + changes' if changed else ''})"


class Exit:
    at_once = False  # set by a command that has only read, printed and closed its files: `compare`
