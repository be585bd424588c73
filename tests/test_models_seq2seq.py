"""Encoder–decoder parts: shapes per attention kind, padding invariance, search. No I/O."""

import pytest
import torch

from models.search import beam_search, greedy
from models.seq2seq import PAD, Seq2Seq, Seq2SeqShape, sequence_nll

BOS, EOS, V = 1, 2, 30


def model(**kw) -> Seq2Seq:
    torch.manual_seed(0)
    shape = Seq2SeqShape(src_vocab=V, tgt_vocab=V, embedding_size=8, hidden_size=12, **{"layers": 2, **kw})
    net = Seq2Seq(shape).eval()
    with torch.no_grad():  # sharper outputs, and an EOS likely enough that hypotheses end at different steps
        torch.manual_seed(5)
        torch.nn.init.normal_(net.decoder.out.weight, std=1.0)
        net.decoder.out.bias.zero_()
        net.decoder.out.bias[EOS] = 0.5
    return net


def batch(*sentences: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    lengths = torch.tensor([len(s) for s in sentences])
    src = torch.full((len(sentences), int(lengths.max())), PAD)
    for i, s in enumerate(sentences):
        src[i, : len(s)] = torch.tensor(s)
    return src, lengths


@pytest.mark.parametrize("attention", ["none", "dot", "general", "additive"])
@pytest.mark.parametrize("bidirectional", [False, True])
def test_teacher_forced_logits_have_one_row_per_target_position(attention, bidirectional):
    net = model(attention=attention, bidirectional=bidirectional, residual=True)
    src, lengths = batch([5, 6, 7, 8], [9, 10])
    prev = torch.tensor([[BOS, 3, 4], [BOS, 5, PAD]])
    assert net(src, lengths, prev).shape == (2, 3, V)


@pytest.mark.parametrize("attention", ["none", "dot", "general", "additive"])
def test_more_padding_in_the_batch_does_not_change_a_sentence(attention):
    net = model(attention=attention, bidirectional=True)
    alone_src, alone_len = batch([5, 6, 7])
    padded_src, padded_len = batch([5, 6, 7], [8, 9, 10, 11, 12, 13, 14, 15])
    prev = torch.tensor([[BOS, 3, 4]])
    alone = net(alone_src, alone_len, prev)
    padded = net(padded_src, padded_len, torch.cat([prev, prev]))[:1]
    torch.testing.assert_close(alone, padded)
    assert greedy(net, alone_src, alone_len, BOS, EOS) == greedy(net, padded_src, padded_len, BOS, EOS)[:1]
    assert (
        beam_search(net, alone_src, alone_len, BOS, EOS, beam=3)
        == beam_search(net, padded_src, padded_len, BOS, EOS, beam=3)[:1]
    )


def test_beam_of_one_is_exactly_greedy():
    net = model(attention="general")
    torch.manual_seed(1)
    sentences = [torch.randint(3, V, (n,)).tolist() for n in (3, 9, 5, 1, 7, 4)]
    src, lengths = batch(*sentences)
    greedy_out = greedy(net, src, lengths, BOS, EOS)
    assert len({len(h) for h in greedy_out}) > 1  # hypotheses end at different steps
    assert beam_search(net, src, lengths, BOS, EOS, beam=1) == greedy_out


def test_output_length_is_bounded_by_the_ratio():
    net = model()
    with torch.no_grad():
        net.decoder.out.bias[EOS] -= 100.0  # never stop on its own
    src, lengths = batch([5, 6], [7, 8, 9, 10])
    for out in (
        greedy(net, src, lengths, BOS, EOS, max_len_ratio=1.5),
        beam_search(net, src, lengths, BOS, EOS, beam=3, max_len_ratio=1.5),
    ):
        assert [len(h) for h in out] == [13, 16]  # 1.5 × length + 10


@torch.no_grad()
def sequence_logprob(net, src, lengths, tokens):
    prev = torch.tensor([[BOS, *tokens]])
    logp = net(src, lengths, prev).log_softmax(-1)[0]
    return float(sum(logp[i, t] for i, t in enumerate([*tokens, EOS])))


def test_wider_beam_finds_a_translation_at_least_as_likely_as_greedy_without_length_penalty():
    net = model(attention="dot")
    for seed in range(5):
        torch.manual_seed(seed)
        src, lengths = batch(torch.randint(3, V, (6,)).tolist())
        g = greedy(net, src, lengths, BOS, EOS)[0]
        b = beam_search(net, src, lengths, BOS, EOS, beam=8, length_penalty=0.0)[0]
        assert sequence_logprob(net, src, lengths, b) >= sequence_logprob(net, src, lengths, g) - 1e-5


def test_loss_ignores_padding_targets():
    logits = torch.randn(2, 3, V)
    targets = torch.tensor([[3, 4, EOS], [5, EOS, PAD]])
    loss, count = sequence_nll(logits, targets)
    assert count == 5
    expected = sum(
        -logits[b, t].log_softmax(-1)[targets[b, t]] for b in range(2) for t in range(3) if targets[b, t] != PAD
    )
    torch.testing.assert_close(loss, expected)


def test_odd_hidden_size_with_bidirectional_encoder_is_explained():
    with pytest.raises(ValueError, match="must be even for a bidirectional encoder"):
        Seq2Seq(Seq2SeqShape(src_vocab=V, tgt_vocab=V, hidden_size=7, bidirectional=True))
