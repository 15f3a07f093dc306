# BrokerX — every command a developer, an operator or CI runs.
# `make run` starts the whole system locally; `make test` runs the whole test suite.

SHELL := /bin/bash
PYTHON ?= python3
UV ?= $(shell command -v uv 2>/dev/null || echo .tools/bin/uv)
COMPOSE ?= docker compose
PYTEST_ARGS ?=

.PHONY: help install run servers test test-fast lint typecheck format bench chaos fuzz migrate seed \
        invariants backup restore deploy rollback up down logs secrets certs stop clean

help: ## list targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-12s %s\n", $$1, $$2}'

.tools/bin/uv:
	$(PYTHON) -m venv .tools
	.tools/bin/pip install --quiet uv

install: $(if $(filter .tools/bin/uv,$(UV)),.tools/bin/uv) ## install every workspace member and dev tool into .venv
	$(UV) sync --frozen

run: install ## start PostgreSQL, Redis (throwaway, under .devdata/ unless DATABASE_URL/REDIS_URL are set), the three services and a mail catcher
	$(UV) run --frozen python -m brokerx_devstack run

servers: install ## start only throwaway PostgreSQL and Redis and print their URLs
	$(UV) run --frozen python -m brokerx_devstack servers

test: install ## the whole test suite on real PostgreSQL and Redis (TEST_DATABASE_URL/TEST_REDIS_URL, else embedded)
	$(UV) run --frozen pytest $(PYTEST_ARGS)

test-fast: install ## unit tests only
	$(UV) run --frozen pytest tests/unit $(PYTEST_ARGS)

lint: install ## ruff
	$(UV) run --frozen ruff check .
	$(UV) run --frozen ruff format --check .

typecheck: install ## mypy strict on libs/ and the matching core
	$(UV) run --frozen mypy

format: install ## format and fix imports
	$(UV) run --frozen ruff format .
	$(UV) run --frozen ruff check --fix .

bench: install ## book, end-to-end, bare intake and recovery benchmarks (~10 min; docs/performance.md)
	$(UV) run --frozen python bench/run_all.py $(BENCH_ARGS)

chaos: install ## SIGKILL/restart every part under load, then audit (~3 min; docs/reliability.md)
	$(UV) run --frozen python bench/chaos.py $(CHAOS_ARGS)

fuzz: install ## schemathesis against the api's own OpenAPI document (also part of make test)
	$(UV) run --frozen pytest tests/fuzz -p no:cacheprovider $(PYTEST_ARGS)

migrate: install ## migrate DATABASE_URL to the latest schema
	$(UV) run --frozen python -m brokerx_core.migrate upgrade

seed: install ## seed instruments and the market maker into DATABASE_URL
	$(UV) run --frozen python -m brokerx_core.seed

invariants: install ## check DESIGN.md's invariants against DATABASE_URL (PENDING_GRACE=30: also nothing left pending_new, with the engines running)
	$(UV) run --frozen python -m brokerx_core.invariants $(if $(PENDING_GRACE),--pending-grace $(PENDING_GRACE))

backup: ## pg_dump -Fc of DATABASE_URL into BACKUP_DIR with a checksum and retention
	./scripts/backup.sh

restore: ## restore FILE=... into a fresh database, then verify counts and invariants
	@test -n "$(FILE)" || { echo "usage: make restore FILE=brokerx-YYYYmmddTHHMMSSZ.dump [DB=name]"; exit 2; }
	./scripts/restore.sh "$(FILE)" $(DB)

deploy: ## deploy TAG (default: newest tag) to VM_HOST over SSH, wait for health, record it
	@test -n "$(VM_HOST)" || { echo "usage: make deploy VM_HOST=host [TAG=v1.2.3]"; exit 2; }
	VM_HOST="$(VM_HOST)" ./scripts/deploy.sh $(TAG)

rollback: ## return VM_HOST to the previously deployed tag
	@test -n "$(VM_HOST)" || { echo "usage: make rollback VM_HOST=host"; exit 2; }
	VM_HOST="$(VM_HOST)" ./scripts/rollback.sh

secrets: ## create ./secrets/* (DB password, JWT secret, Grafana password, TOTP keys) if missing
	./scripts/make-secrets.sh

certs: ## self-signed TLS certificate for local compose
	./infra/nginx/make-cert.sh

# Compose profiles for up/down: COMPOSE_PROFILES from the environment (or the make
# command line) if set there, even empty; else from .env, which docker compose reads
# itself (`COMPOSE_PROFILES=` there means no profile); else `mail` (Mailpit).
compose_profiles = if [[ -z "$${COMPOSE_PROFILES+set}" ]] && \
	! grep -Eqs '^[[:space:]]*(export[[:space:]]+)?COMPOSE_PROFILES=' .env; then \
	export COMPOSE_PROFILES=mail; fi;

up: secrets certs ## docker compose: build and start everything (Mailpit unless COMPOSE_PROFILES/.env say otherwise), wait for health
	$(compose_profiles) $(COMPOSE) up -d --build --remove-orphans --wait --wait-timeout 300

down: ## docker compose: stop everything (volumes kept)
	$(compose_profiles) $(COMPOSE) down

logs: ## docker compose: follow logs (SERVICE=api to pick one)
	$(COMPOSE) logs -f --tail=200 $(SERVICE)

stop: ## stop whatever a killed `make run` or the tests left running
	-$(UV) run --frozen python -m brokerx_devstack stop --data-dir .devdata/run
	-$(UV) run --frozen python -m brokerx_devstack stop --data-dir .devdata/test

clean: stop ## stop leftover local servers and remove .devdata
	rm -rf .devdata
