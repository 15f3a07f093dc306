#!/usr/bin/env bash
# Take a database backup now, with the code of the nightly job
# (brokerx_worker.backup: pg_dump -Fc, .sha256, retention, metrics).
#
#   scripts/backup.sh                      # compose stack running: inside the worker
#   BACKUP_MODE=local scripts/backup.sh    # this machine: DATABASE_URL, BACKUP_DIR, ...
#                                          # from the environment, pg_dump on PATH
# Extra arguments go to `python -m brokerx_worker.backup` (e.g. --dir DIR).
# COMPOSE overrides the compose command (default: docker compose).
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
mode="${BACKUP_MODE:-auto}"
read -r -a compose <<< "${COMPOSE:-docker compose}"

worker_running() {
    command -v "${compose[0]}" >/dev/null 2>&1 &&
        [[ -f "$repo_root/docker-compose.yml" ]] &&
        [[ -n "$(cd "$repo_root" && "${compose[@]}" ps --status running -q worker 2>/dev/null)" ]]
}

if [[ "$mode" == auto ]]; then
    if worker_running; then mode=compose; else mode=local; fi
fi

case "$mode" in
    compose)
        echo "backup: running in the worker container"
        cd "$repo_root"
        exec "${compose[@]}" exec -T worker python -m brokerx_worker.backup "$@"
        ;;
    local)
        if python -c "import brokerx_worker.backup" >/dev/null 2>&1; then
            exec python -m brokerx_worker.backup "$@"
        fi
        command -v uv >/dev/null 2>&1 || { echo "backup: neither brokerx_worker nor uv found" >&2; exit 1; }
        cd "$repo_root"
        exec uv run --frozen python -m brokerx_worker.backup "$@"
        ;;
    *)
        echo "backup: BACKUP_MODE must be auto, compose or local" >&2
        exit 2
        ;;
esac
