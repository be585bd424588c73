"""LSTM encoder–decoder with optional bidirectional encoder, residual stacks and attention (Luong style:
the top decoder state attends over the encoder outputs, then a combined layer predicts the next token).

Pure torch: batch-first tensors, padding id 0, no I/O. Padding is masked everywhere: packed sequences in the
encoder, a source mask in attention, ignored targets in the loss.
"""

from __future__ import annotations

from typing import Any

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from models import metrics, optim
from models.settings import Attention, Seq2SeqShape

PAD = 0


def run_stack(
    layers: nn.ModuleList,
    x: torch.Tensor,
    lengths: torch.Tensor | None,
    states: list | None,
    residual: bool,
    drop: nn.Dropout,
) -> tuple[torch.Tensor, list]:
    """Run one-layer LSTMs in turn (packed when lengths are given), with identity skips where widths agree."""
    new_states = []
    for i, layer in enumerate(layers):
        state = None if states is None else states[i]
        if lengths is not None:
            packed = pack_padded_sequence(x, lengths.cpu(), batch_first=True, enforce_sorted=False)
            out, state = layer(packed, state)
            out, _ = pad_packed_sequence(out, batch_first=True, total_length=x.shape[1])
        else:
            out, state = layer(x, state)
        new_states.append(state)
        x = drop(out + x if residual and out.shape == x.shape else out)
    return x, new_states


class Encoder(nn.Module):
    def __init__(self, shape: Seq2SeqShape):
        super().__init__()
        directions = 2 if shape.bidirectional else 1
        width = shape.hidden_size // directions  # outputs are hidden_size wide either way
        self.embedding = nn.Embedding(shape.src_vocab, shape.embedding_size, padding_idx=PAD)
        sizes = [shape.embedding_size] + [shape.hidden_size] * shape.layers
        self.layers = nn.ModuleList(
            nn.LSTM(sizes[i], width, batch_first=True, bidirectional=shape.bidirectional) for i in range(shape.layers)
        )
        self.residual = shape.residual
        self.drop = nn.Dropout(shape.dropout) if shape.dropout > 0 else nn.Identity()

    def forward(self, src: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, list]:
        """src [B, S] → outputs [B, S, H] and per layer final (h, c), each [B, H] (directions concatenated)."""
        outputs, states = run_stack(
            self.layers, self.drop(self.embedding(src)), lengths, None, self.residual, self.drop
        )
        finals = [tuple(torch.cat(list(s), dim=-1) for s in state) for state in states]  # [dirs, B, w] → [B, dirs*w]
        return outputs, finals


class Attend(nn.Module):
    """score(query, key): dot (qᵀk), general (qᵀWk, Luong) or additive (vᵀ tanh(Wq + Uk), Bahdanau)."""

    def __init__(self, kind: Attention, size: int):
        super().__init__()
        self.kind = kind
        if kind == "general":
            self.w = nn.Linear(size, size, bias=False)
        elif kind == "additive":
            self.wq, self.wk = nn.Linear(size, size, bias=False), nn.Linear(size, size)
            self.v = nn.Linear(size, 1, bias=False)

    def forward(self, query: torch.Tensor, keys: torch.Tensor, src_mask: torch.Tensor) -> torch.Tensor:
        """query [B, T, H], keys [B, S, H], src_mask [B, S] (True = real token) → weights [B, T, S]."""
        if self.kind == "dot":
            scores = query @ keys.transpose(1, 2)
        elif self.kind == "general":
            scores = query @ self.w(keys).transpose(1, 2)
        else:
            scores = self.v(torch.tanh(self.wq(query).unsqueeze(2) + self.wk(keys).unsqueeze(1))).squeeze(-1)
        # In fp32 under bf16 autocast (which leaves softmax in bf16 on CPU): weights over up to ~100 source
        # positions, each rounded to 8 bits of mantissa, no longer sum to 1.
        return scores.float().masked_fill(~src_mask.unsqueeze(1), float("-inf")).softmax(-1)


class Decoder(nn.Module):
    def __init__(self, shape: Seq2SeqShape):
        super().__init__()
        self.embedding = nn.Embedding(shape.tgt_vocab, shape.embedding_size, padding_idx=PAD)
        sizes = [shape.embedding_size] + [shape.hidden_size] * shape.layers
        self.layers = nn.ModuleList(nn.LSTM(sizes[i], shape.hidden_size, batch_first=True) for i in range(shape.layers))
        self.attend = Attend(shape.attention, shape.hidden_size) if shape.attention != "none" else None
        self.combine = nn.Linear(2 * shape.hidden_size, shape.hidden_size) if self.attend else None
        self.out = nn.Linear(shape.hidden_size, shape.tgt_vocab)
        self.residual = shape.residual
        self.drop = nn.Dropout(shape.dropout) if shape.dropout > 0 else nn.Identity()

    def forward(
        self, prev: torch.Tensor, states: list, memory: torch.Tensor, src_mask: torch.Tensor
    ) -> tuple[torch.Tensor, list]:
        """prev [B, T] (teacher forcing, or T=1 while decoding) → logits [B, T, V] and the new states."""
        x, states = run_stack(self.layers, self.drop(self.embedding(prev)), None, states, self.residual, self.drop)
        if self.attend is not None:
            context = self.attend(x, memory, src_mask) @ memory
            x = self.drop(torch.tanh(self.combine(torch.cat([x, context], dim=-1))))
        return self.out(x), states


class Seq2Seq(nn.Module):
    def __init__(self, shape: Seq2SeqShape):
        super().__init__()
        self.shape = shape
        self.encoder = Encoder(shape)
        self.decoder = Decoder(shape)
        # The bridge maps each encoder layer's final (h, c) to the decoder layer's initial state.
        self.bridge_h = nn.ModuleList(nn.Linear(shape.hidden_size, shape.hidden_size) for _ in range(shape.layers))
        self.bridge_c = nn.ModuleList(nn.Linear(shape.hidden_size, shape.hidden_size) for _ in range(shape.layers))

    def encode(self, src: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, list, torch.Tensor]:
        memory, finals = self.encoder(src, lengths)
        states = [
            (torch.tanh(bh(h)).unsqueeze(0), bc(c).unsqueeze(0))
            for (h, c), bh, bc in zip(finals, self.bridge_h, self.bridge_c)
        ]
        return memory, states, src != PAD

    def forward(self, src: torch.Tensor, lengths: torch.Tensor, prev: torch.Tensor) -> torch.Tensor:
        memory, states, src_mask = self.encode(src, lengths)
        logits, _ = self.decoder(prev, states, memory, src_mask)
        return logits


def sequence_nll(logits: torch.Tensor, targets: torch.Tensor, label_smoothing: float = 0.0) -> tuple[torch.Tensor, int]:
    """Summed token cross entropy over non-padding targets, and their count."""
    loss = F.cross_entropy(
        logits.flatten(0, 1), targets.flatten(), ignore_index=PAD, reduction="sum", label_smoothing=label_smoothing
    )
    return loss, int((targets != PAD).sum())


class Translator(optim.ReuseNormForClipping, metrics.ValidationNLL, pl.LightningModule):
    """Teacher-forced training with token-level cross entropy; validation perplexity is token-weighted."""

    def __init__(self, shape: dict, optim_settings: dict, label_smoothing: float = 0.0):
        """Settings as dicts (of Seq2SeqShape and OptimSettings fields): checkpoints keep them as plain data."""
        super().__init__()
        self.save_hyperparameters()
        self.net = Seq2Seq(Seq2SeqShape(**shape))
        self.optim = optim.OptimSettings(**optim_settings)
        self.label_smoothing = label_smoothing

    @staticmethod
    def tokens_in(batch: tuple[torch.Tensor, ...]) -> int:
        return int((batch[-1] != PAD).sum())

    def training_step(self, batch: tuple[torch.Tensor, ...], batch_idx: int) -> torch.Tensor:
        src, lengths, prev, targets = batch
        loss, count = sequence_nll(self.net(src, lengths, prev), targets, self.label_smoothing)
        return loss / count  # logged by the trainer's callbacks

    def validation_step(self, batch: tuple[torch.Tensor, ...], batch_idx: int) -> None:
        src, lengths, prev, targets = batch
        nll, count = sequence_nll(self.net(src, lengths, prev), targets)
        self.add_validation_nll(float(nll), count)

    def recurrent_layers(self) -> dict[str, nn.Module]:
        """The encoder's then the decoder's layers, lowest first, by the names their gradient norms are logged under."""
        return {
            f"{side}_layer{i}": layer
            for side, stack in (("encoder", self.net.encoder.layers), ("decoder", self.net.decoder.layers))
            for i, layer in enumerate(stack)
        }

    def configure_optimizers(self) -> Any:
        return optim.configure(self.parameters(), self.optim, monitor="valid_bleu_greedy", mode="max")
