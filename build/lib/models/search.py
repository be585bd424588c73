"""Batched greedy and beam search for `Seq2Seq`. Outputs are token-id lists without BOS/EOS.

Each sentence may produce at most `max_len_ratio × source length + 10` tokens. Beam search ranks finished
hypotheses by log-probability / ((5 + length) / 6) ** length_penalty (GNMT); with beam 1 it is greedy search.
"""

from __future__ import annotations

import torch

from models.seq2seq import PAD, Seq2Seq


def length_limits(lengths: torch.Tensor, max_len_ratio: float) -> torch.Tensor:
    return (lengths.float() * max_len_ratio).long() + 10


def next_logprobs(logits: torch.Tensor, bos: int) -> torch.Tensor:
    """Log-probabilities of the next token; PAD and BOS can never be produced."""
    logp = logits[:, -1].float().log_softmax(-1)
    logp[:, PAD] = float("-inf")
    logp[:, bos] = float("-inf")
    return logp


def reorder(states: list, index: torch.Tensor) -> list:
    return [tuple(t.index_select(1, index) for t in state) for state in states]


@torch.no_grad()
def greedy(
    model: Seq2Seq, src: torch.Tensor, lengths: torch.Tensor, bos: int, eos: int, max_len_ratio: float = 2.0
) -> list[list[int]]:
    memory, states, src_mask = model.encode(src, lengths)
    limits = length_limits(lengths, max_len_ratio).to(src.device)
    prev = torch.full((src.size(0), 1), bos, dtype=torch.long, device=src.device)
    done = torch.zeros(src.size(0), dtype=torch.bool, device=src.device)
    steps = []
    for t in range(int(limits.max())):
        logits, states = model.decoder(prev, states, memory, src_mask)
        token = next_logprobs(logits, bos).argmax(-1).masked_fill(done, PAD)
        steps.append(token)
        done |= (token == eos) | (t + 1 >= limits)
        if done.all():
            break
        prev = token.unsqueeze(1)
    return [strip(row, eos) for row in torch.stack(steps, 1).tolist()]


def strip(tokens: list[int], eos: int) -> list[int]:
    out = []
    for token in tokens:
        if token in (eos, PAD):
            break
        out.append(token)
    return out


@torch.no_grad()
def beam_search(
    model: Seq2Seq,
    src: torch.Tensor,
    lengths: torch.Tensor,
    bos: int,
    eos: int,
    beam: int = 5,
    max_len_ratio: float = 2.0,
    length_penalty: float = 1.0,
) -> list[list[int]]:
    batch, k, device = src.size(0), beam, src.device
    memory, states, src_mask = model.encode(src, lengths)
    flat = torch.arange(batch, device=device).repeat_interleave(k)
    memory, src_mask, states = memory[flat], src_mask[flat], reorder(states, flat)
    limits = length_limits(lengths, max_len_ratio).tolist()
    scores = torch.full((batch, k), float("-inf"), device=device)
    scores[:, 0] = 0.0  # all beams start identical: keep one alive so the first step does not pick k copies
    history = torch.full((batch * k, 0), bos, dtype=torch.long, device=device)
    prev = torch.full((batch * k, 1), bos, dtype=torch.long, device=device)
    finished: list[list[tuple[float, list[int]]]] = [[] for _ in range(batch)]
    done = [False] * batch

    def penalty(length: int) -> float:
        return ((5.0 + length) / 6.0) ** length_penalty

    for t in range(max(limits)):
        logits, states = model.decoder(prev, states, memory, src_mask)
        logp = next_logprobs(logits, bos)
        vocab = logp.size(-1)
        candidates = (scores.view(-1, 1) + logp).view(batch, k * vocab)
        top_scores, top_index = candidates.topk(2 * k, dim=1)  # at most k of them end in EOS
        origin, token = top_index // vocab, top_index % vocab
        is_eos = token == eos
        for b in range(batch):
            if done[b]:
                continue
            for j in range(k):  # an EOS within the best k candidates completes a hypothesis
                if is_eos[b, j] and top_scores[b, j] > float("-inf"):
                    tokens = history[b * k + origin[b, j]].tolist()
                    finished[b].append((float(top_scores[b, j]) / penalty(len(tokens) + 1), tokens))
        continuing = top_scores.masked_fill(is_eos, float("-inf")).topk(k, dim=1).indices
        scores = top_scores.gather(1, continuing)
        origin, token = origin.gather(1, continuing), token.gather(1, continuing)
        source = (torch.arange(batch, device=device).unsqueeze(1) * k + origin).view(-1)
        history = torch.cat([history[source], token.view(-1, 1)], dim=1)
        states = reorder(states, source)
        prev = token.view(-1, 1)
        for b in range(batch):
            if done[b]:
                continue
            if t + 1 >= limits[b]:  # out of length: the live hypotheses are all we get
                for j in range(k):
                    if scores[b, j] > float("-inf"):
                        finished[b].append((float(scores[b, j]) / penalty(t + 1), history[b * k + j].tolist()))
            done[b] = len(finished[b]) >= k or t + 1 >= limits[b]
            if done[b]:
                scores[b] = float("-inf")
        if all(done):
            break
    return [max(hyps, key=lambda h: h[0])[1] for hyps in finished]
