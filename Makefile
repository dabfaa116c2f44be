# `make run` and `make test` are the whole set-up on a fresh machine (root, Python, pip and apt).
SHELL := /bin/bash
.DEFAULT_GOAL := help
VENV := .venv
PY := $(VENV)/bin/python
UV := python3 -m uv
# Debian packages the test suite's real peers need (network namespaces, ...).
TEST_APT_PACKAGES := iproute2 chromium openipmi postgresql nut-server nut-client openssh-server ethtool sudo

LINT_PATHS = $(wildcard src tests bench scripts) cli.py

# pytest-xdist workers. Four on two cores: the lab, SSH and serve tests spend most of their time waiting
# (boots, timeouts, subprocesses), so the cores stay busy. WORKERS=0 runs everything in one process.
WORKERS ?= 4
# What pytest runs (default: every test under tests/), e.g. TESTS=tests/unit/wol or TESTS="tests/e2e -k web".
TESTS ?=
PYTEST = $(VENV)/bin/pytest -n $(WORKERS) --dist loadgroup
PYTEST_ARGS ?=

.PHONY: help run serve demo test lint typecheck pytest test-durations bench lock install install-dev test-system-deps \
	lab-deps clean

help:
	@echo "make run     install, migrate data/orchestrator.db, serve API + web UI on 127.0.0.1:8080"
	@echo "make test    install test dependencies, then ruff and lint-imports, and mypy beside pytest (WORKERS=4)"
	@echo "             one package: make pytest TESTS=tests/unit/wol   serial: make test WORKERS=0"
	@echo "make demo    build the virtual lab (root) and serve it on 127.0.0.1:8470; Ctrl-C tears it down"
	@echo "make bench   run the benchmarks in bench/ and print their figures"
	@echo "make lock    re-resolve requirements*.lock from pyproject.toml"

$(VENV)/.uv:
	@python3 -m uv --version >/dev/null 2>&1 || python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore uv
	$(UV) venv --quiet --allow-existing $(VENV)
	@touch $@

$(VENV)/.installed: $(VENV)/.uv requirements.lock pyproject.toml
	$(UV) pip install --quiet --compile-bytecode --python $(PY) -r requirements.lock
	$(UV) pip install --quiet --python $(PY) --no-deps -e .
	@touch $@

$(VENV)/.installed-dev: $(VENV)/.installed requirements-dev.lock
	$(UV) pip install --quiet --compile-bytecode --python $(PY) -r requirements-dev.lock
	@touch $@

# mko itself is installed editable, so its bytecode is compiled here (only what changed since the last
# time): otherwise the first `mko` after an install, and every one where PYTHONDONTWRITEBYTECODE is set,
# compiles every module of mko before it can answer.
install: $(VENV)/.installed
	@$(PY) -m compileall -q src/mko
install-dev: $(VENV)/.installed-dev
	@$(PY) -m compileall -q src/mko

run: install
	$(VENV)/bin/mko db upgrade
	$(VENV)/bin/mko serve

serve: run

# The virtual lab needs the same real peers as the tests: namespaces, sshd, upsd + dummy-ups.
LAB_APT_PACKAGES := iproute2 nut-server nut-client openssh-server ethtool
lab-deps:
	@missing=$$(for p in $(LAB_APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		echo "installing the lab's peers: $$missing"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	fi

demo: install lab-deps
	$(VENV)/bin/mko lab up --no-serve
	trap '$(VENV)/bin/mko lab down' EXIT; $(VENV)/bin/mko serve --lab

test-system-deps:
	@missing=$$(for p in $(TEST_APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		echo "installing test peers: $$missing"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	fi

lint: install-dev
	$(VENV)/bin/ruff check $(LINT_PATHS)
	$(VENV)/bin/ruff format --check $(LINT_PATHS)
	$(VENV)/bin/lint-imports --no-cache

typecheck: install-dev
	$(VENV)/bin/mypy

# Two runs: everything in parallel, then the tests marked `serial` (they measure latency) alone.
# Exit status 5 is "no test selected" (a TESTS without serial tests, say): not a failure.
pytest: install-dev test-system-deps
	@rc=0; \
	$(PYTEST) -m "not serial" $(PYTEST_ARGS) $(TESTS) || [ $$? -eq 5 ] || rc=1; \
	$(VENV)/bin/pytest -m serial $(PYTEST_ARGS) $(TESTS) || [ $$? -eq 5 ] || rc=1; \
	exit $$rc

# ruff first (a second), then mypy beside pytest: mypy's CPU fits in the waits of the lab tests.
test: lint
	@$(MAKE) --no-print-directory -j2 typecheck pytest

# Refresh tests/support/durations.json, which orders the tests longest first (commit the result).
test-durations:
	@$(MAKE) --no-print-directory pytest PYTEST_ARGS=--store-durations

bench: install-dev test-system-deps
	@for b in bench/*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

lock: $(VENV)/.uv
	$(UV) pip compile --quiet --universal pyproject.toml -o requirements.lock
	$(UV) pip compile --quiet --universal pyproject.toml --extra dev -o requirements-dev.lock

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
