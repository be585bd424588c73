"""What every task kind is: the one object the rest of rnnlab asks to prepare a corpus, fit a model, score it and
describe its progress. Each kind is one module in this folder (tasks/kinds/lm.py, tasks/kinds/nmt.py) with its
config class (its schema, rnnlab/schemas/config.py) and its corpus (tasks/data/); tasks/kinds/registry.py looks one up
by a config's `task`. A third kind is a third module and one line in the registry."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar

from rnnlab.schemas.config import DataConfig, ParallelDataConfig, RunConfig
from tasks.data.corpus_files import PreparedCorpus
from tasks.training.fitting import FitResult


class TaskKind(ABC):
    name: ClassVar[str]  # the config's `task`
    description: ClassVar[str]  # in words: "translation" (models)
    tuning_metric: ClassVar[str]  # the callback metric a tuning trial reports at each validation (Lightning's name)

    @abstractmethod
    def prepare(self, data: DataConfig | ParallelDataConfig) -> PreparedCorpus:
        """The corpus, prepared once and cached (a study's cells with the same data settings share it)."""

    @abstractmethod
    def check_fits(self, cfg: RunConfig, corpus: PreparedCorpus) -> None:
        """DataError when the corpus cannot fill the batches `cfg` asks for."""

    @abstractmethod
    def fit(
        self, cfg: RunConfig, corpus: PreparedCorpus, run_id: str, workdir: str | None, callbacks: tuple
    ) -> FitResult:
        """Train `cfg`'s model on the corpus, recorded to `run_id`; `callbacks` join the house ones."""

    @abstractmethod
    def score(self, cfg: RunConfig, corpus: PreparedCorpus, run_id: str, fitted: FitResult) -> dict[str, float]:
        """The fitted run's final scores on cfg.eval.splits, logged to its run."""

    @abstractmethod
    def run_seconds(self, cfg: RunConfig, corpus: PreparedCorpus, threads: int, timings: dict[str, Any]) -> float:
        """The estimated wall seconds of one run of `cfg` on this machine (tasks/kinds/estimate.py), timing what it
        must; `timings` keeps what was timed, for the runs that share it."""

    @abstractmethod
    def steps(self, cfg: RunConfig, corpus: PreparedCorpus, max_steps: int | None = None) -> int:
        """The optimizer steps of `cfg`'s whole budget on the corpus (at most `max_steps`): what a study's display
        counts down (a run that stops early, diverged or pruned, has none left)."""

    def tunable(self) -> bool:
        """Whether a tuned study of this kind can be estimated before it runs."""
        return False

    def trial_seconds(self, cfg: RunConfig, corpus: PreparedCorpus, timings: dict[str, Any], steps: int) -> float:
        raise NotImplementedError(f"no estimate yet for tuning {self.name} models")
