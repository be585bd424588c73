"""The shared floor of training, the same for every task kind: the Trainer and its callbacks, resume, scoring each
split, the optimizer's settings, timing for estimates, Optuna tuning; it names no task kind."""
