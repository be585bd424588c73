"""`rnnlab server`: start, stop or show this project's Prefect and MLflow tracking servers (127.0.0.1)."""

from __future__ import annotations

import argparse
import os

from rnnlab.cli.common import finish, port, quietly
from rnnlab.runtime import servers
from rnnlab.runtime.env import ZOMBIE_SECONDS


def register(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser(
        "server", help="a Prefect server and an MLflow tracking server for this project (127.0.0.1)"
    )
    p.add_argument("action", choices=["start", "stop", "status"])
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--prefect-port", type=port, default=4200)
    p.add_argument("--mlflow-port", type=port, default=5000)
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=cmd_server)


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
        # On the server just started (not one the environment names): a dead machine's runs are closed by the
        # server itself, which a self-hosted Prefect server does only with these automations.
        os.environ["PREFECT_API_URL"] = started["prefect"]["url"]
        from flows.dead_runs import ensure_dead_run_closing  # lazy: Prefect and MLflow (~3 s), for `start` only

        with quietly(args.json):
            closing = ensure_dead_run_closing()
        lines.append(
            f"rnnlab: on the Prefect server, a flow run silent for {ZOMBIE_SECONDS} s is marked CRASHED, and its "
            "MLflow runs are closed as KILLED by the close-dead-runs deployment"
            " (run by `rnnlab serve` or a pool's worker)"
        )
        lines.append(
            f"rnnlab: use them from another shell with\n  export PREFECT_API_URL={started['prefect']['url']}"
            f"\n  export MLFLOW_TRACKING_URI={started['mlflow']['url']}\n"
            "rnnlab: `rnnlab serve` and `rnnlab server stop` find them by themselves"
        )
        return finish({**started, "automations": closing}, args.json, "\n".join(lines))
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
