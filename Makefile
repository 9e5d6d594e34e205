# The README's two commands: `make run` and `make test`. Both create .venv on first use.
VENV ?= .venv
PYTHON ?= python3
STAMP := $(VENV)/.installed
ACTIVATE := . $(VENV)/bin/activate &&

.PHONY: setup run test test-fast check-results lint clean-venv

# TORCH_INDEX=https://download.pytorch.org/whl/cpu: torch and torchvision from that index
# first (CPU builds, no CUDA packages); the rest from the default index
TORCH_INDEX ?=

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(if $(TORCH_INDEX),$(VENV)/bin/python -m pip install --progress-bar on torch torchvision --index-url $(TORCH_INDEX),)
	$(VENV)/bin/python -m pip install --progress-bar on -e ".[dev]"
	touch $(STAMP)

setup: $(STAMP)

run: $(STAMP)  ## the default pipeline (profile set in params.yaml; `quick` unless changed)
	$(ACTIVATE) dvc repro

test: $(STAMP)  ## lint, then every test, the smoke pipeline included
	$(ACTIVATE) ruff check . && pytest

test-fast: $(STAMP)  ## the edit loop: lint and every test but the pipeline ones (marked slow)
	$(ACTIVATE) ruff check . && pytest -m "not slow"

check-results: $(STAMP)  ## stale stages (reported) and results that dvc.lock does not know (fail)
	$(ACTIVATE) python -m mpqbench.check_results

clean-venv:
	rm -rf $(VENV)
