"""`rnnlab train`: one run (prepare → train → evaluate → record, as a Prefect flow)."""

from __future__ import annotations

import argparse

from flows.launch import check_environment
from rnnlab.cli.common import check_corpora, finish, quietly
from rnnlab.runtime.processes import start_prefect_api


def register(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser("train", help="train one run (prepare → train → evaluate → record, as a Prefect flow)")
    p.add_argument("config", help="a run config, e.g. conf/runs/ptb_small.yaml")
    p.add_argument("overrides", nargs="*", help="dotted key=value overrides, e.g. model.cell=gru train.clip_norm=null")
    p.add_argument("--json", action="store_true", help="print one JSON summary as the last line on stdout")
    p.set_defaults(handler=cmd_train)


def cmd_train(args: argparse.Namespace) -> int:
    from rnnlab.schemas import config  # lazy, as every heavy import in a command: --help loads none of them

    tree = config.read_yaml(args.config)
    if "claims" in tree or "study" in tree or "factors" in tree:  # neither is a run config's key
        kind = "claims file" if "claims" in tree else "study file"
        raise config.ConfigError(
            f"{args.config} is a {kind}, not a run config: run it with `rnnlab study {args.config}` "
            "(`rnnlab train` takes one run's config, e.g. conf/runs/ptb_small.yaml)"
        )
    cfg = config.load(args.config, args.overrides, tree)
    check_corpora([cfg])  # a misspelt corpus: refused before torch and MLflow are imported
    with quietly(args.json):
        check_environment(launch_prefect=True)
        from tasks.kinds.steps import prepare_corpus  # lazy: torch, Prefect (~6 s), after the cheap checks

        corpus = prepare_corpus(cfg)  # bad data fails here, with a clear message, before Prefect or MLflow start
        start_prefect_api()
        from flows.train import train_flow  # lazy: Lightning, only once the data is ready
        from tasks.record.tracking import tracking_uri

        result = train_flow(cfg, corpus=corpus)  # the corpus prepared here: not again
    result["tracking_uri"] = tracking_uri()
    metrics = result["metrics"]
    shown = ", ".join(
        f"{k} {metrics[k]:.2f}" for k in ("valid_ppl", "test_ppl", "test_bleu", "test_chrf") if k in metrics
    )
    verdict = (
        shown
        if result["outcome"] == "trained"
        else f"{result['outcome'].replace('_', ' ')}: {result['outcome_reason']}"
    )
    return finish(
        result,
        args.json,
        f"rnnlab: run {result['run_id']} in experiment '{cfg.experiment}': {verdict}\n"
        f"rnnlab: results in {result['tracking_uri']}; browse them with `rnnlab ui`",
    )
