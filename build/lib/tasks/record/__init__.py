"""The record: every MLflow read and write (tracking), the logger that writes curves, what a run's outcome is, and the
machine facts every run carries (hardware)."""
