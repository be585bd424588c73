"""The `rnnlab` command. Heavy libraries are imported inside the command that needs them, so --help is instant.

Human progress goes to stderr; with --json the last line on stdout is one JSON object.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import signal
import sys
from typing import Any

from rnnlab.env import configure


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="rnnlab", description="A reproducible ablation lab for recurrent language and translation models.")
    commands = parser.add_subparsers(dest="command", required=True)

    p = commands.add_parser("train", help="train one run (prepare → train → evaluate → record, as a Prefect flow)")
    p.add_argument("config", help="a run config, e.g. conf/runs/ptb_small.yaml")
    p.add_argument("overrides", nargs="*", help="dotted key=value overrides, e.g. model.cell=gru train.clip_norm=null")
    p.add_argument("--json", action="store_true", help="print one JSON summary as the last line on stdout")
    p.set_defaults(handler=cmd_train)

    p = commands.add_parser("evaluate", help="perplexity of a trained run on any text file, logged to that run")
    p.add_argument("run_id")
    p.add_argument("--file", required=True, help="a text file, one sentence per line")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=cmd_evaluate)

    p = commands.add_parser("ui", help="the MLflow UI over this project's store (127.0.0.1 by default)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=5000)
    p.set_defaults(handler=cmd_ui)

    p = commands.add_parser("data", help="prepare (and if needed download) a corpus, printing its sizes")
    p.add_argument("overrides", nargs="*", help="data.* overrides, e.g. data.corpus=wikitext-2")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=cmd_data)

    args = parser.parse_args(argv)
    configure()
    from rnnlab.config import ConfigError

    try:
        return args.handler(args)
    except (ConfigError, LookupError) as err:
        print(f"rnnlab: error: {err}", file=sys.stderr)
        return 2
    except Exception as err:
        from tasks.data import DataError

        if isinstance(err, DataError):
            print(f"rnnlab: error: {err}", file=sys.stderr)
            return 2
        raise


def finish(result: dict[str, Any], as_json: bool, human: str) -> int:
    print(human, file=sys.stderr)
    if as_json:
        print(json.dumps(result, default=_json_default))
    return 0


def _json_default(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return str(value)


def _raise_on_sigterm() -> None:
    def handler(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, handler)


def quietly(as_json: bool) -> contextlib.AbstractContextManager:
    """Keep stdout for the JSON line: anything libraries print goes to stderr instead."""
    return contextlib.redirect_stdout(sys.stderr) if as_json else contextlib.nullcontext()


def cmd_train(args: argparse.Namespace) -> int:
    from rnnlab import config

    cfg = config.load(args.config, args.overrides)
    _raise_on_sigterm()
    with quietly(args.json):
        from tasks.data import prepare_lm_corpus

        prepare_lm_corpus(cfg.data)  # bad data fails here, with a clear message, before Prefect or MLflow start
        from flows.train import train_flow
        from tasks.tracking import tracking_uri

        result = train_flow(cfg)
    result["tracking_uri"] = tracking_uri()
    metrics = result["metrics"]
    shown = ", ".join(f"{k} {metrics[k]:.2f}" for k in ("valid_ppl", "test_ppl") if k in metrics)
    verdict = f"diverged at step {metrics['diverged_step']}" if result["diverged"] else shown
    return finish(result, args.json, f"rnnlab: run {result['run_id']} in experiment '{cfg.experiment}': {verdict}\n"
                  f"rnnlab: results in {result['tracking_uri']}; browse them with `rnnlab ui`")


def cmd_evaluate(args: argparse.Namespace) -> int:
    with quietly(args.json):
        from tasks.evaluate import evaluate_file

        metrics = evaluate_file(args.run_id, args.file)
    ppl = next(v for k, v in metrics.items() if k.endswith(".ppl"))
    return finish({"run_id": args.run_id, "file": args.file, "metrics": metrics}, args.json,
                  f"rnnlab: perplexity {ppl:.2f} on {args.file} (logged to run {args.run_id})")


def cmd_ui(args: argparse.Namespace) -> int:
    import os

    from tasks.tracking import tracking_uri

    uri = tracking_uri()
    print(f"rnnlab: MLflow UI for {uri} at http://{args.host}:{args.port}", file=sys.stderr)
    command = [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", uri, "--host", args.host, "--port", str(args.port)]
    os.execv(sys.executable, command)
    return 0


def cmd_data(args: argparse.Namespace) -> int:
    from rnnlab import config

    cfg = config.load(None, [o if o.startswith("data.") else f"data.{o}" for o in args.overrides])
    with quietly(args.json):
        from tasks.data import prepare_lm_corpus

        corpus = prepare_lm_corpus(cfg.data)
    sizes = ", ".join(f"{split} {n:,}" for split, n in corpus.tokens.items())
    return finish({"corpus": corpus.name, "vocab_size": corpus.vocab_size, "tokens": corpus.tokens,
                   "checksum": corpus.checksum, "cache_dir": corpus.cache_dir}, args.json,
                  f"rnnlab: {corpus.name}: vocabulary {corpus.vocab_size:,}; tokens with <eos>: {sizes}")



if __name__ == "__main__":
    sys.exit(main())
