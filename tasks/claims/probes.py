"""Probes of a recorded language-model run, logged to that run: how much context it uses (`context_probe`), and how
the gradient reaching earlier hidden states decays with distance (`gradient_flow_probe`); plus the controlled check
of the gradient-flow maths (`spectral_check`). The maths is in models/probes.py; this module loads the run (config,
vocabulary, best checkpoint, the split), logs curves as MLflow metrics with step = k, writes `probes/<probe>.csv`,
`.png` and `.json` to the run, and reuses a result whose inputs have not changed.

Reuse: a probe tags the run `rnnlab.probe.<probe>` with a hash of its inputs (probe, version, split and its tokens,
positions, seed, the checkpoint's sha256); when the tag matches, the logged `probes/<probe>.json` is read back instead
of computing again. The tag is written last, so a probe that stopped halfway is computed again.
"""

from __future__ import annotations

import hashlib
import json
import math
import tempfile
import time
from pathlib import Path

import pandas as pd
import torch

from models import probes
from models.lm import RNNLM
from rnnlab.schemas.config import LMRunConfig
from tasks.data.corpus_files import read_lines, sha256_file
from tasks.data.lm_corpus import EOS, encode, locate_splits, read_vocab, words
from tasks.kinds.lm import lm_settings, load_net, token_losses
from tasks.record.tracking import download_artifact, log_artifact, log_metrics, set_tags, stderr
from tasks.reporting import plots
from tasks.training.fitting import seed_and_threads
from tasks.training.scoring import recorded_config, run_file

# Part of the inputs' hash: bump a probe's when its maths changes, so old results are not reused (context 2: every
# k from 1 to 30, the crossing interpolated in log k, bootstrap intervals)
VERSIONS = {"context": "2", "gradient_flow": "1"}
SEED = 14  # the positions' seed: one for every run, so that probes of two runs score the same positions (paired)
CONTEXT_KS = probes.context_ks(30, 200)  # 1 … 30, then 4 steps per doubling to 202 (41 k's)
# The order probe reads a 300-token window per k: on the dense grid it would cost ~3× the rest of the probe, and no
# claim reads it, so it keeps the coarse log-spaced grid
ORDER_KS = [1, 2, 3, 5, 8, 13, 20, 30, 50, 80, 130, 200]
BOOTSTRAP_DRAWS = 1000  # resamples of the positions for the intervals of k (and, across runs, of ratios of k)
SHUFFLE_WINDOW = 300  # Khandelwal et al. (2018): a 300-token window whose words beyond distance k are shuffled
GRADIENT_STEPS = 100  # k = 0 … 100
BURN_IN = 50  # tokens read (without gradient) before the stepped window, so its first state is a typical one
TOLERANCES = {"1pct": 0.01, "5pct": 0.05}
# Sized to answer in well under a minute for ptb_small on one CPU thread (measured: docs/results.md)
DEFAULT_POSITIONS = {"context": 500, "gradient_flow": 200}


class RecordedLM:
    """A FINISHED language-model run read back: its config, vocabulary, trained network and one split's tokens."""

    def __init__(self, run_id: str, split: str, tmp: str):
        self.run_id, self.split = run_id, split
        self.run, self.cfg = recorded_config(
            run_id, tmp, LMRunConfig, "probe", ": the probes measure language models (context, gradient flow)"
        )
        self.vocab = read_vocab(run_file(run_id, "vocab.txt", tmp))
        checkpoint = run_file(run_id, "checkpoints/best.ckpt", tmp)
        self.checkpoint_sha256 = sha256_file(checkpoint)
        self.net = load_net(self.cfg, len(self.vocab), checkpoint)
        self.ids = split_ids(self.cfg, split, self.vocab)

    def inputs_key(self, probe: str, positions: int) -> str:
        """The hash of everything a probe's result depends on."""
        identity = {
            "probe": probe,
            "version": VERSIONS[probe],
            "split": self.split,
            "positions": positions,
            "seed": SEED,
            "checkpoint": self.checkpoint_sha256,
            "tokens": hashlib.sha256(self.ids.numpy().tobytes()).hexdigest(),
        }
        return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]


def split_ids(cfg: LMRunConfig, split: str, vocab: list[str]) -> torch.Tensor:
    """A split of the run's corpus as token ids of the run's vocabulary (words it never saw count as <unk>)."""
    _, files = locate_splits(cfg.data)
    if split not in files:
        raise LookupError(
            f"--split {split}: the run's corpus {cfg.data.corpus} has no such split (it has {', '.join(sorted(files))})"
        )
    index = {w: i for i, w in enumerate(vocab)}
    return encode(words(read_lines(files[split])), index)


def initial_net(cfg: LMRunConfig, vocab_size: int) -> RNNLM:
    """The run's network as training started: seeded as tasks/lm.fit_lm seeds it, and built first thing after,
    as fit_lm builds it (tests/test_tasks_probes.py checks the two agree)."""
    seed_and_threads(cfg)
    return RNNLM(vocab_size, lm_settings(cfg)).eval()


def reusable(lm: RecordedLM, probe: str, key: str, tmp: str) -> dict | None:
    if lm.run.data.tags.get(f"rnnlab.probe.{probe}") != key:
        return None
    try:
        return json.loads(download_artifact(lm.run_id, f"probes/{probe}.json", Path(tmp) / "reused").read_text())
    except Exception:  # the tag without its result (artifacts deleted): compute it again
        return None


def record(lm: RecordedLM, probe: str, key: str, result: dict, table: pd.DataFrame, plot, tmp: str) -> None:
    """The CSV, the plot and the whole result as JSON to `probes/`, then the tag that lets the next call reuse them."""
    folder = Path(tmp) / "probes"
    folder.mkdir(exist_ok=True)
    table.to_csv(folder / f"{probe}.csv", index=False)
    plot(result, folder / f"{probe}.png")
    (folder / f"{probe}.json").write_text(json.dumps(result, indent=1))
    for suffix in ("csv", "png", "json"):
        log_artifact(lm.run_id, folder / f"{probe}.{suffix}", "probes")
    set_tags(lm.run_id, {f"rnnlab.probe.{probe}": key})


def run_probe(probe: str, run_id: str, split: str, positions: int | None, force: bool, measure) -> dict:
    """Load the run, reuse a result with the same inputs unless `force`, else `measure(...)`, which logs and records
    what it measured (its "seconds": from the call to the result, loading included, logging not)."""
    positions = positions or DEFAULT_POSITIONS[probe]
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        lm = RecordedLM(run_id, split, tmp)
        key = lm.inputs_key(probe, positions)
        found = None if force else reusable(lm, probe, key, tmp)
        if found is not None:
            stderr(
                f"rnnlab: probe {probe} of run {run_id}: reused the result logged with the same inputs "
                f"(split {split}, {positions} positions, checkpoint {lm.checkpoint_sha256[:12]}); --force computes "
                "it again"
            )
            return {**found, "reused": True}
        stderr(
            f"rnnlab: probe {probe} of run {run_id} ({lm.cfg.model.cell}, {lm.cfg.model.layers}×"
            f"{lm.cfg.model.hidden_size}) on {split} ({len(lm.ids):,} tokens), {positions} positions"
        )
        base = {
            "run_id": run_id,
            "split": split,
            "cell": lm.cfg.model.cell,
            "positions_requested": positions,
            "seed": SEED,
            "version": VERSIONS[probe],
        }
        result = measure(lm, positions, base, started, tmp)
        stderr(
            f"rnnlab: probe {probe} of run {run_id}: computed in {result['seconds']:.1f} s; logged to the run "
            "(metrics probe_*, artifacts probes/)"
        )
        return {**result, "reused": False}


def positions_for(lm: RecordedLM, positions: int, earliest: int) -> torch.Tensor:
    try:
        where = probes.sample_positions(len(lm.ids), positions, earliest, SEED)
    except ValueError as err:
        raise LookupError(f"--split {lm.split} of run {lm.run_id}: {err}; the probe needs a longer split") from None
    if len(where) < positions:
        stderr(
            f"rnnlab: the split has only {len(where)} target positions with {earliest} tokens before them: "
            "using them all"
        )
    return where


# Context ----------------------------------------------------------------------------------------------------------


def context_probe(run_id: str, split: str = "valid", positions: int | None = None, force: bool = False) -> dict:
    """Perplexity of a recorded run when it sees only the last k tokens before each target (zero state before
    them), every k from 1 to 30 and log-spaced to 202, and when the words beyond distance k of a 300-token window
    are shuffled (k = 1 … 200, log-spaced); against the full-context perplexity (the state carried through the whole
    split, as the run's evaluation does it) on the same positions. The effective context: the k from which on the
    curve stays within 1% (5%) of the full-context perplexity, interpolated in log k, with a 95% bootstrap interval
    over the positions (and the draws themselves, which pair up across runs probed on the same positions); the
    order horizon: the k beyond which shuffling costs less than 1% (5%) against the unshuffled 300-token window."""
    return run_probe("context", run_id, split, positions, force, measure_context)


def measure_context(lm: RecordedLM, positions: int, base: dict, started: float, tmp: str) -> dict:
    where = positions_for(lm, positions, SHUFFLE_WINDOW)
    cfg, clock = lm.cfg, time.perf_counter()
    eos = lm.vocab.index(EOS)
    full = token_losses(lm.net, lm.ids, eos, cfg.eval.batch_size, cfg.train.bptt)[where]
    nll = probes.context_nll(lm.net, lm.ids, where, CONTEXT_KS)
    stderr(
        f"rnnlab: context cut to the last k tokens, k = 1 … {CONTEXT_KS[-1]} ({len(CONTEXT_KS)} k's): "
        f"{time.perf_counter() - clock:.1f} s"
    )
    clock = time.perf_counter()
    shuffled = probes.shuffled_nll(lm.net, lm.ids, where, ORDER_KS, SHUFFLE_WINDOW, SEED)
    window = probes.last_token_nll(lm.net, probes.windows(lm.ids, where, SHUFFLE_WINDOW), lm.ids[where])
    stderr(f"rnnlab: words beyond k shuffled in a {SHUFFLE_WINDOW}-token window: {time.perf_counter() - clock:.1f} s")
    result = {
        **base,
        "positions": len(where),
        "positions_key": positions_key(lm, where),
        "ks": CONTEXT_KS,
        "ppl": [probes.perplexity_of(n) for n in nll],
        "order_ks": ORDER_KS,
        "shuffled_ppl": [probes.perplexity_of(n) for n in shuffled],
        "full_ppl": probes.perplexity_of(full),
        "window": SHUFFLE_WINDOW,
        "window_ppl": probes.perplexity_of(window),
        "bootstrap": {"draws": BOOTSTRAP_DRAWS, "seed": SEED, "level": 0.95},
    }
    excess = probes.bootstrap_excess(nll, full, BOOTSTRAP_DRAWS, SEED)
    for name, tolerance in TOLERANCES.items():
        result[f"k_{name}"], result[f"k_{name}_reached"] = probes.effective_k(
            CONTEXT_KS, result["ppl"], result["full_ppl"], tolerance
        )
        k, reached = probes.crossing(CONTEXT_KS, excess, tolerance)
        draws = [float(x) if r else None for x, r in zip(k.tolist(), reached.tolist())]  # None: not reached
        result[f"k_{name}_draws"] = draws
        result[f"k_{name}_interval"] = list(probes.interval([math.inf if x is None else x for x in draws]))
        result[f"order_k_{name}"], result[f"order_k_{name}_reached"] = probes.effective_k(
            ORDER_KS, result["shuffled_ppl"], result["window_ppl"], tolerance
        )
    result["seconds"] = time.perf_counter() - started
    log_context(lm, result)
    table = pd.concat(
        [
            pd.DataFrame(
                {"curve": "context cut to k", "k": CONTEXT_KS, "ppl": result["ppl"], "nll": nll.mean(1).tolist()}
            ),
            pd.DataFrame(
                {
                    "curve": "beyond k shuffled",
                    "k": ORDER_KS,
                    "ppl": result["shuffled_ppl"],
                    "nll": shuffled.mean(1).tolist(),
                }
            ),
        ]
    )
    record(lm, "context", lm.inputs_key("context", positions), result, table, plots.context_curves, tmp)
    return result


def positions_key(lm: RecordedLM, where: torch.Tensor) -> str:
    """The positions and the tokens at them: two probes with the same key resampled the same positions."""
    return hashlib.sha256(where.numpy().tobytes() + lm.ids[where].numpy().tobytes()).hexdigest()[:16]


def log_context(lm: RecordedLM, result: dict) -> None:
    for k, ppl in zip(result["ks"], result["ppl"]):
        log_metrics(lm.run_id, {"probe_context_ppl": ppl}, step=k)
    for k, shuffled in zip(result["order_ks"], result["shuffled_ppl"]):
        log_metrics(lm.run_id, {"probe_context_shuffled_ppl": shuffled}, step=k)
    summary = {"probe_context_full_ppl": result["full_ppl"], "probe_context_window_ppl": result["window_ppl"]}
    for name in TOLERANCES:
        for prefix in ("k", "order_k"):
            # A k is logged only where one was reached: "200" would read as a measured horizon when the curve never
            # came within the tolerance. The `_reached` flag (1/0) is always logged, so its absence is explained.
            if result[f"{prefix}_{name}_reached"]:
                summary[f"probe_context_{prefix}_{name}"] = result[f"{prefix}_{name}"]
            summary[f"probe_context_{prefix}_{name}_reached"] = float(result[f"{prefix}_{name}_reached"])
        low, high = result[f"k_{name}_interval"]
        summary |= {f"probe_context_k_{name}_low": low, f"probe_context_k_{name}_high": high}
    log_metrics(lm.run_id, {k: v for k, v in summary.items() if math.isfinite(v)}, step=0)


# Gradient flow ----------------------------------------------------------------------------------------------------


def gradient_flow_probe(run_id: str, split: str = "valid", positions: int | None = None, force: bool = False) -> dict:
    """‖∂L_t/∂h_{t−k}‖ against k = 0 … 100 (the whole stack's hidden state: every layer's h concatenated; for an
    LSTM also the cell state's), geometric mean over positions with its 10–90% band, at initialisation (the run's
    seed and settings) and for the trained weights; the per-step rate fitted over k = 1 … 100; σ₁ of each layer's
    recurrent matrix (for an LSTM/GRU the gates' stacked matrix) and its spectral radius (the largest over the
    gates' square blocks); and the controlled check (`spectral_check`) that the maths recovers known rates."""
    return run_probe("gradient_flow", run_id, split, positions, force, measure_gradient_flow)


def measure_gradient_flow(lm: RecordedLM, positions: int, base: dict, started: float, tmp: str) -> dict:
    where = positions_for(lm, positions, BURN_IN + GRADIENT_STEPS + 1)
    result: dict = {
        **base,
        "positions": len(where),
        "ks": list(range(GRADIENT_STEPS + 1)),
        "burn_in": BURN_IN,
        "rate_fit_ks": [1, GRADIENT_STEPS],
    }
    for when, net in (("init", initial_net(lm.cfg, len(lm.vocab))), ("trained", lm.net)):
        clock = time.perf_counter()
        flow = probes.gradient_flow(net, lm.ids, where, GRADIENT_STEPS, BURN_IN)
        result[f"norm_{when}"] = flow["h"]["geomean"]
        result[f"norm_{when}_q10"], result[f"norm_{when}_q90"] = flow["h"]["low"], flow["h"]["high"]
        result[f"rate_{when}"] = flow["h"]["rate"]
        result[f"sigma_{when}"], result[f"radius_{when}"] = flow["sigma"], flow["radius"]
        if "c" in flow:
            result[f"cell_norm_{when}"] = flow["c"]["geomean"]
            result[f"cell_rate_{when}"] = flow["c"]["rate"]
        stderr(
            f"rnnlab: gradient flow, {when}: ×{result[f'rate_{when}']:.3f} per step, σ₁(W_hh) "
            + ", ".join(f"{s:.3f}" for s in flow["sigma"])
            + ", spectral radius "
            + ", ".join(f"{r:.3f}" for r in flow["radius"])
            + f" ({time.perf_counter() - clock:.1f} s)"
        )
    check = spectral_check()
    result["spectral_check"] = {"radii": check["radii"], "rates": check["rates"]}
    stderr(
        "rnnlab: controlled check (linear tanh RNN, orthogonal W_hh scaled to radius r): r "
        + ", ".join(f"{r:g} → ×{rate:.4f}" for r, rate in zip(check["radii"], check["rates"]))
        + " per step"
    )
    result["seconds"] = time.perf_counter() - started
    log_gradient_flow(lm, result)
    columns = {"k": result["ks"]}
    for when in ("init", "trained"):
        for name in (f"norm_{when}", f"norm_{when}_q10", f"norm_{when}_q90", f"cell_norm_{when}"):
            if name in result:
                columns[name] = result[name]
    record(
        lm,
        "gradient_flow",
        lm.inputs_key("gradient_flow", positions),
        result,
        pd.DataFrame(columns),
        plots.gradient_flow_curves,
        tmp,
    )
    return result


def log_gradient_flow(lm: RecordedLM, result: dict) -> None:
    for k in result["ks"]:
        curves = {"probe_gradflow_init": result["norm_init"][k], "probe_gradflow_trained": result["norm_trained"][k]}
        if "cell_norm_init" in result:
            curves |= {
                "probe_gradflow_cell_init": result["cell_norm_init"][k],
                "probe_gradflow_cell_trained": result["cell_norm_trained"][k],
            }
        log_metrics(lm.run_id, curves, step=k)
    summary = {}
    for when in ("init", "trained"):
        summary[f"probe_gradflow_rate_{when}"] = result[f"rate_{when}"]
        summary[f"probe_gradflow_sigma_{when}"] = result[f"sigma_{when}"][0]
        summary |= {f"probe_gradflow_sigma_{when}_l{i + 1}": s for i, s in enumerate(result[f"sigma_{when}"])}
        summary[f"probe_gradflow_radius_{when}"] = result[f"radius_{when}"][0]
        summary |= {f"probe_gradflow_radius_{when}_l{i + 1}": r for i, r in enumerate(result[f"radius_{when}"])}
        if f"cell_rate_{when}" in result:
            summary[f"probe_gradflow_cell_rate_{when}"] = result[f"cell_rate_{when}"]
    log_metrics(lm.run_id, summary, step=0)


def spectral_check(
    radii: tuple[float, ...] = (0.9, 1.0, 1.1), steps: int = 60, hidden: int = 32, positions: int = 8
) -> dict:
    """The controlled check of the gradient-flow probe (models/probes.spectral_check), true by construction: a
    linear-regime tanh RNN with an orthogonal recurrent matrix scaled to each radius r (‖∂L_t/∂h_{t−k}‖ =
    r^k ‖∂L_t/∂h_t‖, so the fitted per-step rates must be the radii), and a non-normal matrix with every eigenvalue
    0.9 and σ₁ above 1 (the gradient grows before it decays), also scaled to σ₁ = 0.95 (it shrinks at every step).
    {"radii", "rates", "ks", "norms": {radius: geometric mean per k}, "non_normal": {...}, "contracted": {...}}."""
    return probes.spectral_check(tuple(radii), steps=steps, hidden=hidden, positions=positions)
