# geartrain: `make run` starts a server, `make test` runs the whole suite.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

.PHONY: run test check lint typecheck unit compat bench system-deps clean

# The virtualenv, with geartrain installed (editable) plus test tools.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

## run: create .venv if missing, install geartrain, start the server on port 4730
run: $(STAMP)
	$(BIN)/geartrain server $(ARGS)

## test: install what the tests need (Debian packages included), start the
## database servers the store tests use, then run everything
test: system-deps $(STAMP) lint typecheck
	scripts/start-services
	$(BIN)/pytest

## system-deps: Debian packages of the reference server and third-party clients
system-deps:
	scripts/install-system-deps

lint: $(STAMP)
	$(BIN)/ruff check geartrain tests

typecheck: $(STAMP)
	$(BIN)/mypy

## compat: the shared compatibility kit against this checkout's server (the
## bare command keeps its default store in a fresh data directory)
compat: $(STAMP)
	GEARTRAIN_DATA_DIR=$$(mktemp -d) ../shared/compat/run '$(BIN)/geartrain server --port {port} --listen 127.0.0.1' \
	    --persist-template '$(BIN)/geartrain server --port {port} --listen 127.0.0.1 --store sqlite://{db}'

## bench: side-by-side benchmark against C gearmand (see bench/RESULTS.md)
bench: $(STAMP)
	bench/run

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache bench-results
