"""Prefect flows: they compose the tasks and decide nothing else (one run, a study, its tuning, the claims, the
deployments, the closing of a dead machine's runs), and the launch of a study: its checks and data before its flow."""
