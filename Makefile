# Every target does its own set-up: the first one that needs it builds .venv.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# The CPU build of torch; a plain requirement would pull a multi-GB CUDA build.
TORCH ?= torch==2.13.0

.PHONY: help install fit test test-fast lint format bench-learning bench-mit5k bench-table1 bench-predict \
	notebooks strip-notebooks clean

help:
	@echo "make fit    train the saccade model on two-digit cluttered MNIST (CPU)"
	@echo "make test   lint and run the test suite"
	@echo "make test-fast  lint and run the unit tests only, not the slow end-to-end ones (< 2 min)"
	@echo "make lint   ruff check and ruff format --check"
	@echo "make format apply ruff's fixes and formatting"
	@echo "make bench-learning  the 30-minute learning-curve benchmark"
	@echo "make bench-mit5k     photo conversion and loading throughput (2 minutes)"
	@echo "make bench-table1    the paper's Table 1: saccades against the tiled ResNet-18 (6 minutes)"
	@echo "make bench-predict   varsac predict latency on a 4000x3000 JPEG against the baseline (1 minute)"
	@echo "make notebooks       run the notebooks on tiny settings, as the tests do"
	@echo "make strip-notebooks clear the notebooks' outputs before committing"

$(BIN)/varsac: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet "$(TORCH)"
	$(BIN)/pip install --quiet -e ".[dev]"
	@touch $@

install: $(BIN)/varsac

fit: install
	$(BIN)/varsac fit experiment=cluttered_mnist $(ARGS)

test: install lint
	$(BIN)/pytest $(ARGS)

# The tests marked slow (pytest -m slow: whole runs of the command line, notebooks,
# benchmarks) are left out; make test and CI (.ci/run) run them too.
test-fast: install lint
	$(BIN)/pytest -m "not slow" $(ARGS)

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: install
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

bench-learning: install
	$(BIN)/python benchmarks/learning_curve.py $(ARGS)

bench-mit5k: install
	$(BIN)/python benchmarks/mit5k.py $(ARGS)

bench-table1: install
	$(BIN)/python benchmarks/table1.py $(ARGS)

bench-predict: install
	$(BIN)/python benchmarks/predict_latency.py $(ARGS)

clean:
	rm -rf $(VENV) build dist src/*.egg-info .pytest_cache .ruff_cache

# The notebooks (notebooks/): run them on tiny settings as the test suite does, and strip
# their outputs before committing (tests/test_notebooks.py checks that they have none).
notebooks: install
	$(BIN)/pytest tests/test_notebooks.py $(ARGS)

strip-notebooks: install
	$(BIN)/python notebooks/strip_outputs.py
