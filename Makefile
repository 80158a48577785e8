# One command per habit; CI runs the same targets (.ci/run).
VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: setup demo test test-unit check validate fmt bench clean

$(STAMP): pyproject.toml constraints.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[dev]'
	@touch $@

## setup: create .venv with the pinned dependencies
setup: $(STAMP)

## demo: broker, ClickHouse, worker and generator on embedded infrastructure
demo: setup
	$(BIN)/touchpoint demo

## test: the whole suite, integration tests on real Apache Kafka and the ClickHouse engine
test: setup
	$(BIN)/python -m streams.tools.embedded.kafka fetch
	$(BIN)/pytest

## test-unit: the fast tests only (no broker)
test-unit: setup
	$(BIN)/pytest -m "not integration"

## check: lint, format check, strict type check, and what CI cannot run (validate)
check: setup validate
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

## validate: the compose file, Kubernetes manifests and Dockerfile against their specifications
validate: setup
	$(BIN)/check-jsonschema --builtin-schema vendor.compose-spec docker-compose.yml
	$(BIN)/python -m tests.kustomize deploy/kubernetes/base deploy/kubernetes/overlays/sasl-ssl
	$(BIN)/hadolint deploy/Dockerfile

## fmt: format and fix what the linter can
fmt: setup
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

## bench: the throughput benchmark (ceiling, bare Faust, the resolver, this worker with one and two processes) on Apache Kafka
bench: setup
	$(BIN)/touchpoint benchmark

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .hypothesis var
