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

    p = commands.add_parser("evaluate", help="score a trained run on other data, logged to that run: perplexity of a "
                            "language model on --file, or BLEU/chrF of a translation run on --src/--ref")
    p.add_argument("run_id")
    p.add_argument("--file", help="language model: a text file, one sentence per line")
    p.add_argument("--src", help="translation: source sentences, one per line")
    p.add_argument("--ref", help="translation: reference translations, line by line with --src")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=cmd_evaluate)

    p = commands.add_parser("translate", help="translate a file with a trained translation run (to stdout)")
    p.add_argument("run_id")
    p.add_argument("--input", required=True, help="source sentences, one per line")
    p.add_argument("--beam", type=int, default=None, help="beam size (1 = greedy; default: the run's eval.beam)")
    p.set_defaults(handler=cmd_translate)

    p = commands.add_parser("ui", help="the MLflow UI over this project's store (127.0.0.1 by default)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=5000)
    p.set_defaults(handler=cmd_ui)

    p = commands.add_parser("data", help="prepare (and if needed download) a corpus, printing its sizes")
    p.add_argument("overrides", nargs="*", help="config overrides, e.g. data.corpus=wikitext-2, or task=nmt data.corpus=chr_en data.src=chr")
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
        from tasks.data import prepare_corpus

        prepare_corpus(cfg)  # bad data fails here, with a clear message, before Prefect or MLflow start
        from flows.train import train_flow
        from tasks.tracking import tracking_uri

        result = train_flow(cfg)
    result["tracking_uri"] = tracking_uri()
    metrics = result["metrics"]
    shown = ", ".join(f"{k} {metrics[k]:.2f}" for k in ("valid_ppl", "test_ppl", "test_bleu", "test_chrf") if k in metrics)
    verdict = f"diverged at step {metrics['diverged_step']}" if result["diverged"] else shown
    return finish(result, args.json, f"rnnlab: run {result['run_id']} in experiment '{cfg.experiment}': {verdict}\n"
                  f"rnnlab: results in {result['tracking_uri']}; browse them with `rnnlab ui`")


def cmd_evaluate(args: argparse.Namespace) -> int:
    if bool(args.file) == bool(args.src or args.ref) or bool(args.src) != bool(args.ref):
        raise LookupError("give either --file (language model) or both --src and --ref (translation)")
    with quietly(args.json):
        if args.file:
            from tasks.evaluate import evaluate_file

            metrics = evaluate_file(args.run_id, args.file)
        else:
            from tasks.nmt import evaluate_pair

            metrics = evaluate_pair(args.run_id, args.src, args.ref)
    shown = ", ".join(f"{k.rpartition('.')[2]} {v:.2f}" for k, v in metrics.items() if k.endswith(("ppl", "bleu", "chrf")))
    return finish({"run_id": args.run_id, "file": args.file or args.src, "metrics": metrics}, args.json,
                  f"rnnlab: {shown} on {args.file or args.src} (logged to run {args.run_id})")


def cmd_translate(args: argparse.Namespace) -> int:
    with contextlib.redirect_stdout(sys.stderr):
        from tasks.nmt import translate_file

        translations = translate_file(args.run_id, args.input, args.beam)
    sys.stdout.write("".join(t + "\n" for t in translations))
    return 0


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

    cfg = config.load(None, args.overrides)
    with quietly(args.json):
        from tasks.data import prepare_corpus

        corpus = prepare_corpus(cfg)
    sizes = getattr(corpus, "tokens", None) or corpus.pairs
    shown = ", ".join(f"{split} {n:,}" for split, n in sizes.items())
    return finish({"corpus": corpus.name, "sizes": sizes, "checksum": corpus.checksum, "cache_dir": corpus.cache_dir},
                  args.json, f"rnnlab: {corpus.name} ({'sentence pairs' if cfg.task == 'nmt' else 'tokens with <eos>'}): {shown}")


if __name__ == "__main__":
    sys.exit(main())
