# routed: `make run` serves both plugins under supervisord; `make test` is all CI runs.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell sha1sum pyproject.toml | cut -c1-12)
export PYTHONPATH := $(CURDIR)

# The Docker engine for e2e, bench and demo: 20 (Debian 12's), 26 (Debian 13's) or newest
# (Debian's newest suite, 28 today), each run from deploy/engine.sh with its own data root.
DOCKERD ?= newest

.PHONY: run test venv host bird lint typecheck unit integration fuzz security load cluster e2e \
	offline bed bench demo demo-cluster image clean

venv: $(STAMP)
$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	@rm -f $(VENV)/.installed-* && touch $@

# supervisord in the foreground; exits non-zero if a service keeps crashing (FATAL).
run: venv
	bash deploy/run-supervisord.sh supervisord.conf

# Everything the tests need on a fresh machine: Docker engine, dockerd $(DOCKERD) running, test image.
host:
	bash deploy/test-host.sh $(DOCKERD)

# BIRD 2 (Debian's bird2) for routed-bgp and its tests; Debian's own bird service kept off.
bird:
	bash deploy/bird.sh

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(PY) -m bench.readme --check

typecheck: venv
	$(VENV)/bin/mypy common ipam netdriver routedctl testkit bgp bench

unit: venv
	$(VENV)/bin/pytest -q tests/unit

# Data-path tests run in a network namespace of their own: the host's is never touched
# (the BGP tests' router gets one more, linked to it by a veth).
integration: venv bird
	unshare --net $(VENV)/bin/pytest -q tests/integration

# Hostile input, access rights, faults and load: root, each in a network namespace of its own.
fuzz: venv
	unshare --net $(VENV)/bin/pytest -q tests/fuzz

security: venv
	unshare --net $(VENV)/bin/pytest -q -s tests/security

load: venv
	unshare --net $(VENV)/bin/pytest -q -s tests/load

# Cluster mode (ROUTED_DATASTORE=etcd): a 3-member etcd on loopback ports and several
# routed-ipam processes as hosts, on temp dirs; deploy/etcd.sh installs etcd when missing.
cluster: venv
	bash deploy/etcd.sh
	$(VENV)/bin/pytest -q tests/cluster

e2e: venv host bird
	bash deploy/etcd.sh
	$(VENV)/bin/pytest -q tests/e2e

# Many Docker hosts on this machine (testkit/bed.py): each in network and mount namespaces of
# its own with its own dockerd (20.10 and the newest engine), routed in etcd mode and BIRD,
# peering with an upstream router namespace (BIRD; FRR once) that also runs a 3-member etcd.
# deploy/bed.sh installs bird2, frr and the newest engine when missing. Never touches the
# machine's own dockerd.
bed: venv
	bash deploy/etcd.sh
	bash deploy/bed.sh
	$(VENV)/bin/pytest -q tests/bed

# The suites that need no dockerd: each in network namespaces of its own, or on loopback ports.
offline: integration fuzz security load cluster

# What CI runs. bird before unit: the unit tests check rendered BIRD configurations with
# `bird -p` (and in CI a skipped test fails). Suites that share nothing run side by side
# (deploy/parallel.sh prints each one's output when all have ended), so that their waits
# overlap: the offline suites beside the e2e suite on the newest engine, the bed (dockerds of
# its own, in namespaces of its own) beside the e2e suite on 20.10; then the smoke subset on 26.
SUB := $(MAKE) --no-print-directory
test: venv host bird lint typecheck unit
	bash deploy/etcd.sh
	bash deploy/bed.sh
	bash deploy/parallel.sh "$(SUB) offline" "$(SUB) e2e DOCKERD=newest"
	bash deploy/parallel.sh "$(SUB) e2e DOCKERD=20" "$(SUB) bed"
	bash deploy/test-host.sh 26 && $(VENV)/bin/pytest -q -m smoke tests/e2e

bench: venv host
	$(PY) -m bench

# The scenario of the experiment this project grew from, step by step; leaves nothing behind.
demo: venv host
	bash deploy/demo.sh

# Three Docker hosts and an upstream router on this machine, BGP between them, step by step;
# leaves nothing behind.
demo-cluster: venv
	bash deploy/bed.sh
	$(PY) -m testkit.demo

# The container image (no registry needed: the base is made locally with debootstrap).
image:
	bash deploy/build-image.sh

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
