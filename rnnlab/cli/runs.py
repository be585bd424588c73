"""`rnnlab runs`: a study's (or any experiment's) run ids with variant, seed, status, outcome and the deciding metric,
so `evaluate`, `probe`, `translate` and `compare --parent-run` can be given one without the UI. Read from SQLite
alone for the project's store: no MLflow, torch or Prefect (`tests/test_cli_conventions.py`)."""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections import Counter
from typing import Any

from rnnlab.cli.common import json_default
from rnnlab.runtime import store

# The metric shown for an experiment no study decides (runs of `rnnlab train`): the first of these any run logged.
USUAL_METRICS = ("valid_ppl", "valid_bleu_greedy", "valid_bleu")


def register(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser(
        "runs",
        help="a study's runs (or any experiment's): id, role, variant, seed, status, outcome and its metric, "
        "oldest first, to give `evaluate`, `probe` or `compare --parent-run` an id",
    )
    p.add_argument("study", help="the study's name (its MLflow experiment), e.g. quick, or rnnlab for `rnnlab train`")
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout instead of the table")
    p.set_defaults(handler=cmd_runs)


def cmd_runs(args: argparse.Namespace) -> int:
    store.read_only()
    uri = store.tracking_uri()
    store.check_study(args.study)  # an unknown one: refused in one request to a server, before MLflow is imported
    runs = store.study_runs(uri, args.study) if store.is_local_store(uri) else server_runs(uri, args.study)
    metric = deciding_metric(runs)
    rows = [row(run, metric) for run in runs]
    if args.json:
        print(
            json.dumps(
                {"study": args.study, "tracking_uri": uri, "metric": metric, "runs": rows},
                default=json_default,
            )
        )
    else:
        sys.stdout.write(table(rows, metric))
    states = Counter(r["status"] for r in rows)
    print(
        f"rnnlab: {len(rows)} run{'s' if len(rows) != 1 else ''} in '{args.study}' "
        f"({', '.join(f'{n} {s}' for s, n in sorted(states.items())) or 'none'}); give an id to "
        "`rnnlab evaluate`, `rnnlab probe` or `rnnlab translate`, a study execution's to `rnnlab compare "
        f"{args.study} --parent-run`",
        file=sys.stderr,
    )
    return 0


def deciding_metric(runs: list[dict]) -> str | None:
    """The metric of the study's latest execution, else the usual one any run logged."""
    executions = [r for r in runs if r["tags"].get("rnnlab.role") == "study" and r["tags"].get("rnnlab.metric")]
    if executions:
        return executions[-1]["tags"]["rnnlab.metric"]
    return next((m for m in USUAL_METRICS if any(m in r["metrics"] for r in runs)), None)


def row(run: dict, metric: str | None) -> dict[str, Any]:
    tags = run["tags"]
    role = tags.get("rnnlab.role", "run")
    variant = tags.get("rnnlab.variant") or ("" if role in ("study", "claims") else run["name"] or "")
    if tags.get("rnnlab.trial"):
        variant = f"{variant} trial {tags['rnnlab.trial']}"
    seed = run["params"].get("seed")
    value = run["metrics"].get(metric) if metric else None
    return {
        "run_id": run["run_id"],
        "run_name": run["name"],
        "role": role,
        "variant": variant,
        "seed": int(seed) if seed is not None and seed.lstrip("-").isdigit() else seed,
        "status": run["status"],
        "outcome": tags.get("rnnlab.outcome"),
        "metric": None if value is None or not math.isfinite(value) else value,
        "parent_run_id": tags.get("mlflow.parentRunId"),
        "start_time": run["start_time"],
    }


def table(rows: list[dict], metric: str | None) -> str:
    head = ["run id", "role", "variant", "seed", "status", "outcome", metric or "metric"]
    cells = [
        [
            r["run_id"],
            r["role"],
            r["variant"],
            "" if r["seed"] is None else str(r["seed"]),
            r["status"],
            r["outcome"] or "",
            "" if r["metric"] is None else f"{r['metric']:.2f}",
        ]
        for r in rows
    ]
    widths = [max(len(line[i]) for line in [head, *cells]) for i in range(len(head))]
    return "".join("  ".join(c.ljust(w) for c, w in zip(line, widths)).rstrip() + "\n" for line in [head, *cells])


def server_runs(uri: str, name: str) -> list[dict]:
    """`store.study_runs` through MLflow's client: a tracking server, or a database other than SQLite."""
    from mlflow import MlflowClient  # lazy: ~3 s of imports, only where SQLite cannot be read directly

    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name(name)
    if experiment is None or experiment.lifecycle_stage != "active":
        names = sorted(e.name for e in client.search_experiments())
        raise LookupError(f"no study '{name}' in the tracking store {uri}; there are: {', '.join(names) or 'none'}")
    found = client.search_runs([experiment.experiment_id], max_results=50000, order_by=["attributes.start_time ASC"])
    return [
        {
            "run_id": run.info.run_id,
            "name": run.info.run_name,
            "status": run.info.status,
            "start_time": run.info.start_time,
            "tags": {k: v for k, v in run.data.tags.items() if k in store.RUN_TAGS},
            "params": {k: v for k, v in run.data.params.items() if k == "seed"},
            "metrics": dict(run.data.metrics),
        }
        for run in found
    ]
