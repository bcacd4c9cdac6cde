# Two commands on a fresh machine:  make run  /  make test
# Everything is installed into ./.venv (and ./.tools for the deploy validators).

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.sailcast-installed
# The stock sails.io.js browser bundle for the demo page, from npm (not kept in git).
SAILS_IO_JS_VERSION := 1.2.1
SAILS_IO_JS := .tools/sails.io.js/dist/sails.io.js

.PHONY: install demo-client run test test-fast lint typecheck test-tools bench bench-quick bench-delivery bench-presence bench-scale clean

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --disable-pip-version-check -q --upgrade pip
	$(PY) -m pip install --disable-pip-version-check -q -e '.[gateway,dev,test]'
	@touch $@

install: $(STAMP)

$(SAILS_IO_JS):
	@mkdir -p .tools/sails.io.js
	@cd .tools/sails.io.js && npm pack --silent sails.io.js@$(SAILS_IO_JS_VERSION) >/dev/null \
	  && tar -xzf sails.io.js-$(SAILS_IO_JS_VERSION).tgz --strip-components=1 \
	     package/dist/sails.io.js package/package.json \
	  && rm -f sails.io.js-$(SAILS_IO_JS_VERSION).tgz \
	  || echo "npm pack failed: the demo page will not find sails.io.js"

demo-client: $(SAILS_IO_JS)

run: install demo-client
	$(VENV)/bin/sailcast dev

test-tools: install
	bash deploy/tools/install.sh
	@if [ -f tests/e2e/js/package.json ]; then bash tests/e2e/setup.sh; fi

lint: install
	$(VENV)/bin/ruff check shared publisher gateway tests bench examples
	$(VENV)/bin/ruff format --check shared publisher gateway tests bench examples
	$(VENV)/bin/mypy

test: install test-tools lint
	$(PY) -m pytest

test-fast: install
	$(PY) -m pytest tests/unit tests/integration

bench: install
	bash bench/setup.sh
	$(PY) -m bench.run

bench-quick: install
	bash bench/setup.sh
	$(PY) -m bench.run --quick

# Delivery under forced disconnects (docs/benchmarks.md); ARGS="--quick" for a short run.
bench-delivery: install
	bash bench/setup.sh
	$(PY) -m bench.delivery $(ARGS)

# Members/count latency vs Node fetchSockets, presence under churn (docs/benchmarks.md).
bench-presence: install
	bash bench/setup.sh
	$(PY) -m bench.presence $(ARGS)

bench-scale: install
	bash bench/setup.sh
	$(PY) -m bench.scale $(ARGS)

clean:
	rm -rf $(VENV) .tools .pytest_cache .mypy_cache .ruff_cache
