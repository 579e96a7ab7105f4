# Two commands for a fresh Debian/Ubuntu machine:
#   make demo   set everything up, then run the end-to-end demo
#   make test   set everything up, then run every test
# Both are idempotent: the set-up steps only do work when something is missing.

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(VENV)/bin/pip
STAMP  := $(VENV)/.installed

.PHONY: setup test demo bench-quick clean system-deps node-deps

setup: $(STAMP) system-deps node-deps

# Python: a virtualenv with the project and all extras (device + collector + sim + dev).
$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -e '.[dev]'
	@touch $(STAMP)

# System binaries the tests start themselves (Mosquitto; Node.js for real MicroPython).
system-deps:
	@scripts/ensure-system-deps.sh

# Node packages (MicroPython WebAssembly port for the shim tests).
node-deps:
	@if [ -f package.json ]; then \
	  if [ ! -d node_modules ] || [ package.json -nt node_modules ]; then \
	    npm install --no-audit --no-fund --loglevel=error && touch node_modules; \
	  fi; \
	fi

test: setup
	$(PY) -m pytest -q -p no:cacheprovider $(PYTEST_ARGS)

demo: setup
	$(PY) -m hw_sim.demo

bench-quick: setup
	@for b in chain ingest wire rules check; do \
	  echo "== bench $$b" >&2; $(VENV)/bin/veritrail bench $$b --quick --json || exit 1; \
	done

clean:
	rm -rf $(VENV) node_modules .demo build *.egg-info
