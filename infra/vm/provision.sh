#!/usr/bin/env bash
# Prepare an Ubuntu 22.04 VM to run BrokerX with docker compose. Run as root; safe to
# run again (every step checks before it changes anything).
#
#   sudo DEPLOY_PUBKEY="ssh-ed25519 AAAA... ci@brokerx" \
#        REPO_URL=git@github.com:org/brokerx.git ADMIN_CIDR=203.0.113.0/24 \
#        bash infra/vm/provision.sh
#
# Installs Docker Engine + compose plugin (Docker's apt repository), creates the `deploy`
# user (docker group, the given authorized key), firewall (ufw: deny incoming, allow
# SSH [from ADMIN_CIDR only when set], 80, 443), unattended security upgrades, Docker
# log rotation (daemon.json) and logrotate for the deploy journal, optionally fail2ban
# (INSTALL_FAIL2BAN=1), then clones REPO_URL into APP_DIR when given.
#
# Environment:
#   DEPLOY_USER (deploy)  DEPLOY_PUBKEY or DEPLOY_PUBKEY_FILE  APP_DIR (/opt/brokerx)
#   REPO_URL  ADMIN_CIDR  SSH_PORT (22)  INSTALL_FAIL2BAN (0)  HARDEN_SSH (1)
#   LOG_MAX_SIZE (10m)  LOG_MAX_FILE (5)
set -euo pipefail

DEPLOY_USER="${DEPLOY_USER:-deploy}"
APP_DIR="${APP_DIR:-/opt/brokerx}"
SSH_PORT="${SSH_PORT:-22}"
ADMIN_CIDR="${ADMIN_CIDR:-}"
INSTALL_FAIL2BAN="${INSTALL_FAIL2BAN:-0}"
HARDEN_SSH="${HARDEN_SSH:-1}"
LOG_MAX_SIZE="${LOG_MAX_SIZE:-10m}"
LOG_MAX_FILE="${LOG_MAX_FILE:-5}"
REPO_URL="${REPO_URL:-}"

say() { printf '\n==> %s\n' "$*"; }
die() { printf 'provision: ERROR: %s\n' "$*" >&2; exit 1; }

[[ "$(id -u)" -eq 0 ]] || die "run as root (sudo bash infra/vm/provision.sh)"
# shellcheck source=/dev/null
. /etc/os-release
[[ "${ID:-}" == ubuntu ]] || die "written for Ubuntu 22.04, this is ${PRETTY_NAME:-unknown}"
[[ "${VERSION_ID:-}" == 22.04 ]] || echo "provision: warning: tested on 22.04, this is $VERSION_ID"

pubkey="${DEPLOY_PUBKEY:-}"
if [[ -z "$pubkey" && -n "${DEPLOY_PUBKEY_FILE:-}" ]]; then
    pubkey="$(cat "$DEPLOY_PUBKEY_FILE")"
fi

export DEBIAN_FRONTEND=noninteractive

say "base packages"
apt-get update -qq
apt-get install -y -qq --no-install-recommends \
    ca-certificates curl gnupg git ufw unattended-upgrades logrotate util-linux openssl

say "Docker Engine and compose plugin"
if ! command -v docker >/dev/null 2>&1 || ! docker compose version >/dev/null 2>&1; then
    install -m 0755 -d /etc/apt/keyrings
    if [[ ! -s /etc/apt/keyrings/docker.asc ]]; then
        curl -fsSL https://download.docker.com/linux/ubuntu/gpg -o /etc/apt/keyrings/docker.asc
        chmod a+r /etc/apt/keyrings/docker.asc
    fi
    echo "deb [arch=$(dpkg --print-architecture) signed-by=/etc/apt/keyrings/docker.asc] https://download.docker.com/linux/ubuntu ${VERSION_CODENAME} stable" \
        > /etc/apt/sources.list.d/docker.list
    apt-get update -qq
    apt-get install -y -qq docker-ce docker-ce-cli containerd.io \
        docker-buildx-plugin docker-compose-plugin
else
    echo "already installed: $(docker --version); $(docker compose version)"
fi

say "Docker log rotation (json-file, max-size $LOG_MAX_SIZE, max-file $LOG_MAX_FILE)"
desired_daemon_json=$(cat <<JSON
{
  "log-driver": "json-file",
  "log-opts": {
    "max-size": "$LOG_MAX_SIZE",
    "max-file": "$LOG_MAX_FILE"
  },
  "live-restore": true
}
JSON
)
mkdir -p /etc/docker
if [[ "$(cat /etc/docker/daemon.json 2>/dev/null || true)" != "$desired_daemon_json" ]]; then
    if [[ -s /etc/docker/daemon.json ]]; then
        cp /etc/docker/daemon.json "/etc/docker/daemon.json.bak.$(date +%s)"
    fi
    printf '%s\n' "$desired_daemon_json" > /etc/docker/daemon.json
    systemctl restart docker
fi
systemctl enable --now docker >/dev/null

say "user $DEPLOY_USER"
if ! id "$DEPLOY_USER" >/dev/null 2>&1; then
    useradd --create-home --shell /bin/bash "$DEPLOY_USER"
fi
# The docker group is root-equivalent: only the deploy key gets this account.
usermod -aG docker "$DEPLOY_USER"
deploy_home="$(getent passwd "$DEPLOY_USER" | cut -d: -f6)"
install -d -m 0700 -o "$DEPLOY_USER" -g "$DEPLOY_USER" "$deploy_home/.ssh"
touch "$deploy_home/.ssh/authorized_keys"
if [[ -n "$pubkey" ]] && ! grep -qxF "$pubkey" "$deploy_home/.ssh/authorized_keys"; then
    printf '%s\n' "$pubkey" >> "$deploy_home/.ssh/authorized_keys"
    echo "authorized key added"
fi
chown "$DEPLOY_USER:$DEPLOY_USER" "$deploy_home/.ssh/authorized_keys"
chmod 0600 "$deploy_home/.ssh/authorized_keys"

say "application directory $APP_DIR"
install -d -m 0750 -o "$DEPLOY_USER" -g "$DEPLOY_USER" "$APP_DIR"
if [[ -n "$REPO_URL" && ! -d "$APP_DIR/.git" ]]; then
    # A private repository needs a read-only deploy key for $DEPLOY_USER on GitHub.
    sudo -u "$DEPLOY_USER" git clone "$REPO_URL" "$APP_DIR"
fi

say "firewall (ufw): deny incoming; allow SSH${ADMIN_CIDR:+ from $ADMIN_CIDR}, 80, 443"
ufw --force default deny incoming >/dev/null
ufw --force default allow outgoing >/dev/null
if [[ -n "$ADMIN_CIDR" ]]; then
    ufw allow from "$ADMIN_CIDR" to any port "$SSH_PORT" proto tcp comment 'ssh (admin)' >/dev/null
    # Replace a previous open-to-all SSH rule, if any.
    ufw --force delete allow "$SSH_PORT/tcp" >/dev/null 2>&1 || true
    ufw --force delete limit "$SSH_PORT/tcp" >/dev/null 2>&1 || true
else
    ufw limit "$SSH_PORT/tcp" comment 'ssh' >/dev/null
fi
ufw allow 80/tcp comment 'http -> https redirect' >/dev/null
ufw allow 443/tcp comment 'https' >/dev/null
ufw --force enable >/dev/null
ufw status verbose
# Docker publishes ports through its own iptables chain, ahead of ufw: this is why
# docker-compose.yml binds Prometheus, Grafana and Mailpit to 127.0.0.1 and publishes
# nothing else but nginx.

if [[ "$HARDEN_SSH" == 1 ]]; then
    say "SSH: keys only, no root login"
    if [[ -s "$deploy_home/.ssh/authorized_keys" ]]; then
        cat > /etc/ssh/sshd_config.d/50-brokerx.conf <<'SSHD'
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin no
X11Forwarding no
MaxAuthTries 3
SSHD
        sshd -t && systemctl reload ssh
    else
        echo "provision: skipped: $DEPLOY_USER has no authorized key yet (would lock you out)"
    fi
fi

say "unattended security upgrades"
cat > /etc/apt/apt.conf.d/20auto-upgrades <<'APT'
APT::Periodic::Update-Package-Lists "1";
APT::Periodic::Download-Upgradeable-Packages "1";
APT::Periodic::Unattended-Upgrade "1";
APT::Periodic::AutocleanInterval "7";
APT
systemctl enable --now unattended-upgrades >/dev/null

say "logrotate for the deploy journal"
cat > /etc/logrotate.d/brokerx <<LOGROTATE
$APP_DIR/.deploy/deploy.log {
    weekly
    rotate 12
    compress
    missingok
    notifempty
    copytruncate
    su $DEPLOY_USER $DEPLOY_USER
}
LOGROTATE
logrotate --debug /etc/logrotate.d/brokerx >/dev/null 2>&1 || echo "provision: warning: logrotate config check failed"

if [[ "$INSTALL_FAIL2BAN" == 1 ]]; then
    say "fail2ban (sshd jail)"
    apt-get install -y -qq --no-install-recommends fail2ban
    cat > /etc/fail2ban/jail.d/brokerx.local <<JAIL
[sshd]
enabled = true
port = $SSH_PORT
maxretry = 5
bantime = 1h
JAIL
    systemctl enable --now fail2ban >/dev/null
    systemctl restart fail2ban
fi

say "done"
cat <<NEXT
Next steps (as $DEPLOY_USER, in $APP_DIR):
  scripts/make-secrets.sh
  copy secrets/totp_keys.txt somewhere safe off this VM (not beside the backups)
  put the TLS certificate in infra/nginx/certs/server.crt + server.key
    (or infra/nginx/make-cert.sh for a self-signed one)
  write .env (SERVER_NAME, SMTP_HOST, ... see docs/operations.md)
  then deploy from your machine or CI: make deploy VM_HOST=<this host>
NEXT
