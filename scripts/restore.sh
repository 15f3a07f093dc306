#!/usr/bin/env bash
# Restore a backup into a FRESH database, then prove it: row counts per table and the
# invariant checker (python -m brokerx_core.invariants, non-zero on a violation).
#
#   scripts/restore.sh FILE [TARGET_DB]
#
# FILE       brokerx-YYYYmmddTHHMMSSZ.dump with its .sha256 next to it. With the compose
#            stack running, a bare name is looked up in the worker's /backups volume,
#            and a file of this machine is copied into that volume first.
# TARGET_DB  new database name (default brokerx_restore_<UTC time>). It must not exist:
#            this never overwrites a database. Switching the platform to it is a
#            separate, deliberate step (docs/operations.md, "Restore").
#
# Environment:
#   RESTORE_MODE             auto (default) | compose | local
#   RESTORE_SERVER_URL       libpq URL of the server, e.g. postgresql://u:p@host:5432/postgres
#                            (default: the app's DATABASE_URL + DATABASE_PASSWORD[_FILE])
#   RESTORE_SKIP_INVARIANTS  1 to skip the invariant checker (e.g. a non-BrokerX schema)
#   PYTHON                   interpreter with brokerx_core (default: python, else uv run)
#   COMPOSE                  compose command (default: docker compose)
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
mode="${RESTORE_MODE:-auto}"
read -r -a compose <<< "${COMPOSE:-docker compose}"

say() { printf 'restore: %s\n' "$*"; }
die() { printf 'restore: ERROR: %s\n' "$*" >&2; exit 1; }

[[ $# -ge 1 && $# -le 2 ]] || die "usage: $0 FILE [TARGET_DB]"
file="$1"
target_db="${2:-brokerx_restore_$(date -u +%Y%m%d%H%M%S)}"
[[ "$target_db" =~ ^[a-z_][a-z0-9_]{0,62}$ ]] ||
    die "TARGET_DB must be a lower-case identifier ([a-z_][a-z0-9_]*), got '$target_db'"

worker_running() {
    command -v "${compose[0]}" >/dev/null 2>&1 &&
        [[ -f "$repo_root/docker-compose.yml" ]] &&
        [[ -n "$(cd "$repo_root" && "${compose[@]}" ps --status running -q worker 2>/dev/null)" ]]
}

if [[ "$mode" == auto ]]; then
    if worker_running; then mode=compose; else mode=local; fi
fi

# --- compose: run this same script inside the worker (pg tools, network, secrets) -----
if [[ "$mode" == compose ]]; then
    cd "$repo_root"
    name="$(basename "$file")"
    if [[ -f "$file" ]]; then
        [[ -f "$file.sha256" ]] || die "$file.sha256 is missing: refusing an unverifiable backup"
        say "copying $file into the worker's /backups volume"
        # Mode 0600 like the backups the worker writes (a dump holds every client's
        # data), whatever the container's umask; renamed into place once whole,
        # checksum first as the backup job does.
        # shellcheck disable=SC2016  # $1 expands in the container's shell
        copy_in='umask 077 && cat > "/backups/.incoming.$1" && chmod 0600 "/backups/.incoming.$1"'
        "${compose[@]}" exec -T worker sh -c "$copy_in" _ "$name" < "$file"
        "${compose[@]}" exec -T worker sh -c "$copy_in" _ "$name.sha256" < "$file.sha256"
        # shellcheck disable=SC2016
        "${compose[@]}" exec -T worker sh -c \
            'mv -f "/backups/.incoming.$1.sha256" "/backups/$1.sha256" &&
             mv -f "/backups/.incoming.$1" "/backups/$1"' _ "$name"
    fi
    exec "${compose[@]}" exec -T \
        -e RESTORE_MODE=local \
        -e RESTORE_SKIP_INVARIANTS="${RESTORE_SKIP_INVARIANTS:-}" \
        worker /app/scripts/restore.sh "/backups/$name" "$target_db"
fi
[[ "$mode" == local ]] || die "RESTORE_MODE must be auto, compose or local"

# --- local ------------------------------------------------------------------------------
for tool in pg_restore psql sha256sum; do
    command -v "$tool" >/dev/null 2>&1 || die "$tool not found (install postgresql-client)"
done

if [[ -n "${PYTHON:-}" ]]; then
    read -r -a python <<< "$PYTHON"
elif command -v python >/dev/null 2>&1 && python -c "import brokerx_core" >/dev/null 2>&1; then
    python=(python)
else
    python=(uv run --frozen --project "$repo_root" python)
fi

# 1. The file is whole and is what the backup job wrote.
[[ -f "$file" ]] || die "no such file: $file"
[[ -f "$file.sha256" ]] || die "$file.sha256 is missing: refusing an unverifiable backup"
expected="$(awk 'NR == 1 { print $1 }' "$file.sha256")"
actual="$(sha256sum "$file" | awk '{ print $1 }')"
[[ -n "$expected" && "$expected" == "$actual" ]] ||
    die "checksum mismatch for $file (expected ${expected:-nothing}, got $actual)"
say "checksum OK ($actual)"
pg_restore --list "$file" >/dev/null || die "$file is not a pg_dump custom-format archive"

# 2. Where to restore: the server of the app's database, unless told otherwise.
server_url="${RESTORE_SERVER_URL:-}"
if [[ -z "$server_url" ]]; then
    server_url="$("${python[@]}" -c \
        'from brokerx_core.settings import BrokerXSettings; print(BrokerXSettings().libpq_url)')" ||
        die "cannot read DATABASE_URL from the settings; set RESTORE_SERVER_URL"
fi

# The password travels in PGPASSWORD, not on command lines visible in `ps`.
url_re='^(postgres(ql)?://)([^:@/]*)(:([^@]*))?@(.*)$'
if [[ "$server_url" =~ $url_re ]]; then
    if [[ -n "${BASH_REMATCH[4]}" ]]; then
        encoded="${BASH_REMATCH[5]}"
        PGPASSWORD="$(printf '%b' "${encoded//%/\\x}")"
        export PGPASSWORD
    fi
    server_url="${BASH_REMATCH[1]}${BASH_REMATCH[3]}${BASH_REMATCH[3]:+@}${BASH_REMATCH[6]}"
fi
base="${server_url%%\?*}"
query=""
[[ "$server_url" == *\?* ]] && query="?${server_url#*\?}"
[[ "$base" =~ ^postgres(ql)?://[^/]*/ ]] || base="$base/postgres"
admin_url="$base$query"
target_url="${base%/*}/$target_db$query"
export PGCONNECT_TIMEOUT="${PGCONNECT_TIMEOUT:-10}"

# 3. A database of our own, never an existing one.
exists="$(psql "$admin_url" -X -v ON_ERROR_STOP=1 -tAc \
    "SELECT 1 FROM pg_database WHERE datname = '$target_db'")" ||
    die "cannot reach the PostgreSQL server"
[[ -z "$exists" ]] || die "database $target_db already exists: choose another TARGET_DB"
psql "$admin_url" -X -q -v ON_ERROR_STOP=1 -c "CREATE DATABASE \"$target_db\""
say "created database $target_db"

restored=0
drop_unfinished() {
    if [[ $restored -eq 0 ]]; then
        say "dropping the unfinished database $target_db"
        psql "$admin_url" -X -q -c "DROP DATABASE IF EXISTS \"$target_db\"" || true
    fi
}
trap drop_unfinished EXIT

# 4. All or nothing.
pg_restore --no-owner --no-privileges --exit-on-error --single-transaction \
    --dbname="$target_url" "$file" || die "pg_restore failed"
restored=1
trap - EXIT
say "restored $(basename "$file") into $target_db"

# 5. What came back.
echo
echo "Row counts in $target_db:"
psql "$target_url" -X -v ON_ERROR_STOP=1 -P footer=off -c "
    SELECT n.nspname || '.' || c.relname AS \"table\",
           (xpath('/row/n/text()', query_to_xml(
               format('SELECT count(*) AS n FROM %I.%I', n.nspname, c.relname),
               false, true, '')))[1]::text::bigint AS \"rows\"
      FROM pg_class c
      JOIN pg_namespace n ON n.oid = c.relnamespace
     WHERE c.relkind IN ('r', 'p')
       AND n.nspname NOT IN ('pg_catalog', 'information_schema')
       AND n.nspname NOT LIKE 'pg_toast%'
     ORDER BY 1"

# 6. The books balance.
if [[ "${RESTORE_SKIP_INVARIANTS:-}" == 1 ]]; then
    say "invariant check skipped (RESTORE_SKIP_INVARIANTS=1)"
else
    say "checking the invariants on $target_db"
    checker_env=(DATABASE_URL="$target_url")
    [[ -n "${PGPASSWORD:-}" ]] && checker_env+=(DATABASE_PASSWORD="$PGPASSWORD")
    if ! env "${checker_env[@]}" "${python[@]}" -m brokerx_core.invariants; then
        die "invariant violations in $target_db (kept for inspection; the live database is untouched)"
    fi
    say "invariants hold"
fi

echo
say "done: $target_db holds the backup of $(basename "$file")."
say "to serve it, follow docs/operations.md > Restore > Switch the platform to the restored database"
