"""The Prefect face of the claims: the probes (tasks/claims/probes.py) as tasks on a recorded language-model run,
for the flow that measures the runs it has trained; the CLI calls their plain functions."""

from __future__ import annotations

from prefect import task


@task(name="probe-context")
def probe_context(run_id: str, split: str = "valid", positions: int | None = None, force: bool = False) -> dict:
    from tasks.claims import probes  # lazy: matplotlib, which a training flow never needs

    return probes.context_probe(run_id, split, positions, force)


@task(name="probe-gradient-flow")
def probe_gradient_flow(run_id: str, split: str = "valid", positions: int | None = None, force: bool = False) -> dict:
    from tasks.claims import probes  # lazy: matplotlib, which a training flow never needs

    return probes.gradient_flow_probe(run_id, split, positions, force)


@task(name="spectral-check")
def probe_spectral_check(radii: list[float]) -> dict:
    from tasks.claims import probes  # lazy: matplotlib, which a training flow never needs

    return probes.spectral_check(tuple(radii))
