#!/usr/bin/env bash
# Creates the Docker secrets docker-compose.yml reads from ./secrets/ (gitignored):
#   db_password.txt             PostgreSQL password of the `brokerx` role
#   jwt_secret.txt              HS256 signing key of the api's access tokens
#   grafana_admin_password.txt  Grafana `admin` password
#
#   scripts/make-secrets.sh                 # create the missing ones, keep the others
#   scripts/make-secrets.sh --rotate NAME   # replace one (see docs/operations.md first:
#                                           # the DB password must change in PostgreSQL too)
# SECRETS_DIR overrides the directory (default: <repo>/secrets).
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
secrets_dir="${SECRETS_DIR:-$repo_root/secrets}"
names=(db_password jwt_secret grafana_admin_password)

die() { echo "make-secrets: $*" >&2; exit 1; }

random_secret() {
    # Hex only: safe in URLs, env files and shell without quoting.
    if command -v openssl >/dev/null 2>&1; then
        openssl rand -hex "$1"
    else
        head -c "$1" /dev/urandom | od -An -vtx1 | tr -d ' \n'
    fi
}

write_secret() {
    local name=$1 bytes=$2 target tmp
    target="$secrets_dir/$name.txt"
    tmp="$(mktemp "$secrets_dir/.$name.XXXXXX")"
    # No trailing newline: some readers (Grafana __FILE) take the bytes as they are.
    printf "%s" "$(random_secret "$bytes")" > "$tmp"
    # 0644 inside a 0700 directory: container users (postgres 999, app 10001, grafana
    # 472) read the bind-mounted file; other users of this host cannot reach it.
    chmod 0644 "$tmp"
    mv -f "$tmp" "$target"
}

rotate=""
if [[ "${1:-}" == "--rotate" ]]; then
    rotate="${2:-}"
    [[ " ${names[*]} " == *" $rotate "* ]] || die "--rotate needs one of: ${names[*]}"
elif [[ $# -gt 0 ]]; then
    die "usage: $0 [--rotate NAME]"
fi

umask 077
mkdir -p "$secrets_dir"
chmod 0700 "$secrets_dir"

for name in "${names[@]}"; do
    bytes=24
    [[ "$name" == jwt_secret ]] && bytes=48
    if [[ "$name" == "$rotate" ]]; then
        if [[ -f "$secrets_dir/$name.txt" ]]; then
            cp -p "$secrets_dir/$name.txt" "$secrets_dir/$name.txt.previous"
        fi
        write_secret "$name" "$bytes"
        echo "make-secrets: rotated $name (old value in $name.txt.previous)"
    elif [[ -s "$secrets_dir/$name.txt" ]]; then
        echo "make-secrets: keeping $name"
    else
        write_secret "$name" "$bytes"
        echo "make-secrets: created $name"
    fi
done
