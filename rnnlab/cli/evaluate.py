"""`rnnlab evaluate` and `rnnlab translate`: a trained run on other data, scored (logged to the run) or translated."""

from __future__ import annotations

import argparse
import contextlib
import sys

from rnnlab.cli.common import existing_file, finish, positive_int, quietly
from rnnlab.runtime import store


def register(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser(
        "evaluate",
        help="score a trained run on other data, logged to that run: perplexity of a "
        "language model on --file, or BLEU/chrF of a translation run on --src/--ref",
    )
    p.add_argument("run_id")
    p.add_argument("--file", type=existing_file, help="language model: a text file, one sentence per line")
    p.add_argument("--src", type=existing_file, help="translation: source sentences, one per line")
    p.add_argument("--ref", type=existing_file, help="translation: reference translations, line by line with --src")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=cmd_evaluate)

    p = commands.add_parser("translate", help="translate a file with a trained translation run (to stdout)")
    p.add_argument("run_id")
    p.add_argument("--input", required=True, type=existing_file, help="source sentences, one per line")
    p.add_argument(
        "--beam", type=positive_int, default=None, help="beam size (1 = greedy; default: the run's eval.beam)"
    )
    p.set_defaults(handler=cmd_translate)


def cmd_evaluate(args: argparse.Namespace) -> int:
    if bool(args.file) == bool(args.src or args.ref) or bool(args.src) != bool(args.ref):
        raise LookupError("give either --file (language model) or both --src and --ref (translation)")
    store.check_run(args.run_id)  # an unknown id: refused in SQLite's time, not torch's
    with quietly(args.json):
        if args.file:
            from tasks.kinds.lm import evaluate_file  # lazy: torch, Lightning (~5 s)

            metrics = evaluate_file(args.run_id, args.file)
        else:
            from tasks.kinds.nmt import evaluate_pair  # lazy: torch, Lightning (~5 s)

            metrics = evaluate_pair(args.run_id, args.src, args.ref)
    shown = ", ".join(
        f"{k.rpartition('.')[2]} {v:.2f}" for k, v in metrics.items() if k.endswith(("ppl", "bleu", "chrf"))
    )
    return finish(
        {"run_id": args.run_id, "file": args.file or args.src, "metrics": metrics},
        args.json,
        f"rnnlab: {shown} on {args.file or args.src} (logged to run {args.run_id})",
    )


def cmd_translate(args: argparse.Namespace) -> int:
    store.check_run(args.run_id)
    with contextlib.redirect_stdout(sys.stderr):
        from tasks.kinds.nmt import translate_file  # lazy: torch, Lightning (~5 s)

        translations = translate_file(args.run_id, args.input, args.beam)
    sys.stdout.write("".join(t + "\n" for t in translations))
    return 0
