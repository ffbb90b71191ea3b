# otlp-auth-proxy — the two commands: `make run` and `make test`.
SHELL := /bin/bash
.DEFAULT_GOAL := build

SWIFT ?= swift
BIN := .build/debug/otlp-auth-proxy
RUN_DIR := run

.PHONY: deps build release run test test-swift test-e2e venv clean bench

deps:
	@scripts/install-deps.sh

build: deps
	$(SWIFT) build

release: deps
	$(SWIFT) build -c release

venv: deps
	@scripts/setup-venv.sh

## Builds, makes dev certificates and a token, and runs the proxy (:4317, :4318) in front of the built-in sink.
run: build
	@scripts/dev-run.sh $(RUN_DIR) $(BIN)

## Every test: Swift unit and integration tests, then the end-to-end tests with real clients.
test: build venv
	$(MAKE) --no-print-directory test-swift
	$(MAKE) --no-print-directory test-e2e

test-swift:
	$(SWIFT) test

test-e2e:
	OTLP_AUTH_PROXY_BIN=$(BIN) .venv/bin/python -m pytest -q tests/e2e

clean:
	rm -rf .build $(RUN_DIR)

## Side-by-side benchmark against nghttpx and HAProxy (prints one table; see docs/benchmarks.md).
bench: deps venv
	@scripts/install-bench-deps.sh
	$(SWIFT) build -c release
	.venv/bin/python bench/bench.py
