# The README's two commands: `make run` and `make test`. Both create .venv on first use.
VENV ?= .venv
PYTHON ?= python3
STAMP := $(VENV)/.installed
ACTIVATE := . $(VENV)/bin/activate &&

.PHONY: setup run test lint clean-venv

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

setup: $(STAMP)

run: $(STAMP)  ## the default pipeline (profile set in params.yaml; `quick` unless changed)
	$(ACTIVATE) dvc repro

test: $(STAMP)  ## lint, then every test, the smoke pipeline included
	$(ACTIVATE) ruff check . && pytest

clean-venv:
	rm -rf $(VENV)
