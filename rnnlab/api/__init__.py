"""The Python API, for a notebook: a recorded study's results as DataFrames (`rnnlab.load_study`, `rnnlab.curves`), and
a study run from Python (`rnnlab.run_study`), with rnnlab's own top-level packages loaded whatever the notebook's
folder holds."""
