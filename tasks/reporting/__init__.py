"""The study report and its plots, drawn from what MLflow recorded and nothing else."""
