"""`rnnlab server`: start, stop or show this project's Prefect and MLflow tracking servers (127.0.0.1)."""

from __future__ import annotations

import argparse
import os

from rnnlab.cli.common import finish, port, quietly
from rnnlab.runtime import servers
from rnnlab.runtime.env import ZOMBIE_SECONDS

EPILOG = """\
stores: Prefect's SQLite in .prefect/ and MLflow's mlruns/mlflow.db, or with --database both in PostgreSQL
  (databases NAME_prefect, NAME_mlflow and, with credentials, NAME_mlflow_auth; created if the user may). The password
  may stay out of the URL: the drivers read PGPASSWORD and ~/.pgpass. Drivers: pip install -e ".[team]".
artifacts: served by MLflow (experiments rooted at mlflow-artifacts:/, kept in mlruns/artifacts on this machine).
credentials: MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD (12+ characters) and/or
  PREFECT_API_AUTH_STRING=user:password, the clients' own variables (rnnlab derives either from the other). Given,
  both servers ask every request for them (Prefect's basic authentication, MLflow's basic-auth app, whose admin user
  they are); a --host beyond loopback is refused without them. Every client needs them in its environment: rnnlab
  commands, Prefect workers and the flow runs they start pass them on. Plain HTTP sends them in the clear: beyond a
  trusted network, put the servers behind a TLS proxy.
host names: MLflow answers requests addressed to localhost or a private IP only; name others in
  MLFLOW_SERVER_ALLOWED_HOSTS (e.g. "lab-server:*,localhost:*") in the environment of `rnnlab server start`."""


def register(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser(
        "server",
        help="a Prefect server and an MLflow tracking server for this project (127.0.0.1)",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("action", choices=["start", "stop", "status"])
    p.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to bind (default 127.0.0.1: this machine only; any other needs credentials, see below)",
    )
    p.add_argument("--prefect-port", type=port, default=4200)
    p.add_argument("--mlflow-port", type=port, default=5000)
    p.add_argument(
        "--database",
        metavar="URL",
        help="keep both servers' stores in PostgreSQL: postgresql://USER[:PASSWORD]@HOST[:PORT]/NAME (see below)",
    )
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=cmd_server)


def cmd_server(args: argparse.Namespace) -> int:
    if args.action == "stop":
        stopped = servers.stop_all()
        return finish(
            {"stopped": stopped}, args.json, f"rnnlab: stopped {', '.join(stopped) or 'nothing (none was running)'}"
        )
    if args.action == "start":
        auth = servers.credentials()  # checked before anything starts, as the database URL is
        db = servers.database(args.database) if args.database else None
        if db:
            servers.drivers()
        started = servers.start_all(
            args.host, {"prefect": args.prefect_port, "mlflow": args.mlflow_port}, db=db, auth=auth
        )
        lines = [
            f"rnnlab: {name} server up at {state['url']} (pid {state['pid']}, log {state['log']}"
            + (f", store {state['database']}" if state.get("database") else "")
            + (", credentials required" if state.get("auth") else "")
            + ")"
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
            f"\n  export MLFLOW_TRACKING_URI={started['mlflow']['url']}"
            + (
                "\n  and the credentials: MLFLOW_TRACKING_USERNAME, MLFLOW_TRACKING_PASSWORD (and "
                "PREFECT_API_AUTH_STRING=user:password for Prefect's own CLI)"
                if any(state.get("auth") for state in started.values())
                else ""
            )
            + (
                f"\nrnnlab: bound to {args.host}: from other machines, use this machine's name or address in place of "
                "127.0.0.1"
                if args.host not in servers.LOOPBACK
                else ""
            )
            + "\nrnnlab: `rnnlab serve` and `rnnlab server stop` find them by themselves"
        )
        return finish({**started, "automations": closing}, args.json, "\n".join(lines))
    found = servers.status()
    lines = [
        f"rnnlab: {name}: "
        + (
            f"running at {state.get('url', '')} (pid {state['pid']})"
            + (f", store {state['database']}" if state.get("database") else "")
            + (", credentials required" if state.get("auth") else "")
            + ("" if state.get("healthy", True) else ", NOT answering its health check")
            if state
            else "not running"
        )
        for name, state in found.items()
    ]
    return finish(found, args.json, "\n".join(lines))
