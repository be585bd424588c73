"""Perplexity from a token-weighted mean NLL (nats), without overflowing for a model that has blown up, and the
validation metrics as a LightningModule reports them."""

import math

MAX_LOG = math.log(1.7e308)


def perplexity(mean_nll: float) -> float:
    """exp(mean NLL); inf (a result: the model gives the data ~zero probability) where exp would overflow."""
    return math.exp(mean_nll) if mean_nll < MAX_LOG else math.inf


def log_validation_nll(module, mean_nll: float) -> None:
    """`valid_nll` for Lightning (checkpoint monitor, schedules, progress), and `valid_nll`/`valid_ppl` to the logger
    as Python floats. Not through `log_dict`: it stores values as float32 tensors, so a perplexity overflowed to inf
    once the mean NLL passed ~88.7 nats, far below where float64 does (~709)."""
    module.log("valid_nll", mean_nll, logger=False)
    if module.logger is not None:
        module.logger.log_metrics({"valid_nll": mean_nll, "valid_ppl": perplexity(mean_nll)}, step=module.global_step)
