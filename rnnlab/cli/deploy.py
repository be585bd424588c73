"""`rnnlab serve`, `rnnlab deploy` and `rnnlab worker`: the studies of conf/schedules.yaml on cron schedules, served
from this process or deployed to a Prefect work pool and run by its workers."""

from __future__ import annotations

import argparse
import os
import sys

from rnnlab.cli.common import finish, positive_int, quietly
from rnnlab.runtime import servers
from rnnlab.runtime.env import flow_heartbeats


def register(commands: argparse._SubParsersAction) -> None:
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
    flow_heartbeats()  # the flow runs this command serves or works on beat for the server's zombie automation
    return os.environ["PREFECT_API_URL"]


def tracking_server(command: str) -> str:
    """MLFLOW_TRACKING_URI, which must name a tracking server: a pool's workers run on other machines, and whatever
    they recorded into their own local store nobody would read."""
    from rnnlab.runtime.store import is_server, tracking_uri

    if not is_server(tracking_uri()):
        raise LookupError(
            f"`rnnlab {command}`: a work pool's studies run on other machines and must record into a tracking server "
            "that every machine reaches; start one with `rnnlab server start` (or set MLFLOW_TRACKING_URI to an "
            "http(s) URL)"
        )
    return tracking_uri()


def tracking_target() -> str:
    return os.environ.get("MLFLOW_TRACKING_URI", "the local SQLite store")


def cmd_serve(args: argparse.Namespace) -> int:
    api = use_prefect_server("serve")
    from flows.deploy import load_schedules, serve  # lazy: Prefect (~1 s)

    schedules = load_schedules(args.schedules)  # every study is validated before anything is registered
    servers.write_state(servers.SERVE, pid=os.getpid(), schedules=str(args.schedules))
    print(
        f"rnnlab: serving {len(schedules)} deployment(s) on {api} (tracking: {tracking_target()}): "
        + ", ".join(f"study/{s.name} ({s.cron} {s.timezone})" for s, _ in schedules)
        + ", and close-dead-runs (run by the server's automation when a flow run crashes: its MLflow runs → KILLED)",
        file=sys.stderr,
        flush=True,
    )
    serve(args.schedules)
    return 0


def cmd_deploy(args: argparse.Namespace) -> int:
    api = use_prefect_server(f"deploy --pool {args.pool}")
    store = tracking_server(f"deploy --pool {args.pool}")
    from flows.deploy import CHECKOUT, deploy_to_pool  # lazy: Prefect (~1 s)

    source = args.source or str(CHECKOUT)
    with quietly(args.json):
        deployed = deploy_to_pool(args.schedules, args.pool, source, store)
    return finish(
        {"pool": args.pool, "source": source, "deployments": {f"study/{s.name}": i for s, i in deployed}},
        args.json,
        f"rnnlab: {len(deployed)} deployment(s) on work pool '{args.pool}' at {api}: "
        + ", ".join(f"study/{s.name} ({s.cron} {s.timezone})" for s, _ in deployed)
        + ", and close-dead-runs (run by the server's automation when a flow run crashes: its MLflow runs → KILLED)"
        + f"\nrnnlab: on each machine that should run them (with this project installed, RNNLAB_DATA_DIR "
        f"and MLFLOW_TRACKING_URI set): `rnnlab worker --pool {args.pool}`",
    )


def cmd_worker(args: argparse.Namespace) -> int:
    api = use_prefect_server(f"worker --pool {args.pool}")
    tracking_server(f"worker --pool {args.pool}")
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
