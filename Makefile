# Two commands do all set-up on a fresh machine:
#   make run    creates .venv (Python 3.13), installs the local pipeline, runs it end to end on the demo fleet (./lake)
#   make test   installs the test tools too, then runs lint, type checks and the whole test suite
SHELL := /bin/bash
.DEFAULT_GOAL := help

VENV ?= .venv
PY := $(VENV)/bin/python
# Python 3.13: on PATH if it works there, else from pyenv's versions folder.
PYTHON313 ?= $(shell if python3.13 -c 'import sys' >/dev/null 2>&1; then command -v python3.13; \
	else ls -d $${PYENV_ROOT:-$$HOME/.pyenv}/versions/3.13*/bin/python3.13 2>/dev/null | sort -V | tail -n 1; fi)
PIP_QUIET := --quiet --disable-pip-version-check
# pip on these machines warns about optional local index folders that are absent; keep the log readable.
PIP_FILTER := 2> >(grep -v "is ignored: it is neither a file nor a directory" >&2)
ARGS ?=
PYTEST_ARGS ?=
NODE_BIN := node_modules/.bin
export JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION := 20
export CDK_DISABLE_CLI_TELEMETRY := 1
export CDK_DISABLE_VERSION_CHECK := 1

.PHONY: help run test install install-dev lint typecheck pytest browser bench synth clean

help:
	@echo "make run     - the local pipeline end to end on the synthetic demo fleet (ARGS='--servers 500 --horizon 180')"
	@echo "make test    - lint, type checks and the test suite"
	@echo "make bench   - the benchmarks under benchmarks/"
	@echo "make synth   - synthesize the CDK stack with the CDK CLI (offline)"

$(PY):
	@test -n "$(PYTHON313)" || { echo "error: Python 3.13 not found (install it, e.g. pyenv install 3.13)"; exit 1; }
	$(PYTHON313) -m venv $(VENV)
	$(PY) -m pip install $(PIP_QUIET) --upgrade pip $(PIP_FILTER)

$(VENV)/.installed-run: pyproject.toml | $(PY)
	$(PY) -m pip install $(PIP_QUIET) -e . $(PIP_FILTER)
	@touch $@

$(VENV)/.installed-dev: $(VENV)/.installed-run requirements.txt requirements-dev.txt
	$(PY) -m pip install $(PIP_QUIET) -r requirements-dev.txt $(PIP_FILTER)
	@touch $@

install: $(VENV)/.installed-run
install-dev: $(VENV)/.installed-dev

# The demo: a fresh machine shows every stage in one command. Own data: `capacity-forecaster run` (docs/own-data.md).
run: install
	$(VENV)/bin/capacity-forecaster demo $(ARGS)

lint: install-dev
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck: install-dev
	$(VENV)/bin/mypy

# The report's browser test needs Chromium: installed from Debian's archive when missing and we are root
# (about 40 s); elsewhere the two browser tests are skipped with a reason.
browser:
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing chromium for the report's browser test"; \
	    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium; } \
	      >/dev/null 2>&1 || echo "chromium could not be installed: the browser tests will be skipped"; \
	  else echo "no chromium and not root: the report's browser tests will be skipped"; fi; }

pytest: install-dev browser
	$(VENV)/bin/pytest -n 2 --dist loadgroup $(PYTEST_ARGS)

test: lint typecheck pytest

bench: install-dev
	$(PY) -m pip install -q --no-deps -r benchmarks/requirements-bench.txt
	@for b in benchmarks/bench_*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

$(NODE_BIN)/cdk:
	npm install --no-save --no-audit --no-fund aws-cdk@2

synth: install-dev $(NODE_BIN)/cdk
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" $(NODE_BIN)/cdk synth -q --no-notices

clean:
	rm -rf $(VENV) cdk.out lake .pytest_cache .mypy_cache .ruff_cache
