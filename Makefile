# routed: `make run` serves both plugins under supervisord; `make test` is all CI runs.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell sha1sum pyproject.toml | cut -c1-12)
export PYTHONPATH := $(CURDIR)

.PHONY: run test venv host lint typecheck unit integration fuzz security load e2e bench demo image clean

venv: $(STAMP)
$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	@rm -f $(VENV)/.installed-* && touch $@

# supervisord in the foreground; exits non-zero if a service keeps crashing (FATAL).
run: venv
	bash deploy/run-supervisord.sh supervisord.conf

# Everything the tests need on a fresh machine: Docker engine, dockerd running, test image.
host:
	bash deploy/test-host.sh

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(PY) -m bench.readme --check

typecheck: venv
	$(VENV)/bin/mypy common ipam netdriver routedctl testkit

unit: venv
	$(VENV)/bin/pytest -q tests/unit

# Data-path tests run in a network namespace of their own: the host's is never touched.
integration: venv
	unshare --net $(VENV)/bin/pytest -q tests/integration

# Hostile input, access rights, faults and load: root, each in a network namespace of its own.
fuzz: venv
	unshare --net $(VENV)/bin/pytest -q tests/fuzz

security: venv
	unshare --net $(VENV)/bin/pytest -q -s tests/security

load: venv
	unshare --net $(VENV)/bin/pytest -q -s tests/load

e2e: venv host
	$(VENV)/bin/pytest -q tests/e2e

test: venv host lint typecheck unit integration fuzz security load e2e

bench: venv host
	$(PY) -m bench

# The scenario of the experiment this project grew from, step by step; leaves nothing behind.
demo: venv host
	bash deploy/demo.sh

# The container image (no registry needed: the base is made locally with debootstrap).
image:
	bash deploy/build-image.sh

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
