"""`rnnlab data`: prepare (and if needed download) a corpus, printing its sizes."""

from __future__ import annotations

import argparse

from rnnlab.cli.common import check_corpora, finish, quietly


def register(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser("data", help="prepare (and if needed download) a corpus, printing its sizes")
    p.add_argument(
        "overrides",
        nargs="*",
        help="config overrides, e.g. data.corpus=wikitext-2, or task=nmt data.corpus=chr_en data.src=chr",
    )
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=cmd_data)


def cmd_data(args: argparse.Namespace) -> int:
    from rnnlab.schemas import config  # lazy, as every heavy import in a command: --help loads none of them

    cfg = config.load(None, args.overrides)
    check_corpora([cfg])  # a misspelt corpus: refused before torch is imported
    with quietly(args.json):
        from tasks.kinds.steps import prepare_corpus  # lazy: torch, Prefect (~6 s)

        corpus = prepare_corpus(cfg)
    sizes = corpus.sizes
    shown = ", ".join(f"{split} {n:,}" for split, n in sizes.items())
    return finish(
        {"corpus": corpus.name, "sizes": sizes, "checksum": corpus.checksum, "cache_dir": corpus.cache_dir},
        args.json,
        f"rnnlab: {corpus.name} ({corpus.unit}): {shown}",
    )
