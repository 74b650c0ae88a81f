# The README's two commands are `make run` and `make test`; both install what they need.
PY ?= python3
LAB_DIR ?= $(CURDIR)/lab-state

.PHONY: setup protos lint imports typecheck test test-fast run dashboard clean

setup:
	bash scripts/setup.sh

protos: setup
	$(PY) scripts/gen_protos.py

lint: protos imports
	ruff check src tests bench scripts setup.py
	ruff format --check src tests bench scripts setup.py

## Import contracts (pyproject's [tool.importlinter]; PYTHONPATH=src: the tree checked
## is this one): the layers, services independent, nothing imports cli, validate and
## chaos never reach into lab, no cycle between top-level packages.
imports: protos
	PYTHONPATH=$(CURDIR)/src lint-imports --no-cache

typecheck: protos
	mypy

## Whole suite: lint, types, unit, simulation, e2e (slow-marked tests included).
test: lint typecheck
	$(PY) -m pytest

## Quick loop while developing: everything not marked slow or vm.
test-fast: protos
	$(PY) -m pytest -m "not slow and not vm"

## Main job: a 3-node lab up, validated, torn down.
run: protos
	plasma lab up --dir $(LAB_DIR) --validate --persistence; rc=$$?; plasma lab down --dir $(LAB_DIR); exit $$rc

## The operator dashboard of the lab in $(LAB_DIR), started if it is not running: open
## the one-time login URL `plasma dashboard` prints first; Ctrl-C stops the dashboard.
dashboard: protos
	plasma lab up --dir $(LAB_DIR) && plasma dashboard --dir $(LAB_DIR)

clean:
	rm -rf build dist .pytest_cache .mypy_cache .ruff_cache .setup-stamp
