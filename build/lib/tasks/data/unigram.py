"""The floor a trained model must beat: the unigram model of the training split (each token's relative frequency,
no context). A language model at or above its perplexity has learned word frequencies and nothing else (PTB valid:
687.0, where a uniform guess over the 10,000 words is 10,000), so "trained" means below it.

Exact, computed once when a corpus is prepared and cached with it: -mean log p(w) over every token of the split, with
p(w) = count(w) / N from the training split (the tokens a model is scored on, `<eos>` included). Where a split holds
a token the training split never has (possible in a user's corpus whose train split lacks `<unk>`), the unigram model
would give it probability 0 and infinite perplexity: then counts are add-one smoothed over the vocabulary, and the
result says so.
"""

from __future__ import annotations

import math

import torch


def unigram_perplexities(train: torch.Tensor, splits: dict[str, torch.Tensor], vocab_size: int) -> dict:
    """{"ppl": {split: perplexity}, "smoothing": "none" | "add-one"} of the training split's unigram model on each
    of `splits` (1-D tensors of token ids in [0, vocab_size))."""
    counts = torch.bincount(train.flatten().long(), minlength=vocab_size).double()
    unseen = any(bool((counts[ids.flatten().long()] == 0).any()) for ids in splits.values() if ids.numel())
    if unseen:
        counts = counts + 1.0
    log_p = torch.log(counts) - math.log(float(counts.sum()))
    ppl = {split: math.exp(-float(log_p[ids.flatten().long()].mean())) for split, ids in splits.items() if ids.numel()}
    return {"ppl": ppl, "smoothing": "add-one" if unseen else "none"}


def floor_tags(unigram: dict) -> dict[str, str]:
    """The run tags that carry the floor, e.g. data.unigram_ppl.valid = 687.03 (exact to 6 significant digits)."""
    tags = {f"data.unigram_ppl.{split}": f"{ppl:.6g}" for split, ppl in unigram.get("ppl", {}).items()}
    if unigram.get("smoothing", "none") != "none":
        tags["data.unigram_smoothing"] = unigram["smoothing"]
    return tags
