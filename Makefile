# forgeml: `make demo` runs the default pipeline end to end; `make test` runs the test suite.
# Both set up .venv first (Python >= 3.10). TORCH pins the CPU/GPU build you want installed.
PYTHON ?= python3
VENV ?= .venv
TORCH ?= torch==2.13.0
# pytest-xdist workers for `make test` (auto: one per CPU)
TEST_WORKERS ?= auto
BIN := $(CURDIR)/$(VENV)/bin
# DVC stages call `forgeml`: put the environment's commands first on PATH
export PATH := $(BIN):$(PATH)

.PHONY: setup browser demo test test-fast lint format docs bench clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet "$(TORCH)"
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $@

# the default pipeline (prepare -> train -> evaluate -> package -> monitor), then the production
# loop in a fresh workspace: serve, query (one bad request), monitor, drift, retrain, gate, rollback
demo: setup
	forgeml compose
	dvc repro
	dvc metrics show
	python examples/production_loop.py

# the monitoring page is checked in a real headless browser (tests/integration/test_monitoring_page.py):
# Debian's chromium, installed here when missing (as root, as CI runs)
browser:
	@command -v chromium >/dev/null || { apt-get update -q && apt-get install -y -q chromium; }

# every test, unit and integration (servers, DVC, training, the browser), in parallel: a module's
# tests stay on one worker (they share its server or project); the 25 slowest are listed
test: setup browser
	$(BIN)/pytest -q -n $(TEST_WORKERS) --dist loadfile --durations=25

# the unit lane alone: no process, server or browser, a few training steps at most. In one process:
# on two cores the workers' own start (torch, Hydra, Lightning imports) costs more than it saves
test-fast: setup
	$(BIN)/pytest -q --durations=10 tests/unit

lint: setup
	$(BIN)/ruff check src tests bench examples
	$(BIN)/ruff format --check src tests bench examples
	$(BIN)/lint-imports

format: setup
	$(BIN)/ruff format src tests bench examples
	$(BIN)/ruff check --fix src tests bench examples

# the documentation site (docs/, mkdocs.yml) into site/; --strict: a broken link or anchor fails
# (NO_MKDOCS_2_WARNING: mkdocs-material's notice about MkDocs 2.0 on every build)
docs: setup
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict

bench: setup
	$(BIN)/python bench/train_throughput.py
	$(BIN)/python bench/train_threads.py
	$(BIN)/python bench/serve_throughput.py
	$(BIN)/python bench/drift_speed.py
	$(BIN)/python bench/streaming.py
	$(BIN)/python bench/short_text.py

clean:
	rm -rf logs outputs multirun
