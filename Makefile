# rnnlab: the two commands of the README (`make demo`, `make test`) work on a fresh machine.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
# The corpora: ../shared/data when it sits beside the checkout, else data/ (missing corpora are downloaded).
export RNNLAB_DATA_DIR ?= $(if $(wildcard ../shared/data),$(abspath ../shared/data),$(CURDIR)/data)

.PHONY: install demo lint docs test test-all bench ui clean

install: $(VENV)/.installed

# torch first, pinned: pip then takes the CPU wheel instead of resolving a multi-GB CUDA build.
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e ".[dev,team]"
	touch $@

demo: install
	$(BIN)/rnnlab study conf/studies/quick.yaml

# The formatter and the linter (pyproject.toml, [tool.ruff]) before the suite: a tree they would change fails.
lint: install
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .

# The docs site (mkdocs.yml, docs/): --strict fails on a broken link or anchor; build/ is git-ignored.
docs: install
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --site-dir build/site

test: install lint docs
	$(BIN)/python -m pytest

test-all: install
	$(BIN)/python -m pytest -m ""

bench: install
	$(BIN)/python benchmarks/bench_data_cache.py
	$(BIN)/python benchmarks/bench_lm_speed.py
	$(BIN)/python benchmarks/bench_nmt_speed.py
	$(BIN)/python benchmarks/bench_study_overhead.py
	$(BIN)/python benchmarks/bench_cli_start.py
	$(BIN)/python benchmarks/bench_ui_start.py
	$(BIN)/python benchmarks/bench_remote_tracking.py

ui: install
	$(BIN)/rnnlab ui

clean:
	rm -rf $(VENV) .prefect .cache
