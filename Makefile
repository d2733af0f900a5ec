# dlmsd developer commands. Everything installs into .venv; nothing global but
# the Debian packages the tests need (mosquitto), installed once with apt.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export PYTHONPATH := $(CURDIR)

.PHONY: run test lint bench fuzz format clean venv test-deps dist install config-docs

$(STAMP): setup.cfg pyproject.toml
	@if ! $(PYTHON) -m venv --help >/dev/null 2>&1 || ! $(PYTHON) -c 'import ensurepip' 2>/dev/null; then \
		echo "installing python3-venv"; apt-get update -qq && apt-get install -y -qq python3-venv; fi
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# compat mode puts the repo root on sys.path, so twistd finds twisted/plugins/
	$(BIN)/python -m pip install -q -e '.[dev]' --config-settings editable_mode=compat
	touch $(STAMP)

venv: $(STAMP)

run: $(STAMP)
	mkdir -p var
	# git checks files out 0644; the daemon refuses key files others can read
	chmod 600 etc/keys.toml etc/sim-keys.toml
	$(BIN)/twistd -n --pidfile= dlmsd --config etc/dlmsd.toml

lint: $(STAMP)
	$(BIN)/ruff check dlmsd tests twisted bench fuzz
	$(BIN)/ruff format --check dlmsd tests twisted bench fuzz
	$(BIN)/mypy --strict dlmsd twisted/plugins/dlmsd_plugin.py

# docs/configuration.md is generated from the config classes (a test checks it is current).
config-docs: $(STAMP)
	$(BIN)/python -m dlmsd.service.configdoc > docs/configuration.md

format: $(STAMP)
	$(BIN)/ruff format dlmsd tests twisted bench fuzz
	$(BIN)/ruff check --fix dlmsd tests twisted bench fuzz

# Real brokers and servers for the tests, from Debian, installed once.
test-deps:
	@if ! test -x /usr/sbin/mosquitto && ! command -v mosquitto >/dev/null; then \
		echo "installing mosquitto"; apt-get update -qq && apt-get install -y -qq mosquitto; fi
	@if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 && ! command -v initdb >/dev/null; then \
		echo "installing postgresql"; apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql; fi
	@# promtool (alert rule tests) and docker-compose (compose.yaml validation)
	@if ! command -v promtool >/dev/null || ! command -v docker-compose >/dev/null; then \
		echo "installing prometheus (promtool), docker-compose"; apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
		prometheus docker-compose; fi
	@if ! command -v zsh >/dev/null; then \
		echo "installing zsh (completion tests)"; apt-get update -qq && apt-get install -y -qq zsh; fi
	@if ! command -v socat >/dev/null; then \
		echo "installing socat"; apt-get update -qq && apt-get install -y -qq socat; fi

# the API reference from the docstrings (pdoc; any warning fails)
.PHONY: docs
docs: $(STAMP) config-docs
	$(BIN)/python docs/build_api.py build/api

test: $(STAMP) test-deps lint
	$(BIN)/python -m pytest -q -p no:cacheprovider

bench: $(STAMP) test-deps
	$(BIN)/python -m pip install -q -e '.[bench]' --config-settings editable_mode=compat
	$(BIN)/python -m bench

# Coverage-guided fuzzing (atheris): 1,000,000 executions per harness, a table at the end.
fuzz: $(STAMP)
	$(BIN)/python -m pip install -q -e '.[fuzz]' --config-settings editable_mode=compat
	$(BIN)/python -m fuzz --execs 1000000 --budget 1800

# sdist and wheel in dist/, checked as PyPI would (twine check).
dist: $(STAMP)
	rm -rf dist
	$(BIN)/python -m build --outdir dist .
	$(BIN)/twine check --strict dist/*

# A server install (as root): venv with the wheel under PREFIX, the systemd unit, the
# dlmsd user, /etc/dlmsd with a sample config and an empty key store. DESTDIR stages it.
PREFIX ?= /opt/dlmsd
install: dist
	PREFIX=$(PREFIX) DESTDIR=$(DESTDIR) PYTHON=$(PYTHON) deploy/install.sh

clean:
	rm -rf $(VENV) build dist *.egg-info .mypy_cache .ruff_cache .pytest_cache .hypothesis
