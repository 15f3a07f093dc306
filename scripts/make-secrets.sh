#!/usr/bin/env bash
# Creates the Docker secrets docker-compose.yml reads from ./secrets/ (gitignored):
#   db_password.txt             PostgreSQL password of the `brokerx` role
#   jwt_secret.txt              HS256 signing key of the api's access tokens
#   grafana_admin_password.txt  Grafana `admin` password
#   totp_keys.txt               Fernet key(s) encrypting the stored TOTP secrets (api),
#                               one per line, the first encrypts; NOT in the database
#                               dumps: back this file up separately
#
#   scripts/make-secrets.sh                   # create the missing ones, keep the others
#   scripts/make-secrets.sh --rotate NAME     # replace one (see docs/operations.md first:
#                                             # the DB password must change in PostgreSQL too);
#                                             # totp_keys: a new key goes first, the old
#                                             # ones stay after it (they still decrypt)
#   scripts/make-secrets.sh --retire totp_keys  # keep only the first TOTP key, once
#                                             # `python -m brokerx_api.auth.rekey` has run
# SECRETS_DIR overrides the directory (default: <repo>/secrets).
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
secrets_dir="${SECRETS_DIR:-$repo_root/secrets}"
names=(db_password jwt_secret grafana_admin_password totp_keys)

die() { echo "make-secrets: $*" >&2; exit 1; }

random_secret() {
    # Hex only: safe in URLs, env files and shell without quoting.
    if command -v openssl >/dev/null 2>&1; then
        openssl rand -hex "$1"
    else
        head -c "$1" /dev/urandom | od -An -vtx1 | tr -d ' \n'
    fi
}

fernet_key() {
    # 32 random bytes, url-safe base64 (44 characters): cryptography's Fernet.generate_key().
    if command -v openssl >/dev/null 2>&1; then
        openssl rand -base64 32 | tr '+/' '-_'
    else
        head -c 32 /dev/urandom | base64 | tr '+/' '-_'
    fi
}

new_value() {
    case "$1" in
        totp_keys) fernet_key ;;
        jwt_secret) random_secret 48 ;;
        *) random_secret 24 ;;
    esac
}

write_secret() {
    local name=$1 value=$2 target tmp
    target="$secrets_dir/$name.txt"
    tmp="$(mktemp "$secrets_dir/.$name.XXXXXX")"
    # No trailing newline: some readers (Grafana __FILE) take the bytes as they are.
    printf "%s" "$value" > "$tmp"
    # 0644 inside a 0700 directory: container users (postgres 999, app 10001, grafana
    # 472) read the bind-mounted file; other users of this host cannot reach it.
    chmod 0644 "$tmp"
    mv -f "$tmp" "$target"
}

rotate=""
retire=""
if [[ "${1:-}" == "--rotate" ]]; then
    rotate="${2:-}"
    [[ " ${names[*]} " == *" $rotate "* ]] || die "--rotate needs one of: ${names[*]}"
elif [[ "${1:-}" == "--retire" ]]; then
    retire="${2:-}"
    [[ "$retire" == totp_keys ]] || die "--retire only applies to totp_keys"
elif [[ $# -gt 0 ]]; then
    die "usage: $0 [--rotate NAME | --retire totp_keys]"
fi

umask 077
mkdir -p "$secrets_dir"
chmod 0700 "$secrets_dir"

for name in "${names[@]}"; do
    file="$secrets_dir/$name.txt"
    if [[ "$name" == "$retire" ]]; then
        [[ -s "$file" ]] || die "no $name.txt to retire keys from"
        cp -p "$file" "$file.previous"
        write_secret "$name" "$(tr ', \t' '\n\n\n' < "$file" | grep -m 1 .)"
        echo "make-secrets: $name keeps its first key only (old list in $name.txt.previous)"
    elif [[ "$name" == "$rotate" ]]; then
        value="$(new_value "$name")"
        if [[ -f "$file" ]]; then
            cp -p "$file" "$file.previous"
            if [[ "$name" == totp_keys && -s "$file" ]]; then
                # The old keys keep decrypting until every secret is re-encrypted.
                value="$value"$'\n'"$(cat "$file")"
            fi
        fi
        write_secret "$name" "$value"
        echo "make-secrets: rotated $name (old value in $name.txt.previous)"
    elif [[ -s "$file" ]]; then
        echo "make-secrets: keeping $name"
    else
        write_secret "$name" "$(new_value "$name")"
        echo "make-secrets: created $name"
    fi
done
