# OneMap Twin — set-up, demo and tests on a fresh Debian machine (as root or with sudo).
SHELL := /bin/bash
VENV ?= .venv
PYTHON ?= python3
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
APT_PACKAGES := postgresql postgresql-postgis python3-venv
INSTALLED := $(VENV)/.installed

.PHONY: setup system python demo test clean

setup: system python

# Debian packages, installed only when something is missing.
system:
	@if ! ls /usr/share/postgresql/*/extension/postgis.control >/dev/null 2>&1 \
	    || ! $(PYTHON) -c 'import venv, ensurepip' >/dev/null 2>&1; then \
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

demo: setup
	$(VENV)/bin/twin db up
	$(VENV)/bin/twin demo

test: setup
	$(VENV)/bin/pytest

clean:
	-$(VENV)/bin/twin db down
	rm -rf var
