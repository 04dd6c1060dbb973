# Melange developer tasks.  `make test` is what CI runs (see .ci/run).

SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PYTEST_ARGS ?=

.DEFAULT_GOAL := test
.PHONY: venv system-deps services test lint demo bench docs clean distclean

# The virtualenv with melange installed in editable mode and the test extras.
# Rebuilt when the packaging metadata changes; .stamp-venv is gitignored.
venv: .stamp-venv

.stamp-venv: setup.cfg pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip || echo "venv: could not upgrade pip; going on"
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $@

# Debian packages the tests need (dnsmasq, dhcp_release, udhcpc, ip, sqlite3, galera-4, rsync).
system-deps:
	@scripts/ensure-system-deps.sh

# MariaDB on 127.0.0.1:3306 and PostgreSQL on 127.0.0.1:5432 for the store tests.
services:
	@scripts/ensure-services.sh

test: venv system-deps services
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/pytest -q -n 3 --dist loadgroup $(PYTEST_ARGS)

# mypy's files and settings are in pyproject.toml ([tool.mypy]).
lint: venv
	$(BIN)/ruff check .
	$(BIN)/mypy

demo: venv
	scripts/demo.sh

bench: venv
	@if [ -f benchmarks/__main__.py ]; then \
		$(BIN)/python -m benchmarks; \
	else \
		echo "bench: nothing to run yet (no benchmarks/__main__.py)"; \
	fi

# Writes through temp files so a failing generator leaves the docs alone.
docs: venv
	$(BIN)/python -m melange_cli.docgen > docs/cli.md.tmp
	mv docs/cli.md.tmp docs/cli.md
	$(BIN)/python -m melange_cli.opdoc protocol < docs/protocol.md > docs/protocol.md.tmp
	mv docs/protocol.md.tmp docs/protocol.md
	$(BIN)/python -m melange_cli.opdoc api < docs/api.md > docs/api.md.tmp
	mv docs/api.md.tmp docs/api.md

clean:
	rm -rf build dist .pytest_cache .ruff_cache .mypy_cache .hypothesis *.egg-info docs/*.md.tmp
	find . -path ./$(VENV) -prune -o -name __pycache__ -type d -prune -exec rm -rf {} +

distclean: clean
	rm -rf $(VENV) .stamp-venv
