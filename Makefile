# OneMap Twin — set-up, demo and tests on a fresh Debian machine (as root or with sudo).
SHELL := /bin/bash
VENV ?= .venv
PYTHON ?= python3
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
APT_PACKAGES := postgresql postgresql-postgis python3-venv nodejs npm chromium fonts-noto-cjk redis-server
INSTALLED := $(VENV)/.installed
WEB_INSTALLED := node_modules/.installed

.PHONY: setup system python web demo test clean

setup: system python web

# Debian packages, installed only when something is missing.
system:
	@if ! ls /usr/share/postgresql/*/extension/postgis.control >/dev/null 2>&1 \
	    || ! $(PYTHON) -c 'import venv, ensurepip' >/dev/null 2>&1 \
	    || ! command -v npm >/dev/null || ! command -v chromium >/dev/null || ! command -v redis-server >/dev/null \
	    || ! ls /usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc >/dev/null 2>&1; then \
	  echo "installing Debian packages: $(APT_PACKAGES)"; \
	  $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends $(APT_PACKAGES) </dev/null; \
	fi

python: $(INSTALLED)

$(INSTALLED): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -e '.[test]'
	touch $@

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
