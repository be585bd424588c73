"""The language-model wing: a token stream laid out as columns; perplexity is exp(total NLL / total tokens) over the
whole split, with the hidden state carried through it."""

import math

import pytest
import torch

from models.lm import RNNLM, LMSettings
from tasks.kinds.lm import epoch_order, lm_columns, reorder_sentences, sentence_spans, training_loader
from tasks.kinds.lm import split_perplexity as perplexity

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


# The training order: whole sentences shuffled anew each epoch from (seed, epoch), then laid out as columns.


def sentence_stream(sentences: int = 60, seed: int = 0) -> torch.Tensor:
    """Sentences of 1 to 12 words (ids 1..V-1), each ended by <eos>."""
    generator = torch.Generator().manual_seed(seed)
    lengths = torch.randint(1, 13, (sentences,), generator=generator).tolist()
    return torch.cat(
        [torch.cat([torch.randint(1, V, (n,), generator=generator), torch.tensor([EOS])]) for n in lengths]
    )


def epoch_batches(loader, epoch: int) -> list[tuple[torch.Tensor, ...]]:
    """The batches of one epoch, as Lightning gets them: it calls the sampler's set_epoch first, where it has one."""
    getattr(loader.sampler, "set_epoch", lambda epoch: None)(epoch)
    return [tuple(t.clone() for t in batch) for batch in loader]


def same(a, b) -> bool:
    return len(a) == len(b) and all(torch.equal(x, y) for one, other in zip(a, b) for x, y in zip(one, other))


def sentences_of(stream: list[int]) -> list[tuple[int, ...]]:
    out, current = [], []
    for token in stream:
        current.append(token)
        if token == EOS:
            out.append(tuple(current))
            current = []
    return out + ([tuple(current)] if current else [])


def test_a_seed_orders_the_training_sentences_and_each_epoch_has_its_own_order():
    ids = sentence_stream()
    loader = {seed: training_loader(ids, EOS, batch_size=4, bptt=5, order="shuffled", seed=seed) for seed in (1, 2)}
    again = training_loader(ids, EOS, batch_size=4, bptt=5, order="shuffled", seed=1)
    first = epoch_batches(loader[1], 0)
    assert same(first, epoch_batches(again, 0))  # the same seed: the same batches
    assert not same(first, epoch_batches(loader[2], 0))  # another seed: other batches from the first epoch on
    assert not same(first, epoch_batches(loader[1], 1))  # another epoch: another order
    assert same(first, epoch_batches(loader[1], 0))  # and back: epoch 0's order is a function of (seed, 0) alone
    fixed = epoch_batches(training_loader(ids, EOS, batch_size=4, bptt=5, order="fixed", seed=1), 0)
    assert not same(first, fixed)


@pytest.mark.parametrize("epoch", [0, 1, 5])
def test_a_shuffled_epoch_trains_on_every_sentence_whole_less_only_the_remainder_the_fixed_layout_trims(epoch):
    ids = sentence_stream()
    batches = epoch_batches(training_loader(ids, EOS, batch_size=4, bptt=5, order="shuffled", seed=3), epoch)
    inputs, targets = (torch.cat([batch[i] for batch in batches]) for i in (0, 1))  # [T, B] again
    trained = targets.t().reshape(-1).tolist()  # column by column: the stream the columns were cut from
    _, fixed_targets = lm_columns(ids, EOS, batch_size=4, pad=False)[:2]
    assert len(trained) == fixed_targets.numel() == len(ids) // 4 * 4  # the same number of tokens as the fixed layout
    stream = reorder_sentences(ids, sentence_spans(ids, EOS), epoch_order(3, epoch, len(sentences_of(ids.tolist()))))
    assert trained == stream.tolist()[: len(trained)]  # the trimmed remainder is the stream's last len(ids) % 4 tokens
    assert sorted(sentences_of(stream.tolist())) == sorted(sentences_of(ids.tolist()))  # every sentence, whole, once
    assert stream.tolist() != ids.tolist()
    # each target is predicted from the token before it in the shuffled stream (the first from <eos>)
    assert inputs.t().reshape(-1).tolist() == [EOS, *stream.tolist()[: len(trained) - 1]]


def test_the_fixed_order_gives_the_same_batches_as_before_in_every_epoch():
    ids = sentence_stream()
    loader = training_loader(ids, EOS, batch_size=4, bptt=5, order="fixed", seed=1)
    length = len(ids) // 4  # columns of `length` consecutive tokens, the remainder trimmed, cut every 5 steps
    columns = ids[: 4 * length].view(4, length).t()
    for epoch in (0, 1):
        targets = [batch[1] for batch in epoch_batches(loader, epoch)]
        assert [t.shape[0] for t in targets] == [5] * (length // 5) + ([length % 5] if length % 5 else [])
        assert torch.equal(torch.cat(targets), columns)


def test_sentences_end_at_each_eos_and_a_last_one_without_it_is_kept():
    ids = torch.tensor([5, 6, EOS, EOS, 7, EOS, 8, 9])
    starts, lengths = sentence_spans(ids, EOS)
    assert starts.tolist() == [0, 3, 4, 6] and lengths.tolist() == [3, 1, 2, 2]
    reordered = reorder_sentences(ids, (starts, lengths), torch.tensor([3, 0, 2, 1]))
    assert reordered.tolist() == [8, 9, 5, 6, EOS, 7, EOS, EOS]


def test_the_shuffle_draws_nothing_from_the_generator_that_initialisation_and_dropout_use():
    """Whatever the order, the global generator gives the same numbers afterwards: a seed's initialisation and dropout
    masks are the ones the fixed order had. (Each epoch's iterator of any DataLoader draws one number from it.)"""

    def next_draws(order: str) -> torch.Tensor:
        torch.manual_seed(7)
        loader = training_loader(sentence_stream(), EOS, batch_size=4, bptt=5, order=order, seed=7)
        epoch_batches(loader, 0), epoch_batches(loader, 1)
        return torch.rand(5)

    assert torch.equal(next_draws("shuffled"), next_draws("fixed"))
