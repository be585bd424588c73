"""`rnnlab server`: start, stop or show this project's Prefect and MLflow tracking servers (127.0.0.1)."""

from __future__ import annotations

import argparse

from rnnlab.cli.common import finish, port
from rnnlab.runtime import servers


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
