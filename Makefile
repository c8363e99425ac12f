# smartpark: everything from a fresh Debian machine (as root) to a green test run.
#
#   make test    system packages (only when missing) + .venv + editable install, then pytest
#   make demo    same set-up, then `smartpark demo`
#   make lint    ruff + mypy
#   make bench   bench/run_all.sh
#   make clean   caches, build output, the local stack's state (.smartpark/), stopping it first
#   make distclean   clean + remove .venv
#
# Variables: PYTHON (default python3, >= 3.11), PYTEST_ARGS (extra pytest arguments),
# PYTEST_MARKS (default "not slow and not bench and not ci"; with CI set, as .ci/run does, "not slow and not bench":
# the long failure and interoperability tests marked `ci` run there).

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := test

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
ifdef CI
PYTEST_MARKS ?= not slow and not bench
else
PYTEST_MARKS ?= not slow and not bench and not ci
endif
PYTEST_ARGS ?=
# What the services and tests run, as "binary or file:Debian package", each installed only when missing:
# the broker and database every test starts; a small font that draws Chinese (dashboard previews, reports);
# Chromium for the console's browser tests (Playwright drives Debian's: its own download cannot work offline);
# Node.js and npm for the aedes broker, RabbitMQ for the interoperability tests; pdftoppm for report pages;
# gcc (and the Python headers, python3-dev when $(PYTHON) has none) for hj212/_speedups.c and smartpark/_speedups.c.
SYSTEM_NEEDS := mosquitto:mosquitto mosquitto_pub:mosquitto-clients influxd:influxdb \
  /usr/share/fonts/truetype/wqy/wqy-microhei.ttc:fonts-wqy-microhei /usr/bin/chromium:chromium \
  node:nodejs npm:npm /usr/lib/rabbitmq/bin/rabbitmq-server:rabbitmq-server pdftoppm:poppler-utils gcc:gcc
POLICY_RC_D ?= /usr/sbin/policy-rc.d
LINT_DIRS := smartpark collector alerts dashboards simulators hj212 rollups reports devstack demo cli
# mypy refuses a directory without Python files: lint the packages that have some
LINT_EXISTING = $(foreach d,$(LINT_DIRS),$(if $(wildcard $(d)/*.py),$(d)))

.PHONY: test demo lint bench clean distclean setup system-deps

# the aedes MQTT broker (npm) of the interoperability tests, into the git-ignored tests/brokers/node_modules,
# only when missing (npm comes with the system packages)
AEDES := tests/brokers/node_modules/aedes
$(AEDES): tests/brokers/package.json tests/brokers/package-lock.json | system-deps
	npm ci --prefix tests/brokers --no-audit --no-fund --loglevel=error
	touch $@

setup: system-deps $(STAMP) $(AEDES)

# Debian packages, only when a binary is missing. mosquitto lives in /usr/sbin, which is not on an
# ordinary user's PATH. The packages' init scripts would start system-wide services on 1883/8086 at
# install time: a temporary policy-rc.d (the standard Debian way) forbids that, so the only brokers
# and databases on this machine are the ones smartpark starts itself.
system-deps:
	@missing=""; pkgs=""; \
	for need in $(SYSTEM_NEEDS); do \
	  what=$${need%%:*}; pkg=$${need#*:}; \
	  case $$what in /*) [ -e $$what ] && continue;; \
	    *) { command -v $$what >/dev/null 2>&1 || [ -x /usr/sbin/$$what ]; } && continue;; esac; \
	  missing="$$missing $$what"; pkgs="$$pkgs $$pkg"; \
	done; \
	if ! command -v $(PYTHON) >/dev/null 2>&1; then pkgs="$$pkgs python3 python3-venv"; \
	elif [ ! -x $(PY) ] && ! $(PYTHON) -c 'import ensurepip, venv' >/dev/null 2>&1; then pkgs="$$pkgs python3-venv"; fi; \
	if command -v $(PYTHON) >/dev/null 2>&1 && ! $(PYTHON) -c 'import os, sysconfig, sys; \
	  sys.exit(not os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h")))' >/dev/null 2>&1; \
	  then pkgs="$$pkgs python3-dev"; fi; \
	if [ -z "$$pkgs" ]; then echo "system packages: all present"; exit 0; fi; \
	echo "system packages: installing$$pkgs (missing:$$missing)"; \
	if ! command -v apt-get >/dev/null 2>&1; then \
	  echo "make: need the Debian packages$$pkgs but apt-get is not available" >&2; exit 1; fi; \
	sudo=""; \
	if [ "$$(id -u)" != 0 ]; then \
	  if command -v sudo >/dev/null 2>&1; then sudo="sudo -n"; \
	  else echo "make: need root (or sudo) to apt-get install$$pkgs" >&2; exit 1; fi; fi; \
	policy=$(POLICY_RC_D); own_policy=""; \
	if [ ! -e $$policy ]; then \
	  printf '#!/bin/sh\n# temporary, by smartpark make: no service starts during install\nexit 101\n' \
	    | $$sudo tee $$policy >/dev/null; $$sudo chmod 755 $$policy; own_policy=1; fi; \
	trap '[ -z "$$own_policy" ] || $$sudo rm -f '"$$policy" EXIT; \
	export DEBIAN_FRONTEND=noninteractive; \
	$$sudo env DEBIAN_FRONTEND=noninteractive apt-get update -q; \
	$$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
	  -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold $$pkgs

$(PY):
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "make: smartpark needs Python >= 3.11, $(PYTHON) is " + sys.version.split()[0])'
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip

# re-installed (and the C extension rebuilt) only when pyproject.toml or the C source is newer than the stamp
$(STAMP): pyproject.toml hj212/_speedups.c smartpark/_speedups.c | $(PY)
	$(PY) -m pip install -q -e '.[test,dev]'
	touch $@

test: setup
	@rc=0; $(VENV)/bin/pytest -m "$(PYTEST_MARKS)" $(PYTEST_ARGS) || rc=$$?; \
	echo "pytest exit status: $$rc"; exit $$rc

demo: setup
	$(VENV)/bin/smartpark demo

lint: setup
	$(VENV)/bin/ruff check $(LINT_EXISTING)
	$(VENV)/bin/mypy $(LINT_EXISTING)

bench: setup
	@if [ -f bench/run_all.sh ]; then bash bench/run_all.sh; \
	else echo "make bench: bench/run_all.sh does not exist (yet)"; fi

clean:
	@if [ -x $(PY) ] && [ -d .smartpark/stack ]; then $(PY) -m cli stack down || true; fi
	rm -rf .smartpark build dist *.egg-info .pytest_cache .mypy_cache .ruff_cache .hypothesis
	find . -path ./$(VENV) -prune -o -name __pycache__ -type d -prune -exec rm -rf {} +

distclean: clean
	rm -rf $(VENV) hj212/_speedups*.so smartpark/_speedups*.so
