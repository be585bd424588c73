"""The kinds of claim a claims file can make, one module each (its measurement and criterion schemas, its
measurement, its criterion, its figures and the probes it needs), on the interface and shared helpers of base.py.
They are registered in tasks/claims/registry.py, which the claims package reads; nothing here imports it."""
