# OneMap Twin — set-up, demo and tests on a fresh Debian machine (as root or with sudo).
SHELL := /bin/bash
VENV ?= .venv
PYTHON ?= python3
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
INSTALLED := $(VENV)/.installed
WEB_INSTALLED := node_modules/.installed

.PHONY: setup system python web demo test lock clean

setup: system python web

# Debian packages: only those missing, each need checked on its own (install/debian.py).
system:
	@PYTHON=$(PYTHON) $(PYTHON) install/debian.py

python: $(INSTALLED)

# Exactly the locked versions (requirements.lock, hashes checked), then the project itself without resolving.
$(INSTALLED): pyproject.toml requirements.lock
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --require-hashes --no-deps -r requirements.lock
	$(VENV)/bin/pip install --quiet --no-deps --no-build-isolation -e .
	$(VENV)/bin/pip check
	touch $@

# Refresh the lock on purpose (for Python 3.11 on x86-64 Linux): `make lock` after a change to pyproject.toml's
# dependencies keeps every other pin; `make lock UPGRADE=1` takes the newest versions the bounds allow.
LOCK_VENV := build/lock
UV := $(LOCK_VENV)/bin/uv
lock:
	$(PYTHON) -m venv $(LOCK_VENV)
	$(LOCK_VENV)/bin/pip install --quiet uv==0.13.8
	$(UV) pip compile pyproject.toml install/build.in --extra test --generate-hashes --python-version 3.11 \
	  --python-platform x86_64-manylinux_2_28 --no-header --quiet -o requirements.lock $(if $(UPGRADE),--upgrade)

# MapLibre GL JS for the viewer and the style validator for the tests, from the npm registry.
web: $(WEB_INSTALLED)

$(WEB_INSTALLED): package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	touch $@

demo: setup
	$(VENV)/bin/twin db up
	$(VENV)/bin/twin demo

test: setup
	$(VENV)/bin/pytest

clean:
	-$(VENV)/bin/twin db down
	rm -rf var
