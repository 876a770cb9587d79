# Two commands for a newcomer on a fresh machine:
#   make demo   set up .venv and run the main job
#   make test   set up .venv and run lint, types and the whole test suite
# Both are idempotent: the set-up runs again only when pyproject.toml or the constraints change.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.fedledger-installed
OUT ?= runs/demo
# The CPU build of torch lies on this machine kind's disk; pip finds it there.
WHEELS := $(wildcard /opt/wheels)
FIND_LINKS := $(if $(WHEELS),--find-links $(WHEELS),)
PYTEST_ARGS ?=

.PHONY: setup demo test lint format bench bench-flower-env lock clean

NODE_STAMP := node_modules/.fedledger-installed
SYSTEM_STAMP := $(VENV)/.system-packages

setup: $(SYSTEM_STAMP) $(STAMP) $(NODE_STAMP)

# Debian packages for the browser and multi-host tests (requirements/apt.txt; needs root).
$(SYSTEM_STAMP): requirements/apt.txt scripts/install-system-packages
	scripts/install-system-packages
	mkdir -p $(VENV) && touch $(SYSTEM_STAMP)

# anvil (a local EVM node for the ledger's RPC backend) from npm, pinned by package-lock.json.
# Never --omit=optional: the binary is in the optional platform package.
$(NODE_STAMP): package.json package-lock.json
	npm ci --no-audit --no-fund
	touch $(NODE_STAMP)

$(STAMP): pyproject.toml requirements/constraints.txt
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "fedledger needs Python >= 3.11")'
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --disable-pip-version-check $(FIND_LINKS) -c requirements/constraints.txt torch==2.13.0
	$(PIP) install --quiet --disable-pip-version-check $(FIND_LINKS) -c requirements/constraints.txt -e '.[dev]'
	touch $(STAMP)

# The main job: the server-based reference on the task's partition, then the same task trained
# serverless on the ledger (ten nodes with their own keys over gRPC on 127.0.0.1, rounds
# committed, revealed, attested and finalized on the embedded EVM, rewards paid), ending with
# the audit replaying the chain and recomputing every round. Each run draws report.png beside
# its report.json (the ledger run against the baseline).
demo: setup
	$(VENV)/bin/fedledger baseline --config examples/digits.toml --out $(OUT)/baseline
	$(VENV)/bin/fedledger run --config examples/digits.toml --out $(OUT)/ledger --baseline $(OUT)/baseline --overwrite
	$(VENV)/bin/fedledger audit --run $(OUT)/ledger
	@echo "plots: $(OUT)/ledger/report.png (the baseline's: $(OUT)/baseline/report.png)"
	@echo "explore the run: $(VENV)/bin/fedledger explorer --run $(OUT)/ledger"

bench: setup
	$(VENV)/bin/python -m benchmarks.consensus
	$(VENV)/bin/python -m benchmarks.blob_transfer
	$(VENV)/bin/python -m benchmarks.ledger
	$(VENV)/bin/python -m benchmarks.signing

# Flower's own venv, the baseline of benchmarks.startup (which also builds it on first use):
# exact pins, torch's CPU build from /opt/wheels (without it pip fails: never a CUDA torch).
FLOWER_VENV := .venv-flower
bench-flower-env: $(FLOWER_VENV)/.installed
$(FLOWER_VENV)/.installed: benchmarks/flower/requirements.txt
	@test -n "$(WHEELS)" || { echo "bench-flower-env: no /opt/wheels (the CPU build of torch)"; exit 1; }
	test -x $(FLOWER_VENV)/bin/python || $(PYTHON) -m venv $(FLOWER_VENV)
	$(FLOWER_VENV)/bin/python -m pip install --quiet --disable-pip-version-check $(FIND_LINKS) -r benchmarks/flower/requirements.txt
	touch $@

lint: setup
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/ruff format --check src tests benchmarks
	$(VENV)/bin/mypy

test: lint
	$(VENV)/bin/pytest -n 2 $(PYTEST_ARGS)

format: setup
	$(VENV)/bin/ruff format src tests benchmarks
	$(VENV)/bin/ruff check --fix src tests benchmarks

lock: setup
	( echo "# Exact versions for 'make' installs (pip -c). Regenerate: make lock"; \
	  $(PIP) freeze --exclude-editable ) > requirements/constraints.txt

clean:
	rm -rf $(VENV) node_modules runs .pytest_cache .mypy_cache .ruff_cache
