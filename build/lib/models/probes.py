"""The maths of the language-model probes (pure torch, no I/O): how much context a trained RNNLM uses, and how the
gradient reaching an earlier hidden state shrinks (or grows) with distance.

Conventions: `ids` is a token stream (1-D); a target position t means the model predicts ids[t] from the tokens
before it, ids[t-k .. t-1] being "the last k tokens". Windows are time-major [k, positions], like the model's input.
Sums of negative log-likelihoods are float64.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from models.lm import RNNLM
from models.settings import LMSettings


def sample_positions(length: int, count: int, earliest: int, seed: int) -> torch.Tensor:
    """`count` distinct target positions in [earliest, length), sorted, drawn with their own generator (so the same
    seed gives the same positions whatever else has used torch's global one); all of them when fewer exist."""
    available = length - earliest
    if available < 1:
        raise ValueError(f"a stream of {length} tokens has no target position with {earliest} tokens before it")
    generator = torch.Generator().manual_seed(seed)
    chosen = torch.randperm(available, generator=generator)[: min(count, available)]
    return (chosen + earliest).sort().values


def windows(ids: torch.Tensor, positions: torch.Tensor, k: int) -> torch.Tensor:
    """The k tokens before each position, in order: [k, positions]."""
    return ids[positions[None, :] - k + torch.arange(k)[:, None]]


def shuffled_windows(
    ids: torch.Tensor, positions: torch.Tensor, length: int, keep: int, generator: torch.Generator
) -> torch.Tensor:
    """The `length` tokens before each position with the words farther than `keep` shuffled among themselves (each
    position its own permutation) and the nearest `keep` left in order (Khandelwal et al. 2018: the far context
    becomes a bag of words)."""
    tokens = windows(ids, positions, length)
    far = length - keep
    if far <= 1:
        return tokens
    order = torch.rand(far, tokens.shape[1], generator=generator).argsort(dim=0)
    return torch.cat([tokens[:far].gather(0, order), tokens[far:]])


@torch.inference_mode()
def last_token_nll(net: RNNLM, tokens: torch.Tensor, targets: torch.Tensor, max_tokens: int = 100_000) -> torch.Tensor:
    """-log p(target | window) per position (float64), each window read from a zero hidden state; batched in chunks
    of about `max_tokens` window tokens. Only the last step is decoded: a [k, P, vocabulary] logit tensor would not
    fit for long windows."""
    net.eval()
    chunk = max(1, max_tokens // max(len(tokens), 1))
    out = []
    for start in range(0, tokens.shape[1], chunk):
        top, _ = net.features(tokens[:, start : start + chunk])
        logits = net.decoder(top[-1])
        out.append(F.cross_entropy(logits.double(), targets[start : start + chunk], reduction="none"))
    return torch.cat(out)


def context_nll(net: RNNLM, ids: torch.Tensor, positions: torch.Tensor, ks: list[int]) -> torch.Tensor:
    """NLL [len(ks), positions] of each target given only its last k tokens (state reset before them)."""
    return torch.stack([last_token_nll(net, windows(ids, positions, k), ids[positions]) for k in ks])


def shuffled_nll(
    net: RNNLM, ids: torch.Tensor, positions: torch.Tensor, ks: list[int], length: int, seed: int
) -> torch.Tensor:
    """NLL [len(ks), positions] given a `length`-token window whose words beyond distance k are shuffled."""
    generator = torch.Generator().manual_seed(seed)
    return torch.stack(
        [last_token_nll(net, shuffled_windows(ids, positions, length, k, generator), ids[positions]) for k in ks]
    )


def perplexity_of(nll: torch.Tensor) -> float:
    """exp of the mean NLL over positions (every position is one token: token-weighted), summed in float64."""
    mean = float(nll.double().mean())
    return math.exp(mean) if mean < math.log(1.7e308) else math.inf


def context_ks(dense_to: int = 30, at_least: int = 200, per_octave: int = 4) -> list[int]:
    """Every integer k from 1 to `dense_to`, then log-spaced (`per_octave` steps per doubling) until one is at least
    `at_least`: 1 … 30, 36, 42, 50, 60, 71, 85, 101, 120, 143, 170, 202. Dense where effective contexts of small
    RNNs lie (a grid of 5, 8, 13 put ×0.6 between neighbours, against claim thresholds of ×0.5 and ×2)."""
    ks, step = list(range(1, dense_to + 1)), 1
    while ks[-1] < at_least:
        k = round(dense_to * 2 ** (step / per_octave))
        step += 1
        if k > ks[-1]:
            ks.append(k)
    return ks


def crossing(ks: list[int], excess: torch.Tensor, tolerance: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Per row of `excess` [..., len(ks)] (perplexity at k over the full-context one, minus 1): the k from which on
    every k tried stays within `tolerance`, interpolated linearly in log k between the last k outside it and the
    next (the curve is close to linear in log k there, and neighbours are a grid step apart); whether it was
    reached. A row never outside gives ks[0]; a row whose last k is still outside gives ks[-1], not reached."""
    count = len(ks)
    outside = excess > tolerance
    last = (outside * torch.arange(1, count + 1)).max(-1).values  # 1 + the last index outside; 0 when none is
    reached = last < count
    i = (last - 1).clamp(0, max(count - 2, 0))
    j = (i + 1).clamp(max=count - 1)
    log_k = torch.tensor(ks, dtype=torch.float64).log()
    high, low = excess.double().gather(-1, i[..., None])[..., 0], excess.double().gather(-1, j[..., None])[..., 0]
    share = ((high - tolerance) / (high - low).clamp_min(1e-300)).clamp(0, 1)
    k = (log_k[i] + share * (log_k[j] - log_k[i])).exp()
    k = torch.where(last == 0, torch.full_like(k, float(ks[0])), k)
    return torch.where(reached, k, torch.full_like(k, float(ks[-1]))), reached


def effective_k(ks: list[int], ppl: list[float], reference: float, tolerance: float) -> tuple[float, bool]:
    """The k from which on every k tried has a perplexity within `tolerance` (0.01 = 1%) of `reference`,
    interpolated in log k (`crossing`; a k where a noisy curve dips in once and climbs out again does not count),
    and whether one was found; when none was, the largest k tried, with False."""
    excess = torch.tensor(ppl, dtype=torch.float64) / reference - 1
    k, reached = crossing(ks, excess, tolerance)
    return float(k), bool(reached)


def bootstrap_excess(nll: torch.Tensor, full: torch.Tensor, draws: int, seed: int) -> torch.Tensor:
    """[draws, K]: perplexity(k) / perplexity(full context) − 1 on `draws` resamples of the positions (with
    replacement, seeded: two runs probed on the same positions get the same resamples, so their k's pair up).
    `nll` [K, P] given the last k tokens, `full` [P] given the whole split."""
    positions = nll.shape[1]
    picks = torch.randint(positions, (draws, positions), generator=torch.Generator().manual_seed(seed))
    counts = torch.zeros(draws, positions, dtype=torch.float64).scatter_add_(
        1, picks, torch.ones(draws, positions, dtype=torch.float64)
    )
    means = counts @ nll.double().T / positions
    return (means - (counts @ full.double() / positions)[:, None]).exp() - 1


def interval(values: list[float], level: float = 0.95) -> tuple[float, float]:
    """The percentile interval of bootstrap draws, as order statistics (a draw may be inf: never reached)."""
    ordered = sorted(values)
    tail = (1 - level) / 2
    return ordered[round(tail * (len(ordered) - 1))], ordered[round((1 - tail) * (len(ordered) - 1))]


# Gradient flow ---------------------------------------------------------------------------------------------------


def state_gradient_norms(
    net: RNNLM, tokens: torch.Tensor, targets: torch.Tensor, burn_in: int
) -> dict[str, torch.Tensor]:
    """‖∂L_t/∂h_{t−k}‖ for k = 0 … K, per position: {"h": [K+1, P]} (and "c" for an LSTM's cell state).

    `tokens` [burn_in + K + 1, P]: the first `burn_in` steps only bring the state to a typical one (no gradient);
    the rest are stepped one time step at a time through the same layers (the same weights as the fused pass), and
    L_t is the NLL of `targets` predicted from the last step. The hidden state at time s is the whole stack's: every
    layer's h concatenated, so its gradient counts each layer's total derivative (the path up through the layers
    above at time s and the path through the recurrence). The layer's returned state, not its output, is passed
    up, so that one tensor carries both paths. For an LSTM, h and the cell state c are separate nodes: "h" is the
    gradient reaching h_{t−k} with c_{t−k} held fixed, "c" the one reaching the additive cell path. Rows are indexed
    by k: row 0 is the last step. Run on a float64 copy of `net` would reach 1e-300 before underflowing; float32
    underflows at ~1e-38, which a vanishing tanh RNN passes within 100 steps.
    """
    net.eval()
    with torch.no_grad():
        hidden = net.features(tokens[:burn_in])[1] if burn_in else [None] * len(net.layers)
    kept: dict[str, list[list[torch.Tensor]]] = {"h": [], "c": []}
    with torch.enable_grad():
        for s in range(burn_in, len(tokens)):
            x = net.drop(net.embedding(tokens[s : s + 1]))
            new_hidden, hs, cs = [], [], []
            for layer, state in zip(net.layers, hidden):
                _, state = layer(x, state)
                h, c = state if isinstance(state, tuple) else (state, None)
                h.retain_grad()
                hs.append(h)
                if c is not None:
                    c.retain_grad()
                    cs.append(c)
                new_hidden.append(state)
                x = net.drop(net.join(h, x))
            hidden = new_hidden
            kept["h"].append(hs)
            if cs:
                kept["c"].append(cs)
        logits = net.decoder(x[0])
        # summed over positions: each position's state feeds only its own loss, so its gradient is that loss's
        F.cross_entropy(logits, targets, reduction="sum").backward()
    norms = {}
    for name, per_step in kept.items():
        if per_step:
            # no gradient reached a tensor the loss does not depend on (the last step's LSTM cell state): zero
            squared = torch.stack(
                [
                    sum(
                        t.grad[0].double().pow(2).sum(-1)
                        if t.grad is not None
                        else torch.zeros(t.shape[1], dtype=torch.float64)
                        for t in layers
                    )
                    for layers in per_step
                ]
            )
            norms[name] = squared.sqrt().flip(0)  # row k = k steps before the last
    return norms


def log_summary(norms: torch.Tensor, low: float = 0.1, high: float = 0.9) -> dict[str, torch.Tensor]:
    """Per row (k): the geometric mean over positions and the `low`/`high` quantiles: norms spread over orders of
    magnitude, where an arithmetic mean would be the largest few alone."""
    logs = norms.double().clamp_min(1e-300).log()
    return {
        "geomean": logs.mean(1).exp(),
        "low": logs.quantile(low, dim=1).exp(),
        "high": logs.quantile(high, dim=1).exp(),
    }


def decay_rate(ks: list[int], norms: list[float]) -> float:
    """exp of the least-squares slope of log norm against k: the factor by which the norm changes per step."""
    k = torch.tensor(ks, dtype=torch.float64)
    y = torch.tensor(norms, dtype=torch.float64).clamp_min(1e-300).log()
    slope = ((k - k.mean()) * (y - y.mean())).sum() / ((k - k.mean()) ** 2).sum()
    return math.exp(float(slope))


def recurrent_sigmas(net: RNNLM) -> list[float]:
    """The largest singular value of each layer's recurrent weight matrix weight_hh_l0: for a GRU or an LSTM the
    gates' matrices stacked ([3H, H] or [4H, H]), as torch stores them. Pascanu et al. (2013): for a tanh RNN
    (|tanh'| ≤ γ = 1) σ₁ < 1 is sufficient for the gradient to vanish."""
    return [float(torch.linalg.matrix_norm(layer.weight_hh_l0.detach().double(), ord=2)) for layer in net.layers]


def recurrent_radii(net: RNNLM) -> list[float]:
    """The spectral radius (largest |eigenvalue|) of each layer's recurrent matrix; for a GRU or an LSTM, the largest
    over its gates' square blocks. The notes' "eigenvalues all less than 1" criterion: a random matrix's σ₁ can be
    twice its spectral radius, and over many steps the radius is what sets the growth of a linear recurrence."""
    out = []
    for layer in net.layers:
        w = layer.weight_hh_l0.detach().double()
        blocks = w.split(w.shape[1])  # [gates × H, H] → gates square blocks
        out.append(max(float(torch.linalg.eigvals(b).abs().max()) for b in blocks))
    return out


def gradient_flow(net: RNNLM, ids: torch.Tensor, positions: torch.Tensor, steps: int, burn_in: int) -> dict:
    """The gradient-flow curve of `net` on the windows before `positions` (each burn_in + steps + 1 tokens long):
    per k = 0 … steps the geometric mean and 10–90% quantiles of ‖∂L_t/∂h_{t−k}‖ (and of the LSTM cell state's),
    the per-step decay rate fitted over k = 1 … steps, and each layer's σ₁ and spectral radius. Computed in float64 on
    a copy."""
    net64 = _float64_copy(net)
    tokens = windows(ids, positions, burn_in + steps + 1)
    norms = state_gradient_norms(net64, tokens, ids[positions], burn_in)
    ks = list(range(steps + 1))
    result: dict = {"ks": ks, "sigma": recurrent_sigmas(net), "radius": recurrent_radii(net)}
    for name, values in norms.items():
        summary = log_summary(values)
        if name == "c":  # the loss reads h_t, not c_t: k = 0 has no cell-state gradient to show (not a vanishing one)
            for v in summary.values():
                v[0] = math.nan
        result[name] = {key: v.tolist() for key, v in summary.items()}
        result[name]["rate"] = decay_rate(ks[1:], summary["geomean"].tolist()[1:])
    return result


def _float64_copy(net: RNNLM) -> RNNLM:
    copy = RNNLM(net.decoder.out_features, net.cfg)
    copy.load_state_dict(net.state_dict())
    return copy.double().eval()


def linear_flow(weight: torch.Tensor, steps: int, positions: int, input_scale: float) -> dict:
    """`gradient_flow` of a one-layer tanh RNNLM with recurrent matrix `weight` (hidden × hidden), no biases and
    inputs so tiny that tanh stays linear (tanh' ≈ 1): then ∂L_t/∂h_{t−k} = (Wᵀ)^k ∂L_t/∂h_t exactly. Draws its
    network and tokens from torch's global generator (seed it first)."""
    hidden, vocab = weight.shape[0], 10
    net = RNNLM(vocab, LMSettings(cell="rnn_tanh", layers=1, embedding_size=hidden, hidden_size=hidden, init_range=0.1))
    with torch.no_grad():
        net.layers[0].weight_hh_l0.copy_(weight)
        net.layers[0].bias_hh_l0.zero_()
        net.layers[0].bias_ih_l0.zero_()
        net.embedding.weight.mul_(input_scale / 0.1)
    ids = torch.randint(vocab, (steps + 1 + positions,))
    return gradient_flow(net, ids, torch.arange(steps + 1, steps + 1 + positions), steps, burn_in=0)


def shifted(eigenvalue: float, shift: float, hidden: int, block: int) -> torch.Tensor:
    """eigenvalue · I plus `shift` on the superdiagonal within blocks of `block` (a strictly upper-triangular part):
    every eigenvalue is `eigenvalue`, but the matrix is not normal and its σ₁ exceeds it (by up to `shift`)."""
    upper = torch.diag(torch.tensor([0.0 if (i + 1) % block == 0 else shift for i in range(hidden - 1)]), 1)
    return eigenvalue * torch.eye(hidden) + upper


def spectral_check(
    radii: tuple[float, ...] = (0.9, 1.0, 1.1),
    steps: int = 60,
    hidden: int = 32,
    positions: int = 8,
    input_scale: float = 1e-6,
    seed: int = 0,
    eigenvalue: float = 0.9,
    shift: float = 0.5,
    block: int = 4,
    contracted_sigma: float = 0.95,
    non_normal_steps: int = 120,
) -> dict:
    """The controlled check of the gradient-flow probe, true by construction (it tests the instrument and the maths,
    not a trained model): a linear-regime tanh RNN (`linear_flow`) whose recurrent matrix is
    - an orthogonal matrix scaled to spectral radius r: the norm is exactly r^k times the last step's, so the fitted
      per-step rates come out as the radii (decay below 1, flat at 1, growth above);
    - `shifted`: every eigenvalue 0.9 but σ₁ above 1 (non-normal): the norm first grows (×14.3 by k = 28
      with the defaults) and only then decays: eigenvalues below 1 do not make the gradient shrink with distance;
    - the same matrix scaled to σ₁ = 0.95: ‖(Wᵀ)^k g‖ ≤ σ₁^k ‖g‖, so it shrinks at every step: σ₁ < 1 suffices."""
    torch.manual_seed(seed)
    out: dict = {"radii": list(radii), "rates": [], "ks": list(range(steps + 1)), "norms": {}}
    for r in radii:
        weight = nn.init.orthogonal_(torch.empty(hidden, hidden)) * r
        flow = linear_flow(weight, steps, positions, input_scale)
        out["rates"].append(flow["h"]["rate"])
        out["norms"][r] = flow["h"]["geomean"]
    weight = shifted(eigenvalue, shift, hidden, block)
    sigma = float(torch.linalg.matrix_norm(weight.double(), ord=2))
    for name, matrix in (("non_normal", weight), ("contracted", weight * (contracted_sigma / sigma))):
        flow = linear_flow(matrix, non_normal_steps, positions, input_scale)
        norms = flow["h"]["geomean"]
        peak = max(range(len(norms)), key=lambda k: norms[k])
        out[name] = {
            "eigenvalue": float(torch.linalg.eigvals(matrix.double()).abs().max()),
            "sigma": flow["sigma"][0],
            "shift": shift * float(matrix[0, 0]) / eigenvalue,
            "block": block,
            "ks": list(range(non_normal_steps + 1)),
            "norms": norms,
            "peak": norms[peak] / norms[0],
            "peak_k": peak,
            "last": norms[-1] / norms[0],
            "largest_step": max(b / a for a, b in zip(norms, norms[1:])),
        }
    return out
