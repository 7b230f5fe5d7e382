# koinos-rtc — the two commands a newcomer needs are `make up` and `make test`.
SHELL := /bin/bash
.DEFAULT_GOAL := help
export PATH := $(HOME)/.cargo/bin:/usr/local/go/bin:$(PATH)

.PHONY: help up down reset setup build lint unit k8s test e2e e2e-stack e2e-browser e2e-no-delayed-events e2e-multi-node

help:
	@echo "make up     install what is missing, build, start the whole dev stack (Ctrl-C stops it)"
	@echo "make test   every check and test: fmt, clippy, unit, web lint/typecheck, k8s manifests, integration + browser e2e"
	@echo "make e2e-stack | e2e-browser | e2e-no-delayed-events | e2e-multi-node"
	@echo "           one variant of the black-box tests against the real stack (make test runs all)"
	@echo "make k8s    the Kubernetes manifests: render, validate, config checks, alert rules (k8s/check)"
	@echo "make reset  stop the stack and delete all dev data (accounts, rooms, secrets, logs)"
	@echo "make down   stop a detached stack (dev/stack start)"

up:
	dev/stack up

down:
	dev/stack down

reset:
	dev/stack reset

setup:
	dev/stack setup

build: setup
	cargo build --workspace --all-targets
	cd web && npm run --silent build

lint: setup
	cargo fmt --all --check
	cargo clippy --workspace --all-targets -- -D warnings
	cd web && npm run --silent typecheck && npm run --silent lint

# Every test of the workspace as plain `cargo test` runs it on a fresh checkout: those that need
# the dev stack skip, saying so (here it is told there is none), and run for real in e2e.
unit: build
	KOINOS_DEV_DIR="$$(mktemp -d)" cargo test --workspace
	python3 -m unittest discover -s dev -p "test_*.py"
	cd web && npm run --silent unit

# The Kubernetes deployment (k8s/README.md, last section): needs no cluster and no dev stack.
k8s: build
	k8s/check

# The black-box tests against the real stack, by variant (dev/stack e2e prints each one's result
# and time at the end, and keeps it in .dev/logs/e2e-results.txt); each can run on its own.
e2e: build
	dev/stack e2e

e2e-stack e2e-browser e2e-no-delayed-events e2e-multi-node: build
	dev/stack e2e $(@:e2e-%=%)

test: lint unit k8s e2e
