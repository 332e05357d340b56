# Switchyard: `make run` installs and starts the gateway on its defaults; `make test` runs every check.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
CONFIG ?= examples/gateway.yaml

.PHONY: install run test lint bench clean

$(STAMP): pyproject.toml requirements.lock
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check --require-hashes -r requirements.lock
	$(BIN)/pip install --quiet --disable-pip-version-check --no-deps -e .
	touch $(STAMP)

install: $(STAMP)

run: install
	@key="$${SWITCHYARD_DEMO_KEY:-sk-sy-$$($(BIN)/python -c 'import secrets; print(secrets.token_urlsafe(24))')}"; \
	[ -n "$$SWITCHYARD_DEMO_KEY" ] || echo "Generated client key for this run (set SWITCHYARD_DEMO_KEY to choose one): $$key"; \
	SWITCHYARD_DEMO_KEY="$$key" exec $(BIN)/switchyard serve --config $(CONFIG)

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

test: lint
	$(BIN)/pytest

bench: install
	$(BIN)/python benchmarks/overhead.py

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
