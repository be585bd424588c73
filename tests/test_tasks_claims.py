"""Every claim of conf/studies/lecture.yaml, judged by its real criterion on constructed runs and probe results: each
one can come out supported, not supported and inconclusive (and claim 7 not testable here), and missing data gives
inconclusive with the reason, never an error."""

import math

import pytest

from conftest import REPO
from rnnlab.claims import ClaimsConfig
from rnnlab.config import read_yaml
from tasks.claims import Evidence, evaluate, refusal

LECTURE = ClaimsConfig.model_validate(read_yaml(REPO / "conf" / "studies" / "lecture.yaml"))
CLAIMS = {c.id: c for c in LECTURE.claims}


def run(run_id, seed, outcome="trained", metrics=None, corpus="ptb", **factors):
    return {"run_id": run_id, "variant": ",".join(f"{k}={v}" for k, v in factors.items()), "seed": seed,
            "outcome": outcome, "factors": {KEYS[k]: v for k, v in factors.items()}, "params": {}, "corpus": corpus,
            "metrics": metrics or {}}


KEYS = {"cell": "model.cell", "clip": "train.clip_norm", "lr": "train.lr", "layers": "model.layers",
        "residual": "model.residual", "bi": "model.bidirectional", "attention": "model.attention"}


def verdict(claim_id, ev):
    (result,) = evaluate([CLAIMS[claim_id]], ev)
    return result.verdict


def cells(ks=None, rates=None, far=None):
    """lm_cells: two seeds per cell; the context probe's k_5pct, the gradient-flow rate and norm(100)/norm(1)."""
    ev = Evidence(runs={"lm_cells": [run(f"{c}{s}", s, cell=c) for c in ("rnn_tanh", "gru", "lstm") for s in (1, 2)]})
    for cell, k in (ks or {}).items():
        for s in (1, 2):
            ev.context[f"{cell}{s}"] = {"k_5pct": k, "k_1pct": 2 * k}
    for cell, rate in (rates or {}).items():
        for s in (1, 2):
            ratio = (far or {}).get(cell, rate ** 99)
            ev.gradflow[f"{cell}{s}"] = {"rate_trained": rate, "ks": [1, 10, 100], "norm_trained": [1.0, 0.5, ratio],
                                         "norm_init": [1.0, 0.1, 0.01]}
    return ev


@pytest.mark.parametrize("tanh, lstm, expected", [
    (7, 40, "supported"), (6, 9, "inconclusive"), (20, 60, "inconclusive"), (60, 100, "not supported"),
    (10, 8, "not supported")])
def test_claim_1_effective_context(tanh, lstm, expected):
    found = verdict("context", cells(ks={"rnn_tanh": tanh, "lstm": lstm}))
    assert found.verdict == expected
    assert f"median k {tanh}" in found.reason


def test_claim_1_without_the_probe_or_with_too_few_seeds_is_inconclusive():
    missing = verdict("context", cells())
    assert missing.verdict == "inconclusive" and "no context probe" in missing.reason
    ev = cells(ks={"rnn_tanh": 7, "lstm": 40})
    del ev.context["rnn_tanh2"]
    assert verdict("context", ev).verdict == "inconclusive"


def test_claim_1_reads_a_context_never_reached_in_the_probed_range_as_beyond_it():
    """The context probe gives its largest k (200) with `k_5pct_reached: False` when no k came within 5%: that is no
    measured horizon of 200, and no RNN that conditions ~7 tokens back."""
    ev = cells(ks={"rnn_tanh": 200, "lstm": 200})
    for s in (1, 2):
        ev.context[f"rnn_tanh{s}"]["k_5pct_reached"] = False
    found = verdict("context", ev)
    assert found.verdict == "not supported" and "beyond the probed range" in found.reason


def vanishing(rate, spectral_rates, unclipped_outcomes):
    ev = cells(rates={"rnn_tanh": rate})
    ev.spectral = {"radii": [0.9, 1.0, 1.1], "rates": spectral_rates, "ks": [1, 10], "norms": {}}
    ev.runs["lm_clipping"] = [run(f"c{i}", i, o, {"max_grad_norm": 1e4}, cell="rnn_tanh", clip="null", lr=3.0)
                              for i, o in enumerate(unclipped_outcomes)]
    ev.runs["lm_clipping"].append(run("clipped", 1, "trained", cell="rnn_tanh", clip="0.25", lr=3.0))
    return verdict("vanishing", ev)


def test_claim_2_vanishing_and_exploding_gradients():
    assert vanishing(0.8, [0.9, 1.0, 1.1], ["diverged"] * 3).verdict == "supported"
    refuted = vanishing(1.02, [0.9, 1.0, 1.1], ["diverged"] * 3)
    assert refuted.verdict == "not supported" and "1.02" in refuted.reason
    assert vanishing(0.8, [1.0, 1.0, 1.1], ["diverged"] * 3).verdict == "not supported"  # no decay at radius 0.9
    assert vanishing(0.95, [0.9, 1.0, 1.1], ["diverged"] * 3).verdict == "inconclusive"  # between 0.9 and 1
    unseen = vanishing(0.8, [0.9, 1.0, 1.1], ["trained"] * 3)  # no explosion observed: not refuted either
    assert unseen.verdict == "inconclusive" and "0/3 unclipped runs diverged" in unseen.reason
    assert verdict("vanishing", Evidence()).verdict == "inconclusive"


@pytest.mark.parametrize("far, ks, expected", [
    ({"lstm": 0.5, "rnn_tanh": 1e-5}, {"lstm": 40, "rnn_tanh": 7}, "supported"),
    ({"lstm": 0.5, "rnn_tanh": 0.1}, {"lstm": 40, "rnn_tanh": 7}, "inconclusive"),  # only ×5 the far gradient
    ({"lstm": 1e-6, "rnn_tanh": 1e-5}, {"lstm": 40, "rnn_tanh": 7}, "not supported"),
    ({"lstm": 0.5, "rnn_tanh": 1e-5}, {"lstm": 7, "rnn_tanh": 7}, "not supported")])
def test_claim_3_the_lstm_keeps_its_gradient_and_uses_more_context(far, ks, expected):
    ev = cells(ks=ks, rates={"lstm": 0.99, "rnn_tanh": 0.8}, far=far)
    assert verdict("lstm", ev).verdict == expected
    del ev.gradflow["lstm1"], ev.gradflow["lstm2"]
    assert verdict("lstm", ev).verdict == "inconclusive"


def clipping(unclipped_by_lr, clipped_by_lr):
    runs = []
    for lr, outcomes in unclipped_by_lr.items():
        runs += [run(f"u{lr}{i}", i, o, cell="rnn_tanh", clip="null", lr=lr) for i, o in enumerate(outcomes)]
    for lr, outcomes in clipped_by_lr.items():
        runs += [run(f"k{lr}{i}", i, o, cell="rnn_tanh", clip="0.25", lr=lr) for i, o in enumerate(outcomes)]
    runs += [run("lstm", 1, "diverged", cell="lstm", clip="null", lr=3.0)]  # another cell: not counted
    return verdict("clipping", Evidence(runs={"lm_clipping": runs}))


def test_claim_4_clipping_fixes_exploding_gradients():
    d, t = "diverged", "trained"
    found = clipping({3.0: [d, d, d], 20.0: [d, d, d]}, {3.0: [t, t, t], 20.0: [d, d, d]})
    assert found.verdict == "supported" and "lr=20.0 (3/3 → 3/3 diverged)" in found.reason  # named, not hidden
    assert clipping({3.0: [d, d, d]}, {3.0: [d, d, d]}).verdict == "not supported"
    assert clipping({3.0: [d, d, d]}, {3.0: [d, d, t]}).verdict == "inconclusive"  # only a third fewer
    assert clipping({3.0: [t, t, t]}, {3.0: [t, t, t]}).verdict == "inconclusive"  # nothing exploded
    assert clipping({}, {}).verdict == "inconclusive"


def residual(ppl_without, ppl_with, layer_means_without, layer_means_with):
    runs = []
    for depth in (4, 8):
        for residual_on, ppl, means in ((False, ppl_without, layer_means_without), (True, ppl_with, layer_means_with)):
            for seed in (1, 2):
                metrics = {"valid_ppl": ppl[depth] * (1 + 0.01 * seed)}
                if means:
                    metrics.update({f"grad_norm_layer{i}_mean": v for i, v in enumerate(means[:depth])})
                runs.append(run(f"{depth}{residual_on}{seed}", seed, metrics=metrics, layers=depth,
                                residual=str(residual_on).lower()))
    return verdict("depth", Evidence(runs={"lm_residual": runs}))


def test_claim_5_deep_stacks_and_residual_connections():
    starving, even = [0.01, 0.1, 1, 1, 1, 1, 1, 1], [1.0] * 8
    worse, better = {4: 400.0, 8: 700.0}, {4: 200.0, 8: 205.0}
    assert residual(worse, better, starving, even).verdict == "supported"
    assert residual(better, worse, starving, even).verdict == "not supported"
    assert residual(worse, better, even, starving).verdict == "not supported"  # the lowest layer gets no less
    assert residual({4: 210.0, 8: 700.0}, better, starving, even).verdict == "inconclusive"  # ×1.05 at 4 layers
    old = residual(worse, better, None, None)  # runs older than per-layer logging
    assert old.verdict == "inconclusive" and "per-layer gradient norms are missing" in old.reason


def bidirectional(gains, refused=True, pairs=2):
    runs = []
    for attention, gain in gains.items():
        for seed in range(1, pairs + 1):
            runs.append(run(f"u{attention}{seed}", seed, metrics={"valid_bleu_greedy": 10.0 + seed},
                            bi="false", attention=attention))
            runs.append(run(f"b{attention}{seed}", seed, metrics={"valid_bleu_greedy": 10.0 + seed + gain},
                            bi="true", attention=attention))
    message = "model.bidirectional=true is invalid for a language model" if refused else None
    return verdict("bidirectional", Evidence(runs={"nmt_bidirectional": runs},
                                             refusals={"../runs/ptb_small.yaml": message}))


def test_claim_6_bidirectional_encoders_and_the_refused_language_model():
    assert bidirectional({"none": 3.6, "dot": 0.1}).verdict == "supported"
    assert bidirectional({"none": 3.6, "dot": 0.1}, refused=False).verdict == "not supported"
    assert bidirectional({"none": -0.2, "dot": -0.1}).verdict == "not supported"
    assert bidirectional({"none": 3.6, "dot": -1.5}).verdict == "not supported"  # hurts somewhere
    assert bidirectional({"none": 0.5, "dot": 0.3}).verdict == "inconclusive"
    assert bidirectional({"none": 3.6}, pairs=1).verdict == "inconclusive"
    untried = verdict("bidirectional", Evidence())
    assert untried.verdict == "inconclusive"


def test_the_language_model_config_refuses_a_bidirectional_rnn_with_its_reason():
    message = refusal(REPO / "conf" / "runs" / "ptb_small.yaml")
    assert "bidirectional" in message and "future" in message


def perplexity(best_by_corpus):
    runs = [run(f"{c}", 1, metrics={"valid_ppl": v}, corpus=c, cell="lstm") for c, v in best_by_corpus.items()]
    runs.append(run("tanh", 1, metrics={"valid_ppl": 20.0}, corpus="one_billion_word", cell="rnn_tanh"))  # not an LSTM
    return verdict("perplexity", Evidence(runs={"lm_cells": runs}))


def test_claim_7_is_not_testable_here_and_says_why_with_the_nearest_figure():
    found = perplexity({"ptb": 230.1})
    assert found.verdict == "not testable here"
    assert "230" in found.reason and "ptb" in found.reason
    assert "one_billion_word" in found.reason
    assert perplexity({}).verdict == "not testable here"
    # on a corpus the claim is about, the same criterion would decide
    assert perplexity({"ptb": 230.1, "one_billion_word": 35.0}).verdict == "supported"
    assert perplexity({"one_billion_word": 60.0}).verdict == "not supported"
    assert perplexity({"one_billion_word": 46.0}).verdict == "inconclusive"  # beyond 40 + 10%, within 40 + 20%


def test_every_claim_on_no_data_is_judged_without_an_error():
    for result in evaluate(LECTURE.claims, Evidence()):
        assert result.verdict.verdict in ("inconclusive", "not testable here"), result.claim.id
        assert result.verdict.reason and not math.isnan(len(result.measurement.text))


def test_a_factor_value_none_is_a_value_not_null():
    """attention=none (no attention) is a setting of its own, not a missing value: it keeps its name in the claims."""
    from tasks.claims import setting

    assert setting({"factors": {"model.attention": "none"}, "params": {}}, "model.attention") == "none"
    assert setting({"factors": {}, "params": {"train.clip_norm": "None"}}, "train.clip_norm") == "null"
