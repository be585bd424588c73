"""The probes' maths on tiny constructed models: context windows and their perplexity, shuffling the far words, the
effective-context rule, and the gradient reaching earlier hidden states (exactly r^k for a linear recurrence)."""

import math

import pytest
import torch

from models import probes
from models.lm import RNNLM, LMSettings, token_nll

V = 12


def tiny_net(cell: str, layers: int = 2, seed: int = 0) -> RNNLM:
    torch.manual_seed(seed)
    return RNNLM(V, LMSettings(cell=cell, layers=layers, embedding_size=6, hidden_size=6, init_range=0.5)).eval()


def stream(length: int = 400, seed: int = 1) -> torch.Tensor:
    return torch.randint(V, (length,), generator=torch.Generator().manual_seed(seed))


def test_a_window_is_the_k_tokens_before_each_position_in_order():
    ids = torch.arange(100, 130)
    assert probes.windows(ids, torch.tensor([10, 25]), 3).t().tolist() == [[107, 108, 109], [122, 123, 124]]


def test_positions_are_seeded_distinct_and_leave_room_for_the_window():
    first = probes.sample_positions(1000, 50, earliest=300, seed=14)
    torch.manual_seed(99)  # the global generator does not matter
    assert first.tolist() == probes.sample_positions(1000, 50, earliest=300, seed=14).tolist()
    assert len(set(first.tolist())) == 50 and first.min() >= 300 and first.max() < 1000
    assert len(probes.sample_positions(310, 50, earliest=300, seed=14)) == 10  # all there are
    with pytest.raises(ValueError, match="no target position with 300 tokens before it"):
        probes.sample_positions(300, 5, earliest=300, seed=1)


def test_the_last_token_nll_of_a_window_is_the_models_own_from_a_zero_state():
    net, ids = tiny_net("lstm"), stream()
    positions = torch.tensor([50, 80, 333])
    tokens = probes.windows(ids, positions, 20)
    expected, _ = token_nll(net, tokens, torch.cat([tokens[1:], ids[positions][None]]), None)  # decodes every step
    got = probes.last_token_nll(net, tokens, ids[positions], max_tokens=25)  # one position per chunk
    assert got.dtype == torch.float64
    assert got.tolist() == pytest.approx(expected[-1].tolist(), rel=1e-5)


def test_a_model_that_ignores_context_has_a_flat_context_curve():
    """No recurrence (W_hh = 0): the prediction depends on the last token only, so every k gives the same NLL."""
    net, ids = tiny_net("rnn_tanh"), stream()
    with torch.no_grad():
        for layer in net.layers:
            layer.weight_hh_l0.zero_()
    positions = probes.sample_positions(len(ids), 30, earliest=200, seed=0)
    nll = probes.context_nll(net, ids, positions, [1, 2, 5, 50, 200])
    assert torch.allclose(nll, nll[0].expand_as(nll), atol=1e-6)
    ppl = [probes.perplexity_of(row) for row in nll]
    assert probes.effective_k([1, 2, 5, 50, 200], ppl, ppl[0], 0.01) == (1, True)


def test_a_model_with_memory_does_use_its_context():
    net, ids = tiny_net("lstm"), stream()
    positions = probes.sample_positions(len(ids), 30, earliest=200, seed=0)
    nll = probes.context_nll(net, ids, positions, [1, 200])
    assert not torch.allclose(nll[0], nll[1], atol=1e-4)


def test_shuffling_moves_only_the_words_beyond_k_and_keeps_them():
    ids, positions = torch.arange(1000), torch.tensor([400, 700])
    gen = torch.Generator().manual_seed(0)
    plain = probes.windows(ids, positions, 300)
    shuffled = probes.shuffled_windows(ids, positions, 300, keep=20, generator=gen)
    assert torch.equal(shuffled[-20:], plain[-20:])  # the nearest 20 in order
    assert torch.equal(shuffled[:280].sort(0).values, plain[:280])  # the rest: the same words (ids here are sorted)
    assert not torch.equal(shuffled[:280], plain[:280])
    for keep in (299, 300, 400):  # nothing (or one word) left to shuffle beyond k
        assert torch.equal(probes.shuffled_windows(ids, positions, 300, keep, gen), plain)


def test_shuffling_beyond_the_window_changes_no_nll():
    net, ids = tiny_net("gru"), stream()
    positions = probes.sample_positions(len(ids), 20, earliest=100, seed=0)
    window = probes.last_token_nll(net, probes.windows(ids, positions, 100), ids[positions])
    shuffled = probes.shuffled_nll(net, ids, positions, [5, 100], length=100, seed=0)
    assert torch.equal(shuffled[1], window) and not torch.equal(shuffled[0], window)


@pytest.mark.parametrize("curve, tolerance, expected", [
    ([1.30, 1.10, 1.04, 1.009, 1.0], 0.01, (8, True)),
    ([1.30, 1.10, 1.04, 1.009, 1.0], 0.05, (5, True)),
    ([1.30, 1.005, 1.02, 1.0, 1.0], 0.01, (8, True)),  # a dip in and out again does not count
    ([1.30, 1.20, 1.10, 1.08, 1.06], 0.05, (13, False)),  # never within: the largest k, marked not reached
    ([0.99, 0.98, 1.0, 1.0, 1.0], 0.01, (1, True)),  # below the reference is within it
])
def test_the_effective_k_is_where_the_curve_stays_within_the_tolerance(curve, tolerance, expected):
    assert probes.effective_k([1, 3, 5, 8, 13], curve, 1.0, tolerance) == expected


def test_perplexity_is_the_exp_of_the_mean_nll_in_float64():
    assert probes.perplexity_of(torch.tensor([1.0, 2.0, 3.0])) == pytest.approx(math.exp(2.0))
    assert probes.perplexity_of(torch.tensor([800.0])) == math.inf


@pytest.mark.parametrize("cell", ["rnn_tanh", "gru", "lstm"])
def test_stepping_one_time_step_gives_the_fused_layers_gradient(cell):
    """One layer: ‖∂L_t/∂h_{t−K}‖ from the stepped stack equals autograd's through the fused layer, from a leaf
    state at t−K."""
    net, ids = tiny_net(cell, layers=1).double(), stream()
    positions, steps, burn = torch.tensor([150, 260, 390]), 12, 5
    tokens = probes.windows(ids, positions, burn + steps + 1)
    norms = probes.state_gradient_norms(net, tokens, ids[positions], burn)
    assert norms["h"].shape == (steps + 1, 3) and ("c" in norms) == (cell == "lstm")
    with torch.no_grad():
        _, state = net.features(tokens[: burn + 1])  # the state after step t−K
    leaves = [tuple(s.clone().requires_grad_() for s in st) if isinstance(st, tuple) else st.clone().requires_grad_()
              for st in state]
    top, _ = net.features(tokens[burn + 1 :], leaves)
    torch.nn.functional.cross_entropy(net.decoder(top[-1]), ids[positions], reduction="sum").backward()
    h = leaves[0][0] if cell == "lstm" else leaves[0]
    assert norms["h"][steps].tolist() == pytest.approx(h.grad[0].norm(dim=-1).tolist(), rel=1e-9)
    if cell == "lstm":
        assert norms["c"][steps].tolist() == pytest.approx(leaves[0][1].grad[0].norm(dim=-1).tolist(), rel=1e-9)


def test_the_rate_fit_recovers_an_exponential():
    ks = list(range(1, 50))
    assert probes.decay_rate(ks, [3.0 * 0.8**k for k in ks]) == pytest.approx(0.8, rel=1e-12)


def test_a_linear_recurrence_decays_stays_flat_or_grows_with_its_spectral_radius():
    """The controlled check: orthogonal W_hh scaled to r, tanh in its linear range: the norm is r^k × the last
    step's, so the fitted per-step rates are the radii."""
    check = probes.spectral_check((0.9, 1.0, 1.1), steps=40, hidden=16, positions=4)
    assert check["rates"] == pytest.approx([0.9, 1.0, 1.1], abs=1e-4)
    for r in (0.9, 1.0, 1.1):
        norms = check["norms"][r]
        assert [n / norms[0] for n in norms] == pytest.approx([r**k for k in check["ks"]], rel=1e-4)


def test_sigma_and_radius_of_the_recurrent_matrices():
    net = tiny_net("lstm")
    with torch.no_grad():
        net.layers[0].weight_hh_l0.copy_(torch.cat([0.5 * torch.eye(6)] * 3 + [2.0 * torch.eye(6)]))
    assert probes.recurrent_sigmas(net)[0] == pytest.approx(math.sqrt(3 * 0.25 + 4.0))  # the stacked gates
    assert probes.recurrent_radii(net)[0] == pytest.approx(2.0)  # the largest gate block's
