#!/usr/bin/env bash
# Installs the system binaries the infra tests drive for real (Debian/Ubuntu):
#   nginx       -> tests/infra/test_nginx.py   (nginx -t + a real TLS proxy)
#   sshd, ssh   -> tests/infra/test_deploy.py  (deploy/rollback over a real SSH hop)
#   promtool    -> tests/infra/test_prometheus.py (shipped in the `prometheus` package)
#   amtool      -> tests/infra/test_alertmanager.py (the `prometheus-alertmanager` package)
#   busybox     -> tests/infra/test_alertmanager.py (render.sh under the image's shell/awk)
#   pg_dump,    -> tests/infra/test_backup.py  (backup job + restore script)
#   pg_restore, psql, createdb
#   ShellCheck  -> tests/infra/test_deploy.py  (lint of the shell scripts, if present)
# Idempotent: binaries already on PATH are not reinstalled. Services are never started
# (policy-rc.d refuses them), the tests run their own throwaway instances.
set -euo pipefail

if [[ "$(id -u)" -ne 0 ]]; then
    SUDO=sudo
else
    SUDO=
fi

missing=()
command -v nginx >/dev/null 2>&1 || [[ -x /usr/sbin/nginx ]] || missing+=(nginx-light)
[[ -x /usr/sbin/sshd ]] || missing+=(openssh-server)
command -v ssh >/dev/null 2>&1 || missing+=(openssh-client)
command -v promtool >/dev/null 2>&1 || missing+=(prometheus)
command -v amtool >/dev/null 2>&1 || missing+=(prometheus-alertmanager)
command -v busybox >/dev/null 2>&1 || missing+=(busybox)
{ command -v pg_dump && command -v pg_restore && command -v psql; } >/dev/null 2>&1 \
    || missing+=(postgresql-client)
command -v openssl >/dev/null 2>&1 || missing+=(openssl)
# Optional: test_deploy.py lints every shell script with it when present.
command -v shellcheck >/dev/null 2>&1 || missing+=(shellcheck)

if [[ ${#missing[@]} -eq 0 ]]; then
    echo "install-system-deps: everything already present"
    exit 0
fi

echo "install-system-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
# Keep package post-install scripts from starting nginx/sshd/prometheus/alertmanager
# daemons.
policy_rc=/usr/sbin/policy-rc.d
created_policy=0
if [[ ! -e "$policy_rc" ]]; then
    printf '#!/bin/sh\nexit 101\n' | $SUDO tee "$policy_rc" >/dev/null
    $SUDO chmod +x "$policy_rc"
    created_policy=1
fi
cleanup() { if [[ $created_policy -eq 1 ]]; then $SUDO rm -f "$policy_rc"; fi; }
trap cleanup EXIT

$SUDO apt-get update -qq
if ! $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"; then
    # nginx-light does not exist on every release: fall back to plain nginx.
    fallback=("${missing[@]/nginx-light/nginx}")
    $SUDO apt-get install -y -qq --no-install-recommends "${fallback[@]}"
fi
echo "install-system-deps: done"
