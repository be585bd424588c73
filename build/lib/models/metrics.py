"""Perplexity from a token-weighted mean NLL (nats), without overflowing for a model that has blown up, and the
validation metrics as a LightningModule reports them."""

import math

MAX_LOG = math.log(1.7e308)


def perplexity(mean_nll: float) -> float:
    """exp(mean NLL); inf (a result: the model gives the data ~zero probability) where exp would overflow."""
    return math.exp(mean_nll) if mean_nll < MAX_LOG else math.inf


def log_validation_nll(module, mean_nll: float) -> None:
    """`valid_nll` for Lightning (checkpoint monitor, schedules, progress), and the curves `valid/nll`, `valid/ppl` to
    the logger as Python floats. Not through `log_dict`: it stores values as float32 tensors, so a perplexity
    overflowed to inf once the mean NLL passed ~88.7 nats, far below where float64 does (~709). Under `valid/`, not
    `valid_nll`: that name is the selected checkpoint's final score, which must not land on the training curve."""
    module.log("valid_nll", mean_nll, logger=False)
    if module.logger is not None:
        module.logger.log_metrics({"valid/nll": mean_nll, "valid/ppl": perplexity(mean_nll)}, step=module.global_step)


class ValidationNLL:
    """LightningModule mixin: the NLL summed over a whole validation pass and divided by its tokens (token-weighted,
    not a mean of batch means), reported by `log_validation_nll` at the end of the pass."""

    _valid_nll, _valid_tokens = 0.0, 0

    def on_validation_epoch_start(self) -> None:
        self._valid_nll, self._valid_tokens = 0.0, 0

    def add_validation_nll(self, nll: float, tokens: int) -> None:
        self._valid_nll += nll
        self._valid_tokens += tokens

    def on_validation_epoch_end(self) -> None:
        log_validation_nll(self, self._valid_nll / max(self._valid_tokens, 1))
