"""rnnlab: a reproducible ablation lab for recurrent language and translation models."""

__version__ = "0.1.0"
