"""`rnnlab ui`: the MLflow UI over this project's store (127.0.0.1 by default), until Ctrl-C."""

from __future__ import annotations

import argparse
import sys

from rnnlab.cli.common import listen_port
from rnnlab.runtime import servers, store
from rnnlab.runtime.processes import Interrupts


def register(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser("ui", help="the MLflow UI over this project's store (127.0.0.1 by default), until Ctrl-C")
    p.add_argument("study", nargs="?", help="a study (its MLflow experiment): also print the address of its runs")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=listen_port, default=5000, help="port to listen on (default 5000; 0: any free one)")
    p.add_argument(
        "--jobs",
        action="store_true",
        help="also run MLflow's job runner (GenAI evaluation jobs: scorers, "
        "judges; ~10 processes more), off by default",
    )
    p.set_defaults(handler=cmd_ui)


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
