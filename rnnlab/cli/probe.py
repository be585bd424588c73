"""`rnnlab probe`: measure a trained language-model run (how much context it uses, how the gradient reaching earlier
hidden states decays), logged to it."""

from __future__ import annotations

import argparse

from rnnlab.cli.common import finish, positive_int, quietly
from rnnlab.runtime import store


def register(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser(
        "probe",
        help="measure a trained language-model run, logged to it (metrics probe_*, "
        "artifacts probes/): how much context it uses, or how the gradient reaching earlier "
        "hidden states decays",
    )
    p.add_argument("run_id")
    p.add_argument(
        "probe",
        choices=["context", "gradient-flow"],
        help="context: perplexity with the context cut to the last k tokens (k = 1 … 200) and with the "
        "words beyond k shuffled; gradient-flow: ‖∂L_t/∂h_{t−k}‖ against k at initialisation and trained, "
        "and σ₁ of the recurrent weights",
    )
    p.add_argument("--split", default="valid", help="a split of the run's corpus (default valid)")
    p.add_argument(
        "--positions",
        type=positive_int,
        default=None,
        help="target positions sampled (default 500 for context, 200 for gradient-flow)",
    )
    p.add_argument("--force", action="store_true", help="compute again even if a result with the same inputs is logged")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=cmd_probe)


def cmd_probe(args: argparse.Namespace) -> int:
    store.check_run(args.run_id)  # an unknown id: refused in SQLite's time, not torch's
    with quietly(args.json):
        from tasks.claims import probes  # lazy: torch, Lightning, matplotlib (~5 s)

        if args.probe == "context":
            result = probes.context_probe(args.run_id, args.split, args.positions, args.force)
        else:
            result = probes.gradient_flow_probe(args.run_id, args.split, args.positions, args.force)
    head = f"rnnlab: run {args.run_id} ({result['cell']}), {result['positions']} positions of {result['split']}"
    if args.probe == "context":

        def k(prefix: str, name: str) -> str:
            return f"k = {result[f'{prefix}_{name}']}" + (
                "" if result[f"{prefix}_{name}_reached"] else " (not reached)"
            )

        human = (
            f"{head}: full-context ppl {result['full_ppl']:.2f}; the last k tokens come within 1% of it from "
            f"{k('k', '1pct')}, within 5% from {k('k', '5pct')}; shuffling the words beyond k costs less than 1% "
            f"from {k('order_k', '1pct')}, less than 5% from {k('order_k', '5pct')}"
        )
    else:
        sigmas = lambda when: "/".join(f"{s:.2f}" for s in result[f"sigma_{when}"])  # noqa: E731
        human = (
            f"{head}: ‖∂L_t/∂h_(t−k)‖ changes ×{result['rate_init']:.3f} per step at initialisation "
            f"(σ₁(W_hh) {sigmas('init')}), ×{result['rate_trained']:.3f} trained (σ₁ {sigmas('trained')})"
        )
    return finish(result, args.json, human + (" [reused]" if result["reused"] else ""))
