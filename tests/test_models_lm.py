"""The recurrent language model: cells, stacking, residual skips, tying, carried state. No I/O."""

import pytest
import torch

from models.lm import RNNLM, LMSettings, detach, token_nll

V = 50


def model(**kw) -> RNNLM:
    torch.manual_seed(0)
    return RNNLM(V, LMSettings(**{"embedding_size": 8, "hidden_size": 8, "layers": 2, **kw})).eval()


@pytest.mark.parametrize("cell", ["rnn_tanh", "lstm", "gru"])
def test_each_cell_maps_tokens_to_next_token_logits_and_one_state_per_layer(cell):
    net = model(cell=cell, layers=3)
    logits, hidden = net(torch.randint(V, (7, 4)))
    assert logits.shape == (7, 4, V)
    assert len(hidden) == 3
    state = hidden[0][0] if cell == "lstm" else hidden[0]
    assert state.shape == (1, 4, 8)
    assert isinstance(net.layers[0], {"rnn_tanh": torch.nn.RNN, "lstm": torch.nn.LSTM, "gru": torch.nn.GRU}[cell])


def test_weights_start_uniform_within_init_range():
    net = model(init_range=0.05)
    assert all(p.abs().max() <= 0.05 for p in net.parameters())


def test_residual_connection_adds_a_layers_input_to_its_output():
    net = model(cell="rnn_tanh", residual=True)
    for p in net.layers[1].parameters():
        torch.nn.init.zeros_(p)  # a tanh layer with zero weights outputs exactly 0
    tokens = torch.randint(V, (5, 2))
    logits, _ = net(tokens)
    embedded = net.embedding(tokens)
    below = net.layers[0](embedded)[0] + embedded  # widths match, so layer 0 has a skip too
    torch.testing.assert_close(logits, net.decoder(below))
    plain = model(cell="rnn_tanh", residual=False)
    plain.load_state_dict(net.state_dict())
    assert torch.allclose(plain(tokens)[0], net.decoder(torch.zeros_like(below)))


def test_tied_embeddings_share_one_matrix():
    tied, untied = model(tied=True), model(tied=False)
    assert tied.decoder.weight is tied.embedding.weight

    def count(m):
        return sum(p.numel() for p in m.parameters())

    assert count(untied) - count(tied) == V * 8


def test_carrying_the_state_across_segments_equals_one_pass_over_the_whole_sequence():
    net = model(cell="lstm")
    tokens = torch.randint(V, (12, 3))
    whole, _ = net(tokens)
    first, hidden = net(tokens[:5])
    second, _ = net(tokens[5:], detach(hidden))
    torch.testing.assert_close(torch.cat([first, second]), whole)


def test_detached_state_stops_gradients_at_the_segment_boundary():
    net = model(cell="gru").train()
    _, hidden = net(torch.randint(V, (4, 2)))
    assert hidden[0].requires_grad
    assert not any(h.requires_grad for h in detach(hidden))


def test_token_nll_is_cross_entropy_of_each_target():
    net = model()
    inputs, targets = torch.randint(V, (6, 2)), torch.randint(V, (6, 2))
    nll, _ = token_nll(net, inputs, targets, None)
    logp = torch.log_softmax(net(inputs)[0], -1)
    torch.testing.assert_close(nll, -logp.gather(-1, targets.unsqueeze(-1)).squeeze(-1))
