#!/usr/bin/env bash
# Self-signed TLS certificate for local/demo use of the compose stack.
#
#   infra/nginx/make-cert.sh [--force] [OUT_DIR]
#
# Writes OUT_DIR/server.crt and OUT_DIR/server.key (default: infra/nginx/certs, which
# docker-compose.yml mounts at /etc/nginx/certs). Leaves an existing pair alone unless
# --force. Names covered: localhost, 127.0.0.1 and $CERT_HOSTNAME / $SERVER_NAME when set.
# Production uses a real certificate instead: see docs/operations.md ("TLS").
set -euo pipefail

force=0
if [[ "${1:-}" == "--force" ]]; then
    force=1
    shift
fi
script_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
out_dir="${1:-$script_dir/certs}"
days="${CERT_DAYS:-825}"
cn="${CERT_HOSTNAME:-${SERVER_NAME:-localhost}}"
[[ "$cn" == "_" ]] && cn=localhost

crt="$out_dir/server.crt"
key="$out_dir/server.key"

if [[ -s "$crt" && -s "$key" && $force -eq 0 ]]; then
    echo "make-cert: $crt already exists (use --force to replace it)"
    exit 0
fi

command -v openssl >/dev/null 2>&1 || { echo "make-cert: openssl is required" >&2; exit 1; }
mkdir -p "$out_dir"

san="DNS:localhost,IP:127.0.0.1"
if [[ "$cn" != "localhost" ]]; then
    if [[ "$cn" =~ ^[0-9.]+$ ]]; then san="$san,IP:$cn"; else san="$san,DNS:$cn"; fi
fi

tmp_key="$(mktemp "$out_dir/.server.key.XXXXXX")"
tmp_crt="$(mktemp "$out_dir/.server.crt.XXXXXX")"
trap 'rm -f "$tmp_key" "$tmp_crt"' EXIT

openssl req -x509 -newkey rsa:2048 -sha256 -nodes -days "$days" \
    -keyout "$tmp_key" -out "$tmp_crt" \
    -subj "/O=BrokerX (self-signed)/CN=$cn" \
    -addext "subjectAltName=$san" \
    -addext "basicConstraints=critical,CA:TRUE" \
    -addext "keyUsage=critical,digitalSignature,keyEncipherment,keyCertSign" \
    -addext "extendedKeyUsage=serverAuth" 2>/dev/null

# nginx runs as uid 101 in its container and reads the bind-mounted key: a throwaway
# self-signed key is made world-readable; a real key is installed 0640 root:101.
chmod 0644 "$tmp_key" "$tmp_crt"
mv -f "$tmp_key" "$key"
mv -f "$tmp_crt" "$crt"
trap - EXIT

echo "make-cert: wrote $crt and $key (CN=$cn, SAN=$san, valid $days days)"
