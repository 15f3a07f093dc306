#!/usr/bin/env bash
# Return the VM to the release before the current one (.deploy/history on the VM):
# check it out, `docker compose up -d --build`, wait for health, record it.
#
#   VM_HOST=brokerx.example.com scripts/rollback.sh     (or: make rollback VM_HOST=...)
#
# Same environment as scripts/deploy.sh (VM_USER, VM_PORT, VM_SSH_KEY, VM_DIR, SSH_OPTS,
# COMPOSE_CMD, HEALTH_CMD, HEALTH_TIMEOUT), which holds the logic for both.
set -euo pipefail

DEPLOY_ACTION=rollback exec "$(dirname "${BASH_SOURCE[0]}")/deploy.sh" "$@"
