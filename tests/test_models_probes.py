"""The probes' maths on tiny constructed models: context windows and their perplexity, shuffling the far words, the
effective-context rule (its grid, its interpolation in log k and its bootstrap interval over positions), and the
gradient reaching earlier hidden states (exactly r^k for a linear recurrence; growth before decay for a non-normal
matrix with eigenvalues below 1)."""

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


def between(k_out: float, k_in: float, share: float) -> float:
    """The k a share of the way from k_out to k_in in log k."""
    return math.exp(math.log(k_out) + share * (math.log(k_in) - math.log(k_out)))


@pytest.mark.parametrize(
    "curve, tolerance, expected",
    [
        ([1.30, 1.10, 1.04, 1.009, 1.0], 0.01, (between(5, 8, 0.03 / 0.031), True)),
        ([1.30, 1.10, 1.04, 1.009, 1.0], 0.05, (between(3, 5, 0.05 / 0.06), True)),
        ([1.30, 1.005, 1.02, 1.0, 1.0], 0.01, (between(5, 8, 0.5), True)),  # a dip in and out again does not count
        ([1.30, 1.20, 1.10, 1.08, 1.06], 0.05, (13, False)),  # never within: the largest k, marked not reached
        ([0.99, 0.98, 1.0, 1.0, 1.0], 0.01, (1, True)),  # below the reference is within it
    ],
)
def test_the_effective_k_is_where_the_curve_stays_within_the_tolerance(curve, tolerance, expected):
    """Interpolated in log k between the last k outside the tolerance and the next one."""
    k, reached = probes.effective_k([1, 3, 5, 8, 13], curve, 1.0, tolerance)
    assert (k, reached) == (pytest.approx(expected[0], rel=1e-12), expected[1])


def test_the_context_grid_is_every_k_to_30_then_log_spaced_to_200():
    ks = probes.context_ks()
    assert ks[:30] == list(range(1, 31)) and ks[-1] >= 200 > ks[-2]
    assert all(1 < b / a <= 2**0.25 + 0.02 for a, b in zip(ks[30:], ks[31:]))  # 4 steps per doubling
    assert ks[29:] == [30, 36, 42, 50, 60, 71, 85, 101, 120, 143, 170, 202]


def test_a_curve_linear_in_log_k_crosses_exactly_where_it_should():
    """excess(k) = 0.5 − 0.1 ln k crosses 5% at ln k = 4.5 (k = 90.0, between the grid's 85 and 101)."""
    ks = probes.context_ks()
    ppl = [1.5 - 0.1 * math.log(k) if k < 150 else 1.0 for k in ks]
    k, reached = probes.effective_k(ks, ppl, 1.0, 0.05)
    assert reached and k == pytest.approx(math.exp(4.5), rel=1e-9)


def sampled_probe(
    ks: list[int], positions: int, generator: torch.Generator, noise: float = 0.02
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-position NLL with the context cut to k, and with the full context: positions of varied difficulty, each
    gaining its own share s ~ Exp(1) of a mean excess 0.3·e^(−k/10) (a position's curve is smooth in k, as a
    model's is), plus a little noise."""
    full = torch.randn(positions, generator=generator, dtype=torch.float64) + 5
    gain = torch.empty(positions, dtype=torch.float64).exponential_(generator=generator)
    excess = torch.tensor([0.3 * math.exp(-k / 10) for k in ks], dtype=torch.float64)
    jitter = noise * torch.randn(len(ks), positions, generator=generator, dtype=torch.float64)
    return full[None, :] + torch.log1p(excess[:, None] * gain[None, :]) + jitter, full


def crossing_of(ks: list[int], nll: torch.Tensor, full: torch.Tensor) -> float:
    return probes.effective_k(ks, [probes.perplexity_of(row) for row in nll], probes.perplexity_of(full), 0.05)[0]


def test_the_bootstrap_interval_over_positions_covers_the_true_crossing():
    """Over 100 constructed probes of 300 positions, the 95% interval of k (over resampled positions) holds the
    crossing of the whole population (200,000 positions) in about 95% of them; each draw is a real resample (the
    draws vary, and the point estimate lies among them)."""
    ks, covered = probes.context_ks(), 0
    generator = torch.Generator().manual_seed(3)
    truth = crossing_of(ks, *sampled_probe(ks, 200_000, generator, noise=0.0))
    for trial in range(100):
        nll, full = sampled_probe(ks, 300, generator)
        k, _ = probes.crossing(ks, probes.bootstrap_excess(nll, full, 400, seed=trial), 0.05)
        low, high = probes.interval(k.tolist())
        covered += low <= truth <= high
    assert 0.88 <= covered / 100 <= 1.0, covered
    assert k.std() > 0.3 and k.min() < crossing_of(ks, nll, full) < k.max()


def test_identical_positions_give_an_interval_of_no_width_and_the_same_seed_the_same_draws():
    ks = [1, 2, 4, 8, 16]
    nll = torch.tensor([[2.0], [1.5], [1.2], [1.01], [1.0]]).expand(5, 50)  # every position the same curve
    excess = probes.bootstrap_excess(nll, torch.ones(50), 200, seed=7)
    k, reached = probes.crossing(ks, excess, 0.05)
    assert reached.all() and torch.allclose(k, k[0].expand_as(k)) and probes.interval(k.tolist())[0] == k[0]
    shifted = probes.bootstrap_excess(nll + 0.5, torch.ones(50) + 0.5, 200, seed=7)
    assert torch.allclose(shifted, excess)  # the same resamples: two runs' draws pair up


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
    leaves = [
        tuple(s.clone().requires_grad_() for s in st) if isinstance(st, tuple) else st.clone().requires_grad_()
        for st in state
    ]
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


def test_eigenvalues_below_1_do_not_make_the_gradient_vanish_but_sigma_below_1_does():
    """The non-normal check: 0.9·I plus a superdiagonal shift has every eigenvalue 0.9 and σ₁ above 1; its gradient
    grows before it decays (the notes' "eigenvalues all less than 1" is not sufficient). Scaled to σ₁ = 0.95 it
    shrinks at every step by at least σ₁ (‖(Wᵀ)^k g‖ ≤ σ₁^k ‖g‖)."""
    weight = probes.shifted(0.9, 0.5, 8, 4)
    assert torch.linalg.eigvals(weight.double()).abs().max() == pytest.approx(0.9)
    assert torch.equal(weight - 0.9 * torch.eye(8), (weight - 0.9 * torch.eye(8)).triu(1))  # strictly upper
    check = probes.spectral_check((0.9,), steps=10, hidden=16, positions=4)
    grows, shrinks = check["non_normal"], check["contracted"]
    assert grows["eigenvalue"] == pytest.approx(0.9, abs=1e-6) and grows["sigma"] > 1.3
    assert grows["peak"] > 10 and 10 < grows["peak_k"] < 60 and grows["last"] < 0.1  # up, then down
    norms = shrinks["norms"]
    assert shrinks["sigma"] == pytest.approx(0.95) and shrinks["eigenvalue"] < 0.9
    assert all(b <= 0.95 * a * (1 + 1e-9) for a, b in zip(norms, norms[1:]))


def test_sigma_and_radius_of_the_recurrent_matrices():
    net = tiny_net("lstm")
    with torch.no_grad():
        net.layers[0].weight_hh_l0.copy_(torch.cat([0.5 * torch.eye(6)] * 3 + [2.0 * torch.eye(6)]))
    assert probes.recurrent_sigmas(net)[0] == pytest.approx(math.sqrt(3 * 0.25 + 4.0))  # the stacked gates
    assert probes.recurrent_radii(net)[0] == pytest.approx(2.0)  # the largest gate block's
