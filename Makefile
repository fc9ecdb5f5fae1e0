# facegan — `make demo` runs the pipeline locally, `make test` runs lint and every test.
# Both set up everything they need on a fresh machine (.venv, pinned packages, Chromium).

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp

.PHONY: help install system-deps lint test demo bench clean

help:
	@echo "make demo   - prepare -> train -> gallery through the Prefect flows on a local store"
	@echo "make test   - install (first time), ruff check, the whole test suite"
	@echo "make lint   - ruff check"
	@echo "make bench  - speed benchmarks (not part of test)"

$(STAMP): requirements.txt requirements-dev.txt constraints.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements-dev.txt -c constraints.txt
	$(PY) -m pip install -q --no-deps -e .
	touch $(STAMP)

install: $(STAMP)

# Debian's Chromium for the browser tests of the gallery (Playwright drives it, no download).
system-deps:
	@command -v chromium >/dev/null 2>&1 || { \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; }

lint: $(STAMP)
	$(VENV)/bin/ruff check .

test: $(STAMP) system-deps lint
	$(PY) -m pytest -q

# Local Prefect (ephemeral API), a local folder standing in for S3. CELEBA=/path uses real data.
demo: $(STAMP)
	mkdir -p demo/.prefect
	PREFECT_HOME=$(CURDIR)/demo/.prefect PREFECT_SERVER_ANALYTICS_ENABLED=false \
	  $(PY) -m flows.demo

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache test-artifacts demo
