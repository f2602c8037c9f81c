# Cove: two commands. `make run` installs what is missing and starts the control plane;
# `make test` installs the same and runs every test.

SHELL := /bin/bash
VENV ?= .venv
# As root, build the virtualenv from the system Python: the unprivileged service user that runs
# guest agents must be able to execute it (a Python under /root would be out of its reach).
PYTHON ?= $(shell if [ "$$(id -u)" = 0 ] && [ -x /usr/bin/python3 ]; then echo /usr/bin/python3; else command -v python3; fi)
COVE_DATA_DIR ?= $(CURDIR)/.cove
COVE_API_PORT ?= 8779
export COVE_DATA_DIR COVE_API_PORT

.PHONY: run test install system-deps service-access lint unit bench clean

run: install service-access
	$(VENV)/bin/cove up

test: install service-access lint
	$(VENV)/bin/pytest -q

install: system-deps $(VENV)/.installed

system-deps:
	@bash scripts/install-system-deps.sh

# As root, the service user runs guest agents from this clone: stop at once if it cannot.
service-access: $(VENV)/.installed
	@bash scripts/check-service-access.sh $(CURDIR) $(VENV)

$(VENV)/.installed: pyproject.toml
	@test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet --upgrade pip
	$(VENV)/bin/python -m pip install --quiet -e '.[dev]'
	@touch $@

lint: install
	$(VENV)/bin/ruff check src tests bench
	$(VENV)/bin/ruff format --check src tests bench
	$(VENV)/bin/mypy

unit: install
	$(VENV)/bin/pytest -q tests/unit

bench: install
	$(VENV)/bin/python bench/provision.py
	$(VENV)/bin/python bench/recovery.py
	$(VENV)/bin/python bench/api.py
	$(VENV)/bin/python bench/backup.py
	$(VENV)/bin/python bench/failover.py
	$(VENV)/bin/python bench/cluster.py
	$(VENV)/bin/python bench/cli.py
	$(VENV)/bin/python bench/isolation.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
