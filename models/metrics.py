"""Perplexity from a token-weighted mean NLL (nats), without overflowing for a model that has blown up."""

import math

MAX_LOG = math.log(1.7e308)


def perplexity(mean_nll: float) -> float:
    """exp(mean NLL); inf (a result: the model gives the data ~zero probability) where exp would overflow."""
    return math.exp(mean_nll) if mean_nll < MAX_LOG else math.inf
