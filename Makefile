# Two commands for a newcomer (see README "Quick start"):
#   make study   set up .venv and run the sphere-ratio study (demo preset on phantom CTs)
#   make test    set up .venv (with the dev tools) and run the test suite
# Torch: with an NVIDIA GPU pip takes the normal (CUDA) build; without one we pin the CPU build
# torch==2.13.0 so a laptop or CI never downloads gigabytes of CUDA libraries.

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
TORCH  ?= $(shell command -v nvidia-smi >/dev/null 2>&1 && echo "torch>=2.4" || echo "torch==2.13.0")

.PHONY: setup setup-dev study test lint mlflow-ui notebook clean clean-results

$(VENV)/.runtime: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH)"
	$(PY) -m pip install -q -e .
	touch $@

$(VENV)/.dev: $(VENV)/.runtime
	$(PY) -m pip install -q -e ".[dev]"
	$(PY) -m ipykernel install --sys-prefix --name python3 >/dev/null
	touch $@

setup: $(VENV)/.runtime

setup-dev: $(VENV)/.dev

study: setup
	$(PY) sweeps/sphere_ratio.py $(ARGS)

test: setup-dev
	$(PY) -m pytest -q $(ARGS)

lint: setup-dev
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check .

# MLflow 3.17 opens in its GenAI view; the runs table is behind "Model training" (or the URL).
mlflow-ui: setup
	@echo "Open http://127.0.0.1:5000/#/experiments?workflowType=machine_learning (Model training view)"
	$(VENV)/bin/mlflow ui --backend-store-uri sqlite:///$(CURDIR)/mlflow.db --host 127.0.0.1

# The aggregation notebook in JupyterLab (the `notebook` extra), on the local store.
notebook: setup
	$(PY) -m pip install -q -e ".[notebook]"
	$(VENV)/bin/jupyter lab notebooks/aggregate.ipynb

# Caches only: the phantom CTs and data-check results are rebuilt on the next run.
clean:
	rm -rf .tumorsweep/phantom .tumorsweep/checks .pytest_cache .ruff_cache
	find . -path ./.venv -prune -o -name __pycache__ -type d -prune -exec rm -rf {} +

# Results: every study's MLflow store, its artifacts and the checkpoints --resume needs.
clean-results:
	@echo "Deleting mlflow.db, mlartifacts/ and .tumorsweep/ray_results/ (all study results)."
	rm -rf mlflow.db mlartifacts .tumorsweep/ray_results
