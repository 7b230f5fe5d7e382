# koinos-rtc — the two commands a newcomer needs are `make up` and `make test`.
SHELL := /bin/bash
.DEFAULT_GOAL := help
export PATH := $(HOME)/.cargo/bin:/usr/local/go/bin:$(PATH)

.PHONY: help up down reset setup build lint unit test e2e

help:
	@echo "make up     install what is missing, build, start the whole dev stack (Ctrl-C stops it)"
	@echo "make test   every check and test: fmt, clippy, unit, web lint/typecheck, integration + browser e2e"
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

unit: build
	cargo test --workspace --lib --bins

e2e: build
	dev/stack e2e

test: lint unit e2e
