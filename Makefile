# otlp-auth-proxy — the two commands: `make run` and `make test`.
SHELL := /bin/bash
.DEFAULT_GOAL := build

SWIFT ?= swift
BIN := .build/debug/otlp-auth-proxy
RUN_DIR := run
SOAK_SECONDS ?= 600
# Release builds: the Swift runtime linked in, relative relocations packed (DT_RELR, with lld) and no
# dynamic symbol table of the whole binary; together 2.3 MiB less resident memory than the defaults.
# Each function in its own section, laid out in the order of scripts/symbol-order.txt (the functions
# a proxy runs, most-run first) and the compiler's private functions gathered after the code
# (scripts/release-layout.ld), so the code a running proxy keeps resident is packed together: 4 MiB
# less resident memory. SwiftPM does not watch these two files: after changing one, delete
# .build/release/otlp-auth-proxy so the next build links again. The run-time exclusivity checks are
# off in release builds (every module, SwiftNIO's too): they cost about 6% of the instructions of a small
# request under callgrind; the debug builds that run every test keep them.
RELEASE_FLAGS := --static-swift-stdlib -Xswiftc -enforce-exclusivity=unchecked -Xswiftc -use-ld=lld -Xlinker -z -Xlinker pack-relative-relocs \
	-Xlinker --no-export-dynamic -Xswiftc -Xfrontend -Xswiftc -function-sections -Xcc -ffunction-sections \
	-Xlinker --symbol-ordering-file=$(CURDIR)/scripts/symbol-order.txt -Xlinker --no-warn-symbol-ordering \
	-Xlinker -T -Xlinker $(CURDIR)/scripts/release-layout.ld

.PHONY: deps build release run test test-swift test-e2e test-asan test-tsan fuzz venv clean bench bench-payloads soak symbol-order

deps:
	@scripts/install-deps.sh

build: deps
	$(SWIFT) build

release: deps
	$(SWIFT) build -c release $(RELEASE_FLAGS)

venv: deps
	@scripts/setup-venv.sh

## Builds, makes dev certificates and a token, and runs the proxy (:4317, :4318) in front of the built-in sink.
run: build
	@scripts/dev-run.sh $(RUN_DIR) $(BIN)

## Every test: Swift unit and integration tests, then the end-to-end tests with real clients.
test: build venv
	$(MAKE) --no-print-directory test-swift
	$(MAKE) --no-print-directory test-e2e

## Fails when SwiftNIO reports an API misuse, even if every test passed (scripts/swift-test.sh).
test-swift:
	SWIFT=$(SWIFT) scripts/swift-test.sh

test-e2e:
	OTLP_AUTH_PROXY_BIN=$(BIN) .venv/bin/python -m pytest -q tests/e2e

## The Swift tests under AddressSanitizer and ThreadSanitizer, each in its own build directory.
## LeakSanitizer's exit-time report is off unless LEAKS=1 (docs/security.md says why).
test-asan: deps
	ASAN_OPTIONS=detect_leaks=$(if $(LEAKS),1,0) $(SWIFT) test --sanitize=address --scratch-path .build-asan

test-tsan: deps
	$(SWIFT) test --sanitize=thread --scratch-path .build-tsan

## libFuzzer targets (fuzz/): builds them and runs each for FUZZ_SECONDS (default 60); see docs/security.md.
fuzz: deps
	@scripts/fuzz.sh

clean:
	rm -rf .build .build-asan .build-tsan .build-fuzz $(RUN_DIR)

## Side-by-side benchmark against nghttpx and HAProxy in front of nghttpd and nginx, each proxy on one core, access logs
## on and off (prints a table for each; see docs/benchmarks.md). BENCH_REQUESTS and BENCH_ROUNDS set the run length.
bench: deps venv
	@scripts/install-bench-deps.sh
	$(SWIFT) build -c release $(RELEASE_FLAGS)
	.venv/bin/python bench/bench.py

## What reading payloads costs (usage.count_items, tenant.resource_attribute), 16 KiB and 256 KiB, gzip and not, gRPC and
## HTTP/1.1, against passing them through (see docs/benchmarks.md). BENCH_PAYLOAD_REQUESTS sets the 16 KiB request count.
bench-payloads: deps venv
	@scripts/install-bench-deps.sh
	$(SWIFT) build -c release $(RELEASE_FLAGS)
	.venv/bin/python bench/payload_bench.py

## Regenerates scripts/symbol-order.txt from a release build run under callgrind (see the script).
symbol-order: deps venv
	@scripts/install-bench-deps.sh valgrind
	$(SWIFT) build -c release $(RELEASE_FLAGS) -Xlinker -Map=$(CURDIR)/.build/release-link.map
	.venv/bin/python scripts/symbol-order.py

## Soak: the release build under mixed gRPC and HTTP exporters for SOAK_SECONDS (default 600) with 10%
## invalid credentials and two receiver restarts; checks RSS slope, descriptors and that no span is lost.
soak: deps venv
	$(SWIFT) build -c release $(RELEASE_FLAGS)
	SOAK_SECONDS=$(SOAK_SECONDS) OTLP_AUTH_PROXY_BIN=.build/release/otlp-auth-proxy .venv/bin/python tests/soak/soak.py
