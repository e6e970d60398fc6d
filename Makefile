# The two commands of the README's quick start: `make serve` and `make test`.
# Each one builds what it needs (.venv, packages) by itself.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
# The service's own packages for `serve`; the test and lint tools on top for
# the rest (`serve` need not fetch Chromium's driver, schemathesis, ruff...).
STAMP := $(VENV)/.installed
DEV_STAMP := $(VENV)/.installed-dev

.PHONY: serve test lint bench clean

$(STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "$(PYTHON) is required"; exit 1; }
	@echo "Setting up $(VENV): the service's packages (about 1 GB with the models; a few minutes the first time)"
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e .
	touch $(STAMP)

$(DEV_STAMP): $(STAMP)
	@echo "Adding the test and lint tools to $(VENV)"
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(DEV_STAMP)

serve: $(STAMP)
	$(BIN)/upscayl-cloud serve

test: $(DEV_STAMP)
	scripts/install-test-services.sh
	scripts/install-chromium.sh
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench
	$(BIN)/pytest

lint: $(DEV_STAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench

bench: $(DEV_STAMP)
	PYTHONPATH=. $(BIN)/python bench/engine.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
