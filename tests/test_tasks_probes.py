"""The probes on a recorded run, end to end: a tiny real LSTM is trained, then `rnnlab probe` measures it, logs the
curves (step = k), the summaries and probes/ artifacts to the run, and reuses them when asked again."""

import json
import signal

import pytest
import torch

from rnnlab.cli import main as cli
from rnnlab.runtime.processes import Interrupts
from tasks.claims import probes
from tasks.record import tracking


@pytest.fixture(autouse=True)
def one_command_per_process():
    """`main` installs signal handlers for its command: put them back, as a new process would start without them."""
    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    yield
    Interrupts.received = None
    for sig, handler in handlers.items():
        signal.signal(sig, handler)


@pytest.fixture(scope="module")
def lstm_run(prefect_server, tiny_corpus):
    """A tiny LSTM trained for 2 epochs on the tiny PTB cut: valid ppl well under the vocabulary's, which is all the
    end-to-end checks need."""
    from conftest import RUN_CONFIG, TINY

    from flows.train import train_flow
    from rnnlab.schemas import config

    cfg = config.load(RUN_CONFIG, [f"data.corpus={tiny_corpus}", "experiment=probes", *TINY])
    result = train_flow(cfg)
    assert result["outcome"] == "trained"
    return result["run_id"]


def probe(capsys, *argv: str) -> tuple[int, dict | None, str]:
    code = cli.main(["probe", *argv, "--json"])
    out, err = capsys.readouterr()
    return code, json.loads(out.splitlines()[-1]) if code == 0 else None, err


def test_the_initial_network_is_the_one_training_started_from(tiny_cfg):
    from models.lm import LanguageModel
    from tasks.kinds.lm import lm_settings
    from tasks.training.fitting import seed_and_threads
    from tasks.training.model_settings import as_dict, optim_settings

    cfg = tiny_cfg("seed=7")
    seed_and_threads(cfg)  # what tasks/lm.fit_lm does before it builds the module
    started = LanguageModel(50, as_dict(lm_settings(cfg)), as_dict(optim_settings(cfg))).net.state_dict()
    torch.manual_seed(0)  # whatever ran before
    rebuilt = probes.initial_net(cfg, 50).state_dict()
    assert started.keys() == rebuilt.keys() and all(torch.equal(started[k], rebuilt[k]) for k in started)


def test_the_context_probe_logs_its_curves_and_artifacts_and_is_reused(lstm_run, capsys, monkeypatch):
    code, result, err = probe(capsys, lstm_run, "context", "--positions", "60")
    assert code == 0, err
    assert not result["reused"] and result["positions"] == 60 and result["ks"] == probes.CONTEXT_KS
    assert "computed in" in err
    ppl, full = result["ppl"], result["full_ppl"]
    assert 1 < full < 10_000  # the vocabulary of the tiny cut is ~2,000 words: a uniform guess is worse
    # The tiny run has learnt little beyond word frequencies (its valid ppl barely moves), so no claim is made on how
    # much context it uses (tests/test_models_probes.py checks that on constructed models); what must hold: 200
    # tokens from a zero state come close to the whole split carried, and the far end of the curve has settled.
    assert ppl[-1] == pytest.approx(full, rel=0.1)
    assert ppl[-1] == pytest.approx(ppl[-2], rel=0.01)
    assert result["ks"][:30] == list(range(1, 31)) and result["order_ks"] == probes.ORDER_KS
    for level in ("k_1pct", "k_5pct"):  # interpolated in log k, with a 95% interval over resampled positions
        k, (low, high), draws = result[level], result[f"{level}_interval"], result[f"{level}_draws"]
        assert 1 <= k <= probes.CONTEXT_KS[-1] and isinstance(result[f"{level}_reached"], bool)
        assert len(draws) == probes.BOOTSTRAP_DRAWS and low <= high
        if result[f"{level}_reached"]:
            assert low <= k <= high
    assert result["k_1pct"] >= result["k_5pct"]  # the stricter tolerance is reached later
    assert result["shuffled_ppl"][-1] == pytest.approx(result["window_ppl"], rel=0.05)  # 100 far words shuffled

    history = {
        key: tracking.metric_history(lstm_run, key) for key in ("probe_context_ppl", "probe_context_shuffled_ppl")
    }
    assert [step for step, _ in history["probe_context_ppl"]] == probes.CONTEXT_KS  # step = k
    assert [step for step, _ in history["probe_context_shuffled_ppl"]] == probes.ORDER_KS
    assert [v for _, v in history["probe_context_ppl"]] == pytest.approx(ppl)
    metrics = tracking.client().get_run(lstm_run).data.metrics
    assert metrics["probe_context_full_ppl"] == pytest.approx(full)
    for name in ("k_1pct", "k_5pct", "order_k_1pct", "order_k_5pct"):
        reached = result[f"{name}_reached"]
        assert metrics[f"probe_context_{name}_reached"] == float(reached)
        assert (f"probe_context_{name}" in metrics) == reached  # no k is logged for a tolerance never reached
    artifacts = {a.path for a in tracking.client().list_artifacts(lstm_run, "probes")}
    assert {"probes/context.csv", "probes/context.png", "probes/context.json"} <= artifacts
    assert metrics["probe_context_k_5pct_low"] == pytest.approx(result["k_5pct_interval"][0])

    def never(*args, **kwargs):
        raise AssertionError("recomputed")

    monkeypatch.setattr(probes.probes, "context_nll", never)
    code, again, err = probe(capsys, lstm_run, "context", "--positions", "60")
    assert code == 0 and again["reused"] and "reused" in err
    assert again["ppl"] == result["ppl"] and again["k_1pct"] == result["k_1pct"]
    assert len(tracking.metric_history(lstm_run, "probe_context_ppl")) == len(probes.CONTEXT_KS)  # nothing re-logged


def test_the_gradient_flow_probe_at_init_and_trained(lstm_run, capsys):
    code, result, err = probe(capsys, lstm_run, "gradient-flow", "--positions", "16")
    assert code == 0, err
    assert result["cell"] == "lstm" and result["ks"] == list(range(probes.GRADIENT_STEPS + 1))
    for when in ("init", "trained"):
        norms = result[f"norm_{when}"]
        assert all(n > 0 for n in norms) and 0 < result[f"rate_{when}"] < 2
        assert all(lo <= n <= hi for lo, n, hi in zip(result[f"norm_{when}_q10"], norms, result[f"norm_{when}_q90"]))
        assert len(result[f"sigma_{when}"]) == 2  # one per layer
    assert result["sigma_init"] != result["sigma_trained"]  # the weights moved
    assert result["spectral_check"]["rates"] == pytest.approx([0.9, 1.0, 1.1], abs=1e-3)
    steps = tracking.metric_history(lstm_run, "probe_gradflow_trained")
    assert [s for s, _ in steps] == result["ks"] and [v for _, v in steps] == pytest.approx(result["norm_trained"])
    metrics = tracking.client().get_run(lstm_run).data.metrics
    assert metrics["probe_gradflow_sigma_trained"] == pytest.approx(result["sigma_trained"][0])
    assert metrics["probe_gradflow_sigma_init_l2"] == pytest.approx(result["sigma_init"][1])
    assert metrics["probe_gradflow_rate_init"] == pytest.approx(result["rate_init"])
    artifacts = {a.path for a in tracking.client().list_artifacts(lstm_run, "probes")}
    assert {"probes/gradient_flow.csv", "probes/gradient_flow.png"} <= artifacts
    code, again, err = probe(capsys, lstm_run, "gradient-flow", "--positions", "16")
    assert again["reused"] and again["rate_trained"] == result["rate_trained"]


def test_the_spectral_check_is_citable():
    check = probes.spectral_check()
    assert check["radii"] == [0.9, 1.0, 1.1] and check["rates"] == pytest.approx([0.9, 1.0, 1.1], abs=1e-3)
    assert check["norms"][1.1][-1] > check["norms"][1.0][-1] > check["norms"][0.9][-1]
    grows, shrinks = check["non_normal"], check["contracted"]  # the figures conf/studies/lecture.yaml cites
    assert grows["eigenvalue"] == pytest.approx(0.9, abs=1e-6) and grows["sigma"] == pytest.approx(1.33, abs=0.01)
    assert grows["peak"] == pytest.approx(14.3, abs=0.1) and grows["peak_k"] == 28
    assert shrinks["sigma"] == pytest.approx(0.95) and shrinks["largest_step"] < 0.95


@pytest.mark.parametrize(
    "argv, message",
    [
        (["nosuchrun", "context"], "no run 'nosuchrun'"),
        (["{nmt}", "gradient-flow"], "run {nmt} is a nmt run: the probes measure language models"),
        (["{failed}", "context"], "run {failed} is FAILED: it has no checkpoint to probe"),
        (["{lm}", "context", "--split", "dev"], "--split dev: the run's corpus"),
    ],
)
def test_a_probe_of_the_wrong_run_or_split_is_one_line_and_exit_2(argv, message, capsys, lstm_run):
    from conftest import REPO

    from rnnlab.schemas import config

    nmt = tracking.open_run("probes-bad", "nmt", {}, {})
    tracking.log_text(nmt, config.load(REPO / "conf" / "runs" / "multi30k_deen.yaml", []).to_yaml(), "config.yaml")
    tracking.close_run(nmt)
    failed = tracking.open_run("probes-bad", "failed", {}, {})
    tracking.close_run(failed, "FAILED")
    names = {"nmt": nmt, "failed": failed, "lm": lstm_run}
    code = cli.main(["probe", *(a.format(**names) for a in argv)])
    out, err = capsys.readouterr()
    assert code == 2 and out == ""
    assert err.startswith("rnnlab: error: ") and message.format(**names) in err and len(err.strip().splitlines()) == 1
