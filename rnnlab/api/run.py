"""`run_study`: run (or resume) a study from Python, as `rnnlab study FILE` does, and return its results."""

from __future__ import annotations

import sys
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from rnnlab.api.packages import rnnlab_packages
from rnnlab.api.results import StudyResults, load_study


def override_items(overrides: Mapping[str, Any] | Sequence[str] | None) -> list[str]:
    """Overrides as the command line takes them (`key=value`, the value in YAML), from those strings or from a
    mapping of key → value (`{"seeds": [1, 2], "train.clip_norm": None}`)."""
    if overrides is None:
        return []
    if isinstance(overrides, str):
        raise TypeError(f"overrides: a list of 'key=value' strings or a dict, not the string {overrides!r}")
    if not isinstance(overrides, Mapping):
        return [str(item) for item in overrides]
    import yaml

    def flow_yaml(value: Any) -> str:  # one line, read back as the same value (1e38 as a float, "1" as text)
        return yaml.safe_dump(value, default_flow_style=True, width=2**30).removesuffix("\n...\n").strip()

    return [f"{key}={flow_yaml(value)}" for key, value in overrides.items()]


@contextmanager
def workers_without_the_callers_script() -> Iterator[None]:
    """While a study runs, the caller's script is not run again in each worker process it starts. Python's "spawn"
    start (the study's cell workers, a local Dask cluster's) imports the parent's `__main__` from its file, or by
    its module name under `python -m`: a script calling `run_study` without an `if __name__ == "__main__":` guard
    would start the study again in every worker. The workers run rnnlab's own functions only, never the script's,
    so the script is hidden from that start for the call's length (a notebook's `__main__` has no file: nothing
    to hide)."""
    main = sys.modules["__main__"]
    file, spec = vars(main).pop("__file__", None), getattr(main, "__spec__", None)
    main.__spec__ = None
    try:
        yield
    finally:
        main.__spec__ = spec
        if file is not None:
            main.__file__ = file


def run_study(
    path: str | Path, overrides: Mapping[str, Any] | Sequence[str] | None = None, force: bool = False
) -> StudyResults:
    """Run (or resume) the study in file `path`, as `rnnlab study` does, and return its results (`load_study`'s
    object, for this execution). `overrides`: study fields or run-config keys, as `{"seeds": [1, 2],
    "train.max_epochs": 2}` or as the command line writes them, `["seeds=[1,2]", "train.max_epochs=2"]`. Cells
    already finished with the same config, data and code are reused; `force=True` trains every cell again.

    Every cell is validated and the data prepared before anything trains (a bad file or key raises ConfigError, a
    ValueError). The runs are recorded in the project's store (MLFLOW_TRACKING_URI, else `$RNNLAB_HOME/mlruns`,
    else `./mlruns`), its Prefect state in `.prefect/`, its report under `reports/<study>/`. Progress goes to
    stderr. Where some cells fail, the others are recorded and `tasks.record.outcome.StudyFailed` is raised;
    `rnnlab.load_study(name)` then reads what was recorded. A call that is interrupted is resumed by the next:
    finished cells are reused, interrupted ones continue from their last checkpoint."""
    items = override_items(overrides)
    with rnnlab_packages():
        from rnnlab.runtime.env import configure
        from rnnlab.runtime.processes import abandon_prefect_api

        configure()
        from rnnlab.schemas.config import ConfigError, read_yaml
        from rnnlab.schemas.study import load_study as read_study

        tree = read_yaml(path)
        if "claims" in tree:
            raise ConfigError(
                f"{path} is a claims file (a top-level `claims:` list): run it with `rnnlab study {path}`; "
                "rnnlab.run_study runs a study file"
            )
        study = read_study(path, items, tree)  # every cell validated here, before anything starts
        try:
            from flows.launch import run_loaded_study  # as `rnnlab study` does: checks, data, Prefect, the flow

            with workers_without_the_callers_script():
                result = run_loaded_study(study, force)
        finally:
            abandon_prefect_api()  # launched but never waited for (a check failed first): stopped
    return load_study(study.name, result["parent_run_id"])
