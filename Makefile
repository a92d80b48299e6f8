# Entry points for people and CI (.ci/run is `make test`). `make` alone lists them.

.DEFAULT_GOAL := help
SHELL := bash
.SHELLFLAGS := -euo pipefail -c

# The pinned tools of scripts/tools.sh (buf, grpcurl, cargo-deny, cargo-fuzz) come
# first, also for tests.
export PATH := $(CURDIR)/.tools/venv/bin:$(CURDIR)/.tools/cargo/bin:$(PATH)

# Seconds each fuzz target runs in `make fuzz`, thus in `make test` (CI).
FUZZ_SECONDS ?= 30

.PHONY: help run test lint fmt fuzz tools bench bench-build kind-up kind-down kind-smoke new-service remove-service rename 

help: ## List the targets
	@awk -F ':.*## ' '/^[a-z-]+:.*## / { printf "  make %-15s %s\n", $$1, $$2 }' $(MAKEFILE_LIST)

run: ## Run every service in one process (the stack launcher)
	cargo run -p stack

# The tests get a private, throwaway PostgreSQL server (TEST_DATABASE_URL) for the
# database tests, and so do the tests the template check runs on its copy.
test: lint ## Everything CI checks: lint, every test (grpcurl/buf acceptance included), the k8s checks
	@if cargo nextest --version >/dev/null 2>&1; then \
	  scripts/with-postgres.sh cargo nextest run --workspace; \
	else \
	  scripts/with-postgres.sh cargo test --workspace; \
	fi
	scripts/k8s-check.sh
	scripts/with-postgres.sh scripts/template-check.sh
	scripts/fuzz.sh $(FUZZ_SECONDS)

# Cheapest first, so that a mistake fails before clippy compiles everything. cargo deny
# checks licenses, bans and sources (deny.toml); advisories need GitHub, see deny.toml.
# The fuzz crate is a workspace of its own: checked in target/, it reuses the workspace's.
lint: tools ## Check formatting, shell scripts, protos (buf), dependencies (cargo deny), circles of imports and clippy
	cargo fmt --all -- --check
	cargo fmt --manifest-path fuzz/Cargo.toml -- --check
	scripts/module-cycles.py
	cargo deny check --hide-inclusion-graph licenses bans sources
	scripts/lint-shell.sh
	scripts/proto-check.sh
	.tools/venv/bin/check-jsonschema --builtin-schema vendor.github-workflows .github/workflows/*.yml
	cargo clippy --workspace --all-targets -- -D warnings
	CARGO_TARGET_DIR=$(CURDIR)/target cargo clippy --manifest-path fuzz/Cargo.toml --all-targets -- -D warnings

fmt: tools ## Format the Rust code and the protos
	cargo fmt --all
	cargo fmt --manifest-path fuzz/Cargo.toml
	buf format --write

fuzz: tools ## Run every fuzz target FUZZ_SECONDS (default 30) each: make fuzz FUZZ_SECONDS=600
	scripts/fuzz.sh $(FUZZ_SECONDS)

tools: ## Install the pinned external tools into .tools/ (scripts/tools.sh)
	scripts/tools.sh

# Ratios measured side by side in one run, never timed tests (docs/benchmarks.md). Not
# after `tools`: in a clone whose .tools links to another checkout's, tools.sh would
# rebuild that shared venv; scripts/bench.sh checks what it needs and says what is missing.
bench: ## Benchmarks: baseline, instrumented, chain and Python peer side by side (docs/benchmarks.md)
	scripts/bench.sh

bench-build: tools ## Time the clean debug build and one incremental rebuild, in a temporary clone (slow)
	scripts/bench.sh --build-times

# Not after `tools`: deploying needs Docker, kind, kubectl, curl and openssl only (the
# smoke test speaks gRPC with curl), no Rust toolchain, on Linux and macOS alike.
kind-up: ## Build the images and run everything in a local kind cluster, then smoke-test it
	scripts/kind-up.sh

kind-smoke: ## Smoke-test the system in kind: gRPC health and reflection, one order, its trace, metrics
	scripts/kind-smoke.sh

kind-down: ## Delete the kind cluster
	scripts/kind-down.sh

# The template's own tools (scripts/template-check.sh proves them in `make test`).
new-service: ## Scaffold a service: make new-service NAME=shipping
	scripts/new-service.py "$(NAME)"

remove-service: ## Remove a service nothing depends on: make remove-service NAME=notifications
	scripts/remove-service.py "$(NAME)"

rename: ## Rename the project (labels, namespace, kind cluster, titles): make rename NAME=acme-shop
	scripts/rename.py "$(NAME)"
