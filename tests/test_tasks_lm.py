"""The language-model wing: a token stream laid out as columns; perplexity is exp(total NLL / total tokens) over the
whole split, with the hidden state carried through it."""

import math

import pytest
import torch

from models.lm import RNNLM, LMSettings
from tasks.lm import lm_columns
from tasks.lm import split_perplexity as perplexity

V, EOS = 20, 0


def hand_nll(net: RNNLM, stream: list[int], previous: int = EOS) -> list[float]:
    """One token at a time, no batching: -log p(token | the tokens before it), starting after `previous`."""
    hidden, out = None, []
    with torch.no_grad():
        for token in stream:
            logits, hidden = net(torch.tensor([[previous]]), hidden)
            out.append(-torch.log_softmax(logits[0, 0], -1)[token].item())
            previous = token
    return out


@pytest.fixture
def net_and_ids():
    torch.manual_seed(3)
    net = RNNLM(V, LMSettings(cell="lstm", layers=2, embedding_size=6, hidden_size=6, init_range=0.5)).eval()
    ids = torch.randint(1, V, (103,))
    ids[::9] = EOS  # lines of 8 words
    return net, ids


def test_perplexity_over_one_stream_equals_the_hand_computation(net_and_ids):
    net, ids = net_and_ids
    result, _ = perplexity(net, ids, EOS, batch_size=1, bptt=7)
    expected = hand_nll(net, ids.tolist())
    assert result.tokens == len(ids) == 103  # every token of the split, none trimmed
    assert result.nll == pytest.approx(sum(expected), rel=1e-6)
    assert result.ppl == pytest.approx(math.exp(sum(expected) / 103), rel=1e-6)


def test_batched_perplexity_is_token_weighted_over_contiguous_columns(net_and_ids):
    net, ids = net_and_ids
    result, _ = perplexity(net, ids, EOS, batch_size=4, bptt=5)
    length = math.ceil(103 / 4)  # columns of 26, 26, 26 and 25 tokens: the last is padded and masked
    per_token = []
    for i in range(4):  # each column is its own context, starting after the token before it
        previous = EOS if i == 0 else ids[i * length - 1].item()
        per_token += hand_nll(net, ids[i * length : (i + 1) * length].tolist(), previous)
    assert result.tokens == 103
    assert result.ppl == pytest.approx(math.exp(sum(per_token) / 103), rel=1e-6)


def test_sentence_table_splits_the_total_at_each_eos(net_and_ids):
    net, ids = net_and_ids
    result, sentences = perplexity(net, ids, EOS, batch_size=2, bptt=4)
    assert sentences["nll"].sum() == pytest.approx(result.nll)
    assert sentences["tokens"].sum() == 103
    # ids[0] is <eos> (a one-token line), then lines of 8 words + <eos>; the last line has no <eos>
    assert sentences["tokens"].tolist() == [1] + [9] * 11 + [3]


def test_columns_keep_every_token_in_order():
    ids = torch.arange(1, 11)
    inputs, targets, mask = lm_columns(ids, eos_id=0, batch_size=3, pad=True)
    assert targets.t().reshape(-1)[:10].tolist() == ids.tolist()
    assert inputs.t().reshape(-1)[:10].tolist() == [0, *range(1, 10)]  # each target's previous token
    assert mask.sum() == 10
    trimmed = lm_columns(ids, eos_id=0, batch_size=3, pad=False)[1]
    assert trimmed.shape == (3, 3)
